"""Channel-Bench-Macro: tables, key <-> config mapping, oracle searches, proxy scoring, CLI."""
import json
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import shared_path
from widthsearch.bench import cbm
from widthsearch.bench.cbm import (
    correlations,
    expected_best_of_n,
    load_scores,
    paired_bootstrap_kendall,
    topk_overlap,
)
from widthsearch.cli.main import main
from widthsearch.errors import UserError

KEYS_SAMPLE = ["1111111", "4444444", "2344241", "3244221", "4444342", "4344424", "1234123", "4321432", "2222222"]


@dataclass
class FakeUnit:
    name: str
    choices: tuple


class FakeSpace:
    """Stand-in for the core's analysis (lets the table logic be tested without it)."""

    def __init__(self, maxes):
        self.units = [FakeUnit(f"l{i}", tuple(m * d // 4 for d in (1, 2, 3, 4))) for i, m in enumerate(maxes)]


FAKE = {"mobilenet": FakeSpace([128, 768, 768, 768, 256, 1536, 1024]),
        "resnet": FakeSpace([256, 256, 256, 512, 512, 512, 512])}


def tables_dir():
    return shared_path("channel_bench_macro", "Results_MobileNet.json").parent


@pytest.fixture(scope="module")
def fake_benches():
    d = tables_dir()
    return {s: cbm.CBMBench(s, d, channel_space=FAKE[s]) for s in cbm.SPACES}


@pytest.fixture(scope="module")
def real_bench():
    pytest.importorskip("widthsearch.space")
    pytest.importorskip("widthsearch.models")
    return cbm.CBMBench("mobilenet", tables_dir())


# ----------------------------------------------------------------------------- pure functions
def test_correlations_hand_computed():
    # x = 1 2 3 4, y = 1 3 2 4: 5 concordant, 1 discordant pair; sum d^2 = 2; cov 4/3, var 5/3
    r = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["count"] == 4
    assert r["kendall"] == pytest.approx(2 / 3)
    assert r["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert r["pearson"] == pytest.approx(0.8)
    assert correlations([1, 2, 3], [3, 2, 1])["kendall"] == pytest.approx(-1.0)
    assert correlations([1, 1, 1], [1, 2, 3])["kendall"] is None  # constant: undefined, not NaN
    assert correlations([1], [2])["pearson"] is None


def test_topk_overlap_and_best_of_n():
    assert topk_overlap([5, 4, 3, 2, 1], [1, 2, 3, 4, 5], 2) == 0
    assert topk_overlap([5, 4, 3, 2, 1], [5, 3, 4, 1, 2], 3) == 3
    assert topk_overlap([5, 4, 3, 2, 1], [5, 3, 4, 1, 2], 2) == 1
    # best of 2 distinct draws from {1, 2, 3}: pairs (1,2) (1,3) (2,3) -> max 2, 3, 3
    e = expected_best_of_n([3, 1, 2], 2)
    assert e["acc"] == pytest.approx(8 / 3) and e["rank"] == pytest.approx((2 + 1 + 1) / 3)
    assert expected_best_of_n([1, 2, 3], 5)["acc"] == pytest.approx(3.0)  # n capped at the set size
    assert expected_best_of_n([5, 5, 1], 1)["rank"] == pytest.approx((1 + 1 + 3) / 3)  # ties share the rank


def test_paired_bootstrap_kendall():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    noisy = truth + rng.normal(scale=2.0, size=200)
    same = paired_bootstrap_kendall(noisy, noisy, truth, n=200)
    assert same["delta_kendall"] == 0.0 and same["delta_ci95"] == [0.0, 0.0] and same["count"] == 200
    # the truth itself (tau 1) against noise: a clearly positive difference, lower bound above 0
    better = paired_bootstrap_kendall(truth, rng.normal(size=200), truth, n=300, seed=1)
    assert better["delta_ci95"][0] > 0.5 and better["delta_ci95"][0] <= better["delta_kendall"] <= better["delta_ci95"][1]
    # noise against the truth: the sign flips; the same seed gives the same interval
    worse = paired_bootstrap_kendall(rng.normal(size=200), truth, truth, n=50, seed=3)
    assert worse["delta_kendall"] < 0 and worse["delta_ci95"][1] < 0
    assert paired_bootstrap_kendall(noisy, truth, truth, n=50, seed=3) == paired_bootstrap_kendall(noisy, truth, truth, n=50, seed=3)


def test_paired_bootstrap_kendall_uses_common_keys():
    truth = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}
    a = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "x": 9.0}  # perfect on its 4 common keys
    b = {"d": 1.0, "c": 2.0, "b": 3.0, "a": 4.0, "e": 0.0}  # reversed
    r = paired_bootstrap_kendall(a, b, truth, n=100)
    assert r["count"] == 4 and r["delta_kendall"] == pytest.approx(2.0)
    with pytest.raises(UserError, match="in common"):
        paired_bootstrap_kendall({"a": 1.0}, {"a": 2.0}, truth)


def test_load_scores_json_csv(tmp_path):
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"1111111": 1.5, "4444444": 2}))
    assert load_scores(j) == {"1111111": 1.5, "4444444": 2.0}
    c = tmp_path / "s.csv"
    c.write_text("key,score\n1111111,0.5\n2222222,0.25\n")
    assert load_scores(c) == {"1111111": 0.5, "2222222": 0.25}
    c.write_text("1111111,0.5\n")
    assert load_scores(c) == {"1111111": 0.5}
    for text in ("1111111,abc\n2222222,x\n", "key,score\n", json.dumps({"5111111": 1}), json.dumps({"1111111": "a"})):
        c.write_text(text)
        with pytest.raises(UserError):
            load_scores(c)
    with pytest.raises(UserError):
        load_scores(tmp_path / "missing.json")


