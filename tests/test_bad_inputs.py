"""Bad inputs across every command: each ends in exit code 2 with exactly one line on stderr, no
traceback, and leaves the working folder exactly as it was (every file's MD5, hidden files and
folders included).

The rows run in-process through ``widthsearch.cli.main.main`` inside one shared working folder that
holds what users point commands at: a trained supernet, a finished search, a config, a plain
state_dict, an exported file, a finished report, a plain file where a folder is expected, an empty
folder and a folder locked by a live run. The folder must survive every row unchanged, so a row that
writes anything before refusing fails here.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from widthsearch.cli.main import main
from widthsearch.runfolder import RunLock

CFG = "cfg.yaml"
SEARCH = ["search", "--checkpoint", "sn/supernet.pt", "--search-images", "50"]
SN = ["supernet", "--model", "tiny_cnn", "--epochs", "1", "--threads", "1"]

# (id, argv, a fragment of the one-line message)
ROWS = [
    # space
    ("space-model", ["space", "--model", "nope"], "unknown model"),
    ("space-groups", ["space", "--model", "tiny_cnn", "--groups", "0"], "--groups must be a positive integer"),
    ("space-divisor", ["space", "--model", "tiny_cnn", "--divisor", "0"], "--divisor must be a positive integer"),
    ("space-round-to", ["space", "--model", "tiny_cnn", "--round-to", "0"], "--round-to must be a positive"),
    ("space-width-nan", ["space", "--model", "tiny_cnn", "--width-mult", "nan"], "width_mult must be a positive"),
    # profile
    ("profile-runs", ["profile", "--model", "tiny_cnn", "--latency", "--runs", "0"], "--runs must be at least 1"),
    ("latency-table-passes", ["latency-table", "--model", "tiny_cnn", "--passes", "0", "--out", "lut.json"],
     "--passes must be at least 1"),
    ("profile-input", ["profile", "--model", "tiny_cnn", "--input", "3x8x8"], "bad input shape"),
    ("profile-config-file", ["profile", "--model", "tiny_cnn", "--channels", "afile"], "expected a mapping"),
    ("profile-classes", ["profile", "--model", "tiny_cnn", "--num-classes", "0"], "num_classes must be a positive"),
    # supernet
    ("supernet-out-file", [*SN, "--out", "afile"], "--out afile is a file"),
    ("supernet-out-below-file", [*SN, "--out", "afile/sub"], "lies below the file afile"),
    ("supernet-one-sample", [*SN, "--num-samples", "1", "--out", "new"], "at least 2 for --strategy autoslim"),
    ("supernet-bcnet-samples", [*SN, "--strategy", "bcnet", "--num-samples", "3", "--out", "new"],
     "does not apply to --strategy bcnet"),
    ("supernet-resume-missing", ["supernet", "--resume", "--out", "missing"], "missing does not exist"),
    ("supernet-resume-empty", ["supernet", "--resume", "--out", "emptydir"], "emptydir is empty"),
    ("supernet-resume-no-ckpt", ["supernet", "--resume", "--out", "srch"], "no checkpoint srch/supernet.pt"),
    ("supernet-exists", [*SN, "--out", "sn"], "already exists"),
    ("supernet-resume-other-lr", ["supernet", "--resume", "--out", "sn", "--lr", "0.5"], "differs from the checkpoint"),
    ("supernet-data", [*SN, "--data", "fake:0", "--out", "new"], "fake data spec"),
    ("supernet-nan", [*SN, "--lr", "1e6", "--out", "new"],
     "loss became"),
    ("supernet-locked", [*SN, "--out", "busy"], "is in use by process"),
    # data that cannot be read: a pickle that names a function to call, a corrupt archive, a broken image
    ("supernet-cifar-pickle", [*SN, "--data", "cifar10:evil", "--out", "new"], "getcwd, and a CIFAR batch holds only"),
    ("supernet-corrupt-tar", [*SN, "--data", "cifar10:bad.tar.gz", "--out", "new"], "cannot open archive bad.tar.gz"),
    ("supernet-corrupt-image", [*SN, "--data", "imagefolder:imgs", "--out", "new"], "cannot decode image"),
    # search
    ("search-out-file", [*SEARCH, "--target", "flops=0.5", "--out", "afile"], "--out afile is a file"),
    ("search-images", [*SEARCH, "--target", "flops=0.5", "--search-images", "0", "--out", "new"],
     "--search-images must be a positive integer"),
    ("search-target", [*SEARCH, "--target", "flops=abc", "--out", "new"], "invalid budget 'abc'"),
    ("search-resume-missing", [*SEARCH, "--target", "flops=0.5", "--resume", "--out", "missing"], "does not exist"),
    ("search-checkpoint", ["search", "--checkpoint", "afile", "--target", "flops=0.5", "--out", "new"],
     "cannot read checkpoint afile"),
    ("search-population", [*SEARCH, "--algo", "evolution", "--population", "0", "--target", "flops=0.5", "--out",
                           "new"], "population must be at least 1"),
    ("search-resume-other-target", [*SEARCH, "--target", "flops=0.3", "--resume", "--out", "srch"],
     "resume with the same targets"),
    ("search-exists", [*SEARCH, "--target", "flops=0.5", "--out", "srch"], "already holds a search"),
    # train
    ("train-out-file", ["train", "--model", "tiny_cnn", "--out", "afile"], "--out afile is a file"),
    ("train-resume-missing", ["train", "--resume", "--out", "missing"], "missing does not exist"),
    ("train-duplicate-configs", ["train", "--channels", CFG, CFG, "--epochs", "1", "--out", "new"],
     "hold the same sub-network"),
    ("train-config-model", ["train", "--channels", CFG, "--model", "resnet20", "--out", "new"], "written for model"),
    ("train-uniform-flops", ["train", "--model", "tiny_cnn", "--uniform-flops", "abc", "--out", "new"],
     "cannot read 'abc'"),
    # export
    ("export-state-dict", ["export", "--checkpoint", "full.pt", "--model", "resnet20", "--channels", CFG, "--out",
                           "x.pt"], "missing key(s): stem.0.weight"),
    ("export-exists", ["export", "--checkpoint", "sn/supernet.pt", "--channels", CFG, "--out", "static.pt"],
     "already exists"),
    ("export-checkpoint", ["export", "--checkpoint", "afile", "--channels", CFG, "--out", "x.pt"], "cannot read"),
    ("export-no-config", ["export", "--checkpoint", "sn/supernet.pt", "--out", "x.pt"], "give the --channels"),
    # run
    ("run-out-file", ["run", "--out", "afile"], "--out afile is a file"),
    ("run-search-images", ["run", "--search-images", "0", "--out", "new"], "--search-images must be a positive"),
    ("run-retrain-epochs", ["run", "--retrain-epochs", "0", "--out", "new"], "--retrain-epochs must be a positive"),
    ("run-method", ["run", "--method", "annealing", "--out", "new"], "unknown method 'annealing'"),
    ("run-jobs", ["run", "--jobs", "0", "--out", "new"], "--jobs must be a positive integer"),
    ("run-spnet-jobs", ["run", "--method", "spnet", "--jobs", "-1", "--out", "new"], "--jobs must be a positive integer"),
    ("run-resume-missing", ["run", "--resume", "--out", "missing"], "missing does not exist"),
    ("run-not-empty", ["run", "--out", "sn"], "sn is not empty"),
    ("run-spnet-seeds", ["run", "--method", "spnet", "--seeds", "1,1", "--out", "new"], "give distinct"),
    ("run-spnet-targets", ["run", "--method", "spnet", "--targets", "0.5", "--out", "new"], "at least two"),
    # adjust
    ("adjust-out-file", ["adjust", "--out", "afile"], "--out afile is a file"),
    ("adjust-rounds", ["adjust", "--rounds", "0", "--out", "new"], "--rounds must be a positive integer"),
    ("adjust-epochs", ["adjust", "--epochs", "0", "--out", "new"], "--epochs must be a positive integer"),
    ("adjust-resume-missing", ["adjust", "--resume", "--out", "missing"], "missing does not exist"),
    ("adjust-model", ["adjust", "--model", "nope", "--out", "new"], "unknown model"),
    # spnet
    ("spnet-out-file", ["spnet", "--out", "afile"], "--out afile is a file"),
    ("spnet-bases", ["spnet", "--bases", "0", "--out", "new"], "every width must be positive"),
    ("spnet-targets", ["spnet", "--targets", "abc", "--out", "new"], "expected FLOPs"),
    ("spnet-epochs", ["spnet", "--base-epochs", "0", "--out", "new"], "--base-epochs must be a positive"),
    ("spnet-resume-missing", ["spnet", "--resume", "--out", "missing"], "missing does not exist"),
    # bench
    ("bench-report-file", ["bench", "cbm", "--space", "mobilenet", "--report", "afile"], "--report afile is a file"),
    ("bench-report-exists", ["bench", "cbm", "--space", "mobilenet", "--report", "rep"], "rep/report.md already exists"),
    ("bench-plot-exists", ["bench", "cbm", "--space", "mobilenet", "--scores", "afile", "--plot", "plot.png"],
     "plot.png already exists"),
    ("bench-max-evals", ["bench", "cbm", "--space", "mobilenet", "--max-evals", "0"], "--max-evals must be at least 1"),
    ("bench-compare", ["bench", "cbm", "--space", "mobilenet", "--compare", "flops"], "--compare needs --scores"),
    # status (reads a run folder, never writes)
    ("status-missing", ["status", "missing"], "missing does not exist"),
    ("status-file", ["status", "afile"], "afile is not a folder"),
    ("status-no-run", ["status", "emptydir"], "holds no widthsearch training, search or report"),
]


def snapshot(root: Path) -> dict[str, str]:
    """MD5 of every file under ``root`` and a marker for every folder (hidden ones included)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        state[rel] = "dir" if path.is_dir() else hashlib.md5(path.read_bytes()).hexdigest()
    return state


