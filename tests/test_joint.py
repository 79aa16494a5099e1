"""Weighted multi-subnet steps, strategies with state, the recipe's flags, the space spec in every
artifact, --residual pad end to end, and joint training of fixed configs (train --channels A B C)."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import fields

import pytest
import torch
import yaml

from widthsearch.cli.main import main
from widthsearch.data import load_data
from widthsearch.errors import UserError
from widthsearch.export import load_static
from widthsearch.space.config import save_config
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.training import (
    STRATEGIES,
    SandwichStrategy,
    SubnetLoss,
    evaluate,
    get_strategy,
    load_joint,
    load_supernet,
    subnet_step,
    train_joint,
    train_supernet,
)
from widthsearch.training.checkpoint import atomic_save, load_checkpoint
from widthsearch.training.joint import using_bn_statistics
from widthsearch.training.recipe import Recipe, add_recipe_arguments, recipe_values
from widthsearch.training.retrain import load_trained, train_network

FAST = {"epochs": 2, "batch_size": 256, "calib_images": 256, "lr": 0.2}
TINY = SpaceSpec("tiny_cnn", num_classes=10, input_shape=(1, 8, 8), groups=4)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDTHSEARCH_CACHE", str(tmp_path / "cache"))


def _net():
    torch.manual_seed(0)
    return build_supernet(TINY)[0]


def _grads(net, x, y, terms, **kw):
    net.model.zero_grad(set_to_none=True)
    stats = subnet_step(net, x, y, terms, **kw)
    return {n: p.grad.clone() for n, p in net.model.named_parameters()}, stats


# --- the step -------------------------------------------------------------------------------------


def test_mix_with_kd_weight_0_is_ce_and_1_is_kd():
    net = _net()
    net.model.train()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    top, low = net.space.max_config(), net.space.min_config()
    for alpha, kind in ((0.0, "ce"), (1.0, "kd")):
        mixed, mixed_stats = _grads(net, x, y, [SubnetLoss(top), SubnetLoss(low, 1.0, "mix", alpha)])
        plain, plain_stats = _grads(net, x, y, [SubnetLoss(top), SubnetLoss(low, 1.0, kind)])
        for name in plain:
            assert torch.allclose(mixed[name], plain[name], atol=1e-7), (alpha, name)
        assert mixed_stats["losses"] == pytest.approx(plain_stats["losses"], rel=1e-6)
    # in between, the mixed loss is the weighted sum of both
    half, half_stats = _grads(net, x, y, [(top, 1.0, "ce"), (low, 1.0, "mix", 0.25)])
    ce, ce_stats = _grads(net, x, y, [(top, 1.0, "ce"), (low, 1.0, "ce")])
    kd, kd_stats = _grads(net, x, y, [(top, 1.0, "ce"), (low, 1.0, "kd")])
    assert half_stats["losses"][1] == pytest.approx(0.25 * kd_stats["losses"][1] + 0.75 * ce_stats["losses"][1], rel=1e-5)
    for name in half:
        expected = 0.25 * kd[name] + 0.75 * ce[name]  # the top term's gradient is in all three alike
        assert torch.allclose(half[name], expected, atol=1e-6), name


def test_weights_scale_gradients_and_losses_stay_unweighted():
    net = _net()
    net.model.train()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    top, low = net.space.max_config(), net.space.min_config()
    one, one_stats = _grads(net, x, y, [(top, 1.0, "ce")])
    half, half_stats = _grads(net, x, y, [(top, 0.5, "ce")])
    assert half_stats["losses"] == one_stats["losses"]
    for name in one:
        assert torch.allclose(half[name], 0.5 * one[name], atol=1e-7), name
    # a weighted sum over sub-networks: top + 2 * low
    both, _ = _grads(net, x, y, [(top, 1.0, "ce"), (low, 2.0, "ce")])
    only_low, _ = _grads(net, x, y, [(low, 1.0, "ce")])
    for name in one:
        assert torch.allclose(both[name], one[name] + 2 * only_low[name], atol=1e-6), name


def test_step_rejects_bad_terms():
    net = _net()
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    top = net.space.max_config()
    with pytest.raises(UserError, match="teacher"):
        subnet_step(net, x, y, [(top, 1.0, "kd")])
    with pytest.raises(UserError, match="unknown loss kind"):
        subnet_step(net, x, y, [(top, 1.0, "l2")])
    with pytest.raises(UserError, match="KD weight"):
        subnet_step(net, x, y, [(top, 1.0, "ce"), (top, 1.0, "mix", 1.5)])


def test_strategies_plan_sandwich_terms():
    space = _net().space
    rng = random.Random(0)
    autoslim = get_strategy("autoslim", 4).plan(space, rng)
    assert [t.kind for t in autoslim] == ["ce", "kd", "kd", "kd"] and all(t.weight == 1.0 for t in autoslim)
    assert autoslim[0].subnet == space.max_config() and autoslim[1].subnet == space.min_config()
    assert [t.kind for t in get_strategy("sandwich", 3).plan(space, rng)] == ["ce", "ce", "ce"]
    right = SandwichStrategy(2, align="right").plan(space, rng)
    assert right[1].subnet.alignment == "right"


class CountingStrategy(SandwichStrategy):
    """A stateful strategy: counts its steps and sums the losses it is shown."""

    def __init__(self, n):
        super().__init__(n, name="counting")
        self.steps, self.loss_sum = 0, 0.0

    def observe(self, terms, losses):
        self.steps += 1
        self.loss_sum += sum(losses)

    def state_dict(self):
        return {"steps": self.steps, "loss_sum": self.loss_sum}

    def load_state_dict(self, state):
        self.steps, self.loss_sum = int(state["steps"]), float(state["loss_sum"])


def test_strategy_state_is_checkpointed_and_survives_resume(tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, "counting", CountingStrategy)
    args = {**FAST, "data": "fake:600", "strategy": "counting", "num_samples": 3}
    train_supernet(args, tmp_path / "full")
    train_supernet(args, tmp_path / "part", stop_after=1)
    first = load_checkpoint(tmp_path / "part" / "supernet.pt")["states"]["strategy"]
    assert first["steps"] == 540 // 256
    train_supernet({}, tmp_path / "part", resume=True)
    full = load_checkpoint(tmp_path / "full" / "supernet.pt")["states"]["strategy"]
    resumed = load_checkpoint(tmp_path / "part" / "supernet.pt")["states"]["strategy"]
    assert full == resumed and full["steps"] == 2 * (540 // 256)


# --- the recipe -------------------------------------------------------------------------------------


def test_every_recipe_field_is_a_flag_with_help():
    parser = argparse.ArgumentParser()
    add_recipe_arguments(parser)
    unset = parser.parse_args(["--out", "x"])
    assert recipe_values(unset) == {f.name: None for f in fields(Recipe)}
    args = parser.parse_args(["--out", "x", "--wd", "0.01", "--no-nesterov", "--no-augment", "--channels-last",
                              "--epochs", "3", "--precision", "bf16", "--data", "fake:10"])
    values = recipe_values(args)
    assert values["weight_decay"] == 0.01 and values["nesterov"] is False and values["augment"] == "none"
    assert values["channels_last"] is True and values["epochs"] == 3 and values["precision"] == "bf16"
    helps = {a.dest: a.help for a in parser._actions}
    assert all(helps[f.name] for f in fields(Recipe))
    assert "(default 10)" in helps["epochs"]


# --- the space spec in every artifact ------------------------------------------------------------------


def test_space_spec_is_stored_and_old_checkpoints_still_load(tmp_path):
    train_supernet({**FAST, "epochs": 1, "data": "fake:300", "width_mult": 0.5, "groups": 5}, tmp_path / "sn")
    ckpt = load_checkpoint(tmp_path / "sn" / "supernet.pt")
    spec = SpaceSpec.from_dict(ckpt["space"])
    assert (spec.model, spec.width_mult, spec.groups, spec.residual) == ("tiny_cnn", 0.5, 5, "tie")
    assert spec.num_classes == 10 and spec.input_shape == (1, 8, 8) and spec.physical
    net, meta = load_supernet(tmp_path / "sn")
    assert meta["space"] == ckpt["space"]
    from widthsearch.cli.search import search_meta

    assert search_meta(meta)["space"] == ckpt["space"]  # configs written by search carry the space

    # a checkpoint written before "space" existed rebuilds the same supernet from its args
    old = {k: v for k, v in ckpt.items() if k not in ("space", "states")}
    atomic_save(old, tmp_path / "old" / "supernet.pt")
    old_net, old_meta = load_supernet(tmp_path / "old")
    assert [u.name for u in old_net.space.units] == [u.name for u in net.space.units]
    assert [u.choices for u in old_net.space.units] == [u.choices for u in net.space.units]
    assert old_meta["space"] == ckpt["space"]

    # trained-model checkpoints too
    train_network({"data": "fake:300", "epochs": 1, "batch_size": 64}, tmp_path / "net", width_mult=0.5)
    model_ckpt = load_checkpoint(tmp_path / "net" / "model.pt")
    assert SpaceSpec.from_dict(model_ckpt["space"]).width_mult == 0.5
    model, _ = load_trained(tmp_path / "net")
    atomic_save({k: v for k, v in model_ckpt.items() if k != "space"}, tmp_path / "oldnet" / "model.pt")
    old_model, _ = load_trained(tmp_path / "oldnet")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), old_model(x))


def test_residual_pad_from_supernet_to_export(tmp_path, capsys):
    out = tmp_path / "sn"
    argv = ["supernet", "--model", "resnet20", "--residual", "pad", "--groups", "4", "--data", "fake:200:3x16x16",
            "--epochs", "1", "--batch-size", "64", "--calib-images", "64", "--out", str(out), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["residual"] == "pad"
    net, meta = load_supernet(out)
    assert meta["space"]["residual"] == "pad" and meta["residual"] == "pad"
    assert isinstance(net.model, torch.fx.GraphModule)  # the padded sums live in the fx rewrite
    tie_units = build_supernet(SpaceSpec("resnet20", groups=4, num_classes=10, input_shape=(3, 16, 16)))[0].space.units
    assert len(net.space.units) > len(tie_units)  # the operands of residual adds are units of their own
    config = net.space.random_config(random.Random(1))
    path = save_config(tmp_path / "cfg.yaml", net.space, config, model="resnet20", space=meta["space"])
    assert yaml.safe_load(path.read_text())["space"]["residual"] == "pad"
    target = tmp_path / "static.pt"
    assert main(["export", "--checkpoint", str(out / "supernet.pt"), "--channels", str(path), "--out", str(target),
                 "--no-recalibrate"]) == 0
    static, header = load_static(target)
    assert header["space"]["residual"] == "pad"
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad(), net.using(config):
        expected = net.model(x)
    assert torch.allclose(static(x), expected, atol=1e-5)
    capsys.readouterr()
    # the checkpoint records the policy: asking for another one is a one-line error
    assert main(["export", "--checkpoint", str(out / "supernet.pt"), "--channels", str(path), "--out",
                 str(tmp_path / "other.pt"), "--residual", "tie"]) == 2
    assert "--residual pad" in capsys.readouterr().err


# --- joint training ------------------------------------------------------------------------------------


def _three_configs(tmp_path):
    net, spec = build_supernet(TINY)
    paths = []
    for name, fraction in (("small", 0.25), ("large", 1.0), ("medium", 0.5)):
        config = net.space.uniform_config(fraction)
        paths.append(save_config(tmp_path / f"{name}.yaml", net.space, config, model="tiny_cnn", space=spec.to_dict()))
    return paths


def test_joint_training_of_three_configs_splits_into_three_equal_nets(tmp_path, capsys):
    paths = _three_configs(tmp_path)
    out = tmp_path / "joint"
    argv = ["train", "--channels", *map(str, paths), "--data", "digits", "--epochs", "2", "--batch-size", "256",
            "--lr", "0.2", "--calib-images", "512", "--out", str(out), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["subnets"]
    assert [r["channels"] for r in rows] == [str(p) for p in paths]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert rows[1]["flops"] > rows[2]["flops"] > rows[0]["flops"]
    assert rows[1]["accuracy"] > 0.5 and result["kd_weight"] == 0.9
    assert json.loads((out / "result.json").read_text())["subnets"] == rows

    assert main(["export", "--checkpoint", str(out / "joint.pt"), "--out", str(tmp_path / "static"), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)["exported"]
    assert [e["out"] for e in exported] == [str(tmp_path / "static" / f"{p.stem}.pt") for p in paths]
    net, meta, members = load_joint(out / "joint.pt")
    data = load_data("digits")
    x = data.test.x[:64]
    for entry, member, row in zip(exported, members, rows):
        static, header = load_static(entry["out"])
        assert header["bn_recalibrated"] and header["flops"] == row["flops"]
        with using_bn_statistics(net.model, member.bn), torch.no_grad():
            net.set_config(member.subnet)
            net.model.eval()
            expected = net.model(x)
        assert torch.allclose(static(x), expected, atol=1e-5)
        assert evaluate(static, data.test.x, data.test.y) == pytest.approx(row["accuracy"])
    # each member normalises with its own statistics, not the shared ones
    assert any(not torch.equal(members[0].bn[k], members[1].bn[k]) for k in members[0].bn)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(out / "joint.pt"), "--out", str(tmp_path / "static")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_joint_resume_after_kill_is_exact(tmp_path):
    paths = _three_configs(tmp_path)
    args = {**FAST, "data": "fake:600", "epochs": 3}
    full = train_joint(args, tmp_path / "full", channels=paths)
    part = train_joint(args, tmp_path / "part", channels=paths, stop_after=1)
    assert part["epochs_done"] == 1 and not part["complete"]
    resumed = train_joint({}, tmp_path / "part", resume=True)
    assert resumed["complete"] and [r["accuracy"] for r in resumed["subnets"]] == [r["accuracy"] for r in full["subnets"]]
    a = load_checkpoint(tmp_path / "full" / "joint.pt")
    b = load_checkpoint(tmp_path / "part" / "joint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["states"]["subnet_bn"]["subnets"], b["states"]["subnet_bn"]["subnets"]):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_joint_training_refuses_mismatched_configs(tmp_path):
    paths = _three_configs(tmp_path)
    doc = yaml.safe_load(paths[0].read_text())
    doc["space"]["width_mult"] = 0.5
    paths[0].write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match="different spaces"):
        train_joint({"data": "fake:300"}, tmp_path / "bad", channels=paths)
    with pytest.raises(UserError, match="at least two"):
        train_joint({"data": "fake:300"}, tmp_path / "one", channels=paths[1:2])
    assert not (tmp_path / "bad" / "joint.pt").exists()


def test_train_one_config_takes_the_model_from_the_file(tmp_path, capsys):
    paths = _three_configs(tmp_path)
    argv = ["train", "--channels", str(paths[2]), "--data", "fake:300", "--epochs", "1", "--batch-size", "64",
            "--out", str(tmp_path / "one"), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "tiny_cnn" and result["flops"] == yaml.safe_load(paths[2].read_text())["flops"]
    assert main(["train", "--channels", str(paths[2]), "--kd-weight", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "joint training" in capsys.readouterr().err
