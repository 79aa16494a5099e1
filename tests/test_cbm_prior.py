"""Channel-Bench-Macro: evolution seeded by BCNetV2's prior from loss records, and the noisy oracle."""
import json
import random

import numpy as np
import pytest
import torch

from conftest import shared_path
from widthsearch.bench import cbm
from widthsearch.cli.main import main
from widthsearch.errors import UserError

torch.set_num_threads(1)


def tables_dir():
    return shared_path("channel_bench_macro", "Results_MobileNet.json").parent


@pytest.fixture(scope="module")
def bench():
    return cbm.CBMBench("mobilenet", tables_dir())


@pytest.fixture(scope="module")
def records_prior(bench):
    """One prior for the module: its fits are cached per (budget, seed), so tests share them."""
    return cbm.RecordsPrior(bench, fake_records(bench))


def fake_records(bench, n=100, seed=0):
    """Records whose losses fall with the width of the last unit: a prior fitted to them should
    prefer the widest head the FLOPs target allows."""
    rng = random.Random(seed)
    keys = ["".join(rng.choice("1234") for _ in range(7)) for _ in range(n)]
    records = [(2.0 - 0.1 * int(k[-1]) + 0.01 * rng.random(), bench.key_to_config(k)) for k in keys]
    return cbm.LossRecordsFile(sorted(records, key=lambda r: r[0]), "cbm_mobilenet", {"made": "by the test"})


def test_table_space_expected_flops_is_the_cores(bench):
    space = cbm.TableSpace(bench)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        probs = {u.name: torch.softmax(torch.randn(4, generator=gen, dtype=torch.float64), 0)
                 for u in bench.space.units}
        assert float(space.expected_flops(probs)) == pytest.approx(float(bench.space.expected_flops(probs)), rel=1e-12)
        # the prior fit's quadratic form (the core's) gives the table's expectation too
        flat = torch.cat([probs[u.name] for u in bench.space.units])
        assert float(space.expected_flops_quadratic()(flat)) == pytest.approx(float(space.expected_flops(probs)),
                                                                               rel=1e-12)
    one_hot = {u.name: torch.eye(4, dtype=torch.float64)[int(d) - 1] for u, d in zip(bench.space.units, "2344241")}
    assert float(space.expected_flops(one_hot)) == bench.flops(bench.key_to_config("2344241"))


def test_prior_from_records_file_seeds_a_unique_population_in_the_window(bench, records_prior, tmp_path):
    path = cbm.save_records(tmp_path / "records.json", fake_records(bench))
    loaded = cbm.load_records(path)
    assert len(loaded.records) == 100 and loaded.model == "cbm_mobilenet"
    assert [r[0] for r in loaded.records] == sorted(r[0] for r in loaded.records)
    assert loaded.records == records_prior.records
    prior = cbm.RecordsPrior(bench, loaded)
    budget = bench.budget_flops(0.5)
    seeded = prior.seeding(budget, seed=3, population=50, lower=0.8)
    population = seeded["initial_population"]
    keys = [bench.config_to_key(c) for c in population]
    assert len(keys) == 50 and len(set(keys)) == 50
    assert all(0.8 * budget <= bench.flops(c) <= budget for c in population)
    # the records' loss falls with the head's width: the prior puts more on the wider heads than
    # the same fit with every loss equal (the random init dominates both: see docs/methods/bcnet.md)
    flat = cbm.RecordsPrior(bench, loaded, flat=True).seeding(budget, seed=3, population=50, lower=0.8)
    head, head_flat = (s["prior"][bench.genome.names[-1]] for s in (seeded, flat))
    assert head[2] + head[3] > head_flat[2] + head_flat[3]
    # the same records and seed give the same prior and population
    again = records_prior.seeding(budget, seed=3, population=50, lower=0.8)
    assert again["initial_population"] == population and again["prior"] == seeded["prior"]


def test_prior_seeded_evolution_scores_its_first_population_first(bench, records_prior):
    prior = records_prior
    r = bench.search("evolution", 0.5, max_evals=70, seed=3, prior=prior)
    assert r["evaluations"] == 70 and r["prior"]["initial_population"] == 50 and r["origins"]["initial"] == 50
    assert r["prior"]["records"] == 100 and not r["prior"]["flat"]
    flat = cbm.RecordsPrior(bench, fake_records(bench), flat=True)
    assert {loss for loss, _ in flat.records} == {0.0}
    with pytest.raises(UserError, match="evolution only"):
        bench.search("random", 0.5, max_evals=10, prior=prior)


def test_records_of_another_space_are_refused(bench, tmp_path):
    loaded = fake_records(bench)
    with pytest.raises(UserError, match="cbm_resnet"):
        cbm.RecordsPrior(bench, cbm.LossRecordsFile(loaded.records, "cbm_resnet"))
    bad_width = dict(loaded.records[0][1])
    bad_width[bench.genome.names[0]] = 7
    with pytest.raises(UserError, match="not one of its choices"):
        cbm.RecordsPrior(bench, cbm.LossRecordsFile([(1.0, bad_width)]))
    with pytest.raises(UserError, match="does not name the units"):
        cbm.RecordsPrior(bench, cbm.LossRecordsFile([(1.0, {"conv1": 16})]))
    (tmp_path / "scores.json").write_text(json.dumps({"1111111": 1.0}))
    with pytest.raises(UserError, match="not a loss records file"):
        cbm.load_records(tmp_path / "scores.json")


