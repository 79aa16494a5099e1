"""SP-Net pieces: importance, pruning to a FLOPs target, slimmable channel sorting."""
import pytest
import torch

from toy_models import randomise_batch_norms
from widthsearch.errors import UserError
from widthsearch.methods import spnet
from widthsearch.space import SpaceSpec, build_supernet
from helpers.kills import Killed


@pytest.mark.parametrize("residual", ["tie", "pad"])
def test_pruned_counts_meet_each_flops_target(residual):
    net, _ = build_supernet(SpaceSpec("resnet20", divisor=1, residual=residual))
    randomise_batch_norms(net.model, seed=1)
    importance = spnet.unit_importance(net)
    full = net.space.cost(net.space.max_config()).flops
    for fraction in (0.25, 0.5, 0.75):
        counts = spnet.prune_to_flops(net.space, importance, fraction * full)
        flops = net.space.cost(counts).flops
        assert flops <= fraction * full
        assert flops >= 0.97 * fraction * full  # the largest net under the target, up to threshold steps
        assert all(counts[u.name] >= max(1, round(0.1 * u.max)) for u in net.space.units)
    with pytest.raises(UserError, match="floors"):
        spnet.prune_to_flops(net.space, importance, 1000)


def test_importance_sums_gamma_over_a_tied_stream():
    net, _ = build_supernet(SpaceSpec("resnet20", groups=4))
    randomise_batch_norms(net.model, seed=2)
    stem = net.space.units[0].name  # tied with every stage-1 block output
    norms = {n for n, d, _ in net.members(stem) if d == 0 and isinstance(net.model.get_submodule(n), torch.nn.BatchNorm2d)}
    assert len(norms) == 4  # the stem's BN and the three stage-1 blocks' second BNs
    expected = sum(net.model.get_submodule(n).weight.detach().abs().double() for n in norms)
    assert torch.allclose(spnet.unit_importance(net)[stem], expected)


@pytest.mark.parametrize("residual", ["tie", "pad"])
def test_sorted_net_equals_the_unsorted_at_full_width_and_prefixes_keep_the_best(residual):
    net, _ = build_supernet(SpaceSpec("resnet20", divisor=1, residual=residual))
    randomise_batch_norms(net.model, seed=3)
    net.model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = net.model(x)
    importance = spnet.unit_importance(net)
    rankings = spnet.sort_channels(net, importance)
    with torch.no_grad():
        after = net.model(x)
    assert float((before - after).abs().max()) <= 1e-5 * float(before.abs().max()) + 1e-5
    assert bool(rankings) == (residual == "pad")
    resorted = spnet.unit_importance(net)
    for unit in net.space.units:
        if unit.name not in rankings:  # sorted in place: importance now descends
            assert bool((resorted[unit.name][:-1] >= resorted[unit.name][1:]).all())
    counts = spnet.prune_to_flops(net.space, resorted, 0.5 * net.space.cost(net.space.max_config()).flops)
    subnet = spnet.sorted_subnet(counts, rankings)
    static = net.export(subnet)
    assert net.space.cost(subnet).params == sum(p.numel() for p in static.parameters())


# --- base training with L1 on BN scales -------------------------------------------------------------


def _bn_scales(checkpoint):
    from widthsearch.training.bn_sparsity import bn_weights
    from widthsearch.training.retrain import load_trained

    model, _ = load_trained(checkpoint)
    return [w.detach().clone() for w in bn_weights(model)]


def test_bn_l1_moves_every_scale_by_lr_lambda_sign_gamma_beyond_the_task_gradient(tmp_path):
    from widthsearch.training.retrain import train_network

    # one plain SGD step (one batch per epoch, no momentum, no decay): gamma' = gamma - lr * (g_CE + lambda * sign(gamma))
    args = {"model": "tiny_cnn", "data": "fake:80:1x8x8", "epochs": 1, "batch_size": 64, "lr": 0.1, "momentum": 0.0,
            "weight_decay": 0.0, "heldout_fraction": 0.0, "bn_init": 0.5, "threads": 1}
    plain = train_network(args, tmp_path / "plain")
    sparse = train_network({**args, "bn_l1": 0.01}, tmp_path / "l1")
    assert plain["epochs_done"] == 1 and len(_bn_scales(plain["checkpoint"])) == 4
    for before, after in zip(_bn_scales(plain["checkpoint"]), _bn_scales(sparse["checkpoint"])):
        assert torch.allclose(after - before, torch.full_like(before, -0.1 * 0.01 * 1.0), atol=1e-7)
        assert torch.allclose(before, torch.full_like(before, 0.5), atol=0.05)  # started at --bn-init 0.5


