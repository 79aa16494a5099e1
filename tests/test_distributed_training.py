"""Two processes under ``torchrun`` (gloo, CPU): evaluation shared out over the ranks equals one
process's; ``train`` and the joint training (``train --channels A B``) run as the installed command,
write from rank 0 only and resume on one process; the commands that run in one process refuse."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from test_distributed_stream import _command, _env, _torchrun, one_process_epoch_eval

pytestmark = pytest.mark.distributed

EVAL_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from widthsearch.data import load_data
    from widthsearch.space.spec import SpaceSpec, build_supernet
    from widthsearch.training.distributed import DistContext
    from widthsearch.training.evaluate import calibration_batches, evaluate_metrics, supernet_metrics
    from widthsearch.training.skeleton import spec_for_data

    torch.set_num_threads(1)
    out = sys.argv[1]
    ctx = DistContext.from_env("cpu")
    data = load_data("digits", heldout_fraction=0.1, seed=0)
    torch.manual_seed(0)
    net, _ = build_supernet(spec_for_data(SpaceSpec("tiny_cnn", groups=4), data))
    config = {u.name: u.choices[1] for u in net.space.units}
    x, y = data.heldout.x, data.heldout.y
    scored = []  # images of each forward pass in eval mode (scoring, not calibration)
    net.model.register_forward_pre_hook(lambda m, inp: None if m.training else scored.append(len(inp[0])))
    found = {"plain": evaluate_metrics(net, x, y, ctx=ctx), "plain_images": sum(scored)}
    six = calibration_batches(data.train.x, 600, batch_size=100, seed=1)   # 3 batches on each rank
    one = calibration_batches(data.train.x, 100, batch_size=100, seed=1)   # fewer batches than ranks
    for name, calib in (("six", six), ("one", one)):
        found[name] = supernet_metrics(net, config, x, y, calib=calib, ctx=ctx)
    torch.save(found, os.path.join(out, f"rank{ctx.rank}.pt"))
    ctx.close()
    """
)

# every Python process of the launch imports it: it records which rank moved a file into --out
# (every widthsearch write is a temporary file renamed into place with os.replace)
SPY = textwrap.dedent(
    """
    import os
    _out, _log, _replace = os.environ.get("SPY_OUT"), os.environ.get("SPY_LOG"), os.replace

    def _spying_replace(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if _out and os.path.abspath(str(dst)).startswith(_out):
            with open(os.path.join(_log, "rank%s.txt" % os.environ.get("RANK", "-")), "a") as handle:
                handle.write(os.path.basename(str(dst)) + "\\n")

    os.replace = _spying_replace
    """
)