class _CallsAFunction:
    """Unpickling this calls ``os.getcwd`` (harmless, but a batch file may name any function)."""

    def __reduce__(self):
        return os.getcwd, ()


def _unreadable_data(root: Path) -> None:
    """``evil/``: CIFAR batches whose first one names a function; ``bad.tar.gz``: not an archive;
    ``imgs/``: an image folder whose one training image is not an image."""
    (root / "evil").mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / "evil" / name).write_bytes(pickle.dumps({"data": _CallsAFunction(), "labels": [0]}))
    (root / "bad.tar.gz").write_bytes(b"\x1f\x8b but not a gzip stream")
    for split in ("train", "test"):
        (root / "imgs" / split / "a").mkdir(parents=True)
        (root / "imgs" / split / "a" / "x.png").write_bytes(b"not a png")


@pytest.fixture(scope="module")
def work(tmp_path_factory, supernet_dir):
    """The shared working folder (see the module docstring); ``busy/`` is locked for the module."""
    from widthsearch.models import build_model
    from widthsearch.space import Supernet
    from widthsearch.space.config import save_config

    root = tmp_path_factory.mktemp("work")
    shutil.copytree(supernet_dir, root / "sn")
    (root / "afile").write_text("not a checkpoint, not a folder\n")
    (root / "emptydir").mkdir()
    (root / "rep").mkdir()
    (root / "rep" / "report.md").write_text("# an earlier report\n")
    (root / "plot.png").write_bytes(b"an earlier plot")
    (root / "static.pt").write_bytes(b"an earlier export")
    model = build_model("tiny_cnn")
    torch.save(model.state_dict(), root / "full.pt")
    net = Supernet(model, torch.randn(1, 1, 8, 8), groups=10)
    config = {u.name: u.choices[len(u.choices) // 2] for u in net.space.units}
    save_config(root / CFG, net.space, config, model="tiny_cnn", groups=10)
    _unreadable_data(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main([*SEARCH, "--target", "flops=0.5", "--out", "srch", "--json"]) == 0
        with RunLock(root / "busy"):
            yield root
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("argv, message", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(work, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(work)
    capsys.readouterr()
    before = snapshot(work)
    code = main(argv)
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert message in lines[0], lines[0]
    assert snapshot(work) == before


def test_the_table_covers_every_command():
    import argparse

    from widthsearch.cli.main import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {argv[0] for _, argv, _ in ROWS} == set(subcommands.choices)  # a new command needs its rows here
    assert len(ROWS) >= 40


def test_a_real_process_refuses_a_file_as_out_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "widthsearch", "supernet", "--model", "tiny_cnn", "--out", "afile"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2
    assert proc.stderr == "error: --out afile is a file, not a folder\n"


# ---- what a refusal keeps ----------------------------------------------------------------------
def test_a_nan_loss_in_a_later_epoch_keeps_the_last_checkpoint(supernet_dir, tmp_path, monkeypatch, capsys):
    import widthsearch.training.slimmable as slimmable

    run = tmp_path / "sn"
    shutil.copytree(supernet_dir, run)
    before = snapshot(run)
    monkeypatch.setattr(slimmable, "subnet_step", lambda *a, **k: {"losses": [float("nan")], "correct": 0})
    code = main(["supernet", "--resume", "--out", str(run), "--epochs", "2", "--json"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the note on the stretched schedule
    assert code == 2
    assert last.startswith("error: loss became nan at epoch 2 step 1 (lr ")
    assert last.endswith(f"): lower --lr; {run / 'supernet.pt'} still holds epoch 1")
    assert snapshot(run) == before


def test_resume_accepts_the_recorded_data_file_spelled_otherwise(tmp_path, monkeypatch):
    from widthsearch.errors import UserError
    from widthsearch.methods.run_state import load_run_state
    from widthsearch.training.loop import resolve_args

    (tmp_path / "data").mkdir()
    for name in ("a.tar.gz", "b.tar.gz"):
        (tmp_path / "data" / name).write_bytes(b"x")
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path / "runs")
    recorded = f"cifar10:{tmp_path / 'data' / 'a.tar.gz'}"
    defaults = {"data": "digits", "lr": 0.1}
    args = resolve_args({"data": "cifar10:../data/a.tar.gz"}, defaults, {"data": recorded, "lr": 0.1})
    assert args["data"] == "cifar10:../data/a.tar.gz"  # as given: valid from where the run is resumed
    with pytest.raises(UserError, match="--data cifar10:../data/b.tar.gz differs"):
        resolve_args({"data": "cifar10:../data/b.tar.gz"}, defaults, {"data": recorded, "lr": 0.1})
    with pytest.raises(UserError, match="differs"):
        resolve_args({"data": "imagefolder:../data/a.tar.gz"}, defaults, {"data": recorded, "lr": 0.1})

    state = tmp_path / "runs" / "state.json"
    state.write_text(json.dumps({"version": 1, "settings": {"data": recorded, "seed": 0}}))
    assert load_run_state(state, {"data": "cifar10:../data/a.tar.gz", "seed": 0}, version=1) is not None
    with pytest.raises(UserError, match="differs from the saved run"):
        load_run_state(state, {"data": "cifar10:../data/b.tar.gz", "seed": 0}, version=1)


def test_search_resumes_with_the_checkpoint_spelled_otherwise(work, tmp_path, monkeypatch, capsys):
    shutil.copytree(work / "sn", tmp_path / "sn")
    monkeypatch.chdir(tmp_path)
    argv = ["search", "--search-images", "50", "--target", "flops=0.5", "--out", "srch", "--json"]
    assert main([argv[0], "--checkpoint", "sn/supernet.pt", *argv[1:]]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([argv[0], "--checkpoint", str(tmp_path / "sn" / "supernet.pt"), *argv[1:], "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["found"] == first["found"]


def test_a_state_dict_mismatch_is_listed_in_one_line():
    from widthsearch.training.checkpoint import state_dict_mismatch

    model = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(2), "c.bias": torch.zeros(1)}
    given = {"a.weight": torch.zeros(8, 3), "b.weight": torch.zeros(2), "x": torch.zeros(1), "y": torch.zeros(1),
             "z": torch.zeros(1), "w": torch.zeros(1)}
    assert state_dict_mismatch(model, dict(model)) is None
    assert state_dict_mismatch(model, given) == (
        "1 missing key(s): c.bias; 4 unexpected key(s): x, y, z, +1 more; "
        "1 shape mismatch(es): a.weight 8x3 here, 4x3 in the model")
