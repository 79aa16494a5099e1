"""The retraining stage of `run`: one bisection per uniform network, one test pass per training,
the same numbers in worker processes (`--jobs`) as in this process, and a worker's error as one line."""
from __future__ import annotations

import pytest

import widthsearch.training.retrain as retrain_module
from widthsearch.data import load_data
from widthsearch.errors import UserError
from widthsearch.methods.retraining import Retraining, check_jobs, retrain_pairs, run_retrainings
from widthsearch.training.retrain import train_network

S = {"model": "tiny_cnn", "model_kwargs": None, "data": "digits", "retrain_epochs": 1, "batch_size": 128, "lr": 0.1,
     "threads": 1, "device": "cpu", "seeds": (0, 1)}
UNIFORM_FLOPS = 500_000.0
PAIRS = [(("half", {"width_mult": 0.5}), ("uniform", {"uniform_flops": UNIFORM_FLOPS}))]
#: result entries that measure the machine, not the training
TIMING = ("seconds", "img_per_s", "checkpoint")


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The pair retrained in this process, counting bisections and passes over the test images."""
    out = tmp_path_factory.mktemp("serial")
    test_images = len(load_data("digits", 0.0, 0, augment="none").test)
    calls = {"bisection": 0, "test_evaluate": 0, "test_correct": 0}
    real_bisection, real_evaluate, real_correct = (retrain_module.uniform_width_for_flops,
                                                   retrain_module.evaluate_metrics, retrain_module.correct_predictions)

    def bisection(*args, **kwargs):
        calls["bisection"] += 1
        return real_bisection(*args, **kwargs)

    def evaluate(model, x, y, *args, **kwargs):
        calls["test_evaluate"] += len(y) == test_images
        return real_evaluate(model, x, y, *args, **kwargs)

    def correct(model, x, y, *args, **kwargs):
        calls["test_correct"] += len(y) == test_images
        return real_correct(model, x, y, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrain_module, "uniform_width_for_flops", bisection)
        patch.setattr(retrain_module, "evaluate_metrics", evaluate)
        patch.setattr(retrain_module, "correct_predictions", correct)
        [result] = retrain_pairs(S, out, PAIRS, resume=False, progress=False)
    return out, result, calls


def test_the_uniform_net_is_found_once_and_each_training_scores_the_test_images_once(serial):
    out, (found, base, comparison), calls = serial
    assert calls == {"bisection": 1, "test_evaluate": 0, "test_correct": 4}  # 2 networks x 2 seeds
    assert [r["accuracy"] for r in found] == comparison["found"]["values"]
    assert [r["accuracy"] for r in base] == comparison["base"]["values"]
    assert all("test_correct" not in r for r in found + base)  # the answers went into the comparison
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("retrain/*/seed-*/model.pt")) == [
        "retrain/half/seed-0/model.pt", "retrain/half/seed-1/model.pt",
        "retrain/uniform/seed-0/model.pt", "retrain/uniform/seed-1/model.pt"]


def test_the_uniform_net_found_once_is_the_one_train_network_finds_itself(serial, tmp_path):
    _out, (_found, base, _comparison), _calls = serial
    recipe = {k: S[k] for k in ("model", "data", "batch_size", "lr", "threads", "device")}
    alone = train_network({**recipe, "epochs": S["retrain_epochs"], "seed": 1}, tmp_path / "alone",
                          uniform_flops=UNIFORM_FLOPS)
    assert alone["network"] == base[1]["network"] and alone["network"]["target_flops"] == UNIFORM_FLOPS
    assert _numbers(alone) == _numbers(base[1]) | {"args": alone["args"]}  # `run` keeps the recipe in result.json


def test_jobs_2_gives_the_numbers_of_jobs_1(serial, tmp_path):
    _out, (found, base, comparison), _calls = serial
    [(found2, base2, comparison2)] = retrain_pairs(S, tmp_path, PAIRS, resume=False, progress=False, jobs=2)
    assert comparison2 == comparison
    assert [_numbers(r) for r in found2 + base2] == [_numbers(r) for r in found + base]
    assert not list(tmp_path.rglob(".widthsearch.lock"))  # every worker released its folder


def test_a_failing_training_stops_the_others_and_is_one_line(tmp_path):
    recipe = {k: S[k] for k in ("model", "data", "batch_size", "lr", "threads", "device")}
    long = Retraining(tmp_path / "retrain" / "long" / "seed-0", {**recipe, "epochs": 500, "seed": 0}, {})
    bad = Retraining(tmp_path / "retrain" / "bad" / "seed-0", {**recipe, "epochs": 1, "seed": 0},
                     {"channels": tmp_path / "missing.yaml"})
    with pytest.raises(UserError, match=r"^bad/seed-0: .*missing\.yaml") as error:
        run_retrainings([long, bad], jobs=2, resume=False, progress=False)
    assert "\n" not in str(error.value)
    assert not (long.folder / "result.json").exists()
    assert not list(tmp_path.rglob(".widthsearch.lock"))  # stopped, and its lock released on the way out


@pytest.mark.parametrize("jobs", [0, -1, 1.5, "2", True])
def test_jobs_must_be_a_positive_integer(jobs):
    with pytest.raises(UserError, match="--jobs must be a positive integer"):
        check_jobs(jobs)


def test_a_uniform_width_found_for_another_model_is_refused(tmp_path):
    from widthsearch.training.retrain import UniformWidth

    recipe = {k: S[k] for k in ("model", "data", "batch_size", "lr", "threads", "device")}
    wrong = UniformWidth(target_flops=UNIFORM_FLOPS, width_mult=0.5, flops=12345)
    with pytest.raises(UserError, match="found for another model or data set"):
        train_network({**recipe, "epochs": 1, "seed": 0}, tmp_path / "t", uniform_flops=wrong)


def test_network_cost_counts_a_model_where_it_is():
    # a run resumed on a GPU counts a model that is already there; the "meta" device stands in for
    # it on a CPU-only machine (an example input left on the CPU fails on meta weights as on CUDA)
    from widthsearch.models import build_model
    from widthsearch.training.retrain import network_cost

    model = build_model("resnet20", num_classes=10)
    on_cpu = network_cost(model, (3, 32, 32))
    assert network_cost(model.to("meta"), (3, 32, 32)) == on_cpu == (40813184, 272474)


def test_compile_reaches_every_retraining_recipe_and_may_be_left_out(tmp_path):
    from widthsearch.methods.retraining import _plan

    pairs = [(("half", {"width_mult": 0.5}), ("full", {"width_mult": 1.0}))]
    compiled = _plan({**S, "compile": True}, tmp_path, pairs, S["seeds"], resume=False)
    assert len(compiled) == 4 and all(t.recipe["compile"] is True for t in compiled)
    # not given: None, which train_network reads as its default (eager)
    assert all(t.recipe["compile"] is None for t in _plan(S, tmp_path, pairs, S["seeds"], resume=False))


def test_a_finished_training_kept_without_its_checkpoint_is_taken_from_its_result(serial, tmp_path, monkeypatch):
    """A run folder kept or moved without its weights: the finished trainings' result.json (recipe
    and per-image answers) stand in for them, with the same comparison, and nothing is trained."""
    import shutil

    out, expected, _ = serial
    kept = tmp_path / "kept"
    shutil.copytree(out, kept, ignore=shutil.ignore_patterns("*.pt"))
    assert not list(kept.rglob("*.pt"))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished training was run again")

    monkeypatch.setattr(retrain_module, "train_network", no_training)
    [result] = retrain_pairs(S, kept, PAIRS, resume=True, progress=False)
    assert result[2] == expected[2]
    assert [_numbers(r) for r in result[0] + result[1]] == [_numbers(r) for r in expected[0] + expected[1]]
    with pytest.raises(UserError, match="--lr 0.05 differs from the checkpoint's 0.1"):
        retrain_pairs({**S, "lr": 0.05}, kept, PAIRS, resume=True, progress=False)


def test_a_kept_result_is_not_taken_for_more_epochs_or_without_its_answers(serial, tmp_path):
    import json

    from widthsearch.methods.retraining import kept_result

    out, _, _ = serial
    folder = out / "retrain" / "half" / "seed-0"
    recipe = {"model": "tiny_cnn", "data": "digits", "epochs": 1, "batch_size": 128, "lr": 0.1, "seed": 0}
    assert kept_result(Retraining(folder, recipe, {}))["accuracy"] > 0
    assert kept_result(Retraining(folder, {**recipe, "epochs": 2}, {})) is None  # goes on from its checkpoint
    saved = json.loads((folder / "result.json").read_text())
    partial = tmp_path / "seed-0"
    partial.mkdir()
    for drop in ("test_correct", "args"):  # `train` (no answers) or an older version (no recipe)
        (partial / "result.json").write_text(json.dumps({k: v for k, v in saved.items() if k != drop}))
        assert kept_result(Retraining(partial, recipe, {})) is None
    (partial / "result.json").write_text(json.dumps({**saved, "complete": False}))
    assert kept_result(Retraining(partial, recipe, {})) is None