def test_bn_init_sets_every_scale_and_the_flags_reach_train_and_supernet():
    from widthsearch.cli.main import build_parser
    from widthsearch.training.bn_sparsity import bn_weights, init_bn_weights
    from widthsearch.models import build_model

    model = build_model("resnet20")
    init_bn_weights(model, 0.5)
    assert all(bool((w == 0.5).all()) for w in bn_weights(model)) and len(bn_weights(model)) == 21
    parser = build_parser()
    for command in ("train", "supernet"):
        args = parser.parse_args([command, "--bn-l1", "1e-5", "--bn-init", "0.5", "--out", "x"])
        assert args.bn_l1 == 1e-5 and args.bn_init == 0.5


# --- joint training from given weights ------------------------------------------------------------


def test_joint_training_can_start_from_trained_full_width_weights(tmp_path):
    from widthsearch.data import load_data
    from widthsearch.space.config import save_config
    from widthsearch.training.joint import train_joint
    from widthsearch.training.retrain import train_network
    from widthsearch.training.skeleton import spec_for_data

    common = {"data": "fake:80:1x8x8", "batch_size": 32, "heldout_fraction": 0.0, "threads": 1}
    base = train_network({**common, "model": "tiny_cnn", "epochs": 1}, tmp_path / "base")
    net, spec = build_supernet(spec_for_data(SpaceSpec("tiny_cnn", groups=None, divisor=1), load_data(common["data"])))
    full = net.space.max_config()
    paths = [save_config(tmp_path / f"{k}.yaml", net.space, {u: max(1, c // k) for u, c in full.items()},
                         model="tiny_cnn", space=spec.to_dict()) for k in (1, 2)]
    joint = {**common, "epochs": 1, "lr": 1e-9, "calib_images": 32, "init_from": base["checkpoint"]}
    result = train_joint(joint, tmp_path / "joint", channels=paths)
    start = torch.load(base["checkpoint"], weights_only=True)["model"]
    after = torch.load(result["checkpoint"], weights_only=True)
    assert after["args"]["init_from"] == base["checkpoint"]
    assert torch.allclose(after["model"]["conv1.0.weight"], start["conv1.0.weight"], atol=1e-6)
    with pytest.raises(UserError, match="does not exist"):
        train_joint({**joint, "init_from": str(tmp_path / "missing.pt")}, tmp_path / "missing", channels=paths)
    small = train_network({**common, "model": "tiny_cnn", "epochs": 1}, tmp_path / "small", width_mult=0.5)
    with pytest.raises(UserError, match="does not fit"):
        train_joint({**joint, "init_from": small["checkpoint"]}, tmp_path / "bad", channels=paths)
    with pytest.raises(UserError, match="bn-init"):
        train_joint({**joint, "bn_init": 0.5}, tmp_path / "both", channels=paths)


# --- the method end to end -------------------------------------------------------------------------
import json  # noqa: E402

import yaml  # noqa: E402

SETTINGS = {"model": "tiny_cnn", "data": "digits", "base_epochs": 2, "finetune_epochs": 2, "batch_size": 256,
            "calib_images": 256, "threads": 1}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("spnet_full")
    return spnet.run_spnet(SETTINGS, out, progress=False, echo=None), out


def _outcome(summary, out):
    """What a run computed, without the paths of its folder."""
    rows = [{k: v for k, v in r.items() if k not in ("config", "static")} for r in summary["subnets"]]
    bases = [{k: v for k, v in b.items() if k != "checkpoint"} for b in summary["bases"]]
    configs = [(out / "configs" / f"subnet-{i + 1}.yaml").read_text() for i in range(len(rows))]
    return rows, bases, configs


def test_run_spnet_prunes_each_base_to_its_target_and_exports_what_it_trained(uninterrupted):
    from widthsearch.export import load_static
    from widthsearch.training.retrain import load_trained

    summary, out = uninterrupted
    rows = summary["subnets"]
    assert [r["base"] for r in rows] == [0.75, 1.0, 1.0]  # targets beyond the bases use the largest
    state = json.loads((out / spnet.STATE_FILE).read_text())
    assert state["stage"] == "done" and [r["accuracy"] for r in rows] == state["finetune"]["accuracy"]
    for row in rows:
        assert 0.9 * row["target_flops"] <= row["flops"] <= row["target_flops"]  # tiny_cnn: ~2% per channel
        doc = yaml.safe_load(open(row["config"]))
        assert doc["flops"] == row["flops"] and doc["target_flops"] == row["target_flops"]
        assert "select" in doc  # residual pad: the joined units keep rankings
        static, header = load_static(row["static"])
        assert header["flops"] == row["flops"] and sum(p.numel() for p in static.parameters()) == row["params"]
    assert rows[-1]["flops"] == summary["bases"][-1]["flops"]  # the largest target is the whole largest base
    # sorting keeps the function: the sorted largest base computes what the trained one does
    sorted_net, _ = load_static(out / "sorted.pt")
    trained, _ = load_trained(summary["bases"][-1]["checkpoint"])
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(sorted_net(x), trained(x), atol=1e-5)
    report = (out / "report.md").read_text()
    assert "359 test images" in report and "one seed" in report and report.count("| base x") == 3


@pytest.mark.parametrize("stops", [["base:0.75", "base:1", "finetune"], ["prune", "export"]])
def test_run_spnet_interrupted_after_any_stage_resumes_to_the_same_result(tmp_path, uninterrupted, stops):
    out = tmp_path / "sp"
    for i, stop in enumerate(stops):
        state = spnet.run_spnet(SETTINGS, out, resume=i > 0, progress=False, echo=None,
                                stop_after=lambda stage, stop=stop: stage == stop)
        assert "report" not in state
    summary = spnet.run_spnet(SETTINGS, out, resume=True, progress=False, echo=None)
    assert _outcome(summary, out) == _outcome(*uninterrupted)


def test_run_spnet_killed_inside_a_training_resumes_to_the_same_result(tmp_path, uninterrupted):
    out = tmp_path / "sp"

    def killer(at):
        seen = []

        def echo(line):
            seen.append(line)
            if sum(s.startswith("epoch") for s in seen) == at:  # after that epoch's checkpoint
                raise Killed

        return echo

    for i, at in enumerate((3, 2)):  # inside base x1, then inside the fine-tune
        with pytest.raises(Killed):
            spnet.run_spnet(SETTINGS, out, resume=i > 0, progress=False, echo=killer(at))
    summary = spnet.run_spnet(SETTINGS, out, resume=True, progress=False, echo=None)
    assert _outcome(summary, out) == _outcome(*uninterrupted)


def test_run_spnet_refuses_to_overwrite_or_change_settings(uninterrupted):
    _, out = uninterrupted
    with pytest.raises(UserError, match="already holds"):
        spnet.run_spnet(SETTINGS, out, echo=None)
    with pytest.raises(UserError, match="differs"):
        spnet.run_spnet({**SETTINGS, "bn_l1": 1e-4}, out, resume=True, echo=None)


def _cli(argv, capsys):
    from widthsearch.cli.main import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_spnet_json_with_absolute_targets_and_residual_tie(tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, _ = _cli(["spnet", "--model", "tiny_cnn", "--data", "digits", "--bases", "0.75,1.0", "--targets",
                            "0.3M,0.8M,1.4M", "--base-epochs", "1", "--finetune-epochs", "1", "--batch-size", "256",
                            "--calib-images", "256", "--residual", "tie", "--threads", "1", "--out", str(out),
                            "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert list(result) == ["subnets"] and len(result["subnets"]) == 3
    for row, target in zip(result["subnets"], (3e5, 8e5, 1.4e6)):
        assert set(row) == {"target_flops", "flops", "params", "accuracy", "static"}
        assert row["target_flops"] == target and row["flops"] <= target and 0 <= row["accuracy"] <= 1
        assert (tmp_path / "cli" / "static").is_dir() and row["static"].endswith(".pt")
    assert "select" not in yaml.safe_load((out / "configs" / "subnet-1.yaml").read_text())  # tie: prefixes only


@pytest.mark.parametrize("flags, message", [
    (["--bases", "0.75,x"], "--bases"),
    (["--bases", "0,1"], "positive"),
    (["--bases", "1,1"], "twice"),
    (["--targets", "10M,abc"], "--targets"),
    (["--targets", "1M"], "at least two"),
    (["--targets", "1M,-2M"], "positive"),
    (["--bases", "0.5,0.75,1", "--targets", "0.5,1"], "at least as many targets"),
    (["--targets", "1M,20M"], "above the largest base"),
])
def test_cli_spnet_bad_arguments_are_one_line_errors_and_write_nothing(tmp_path, capsys, flags, message):
    out = tmp_path / "bad"
    code, _, err = _cli(["spnet", *flags, "--out", str(out)], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_cli_spnet_existing_out_without_resume_is_an_error(uninterrupted, capsys):
    _, out = uninterrupted
    before = (out / "report.md").read_text()
    code, _, err = _cli(["spnet", "--out", str(out)], capsys)
    assert code == 2 and "--resume" in err and err.count("\n") == 1
    assert (out / "report.md").read_text() == before


def test_run_method_spnet_is_the_experiment_against_s_net(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _cli(["run", "--method", "spnet", "--epochs", "1", "--retrain-epochs", "1", "--batch-size",
                            "256", "--seeds", "0", "--threads", "1", "--out", str(out), "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert len(result["targets"]) == 3 and result["ablation"] == [] and len(result["compute"]) == 1
    for row in result["targets"]:
        assert row["baseline"] == "S-Net" and row["comparison"]["verdict"] == "one seed: not tested"
    assert (out / "spnet" / "seed-0" / "static").is_dir() and (out / "snet" / "seed-0" / "joint.pt").exists()
    report = (out / "report.md").read_text()
    assert "| target | SP-Net FLOPs | S-Net FLOPs |" in report and "## Training compute" in report
