"""SP-Net pieces: importance, pruning to a FLOPs target, slimmable channel sorting."""
import pytest
import torch

from toy_models import randomise_batch_norms
from widthsearch.errors import UserError
from widthsearch.methods import spnet
from widthsearch.space import SpaceSpec, build_supernet


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