def test_missing_tables_is_user_error(tmp_path):
    with pytest.raises(UserError, match=r"github.com/xiusu/Channel-Bench-Macro.*--tables"):
        cbm.load_table("mobilenet", tmp_path)
    with pytest.raises(UserError):
        cbm.load_table("vgg", tmp_path)
    assert cbm.default_tables_dir().parts[-2:] == ("shared", "channel_bench_macro")


# ----------------------------------------------------------------------------- tables (fake space)
def test_table_facts(fake_benches):
    mb, rs = fake_benches["mobilenet"], fake_benches["resnet"]
    t = mb.table
    assert len(t.keys) == 16384 and t.max_flops == 211281920
    assert cbm.load_table("mobilenet", tables_dir()) is t  # parsed once, then cached
    assert mb.optimum() == ("4444342", pytest.approx(91.887, abs=1e-3))
    b = mb.budget_flops(0.5)
    assert mb.optimum(b) == ("2344241", pytest.approx(91.713, abs=1e-3))
    assert mb.check_budget(b) == 12318
    assert mb.rank_feasible("2344241", b) == 1 and mb.rank_global("2344241") == 28
    assert rs.optimum(rs.budget_flops("50%"))[0] == "3244221" and rs.rank_global("3244221") == 215
    # exact best-of-N agrees with the sampled estimates (best-of-10 91.202, best-of-100 91.432)
    assert mb.random_best_of_n(10, b)["acc"] == pytest.approx(91.20, abs=0.01)
    assert mb.random_best_of_n(100, b)["acc"] == pytest.approx(91.43, abs=0.01)
    with pytest.raises(UserError, match="below the smallest"):
        mb.check_budget(mb.budget_flops(0.05))


def test_key_config_roundtrip_fake(fake_benches):
    mb = fake_benches["mobilenet"]
    cfg = mb.key_to_config("2344241")
    assert list(cfg.values()) == [64, 576, 768, 768, 128, 1536, 256]
    for k in KEYS_SAMPLE:
        assert mb.config_to_key(mb.key_to_config(k)) == k
    with pytest.raises(UserError):
        mb.key_to_config("1234")


def test_oracle_searches(fake_benches):
    for name, bench in fake_benches.items():
        for algo in ("evolution", "random"):
            r = bench.search(algo, 0.5, max_evals=300, seed=0)
            assert r["evaluations"] <= 300 and r["flops"] <= r["budget_flops"]
            assert r["rank_feasible"] == bench.rank_feasible(r["key"], r["budget_flops"])
        r = bench.search("evolution", 0.5, max_evals=300, seed=0)
        assert r["rank_feasible"] <= 5
    # the documented miss of BCNetV2's loop, and the screened variant on the same seed
    rn = fake_benches["resnet"]
    old = rn.search("evolution", 0.75, seed=0, variant="bcnet")
    new = rn.search("evolution", 0.75, seed=0)
    assert (old["variant"], old["rank_feasible"], old["evaluations"]) == ("bcnet", 13, 300)
    assert (new["variant"], new["evaluations"]) == ("screened", 300) and new["rank_feasible"] <= 5
    g = fake_benches["mobilenet"].search("greedy", 0.5)
    assert g["flops"] <= g["budget_flops"] and g["seed"] is None and g["evaluations"] > 0


