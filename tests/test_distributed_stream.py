"""Two processes under ``torchrun`` (gloo, CPU): the streamed loader's shards and BN calibration
reduced over ranks equal one process's; ``supernet --stream`` as the command, its per-epoch
evaluation shared over the ranks equal to one process's, resumed on one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import REPO
from test_stream import write_jpeg_folder

pytestmark = pytest.mark.distributed

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from widthsearch.data import load_data
    from widthsearch.space.spec import SpaceSpec, build_supernet
    from widthsearch.training.distributed import DistContext
    from widthsearch.training.skeleton import spec_for_data

    torch.set_num_threads(1)
    folder, out = sys.argv[1], sys.argv[2]
    ctx = DistContext.from_env("cpu")
    data = load_data(f"imagefolder:{folder}", heldout_fraction=0.0, seed=0, loading="stream", image_size=12)
    loader = data.loader("train", 4, shuffle=True, drop_last=True, augment=True, seed=3, rank=ctx.rank,
                         world_size=ctx.world_size, workers=1)
    loader.set_epoch(1)
    xs, ys = zip(*loader)
    torch.manual_seed(0)
    net, _ = build_supernet(spec_for_data(SpaceSpec("tiny_cnn", groups=4), data))
    batches = [data.train.x[list(range(5 * b, 5 * b + 5))] for b in range(6)]
    config = {u.name: u.choices[1] for u in net.space.units}
    # this rank's share of the batches; the sums are reduced over both ranks
    net.calibrate_bn(batches[ctx.rank::ctx.world_size], config, reduce=ctx.all_reduce_sum)
    bn = {k: v.clone() for k, v in net.model.state_dict().items() if "running" in k}
    torch.save({"indices": [i for i, _ in loader.sampler], "x": torch.cat(xs), "y": torch.cat(ys), "bn": bn},
               os.path.join(out, f"rank{ctx.rank}.pt"))
    ctx.close()
    """
)


def _torchrun() -> str:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    return torchrun


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    write_jpeg_folder(root, per_class=10)
    return root


def test_two_process_loader_shards_and_calibration_equal_one_process(folder, tmp_path):
    from widthsearch.data import load_data
    from widthsearch.space.spec import SpaceSpec, build_supernet
    from widthsearch.training.skeleton import spec_for_data

    script = tmp_path / "two.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node=2", str(script), str(folder), str(tmp_path)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    # one process, the same epoch: the two ranks took alternate images of its order, each image
    # with the same crop (its randomness belongs to the image and the epoch, not the process)
    data = load_data(f"imagefolder:{folder}", heldout_fraction=0.0, seed=0, loading="stream", image_size=12)
    single = data.loader("train", 30, shuffle=True, drop_last=True, augment=True, seed=3, workers=0)
    single.set_epoch(1)
    order = [i for i, _ in single.sampler]
    (x_all, y_all), = list(single)
    assert ranks[0]["indices"] == order[0::2] and ranks[1]["indices"] == order[1::2]
    for r in (0, 1):
        assert torch.equal(ranks[r]["x"], x_all[r::2][: len(ranks[r]["x"])])
        assert torch.equal(ranks[r]["y"], y_all[r::2][: len(ranks[r]["y"])])

    # BN calibration over all six batches in one process equals the two halves reduced
    torch.manual_seed(0)
    net, _ = build_supernet(spec_for_data(SpaceSpec("tiny_cnn", groups=4), data))
    batches = [data.train.x[list(range(5 * b, 5 * b + 5))] for b in range(6)]
    config = {u.name: u.choices[1] for u in net.space.units}
    net.calibrate_bn(batches, config)
    one = {k: v.clone() for k, v in net.model.state_dict().items() if "running" in k}
    for r in (0, 1):
        for key, value in one.items():
            assert torch.allclose(ranks[r]["bn"][key], value, rtol=1e-5, atol=1e-6), key
    # ... which a single rank's half alone does not give
    net.calibrate_bn(batches[0::2], config)
    half = {k: v for k, v in net.model.state_dict().items() if "running_var" in k}
    assert any(not torch.allclose(half[k], one[k], rtol=1e-5, atol=1e-6) for k in half)


def one_process_epoch_eval(kind, checkpoint: Path):
    """``(log entries, job)``: the per-epoch evaluation of a run's checkpoint redone in this one
    process (the same ``build`` and ``evaluate_epoch`` the run used, on the checkpointed weights)."""
    from widthsearch.data import load_run_data
    from widthsearch.training.checkpoint import load_checkpoint, load_state_checked
    from widthsearch.training.distributed import DistContext

    ckpt = load_checkpoint(checkpoint)
    args = dict(ckpt["args"])
    job = kind.build(args, load_run_data(args), DistContext(), ckpt)
    load_state_checked(job.model, ckpt["model"], str(checkpoint))
    return job.evaluate_epoch(), job


def _command() -> list[str]:
    """The installed ``widthsearch`` script when there is one (CI), else the same entry point."""
    found = shutil.which("widthsearch") or str(Path(sys.executable).with_name("widthsearch"))
    if Path(found).exists():
        return [found]
    return ["--no-python", sys.executable, "-c", "import sys; from widthsearch.cli.main import main; sys.exit(main())"]


def test_supernet_command_on_two_processes_resumes_on_one(folder, tmp_path):
    out = tmp_path / "sn"
    flags = ["supernet", "--model", "tiny_cnn", "--data", f"imagefolder:{folder}", "--stream", "--image-size", "12",
             "--groups", "4", "--batch-size", "8", "--calib-images", "8", "--heldout-fraction", "0.2",
             "--workers", "0", "--threads", "1", "--device", "cpu", "--epochs", "2", "--out", str(out), "--json"]
    launch = [_torchrun(), "--standalone", "--nproc_per_node=2", *_command(), *flags, "--stop-after", "1"]
    proc = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only rank 0 prints and writes
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and json.loads(lines[0])["world_size"] == 2
    from widthsearch.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / "supernet.pt")
    assert ckpt["epoch"] == 1 and ckpt["world_size"] == 2 and (out / "heldout.txt").is_file()
    # the logged held-out scores, each rank calibrating and scoring its share, are one process's
    from widthsearch.training.slimmable import SUPERNET_TRAINING

    row = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    alone, _ = one_process_epoch_eval(SUPERNET_TRAINING, out / "supernet.pt")
    for name in ("max", "min"):
        assert row[f"{name}_acc"] == alone[f"{name}_acc"]
        assert abs(row[f"{name}_loss"] - alone[f"{name}_loss"]) <= 1e-6
    # the second epoch on one process: the global batch stays 8, the run goes on
    from widthsearch.cli.main import main

    assert main(["supernet", "--resume", "--out", str(out), "--threads", "1", "--workers", "0", "--json"]) == 0
    ckpt = load_checkpoint(out / "supernet.pt")
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 1