def test_noisy_oracle_is_seeded_and_reproducible(bench):
    configs = [bench.key_to_config(k) for k in ("1111111", "2344241", "4444444")]
    a, b, c = bench.noisy_oracle(0.5, 7), bench.noisy_oracle(0.5, 7), bench.noisy_oracle(0.5, 8)
    first = [a(x) for x in configs]
    assert first == [b(x) for x in reversed(configs)][::-1]  # per arch, not per call order
    assert first != [c(x) for x in configs]
    truth = [bench.accuracy(x) for x in configs]
    assert first != truth and [bench.noisy_oracle(0.0, 7)(x) for x in configs] == truth
    # over all archs the noise has the asked std
    noise = np.array([a(bench.key_to_config(k)) for k in bench.table.keys[::8]]) - bench.table.mean[::8]
    assert noise.std() == pytest.approx(0.5, rel=0.1)
    with pytest.raises(UserError, match="noise std"):
        bench.noisy_oracle(-1.0, 0)


def test_noisy_search_is_reproducible_and_ranked_by_the_truth(bench):
    runs = [bench.search("evolution", 0.5, max_evals=60, seed=2, noise_std=1.0) for _ in range(2)]
    assert runs[0]["key"] == runs[1]["key"] and runs[0]["evals_to_top5"] == runs[1]["evals_to_top5"]
    r = runs[0]
    assert r["mean_acc"] == bench.accuracy(bench.key_to_config(r["key"]))
    assert r["rank_feasible"] == bench.rank_feasible(r["key"], r["budget_flops"])
    assert 1 <= r["rank_best_scored"] <= r["rank_feasible"] and r["noise_std"] == 1.0
    exact = bench.search("evolution", 0.5, max_evals=60, seed=2)
    assert exact["rank_best_scored"] == exact["rank_feasible"]


def test_cli_prior_and_noise(bench, tmp_path, capsys):
    records = str(cbm.save_records(tmp_path / "records.json", fake_records(bench)))
    argv = ["bench", "cbm", "--space", "mobilenet", "--tables", str(tables_dir())]
    assert main([*argv, "--algo", "evolution", "--max-evals", "60", "--prior", records, "--noise-std", "0.3",
                 "--seed", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["evaluations"] == 60 and out["noise_std"] == 0.3 and out["prior"]["initial_population"] == 50
    assert out["prior"]["file"] == records and set(out["prior"]["probs"]) == set(bench.genome.names)
    (tmp_path / "exists.json").write_text("{}")
    errors = {
        "--prior seeds --algo evolution": [*argv, "--algo", "random", "--prior", records],
        "give --prior": [*argv, "--algo", "evolution", "--records-out", str(tmp_path / "r.json")],
        "exists": [*argv, "--prior", records, "--records-out", str(tmp_path / "exists.json")],
        "--noise-std must be": [*argv, "--algo", "evolution", "--noise-std", "-0.5"],
        "finite": [*argv, "--algo", "evolution", "--noise-std", "nan"],
        "--noise-std applies to --algo": [*argv, "--noise-std", "0.5"],
        "not found": [*argv, "--algo", "evolution", "--prior", str(tmp_path / "missing.json")],
        "not a loss records file": [*argv, "--algo", "evolution", "--prior", str(tmp_path / "exists.json")],
        "needs cbm_resnet": ["bench", "cbm", "--space", "resnet", "--tables", str(tables_dir()), "--algo", "evolution",
                             "--prior", records],
    }
    for message, args in errors.items():
        assert main(args) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (message, err)


def test_records_out_from_a_bcnet_checkpoint(bench, tmp_path, capsys):
    from widthsearch.training.slimmable import train_supernet

    train_supernet({"model": "cbm_mobilenet", "data": "fake:32:3x32x32", "groups": 4, "epochs": 1, "batch_size": 8,
                    "threads": 1, "calib_images": 8, "strategy": "bcnet"}, tmp_path / "sn")
    out = tmp_path / "records.json"
    argv = ["bench", "cbm", "--space", "mobilenet", "--tables", str(tables_dir()), "--prior",
            str(tmp_path / "sn" / "supernet.pt")]
    assert main([*argv, "--records-out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prior"]["records"] >= 2 and result["records_out"] == str(out)
    saved = json.loads(out.read_text())
    assert saved["model"] == "cbm_mobilenet" and saved["source"]["strategy"] == "bcnet"
    assert [r["key"] for r in saved["records"]] == [bench.config_to_key(r["config"]) for r in saved["records"]]
    from widthsearch.methods.bcnet import checkpoint_records

    from_ckpt = checkpoint_records(str(tmp_path / "sn" / "supernet.pt"))
    assert len(from_ckpt) == result["prior"]["records"] and cbm.load_records(out).records == from_ckpt
