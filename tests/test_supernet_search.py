"""`widthsearch search --algo ...` on a tiny trained supernet: outputs, resume after a kill, refusals."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from widthsearch.cli.main import main
from widthsearch.errors import UserError
from widthsearch.methods import supernet_search as ss
from widthsearch.methods.supernet_search import STATE_FILE, search_meta, search_supernet, target_value
from widthsearch.training.evaluate import supernet_evaluator
from widthsearch.training.slimmable import load_supernet
from helpers.kills import Killed, kill_9, start_cli, wait_until

SMALL = {  # a few dozen evaluations: enough to cross generations, quick on 300 images
    "evolution": {"population": 6, "mutations": 3, "crossovers": 3, "iterations": 4, "seed": 3},
    "random": {"max_evals": 15, "seed": 3},
    "greedy": {},
}
SMALL_FLAGS = {
    "evolution": ["--population", "6", "--generations", "4", "--seed", "3"],
    "random": ["--max-evals", "15", "--seed", "3"],
    "greedy": [],
}


@pytest.fixture(scope="module")
def scored(supernet_dir):
    """(net, meta, evaluator on 300 held-out images with batch BN)."""
    net, meta = load_supernet(supernet_dir)
    evaluator, _ = supernet_evaluator(net, meta, "batch", 300)
    return net, meta, evaluator


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def search_argv(ckpt, out, algo, *extra, target="flops=0.5"):
    return ["search", "--checkpoint", ckpt, "--algo", algo, "--target", target, "--search-images", "300",
            *SMALL_FLAGS[algo], "--out", out, *extra]


def outputs(out: Path) -> dict:
    """Everything a search leaves that must not depend on whether it was interrupted."""
    summary = json.loads((out / "search.json").read_text())
    files = {p.name: p.read_text() for p in sorted((out / "configs").iterdir())}
    for name in ("history.csv", "trajectory.csv"):
        if (out / name).exists():
            files[name] = (out / name).read_text()
    state = json.loads((out / STATE_FILE).read_text())
    strip = lambda s: json.loads(json.dumps(s).replace(str(out), "OUT"))  # noqa: E731
    return {"summary": strip(summary), "files": files, "state": state["state"]}


# ---- every algorithm writes configs like greedy ----------------------------------------------------
@pytest.mark.parametrize("algo", ["evolution", "random"])
def test_sampling_searches_write_a_config_like_greedy(supernet_dir, tmp_path, capsys, algo):
    out = tmp_path / algo
    code, stdout, err = cli(capsys, *search_argv(supernet_dir / "supernet.pt", out, algo, "--json"))
    assert code == 0, err
    summary = json.loads(stdout)
    (found,) = summary["found"]
    assert summary["algo"] == algo and summary["bn"] == "batch"
    doc = yaml.safe_load(open(found["config"]))
    assert Path(found["config"]).parent == out / "configs"
    assert doc["model"] == "tiny_cnn" and doc["supernet"] == str(supernet_dir / "supernet.pt")
    assert doc["target"] == f"flops<={found['value']:g}" and doc["heldout_accuracy"] == found["heldout_accuracy"]
    assert doc["flops"] == found["flops"] <= found["value"]
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["evaluations"]
    assert max(float(r.split(",")[3]) for r in rows[1:]) == pytest.approx(found["heldout_accuracy"], abs=1e-6)
    if algo == "evolution":
        assert summary["stop_reason"] == "iterations" and summary["generations"] == 4
    else:
        assert summary["evaluations"] == 15 and summary["stop_reason"] == "max_evals"
    assert (out / "widths.png").stat().st_size > 0


# ---- resume after a kill --------------------------------------------------------------------------
@pytest.mark.parametrize("algo, kill_at", [("evolution", 9), ("evolution", 13), ("random", 6), ("greedy", 8)])
def test_killed_search_resumes_to_the_identical_result(scored, supernet_dir, tmp_path, algo, kill_at):
    net, meta, evaluator = scored
    kw = dict(meta=search_meta(meta), algo=algo, options=SMALL[algo], scoring={"bn": "batch"}, progress=False)
    search_supernet(net, evaluator, ["flops=0.5"], tmp_path / "whole", **kw)

    calls = {"n": 0}

    def dying(config):
        calls["n"] += 1
        if calls["n"] == kill_at:  # dies inside the kill_at-th evaluation, before its state is saved
            raise Killed
        return evaluator(config)

    with pytest.raises(Killed):
        search_supernet(net, dying, ["flops=0.5"], tmp_path / "killed", **kw)
    saved = json.loads((tmp_path / "killed" / STATE_FILE).read_text())
    assert not saved["state"]["done"] and not (tmp_path / "killed" / "search.json").exists()
    if algo != "greedy":
        assert len(saved["state"]["history"]) == kill_at - 1  # the state is written after every evaluation
    with pytest.raises(UserError, match="--resume"):  # restarting without resume must not clobber it
        search_supernet(net, evaluator, ["flops=0.5"], tmp_path / "killed", **kw)
    search_supernet(net, evaluator, ["flops=0.5"], tmp_path / "killed", resume=True, **kw)
    assert outputs(tmp_path / "killed") == outputs(tmp_path / "whole")


def test_kill_9_of_a_real_process_then_resume_gives_the_identical_result(supernet_dir, tmp_path, capsys):
    ckpt = supernet_dir / "supernet.pt"
    flags = ["--population", "8", "--generations", "6", "--seed", "1"]
    argv = ["search", "--checkpoint", ckpt, "--algo", "evolution", "--target", "flops=0.6",
            "--search-images", "1000", *flags]
    assert cli(capsys, *argv, "--out", tmp_path / "whole", "--json")[0] == 0

    killed = tmp_path / "killed"
    proc = start_cli([*argv, "--out", killed, "--json"], stderr=subprocess.PIPE)
    state_file, scored = killed / STATE_FILE, {"before kill": 0}

    def five_scored() -> bool:
        try:
            scored["before kill"] = len(json.loads(state_file.read_text())["state"]["history"])
        except (OSError, ValueError):
            pass  # not written yet
        return scored["before kill"] >= 5

    try:
        wait_until(five_scored, proc, f"5 evaluations in {state_file}", timeout=120)
    finally:
        kill_9(proc)
    scored_before_kill = scored["before kill"]
    left = json.loads(state_file.read_text())["state"]
    assert scored_before_kill >= 5 and not left["done"] and not (killed / "search.json").exists()
    code, _, err = cli(capsys, *argv, "--out", killed, "--resume", "--json")
    assert code == 0, err
    assert outputs(killed) == outputs(tmp_path / "whole")


# ---- resume refusals ------------------------------------------------------------------------------
def snapshot(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture()
def own_checkpoint(supernet_dir, tmp_path):
    """A private copy of the supernet, free to be changed by a test."""
    path = tmp_path / "ckpt" / "supernet.pt"
    path.parent.mkdir()
    shutil.copy(supernet_dir / "supernet.pt", path)
    return path


@pytest.mark.parametrize("algo", ["greedy", "evolution"])
def test_resume_refuses_another_checkpoint_target_algorithm_or_option(own_checkpoint, supernet_dir, tmp_path,
                                                                      capsys, algo):
    out = tmp_path / "s"
    assert cli(capsys, *search_argv(own_checkpoint, out, algo, "--json"))[0] == 0
    before = snapshot(out)
    other = "random" if algo == "greedy" else "greedy"
    changed = tmp_path / "other.pt"  # another supernet at another path
    ckpt = torch.load(own_checkpoint, map_location="cpu", weights_only=False)
    first = next(iter(ckpt["model"]))
    torch.save({**ckpt, "model": {**ckpt["model"], first: ckpt["model"][first] + 0.01}}, changed)
    cases = [
        (search_argv(changed, out, algo, "--resume"), "ran on the supernet"),
        (search_argv(own_checkpoint, out, algo, "--resume", target="flops=0.4"), "targets"),
        (search_argv(own_checkpoint, out, other, "--resume"), "--algo"),
        (search_argv(own_checkpoint, out, algo, "--resume", "--bn", "calibrate"), "scored with"),
    ]
    if algo == "evolution":
        cases.append((search_argv(own_checkpoint, out, algo, "--resume", "--seed", "4"), "seed"))
    for argv, message in cases:
        code, _, err = cli(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
        assert snapshot(out) == before, argv  # nothing overwritten

    # same path, other content (the supernet was trained further, say): refused too
    ckpt = torch.load(own_checkpoint, map_location="cpu", weights_only=False)
    first = next(iter(ckpt["model"]))
    ckpt["model"][first] = ckpt["model"][first] + 0.01
    torch.save(ckpt, own_checkpoint)
    code, _, err = cli(capsys, *search_argv(own_checkpoint, out, algo, "--resume"))
    assert code == 2 and "has changed" in err and err.count("\n") == 1
    assert snapshot(out) == before
    # the same command with --resume is accepted and changes nothing of the finished result; so is
    # the same supernet under another path (a run folder moved for a GPU lease)
    shutil.copy(supernet_dir / "supernet.pt", own_checkpoint)
    for checkpoint in (own_checkpoint, supernet_dir / "supernet.pt"):
        assert cli(capsys, *search_argv(checkpoint, out, algo, "--resume"))[0] == 0
        assert json.loads((out / "search.json").read_text())["found"] == json.loads(before[Path("search.json")])["found"]


def test_a_state_without_fingerprint_is_refused(supernet_dir, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / STATE_FILE).write_text(json.dumps({"algorithm": "greedy", "version": 1, "units": []}))
    code, _, err = cli(capsys, *search_argv(supernet_dir / "supernet.pt", out, "greedy", "--resume"))
    assert code == 2 and "older widthsearch" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "nope"], "unknown search algorithm 'nope'; choose one of: greedy, evolution, random"),
        (["--algo", "evolution", "--target", "flops=0.3"], "one target at a time"),
        (["--algo", "random", "--target", "params=0.3"], "one target at a time"),
        (["--algo", "greedy", "--population", "10"], "--population does not apply to --algo greedy"),
        (["--algo", "random", "--generations", "3"], "--generations does not apply to --algo random"),
        (["--algo", "evolution", "--target", "latency_ms=50%"], "absolute milliseconds"),
    ],
)
def test_search_mistakes_are_one_line_errors(supernet_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "search", "--checkpoint", supernet_dir / "supernet.pt", "--target", "flops=0.5",
                       *argv, "--out", out)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


# ---- latency targets are absolute milliseconds -----------------------------------------------------
def test_latency_target_is_absolute_milliseconds():
    assert target_value("latency_ms", "0.5", lambda: 2.75) == 0.5  # was read as 0.5 x max latency
    assert target_value("latency_ms", "4", lambda: 2.75) == 4.0
    assert target_value("flops", "0.5", lambda: 300.0) == 150.0  # fractions stay for flops/params
    assert target_value("params", "25%", lambda: 400.0) == 100.0
    with pytest.raises(UserError, match="absolute milliseconds"):
        target_value("latency_ms", "50%", lambda: 2.75)


def test_latency_search_meets_an_absolute_target(supernet_dir, tmp_path, capsys, monkeypatch):
    """Latency is measured for real in use; here a deterministic stand-in (2 ms at the max config,
    proportional to FLOPs) checks that latency_ms=0.5 means 0.5 ms end to end."""
    def fake_latency(net, input_shape, runs=10):
        max_flops = net.space.cost(net.space.max_config()).flops
        return lambda config: 2.0 * net.space.cost(config).flops / max_flops

    monkeypatch.setattr(ss, "latency_cost", fake_latency)
    net, _ = load_supernet(supernet_dir)
    latency = fake_latency(net, None)
    for algo in ("greedy", "random"):
        code, out, err = cli(capsys, *search_argv(supernet_dir / "supernet.pt", tmp_path / algo, algo, "--json",
                                                  target="latency_ms=0.5"))
        assert code == 0, err
        (found,) = json.loads(out)["found"]
        assert (found["metric"], found["value"], found["target"]) == ("latency_ms", 0.5, "latency_ms-0.5")
        doc = yaml.safe_load(open(found["config"]))
        assert doc["target"] == "latency_ms<=0.5" and latency(doc["channels"]) <= 0.5
