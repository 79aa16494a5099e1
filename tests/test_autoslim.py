"""AutoSlim search on a real (tiny) supernet: outputs, resume after a kill, the `run` command."""
import csv
import json
import shutil

import pytest
import yaml

from widthsearch.cli.main import main
from widthsearch.training.evaluate import supernet_evaluator
from widthsearch.errors import UserError
from widthsearch.methods.autoslim import greedy_search
from widthsearch.methods.supernet_search import search_meta
from widthsearch.training.slimmable import load_supernet
from helpers.kills import Killed

# supernet_dir: a tiny trained supernet, shared by the test files (conftest.py)

def test_search_writes_configs_trajectory_and_plots(supernet_dir, tmp_path, capsys):
    out = tmp_path / "search"
    code = main(["search", "--checkpoint", str(supernet_dir / "supernet.pt"), "--target", "flops=0.6",
                 "--target", "params=0.3", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert [f["metric"] for f in summary["found"]] == ["flops", "params"]
    for found in summary["found"]:
        doc = yaml.safe_load(open(found["config"]))
        assert doc["model"] == "tiny_cnn" and doc["flops"] == found["flops"]
        assert found[found["metric"]] <= found["value"]
    rows = list(csv.DictReader(open(out / "trajectory.csv")))
    assert int(rows[0]["flops"]) > int(rows[-1]["flops"])
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "widths.png").stat().st_size > 0
    assert main(["status", str(out), "--json"]) == 0  # a search folder alone is a run status can read
    status = json.loads(capsys.readouterr().out)
    assert status["searches"] == [{"path": ".", "finished": True, "algorithm": "greedy", "running": False}]
    code = main(["search", "--checkpoint", str(supernet_dir / "supernet.pt"), "--target", "flops=0.6", "--out", str(out)])
    assert code == 2  # an existing search is never overwritten


def test_accuracy_plot_draws_each_arms_means_in_flops_order_and_every_seed(tmp_path, monkeypatch):
    from widthsearch import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to look at what it drew
    series = [("searched", [(20e6, [0.80, 0.84]), (10e6, [0.70, 0.72])]), ("uniform", [(10e6, [0.69, 0.69])])]
    path = plots.plot_accuracy_vs_flops(series, tmp_path / "accuracy.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figures[0].axes
    means = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines
             if not line.get_label().startswith("_")}
    assert means["searched"][0] == [10.0, 20.0] and means["searched"][1] == pytest.approx([71.0, 82.0])
    assert means["uniform"] == ([10.0], [pytest.approx(69.0)])
    seeds = sorted(y for line in ax.lines if line.get_label().startswith("_") for y in line.get_ydata())
    assert seeds == pytest.approx([69.0, 69.0, 70.0, 72.0, 80.0, 84.0])


def test_search_target_below_the_minimum_is_a_user_error(supernet_dir, tmp_path, capsys):
    code = main(["search", "--checkpoint", str(supernet_dir / "supernet.pt"), "--target", "flops=10",
                 "--out", str(tmp_path / "s")])
    assert code == 2 and "below the smallest config" in capsys.readouterr().err


def test_search_resumed_after_a_kill_equals_an_uninterrupted_search(supernet_dir, tmp_path):
    net, meta = load_supernet(supernet_dir)
    evaluator, _ = supernet_evaluator(net, meta, "batch", 300)
    targets = ["flops=0.7", "flops=0.4"]
    whole = greedy_search(net, evaluator, targets, tmp_path / "whole", meta=search_meta(meta), progress=False)

    calls = {"n": 0}

    def dying(config):
        calls["n"] += 1
        if calls["n"] > 7:
            raise Killed
        return evaluator(config)

    with pytest.raises(Killed):
        greedy_search(net, dying, targets, tmp_path / "killed", meta=search_meta(meta), progress=False)
    with pytest.raises(UserError):  # restarting without --resume must not clobber the saved state
        greedy_search(net, evaluator, targets, tmp_path / "killed", meta=search_meta(meta), progress=False)
    resumed = greedy_search(net, evaluator, targets, tmp_path / "killed", meta=search_meta(meta), resume=True,
                            progress=False)
    strip = lambda s: [(f["target"], f["flops"], f["heldout_accuracy"]) for f in s["found"]]  # noqa: E731
    assert strip(resumed) == strip(whole)
    assert (tmp_path / "killed" / "trajectory.csv").read_text() == (tmp_path / "whole" / "trajectory.csv").read_text()


def test_run_command_end_to_end_on_a_reduced_setting(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--epochs", "1", "--retrain-epochs", "1", "--targets", "0.5", "--groups", "4",
                 "--threads", "1", "--seeds", "3,4", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["targets"]
    assert row["flops"] <= row["target_flops"]
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["uniform_accuracy"] <= 1
    c = row["comparison"]
    for seed, acc in zip((3, 4), c["found"]["values"]):  # every seed's net, scored as its own training scored it
        trained = json.loads((out / "retrain" / row["target"] / f"seed-{seed}" / "result.json").read_text())
        assert trained["accuracy"] == pytest.approx(acc)
    assert row["accuracy"] == pytest.approx(sum(c["found"]["values"]) / 2)
    assert c["delta"] == pytest.approx(row["accuracy"] - row["uniform_accuracy"])
    assert c["t_interval"][0] <= c["delta"] <= c["t_interval"][1] and c["verdict"] in report_verdicts()
    report = (out / "report.md").read_text()
    assert "| target | FLOPs |" in report and row["target"] in report and c["verdict"] in report
    assert "seeds 3, 4" in report and f"{c['test_images']} test images" in report
    saved = json.loads((out / "report.json").read_text())
    assert saved["targets"][0]["comparison"] == c and result["report_json"] == str(out / "report.json")
    assert "![retrained accuracy against FLOPs](accuracy.png)" in report and saved["plot"] == result["plot"] == str(out / "accuracy.png")
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["run", "--out", str(out)]) == 2  # a finished run is never overwritten


def report_verdicts():
    return {"no significant difference", "searched better", "baseline better"}


def test_methods_are_registered_by_name():
    from widthsearch.methods import METHODS, method
    from widthsearch.methods.autoslim import run_autoslim

    assert METHODS["autoslim"] is run_autoslim and method("autoslim") is run_autoslim
    with pytest.raises(UserError, match="unknown method 'x'; choose one of: autoslim"):
        method("x")


def test_a_run_moved_to_another_folder_resumes_there_to_the_same_report(tmp_path, capsys):
    """A run packed for a GPU lease is unpacked under another path: the search's saved supernet
    path and found configs must follow the folder."""
    first, moved = tmp_path / "first", tmp_path / "lease" / "run"
    args = ["run", "--epochs", "1", "--retrain-epochs", "1", "--targets", "0.5", "--groups", "4", "--threads", "1",
            "--seeds", "3,4"]
    assert main([*args, "--out", str(first)]) == 0
    report = (first / "report.md").read_text()
    shutil.move(first, moved)
    for name in ("report.md", "report.json", "accuracy.png"):
        (moved / name).unlink()
    (target,) = [p for p in (moved / "retrain").iterdir() if not p.name.startswith("uniform")]
    shutil.rmtree(target / "seed-4")  # a retraining still to do: it reads the found config
    assert main([*args, "--out", str(moved), "--resume"]) == 0, capsys.readouterr().err
    assert (moved / "report.md").read_text().replace(str(moved), "RUN") == report.replace(str(first), "RUN")


def test_a_finished_search_resumes_without_its_supernet_or_finished_trainings_weights(tmp_path, capsys, monkeypatch):
    """The retraining needs only the found configs: a run folder kept without its checkpoints (*.pt)
    finishes from supernet/result.json, search/ and the finished trainings' result.json, to the same
    report, without loading or training a supernet."""
    import widthsearch.training.slimmable as slimmable

    first, kept = tmp_path / "first", tmp_path / "kept"
    args = ["run", "--epochs", "1", "--retrain-epochs", "1", "--targets", "0.5", "--groups", "4", "--threads", "1",
            "--seeds", "3,4"]
    assert main([*args, "--out", str(first)]) == 0
    report = (first / "report.md").read_text()
    shutil.copytree(first, kept, ignore=shutil.ignore_patterns("*.pt", "report.*", "accuracy.png"))
    (target,) = [p for p in (kept / "retrain").iterdir() if not p.name.startswith("uniform")]
    shutil.rmtree(target / "seed-4")  # a retraining still to do: it reads the found config

    def no_supernet(*args, **kwargs):
        raise AssertionError("the supernet was loaded or trained")

    monkeypatch.setattr(slimmable, "load_supernet", no_supernet)
    monkeypatch.setattr(slimmable, "train_supernet", no_supernet)
    capsys.readouterr()
    # other settings than the saved run's are refused, as they are with the checkpoint
    assert main([*args[:2], "2", *args[3:], "--out", str(kept), "--resume"]) == 2
    assert "--epochs 2 differs from the saved run's 1" in capsys.readouterr().err
    assert main([*args, "--out", str(kept), "--resume"]) == 0, capsys.readouterr().err
    assert "the supernet checkpoint is not needed" in capsys.readouterr().out
    assert (kept / "report.md").read_text().replace(str(kept), "RUN") == report.replace(str(first), "RUN")


def test_an_unfinished_search_without_its_supernet_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--epochs", "1", "--retrain-epochs", "1", "--targets", "0.5", "--groups", "4", "--threads", "1",
            "--seeds", "3", "--out", str(out)]
    assert main(args) == 0
    for name in ("search/search.json", "supernet/supernet.pt", "report.md"):
        (out / name).unlink()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "supernet.pt is gone and the search has not finished" in err and "Traceback" not in err


def test_the_cheapest_targets_trainings_run_first_and_the_report_keeps_the_search_order(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--epochs", "1", "--retrain-epochs", "1", "--targets", "0.75,0.4", "--groups", "4",
                 "--threads", "1", "--seeds", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    trained = [line.split(":")[0].strip() for line in printed.splitlines() if "trained)" in line]
    found = json.loads((out / "report.json").read_text())["targets"]
    big, small = sorted(found, key=lambda r: -r["flops"])
    assert trained == [f"{small['target']}/seed-3", f"uniform-{small['target']}/seed-3",
                       f"{big['target']}/seed-3", f"uniform-{big['target']}/seed-3"]
    assert [r["target"] for r in found] == [big["target"], small["target"]]  # the search's order