def test_score_correlation(fake_benches):
    mb = fake_benches["mobilenet"]
    t = mb.table
    flops = {k: float(f) for k, f in zip(t.keys, t.flops)}
    s = mb.score_correlation(flops)
    assert s["count"] == 16384 and s["no1"]["count"] == 3 ** 7
    assert s["kendall"] == pytest.approx(0.546, abs=1e-3)  # FLOPs as a proxy
    assert s["spearman"] == pytest.approx(0.742, abs=1e-3) and s["pearson"] == pytest.approx(0.740, abs=1e-3)
    perfect = mb.score_correlation({k: float(m) for k, m in zip(t.keys[:500], t.mean[:500])})
    assert perfect["kendall"] == pytest.approx(1.0) and perfect["top10_overlap"] == 10
    assert perfect["top1pct_k"] == 5 and perfect["top1pct_overlap"] == 5
    # per unit, a perfect proxy agrees with the truth on how much each width digit matters
    assert len(perfect["per_unit"]) == 7
    for row in perfect["per_unit"]:
        assert row["score_tau"] == pytest.approx(row["truth_tau"])
    widest_first = mb.score_correlation({k: float(k[0]) for k in t.keys})["per_unit"][0]
    assert widest_first["score_tau"] == pytest.approx(1.0)
    everything = mb.score_correlation({k: float(m) for k, m in zip(t.keys, t.mean)})
    for pct in ("25%", "50%", "75%"):
        assert everything["picks"][pct]["rank_feasible"] == 1
    with pytest.raises(UserError):
        mb.score_correlation({"9999999": 1.0})
    # the FLOPs bar of a sample is measured on that sample; on all archs it is the figure above
    assert mb.flops_baseline(t.keys)["kendall"] == pytest.approx(0.546, abs=1e-3)
    sample = mb.flops_baseline(t.keys[:200])
    assert sample["count"] == 200 and sample["no1"]["count"] == sum("1" not in k for k in t.keys[:200])


# ----------------------------------------------------------------------------- the core's space
def test_real_mapping_and_costs(real_bench):
    units = real_bench.space.units
    assert len(units) == 7 and all(len(u.choices) == 4 for u in units)
    for k in KEYS_SAMPLE:
        cfg = real_bench.key_to_config(k)
        assert [cfg[u.name] for u in units] == [u.choices[int(d) - 1] for u, d in zip(units, k)]
        assert real_bench.config_to_key(cfg) == k
    rng = np.random.default_rng(0)
    sample = list(KEYS_SAMPLE) + [real_bench.table.keys[i] for i in rng.choice(16384, 200, replace=False)]
    v = real_bench.verify_costs(sample)
    assert v["checked"] == len(sample) and v["mismatches"] == 0


# ----------------------------------------------------------------------------- CLI
def test_cli_missing_tables_exit_2(tmp_path, capsys):
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", str(tmp_path), "--algo", "random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Channel-Bench-Macro" in err[0] and "--tables" in err[0]


def test_cli_infeasible_budget_and_json(real_bench, capsys):
    d = str(tables_dir())
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", d, "--algo", "evolution", "--budget", "0.05"]) == 2
    assert "below the smallest" in capsys.readouterr().err
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", d, "--algo", "greedy", "--budget", "x"]) == 2
    capsys.readouterr()
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", d, "--algo", "evolution",
                 "--max-evals", "60", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("key", "mean_acc", "rank_feasible", "rank_global", "evaluations", "optimum_key", "optimum_acc",
              "feasible"):
        assert k in out
    assert out["evaluations"] <= 60 and out["optimum_key"] == "2344241" and out["feasible"] == 12318
    assert out["variant"] == "screened"
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", d, "--algo", "evolution", "--variant", "bcnet",
                 "--max-evals", "60", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == "bcnet"
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", d, "--algo", "random", "--variant", "bcnet"]) == 2
    assert "--variant applies to --algo evolution" in capsys.readouterr().err