def test_evaluation_shared_over_two_processes_equals_one_process(tmp_path):
    from widthsearch.data import load_data
    from widthsearch.space.spec import SpaceSpec, build_supernet
    from widthsearch.training.evaluate import calibration_batches, evaluate_metrics, supernet_metrics
    from widthsearch.training.skeleton import spec_for_data

    script = tmp_path / "eval.py"
    script.write_text(EVAL_SCRIPT)
    proc = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]

    data = load_data("digits", heldout_fraction=0.1, seed=0)
    torch.manual_seed(0)
    net, _ = build_supernet(spec_for_data(SpaceSpec("tiny_cnn", groups=4), data))
    config = {u.name: u.choices[1] for u in net.space.units}
    x, y = data.heldout.x, data.heldout.y
    alone = {"plain": evaluate_metrics(net, x, y)}
    for name, images in (("six", 600), ("one", 100)):
        alone[name] = supernet_metrics(net, config, x, y, calib=calibration_batches(data.train.x, images, 100, seed=1))
    # each rank scored its half of the images, and both report the numbers of all of them
    assert [r["plain_images"] for r in ranks] == [len(y) // 2, len(y) - len(y) // 2]
    assert ranks[0]["plain"]["images"] == len(y)
    for found in ranks:
        for name in ("plain", "six", "one"):
            assert found[name]["accuracy"] == alone[name]["accuracy"], name
            assert abs(found[name]["loss"] - alone[name]["loss"]) <= 1e-6, name
    # the calibration is the one of all six batches (half of them gives other statistics)
    half = supernet_metrics(net, config, x, y, calib=calibration_batches(data.train.x, 600, 100, seed=1)[0::2])
    assert abs(half["loss"] - alone["six"]["loss"]) > 1e-6


def _launch(tmp_path: Path, out: Path, flags: list[str]) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    """The installed command on 2 processes; returns the process and the files each rank wrote into ``out``."""
    spy = tmp_path / "spy"
    (spy / "log").mkdir(parents=True)
    (spy / "sitecustomize.py").write_text(SPY)
    env = _env()
    env.update(PYTHONPATH=f"{spy}:{env['PYTHONPATH']}", SPY_OUT=str(out.resolve()), SPY_LOG=str(spy / "log"))
    proc = subprocess.run([_torchrun(), "--standalone", "--nproc_per_node=2", *_command(), *flags],
                          env=env, capture_output=True, text=True, timeout=300)
    writes = {p.stem: p.read_text().split() for p in (spy / "log").iterdir()}
    return proc, writes


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


COMMON = ["--data", "digits", "--batch-size", "128", "--epochs", "2", "--threads", "1", "--device", "cpu", "--json"]


def test_train_on_two_processes_writes_on_rank0_and_resumes_on_one(tmp_path):
    from widthsearch.cli.main import main
    from widthsearch.training.checkpoint import load_checkpoint
    from widthsearch.training.retrain import NETWORK_TRAINING

    out = tmp_path / "net"
    flags = ["train", "--model", "tiny_cnn", "--width-mult", "0.5", *COMMON, "--out", str(out), "--stop-after", "1"]
    proc, writes = _launch(tmp_path, out, flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = _json_lines(proc.stdout)  # only rank 0 prints
    assert result["world_size"] == 2 and result["epochs_done"] == 1 and 0 <= result["accuracy"] <= 1
    assert set(writes) == {"rank0"} and {"model.pt", "log.jsonl", "result.json"} <= set(writes["rank0"])
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt["epoch"] == 1 and ckpt["world_size"] == 2
    # the held-out numbers the two ranks logged together are one process's on the same weights
    (row,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    alone, _ = one_process_epoch_eval(NETWORK_TRAINING, out / "model.pt")
    assert row["heldout_acc"] == alone["heldout_acc"]
    assert abs(row["heldout_loss"] - alone["heldout_loss"]) <= 1e-6

    assert main(["train", "--resume", "--out", str(out), "--threads", "1", "--json"]) == 0
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 1 and len(ckpt["history"]) == 2


def test_joint_training_on_two_processes_writes_on_rank0_and_resumes_on_one(tmp_path):
    from widthsearch.cli.main import main
    from widthsearch.space.config import save_config
    from widthsearch.space.spec import SpaceSpec, build_supernet
    from widthsearch.training.checkpoint import load_checkpoint
    from widthsearch.training.joint import JOINT_TRAINING

    net, spec = build_supernet(SpaceSpec("tiny_cnn", num_classes=10, input_shape=(1, 8, 8), groups=4))
    paths = [save_config(tmp_path / f"w{int(100 * f)}.yaml", net.space, net.space.uniform_config(f), model="tiny_cnn",
                         space=spec.to_dict()) for f in (1.0, 0.5)]
    out = tmp_path / "joint"
    # 512 calibration images: two batches of 256, one calibrated on each rank, the sums reduced
    flags = ["train", "--channels", *map(str, paths), "--calib-images", "512", *COMMON, "--out", str(out),
             "--stop-after", "1"]
    proc, writes = _launch(tmp_path, out, flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = _json_lines(proc.stdout)
    assert result["world_size"] == 2 and all(0 <= r["accuracy"] <= 1 for r in result["subnets"])
    assert set(writes) == {"rank0"} and {"joint.pt", "log.jsonl", "result.json"} <= set(writes["rank0"])
    (row,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    alone, job = one_process_epoch_eval(JOINT_TRAINING, out / "joint.pt")
    assert row["subnet_acc"] == alone["subnet_acc"] and len(row["subnet_acc"]) == 2
    assert all(abs(a - b) <= 1e-6 for a, b in zip(row["subnet_loss"], alone["subnet_loss"]))
    # each config's BN statistics in the checkpoint are those of all calibration images
    saved = load_checkpoint(out / "joint.pt")["states"]["subnet_bn"]["subnets"]
    for mine, theirs in zip(job.states["subnet_bn"].subnets, saved):
        for key, value in mine.items():
            assert torch.allclose(theirs[key], value, rtol=1e-5, atol=1e-6), key

    assert main(["train", "--resume", "--out", str(out), "--threads", "1", "--json"]) == 0
    ckpt = load_checkpoint(out / "joint.pt")
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 1


# data and checkpoint that are not there: without the refusal each would fail at once with another line
@pytest.mark.parametrize("argv", [["adjust", "--model", "resnet20", "--data", "cifar10:/nonexistent"],
                                  ["run", "--method", "autoslim", "--data", "cifar10:/nonexistent"],
                                  ["spnet", "--data", "cifar10:/nonexistent"],
                                  ["search", "--checkpoint", "x.pt", "--target", "flops=0.5"]])
def test_one_process_commands_refuse_torchrun(argv, tmp_path, monkeypatch, capsys):
    from widthsearch.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in every process it starts
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not run under torchrun" in err and "only supernet and train" in err
    assert not out.exists()  # refused before --out was made or locked