def test_cli_scores_json(real_bench, tmp_path, capsys):
    t = real_bench.table
    f = tmp_path / "scores.csv"
    f.write_text("key,score\n" + "".join(f"{k},{p}\n" for k, p in zip(t.keys, t.params)))
    assert main(["bench", "cbm", "--space", "mobilenet", "--tables", str(tables_dir()), "--scores", str(f),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 16384 and out["kendall"] == pytest.approx(0.426, abs=1e-3)
    assert set(out) >= {"spearman", "pearson", "no1", "top10_overlap", "top1pct_overlap", "picks"}


def test_cli_scores_plot(real_bench, tmp_path, capsys):
    t = real_bench.table
    f = tmp_path / "scores.json"
    f.write_text(json.dumps({k: float(m) for k, m in zip(t.keys[::300], t.mean[::300])}))
    png = tmp_path / "figs" / "scores.png"
    argv = ["bench", "cbm", "--space", "mobilenet", "--tables", str(tables_dir()), "--scores", str(f)]
    assert main([*argv, "--plot", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out["kendall"] == pytest.approx(1.0) and out["flops_proxy"]["kendall"] < 1.0
    assert main([*argv, "--plot", str(tmp_path / "scores.jpgx")]) == 2
    assert "png" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --compare
def _write_scores(path, scores):
    path.write_text(json.dumps(scores))
    return str(path)


def test_compare_scores_library(fake_benches):
    mb = fake_benches["mobilenet"]
    t = mb.table
    keys = t.keys[::97]
    truth = {k: float(t.mean[t.index[k]]) for k in keys}
    reversed_ = {k: -v for k, v in truth.items()}
    c = mb.compare_scores(truth, reversed_, n=50, seed=1)
    assert c["common"] == len(keys) and c["kendall_a"] == pytest.approx(1.0) and c["kendall_b"] == pytest.approx(-1.0)
    assert c["delta_kendall"] == pytest.approx(2.0) and c["delta_ci95"] == pytest.approx([2.0, 2.0])
    # against FLOPs on the same archs: the same figure as the FLOPs baseline of --scores
    f = mb.compare_scores(truth, None, n=50)
    assert f["kendall_b"] == pytest.approx(mb.flops_baseline(keys)["kendall"])
    assert f["delta_kendall"] == pytest.approx(1.0 - f["kendall_b"])
    assert mb.compare_scores(truth, None, n=50, seed=4) == mb.compare_scores(truth, None, n=50, seed=4)
    with pytest.raises(UserError, match="no architecture in common"):
        mb.compare_scores({keys[0]: 1.0}, {keys[1]: 1.0})
    with pytest.raises(UserError, match="at least 1"):
        mb.compare_scores(truth, reversed_, n=0)


def test_cli_compare(fake_benches, tmp_path, capsys, monkeypatch):
    # the CLI on a fake channel space: the comparison only needs the table
    monkeypatch.setattr(cbm, "CBMBench", lambda space, tables=None: fake_benches[space])
    t = fake_benches["resnet"].table
    keys = ["1111111", "2222222", "3333333", "4444444", "1234123", "4321432", "2344241", "3244221"]
    acc = {k: float(t.mean[t.index[k]]) for k in keys}
    a = _write_scores(tmp_path / "a.json", acc)
    b = _write_scores(tmp_path / "b.json", {k: -v for k, v in list(acc.items())[:6]})
    argv = ["bench", "cbm", "--space", "resnet", "--scores", a]
    assert main([*argv, "--compare", b, "--bootstrap", "40", "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["common"] == 6 and out["delta_kendall"] == pytest.approx(2.0)
    assert out["delta_ci95"] == pytest.approx([2.0, 2.0]) and out["bootstrap"] == 40 and out["bootstrap_seed"] == 2
    assert out["count"] == 8 and "picks" in out  # what --scores gives is still there
    assert main([*argv, "--compare", "flops"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "compared with flops" in x]
    assert len(line) == 1 and "8 common archs" in line[0] and "95% CI" in line[0]
    errors = {
        "no architecture in common": [*argv, "--compare", _write_scores(tmp_path / "c.json", {"1212121": 1.0})],
        "not found": [*argv, "--compare", str(tmp_path / "missing.json")],
        "invalid JSON": [*argv, "--compare", str(tmp_path / "bad.json")],
        "needs --scores": ["bench", "cbm", "--space", "resnet", "--compare", "flops"],
        "at least 1": [*argv, "--compare", "flops", "--bootstrap", "0"],
        "applies to --compare": [*argv, "--bootstrap", "10"],
    }
    (tmp_path / "bad.json").write_text("{not json")
    for message, args in errors.items():
        assert main(args) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
