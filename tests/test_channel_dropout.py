"""Training-time channel dropout (Network Adjustment's ramp): masks, ramps, no trace outside training."""
import pytest
import torch
from torch import nn

from widthsearch.errors import UserError
from widthsearch.training.channel_dropout import TrainingChannelDropout, check_drop_rate, ramped_rates
from widthsearch.training.retrain import load_trained, train_network

CHANNELS = 16


def identity_net() -> nn.Module:
    """Two 1x1 convs that pass their input through, so a unit's output shows its mask alone."""
    net = nn.Sequential(nn.Conv2d(CHANNELS, CHANNELS, 1, bias=False), nn.Conv2d(CHANNELS, CHANNELS, 1, bias=False))
    with torch.no_grad():
        for conv in net:
            conv.weight.copy_(torch.eye(CHANNELS).reshape(CHANNELS, CHANNELS, 1, 1))
    return net


def test_masks_drop_whole_channels_per_sample_at_the_rate_and_rescale():
    net = identity_net()
    # one unit, 2 epochs: epoch 1 runs at rate * 1/2 * 1/1
    dropout = TrainingChannelDropout(net, {"u": ["0"]}, rate=0.4, epochs=2, seed=3)
    assert dropout.start_epoch(1) == {"train_drop": pytest.approx(0.2)}
    x = torch.ones(4000, CHANNELS, 3, 3)
    out = net.train()(x)
    planes = out.reshape(4000, CHANNELS, 9)
    # every (sample, channel) plane is wholly dropped or wholly kept and rescaled by 1/(1-p)
    assert torch.equal(planes.amin(-1), planes.amax(-1))
    values = planes[..., 0]
    assert values.unique().tolist() == [0.0, pytest.approx(1 / 0.8)]
    dropped = float((values == 0).float().mean())
    # 64,000 Bernoulli(0.2) draws: the standard error is 0.0016, so 0.01 is more than 6 of them
    assert dropped == pytest.approx(0.2, abs=0.01)
    # masks are per sample: not every sample drops the same channels
    assert not torch.equal(values[0], values[1]) or not torch.equal(values[1], values[2])


def test_eval_mode_is_the_network_itself_and_remove_takes_the_hooks_off():
    net = identity_net()
    x = torch.randn(8, CHANNELS, 2, 2)
    plain = net(x)
    dropout = TrainingChannelDropout(net, {"a": ["0"], "b": ["1"]}, rate=0.5, epochs=2, seed=0)
    dropout.start_epoch(1)
    assert not torch.equal(net.train()(x), plain)  # the probe can fail: dropout acts in training mode
    assert torch.equal(net.eval()(x), plain)
    net.train()
    dropout.remove()
    assert torch.equal(net(x), plain)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_ramps_grow_linearly_over_epochs_and_depth():
    assert ramped_rates(0.05, 0, 8, 4) == [0.0] * 4  # the first epoch trains without dropout
    assert ramped_rates(0.05, 4, 8, 4) == pytest.approx([0.05 * 4 / 8 * (i + 1) / 4 for i in range(4)])
    last = ramped_rates(0.05, 7, 8, 3)
    assert last == pytest.approx([0.05 * 7 / 8 / 3, 0.05 * 7 / 8 * 2 / 3, 0.05 * 7 / 8])
    net = identity_net()
    dropout = TrainingChannelDropout(net, {"deep": ["1"], "shallow": ["0"]}, rate=0.3, epochs=3, seed=0)
    assert dropout.start_epoch(2) == {"train_drop": pytest.approx(0.2)}
    # the depth ramp follows the order the units are given in (network order)
    assert dropout.rates == {"deep": pytest.approx(0.1), "shallow": pytest.approx(0.2)}


def test_drop_rate_is_checked():
    assert check_drop_rate(0) == 0.0
    for bad in (1.0, -0.1, 2):
        with pytest.raises(UserError, match="--train-drop"):
            check_drop_rate(bad)


DATA = "fake:384:1x8x8:10"
ARGS = {"model": "tiny_cnn", "data": DATA, "epochs": 3, "batch_size": 64, "threads": 1, "heldout_fraction": 0.2}


def _weights(path) -> dict:
    model, _ = load_trained(path)
    return model.state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_drop")
    results = {}
    for name, drop in (("off", 0.0), ("absent", None), ("on", 0.3)):
        args = {**ARGS, "train_drop": drop} if drop is not None else ARGS
        results[name] = train_network(args, root / name, width_mult=1.0)
    return root, results


def test_train_drop_zero_is_training_without_it_and_the_ramp_starts_at_zero(runs):
    root, results = runs
    assert _same(_weights(root / "off"), _weights(root / "absent"))
    off, on = (results[k]["checkpoint"] for k in ("off", "on"))
    log_off = torch.load(off, weights_only=False)["history"]
    log_on = torch.load(on, weights_only=False)["history"]
    # epoch 0 of the ramp drops nothing: the same losses bit for bit; epoch 1 drops channels
    assert log_on[0]["loss"] == log_off[0]["loss"] and log_on[0]["train_drop"] == 0.0
    assert log_on[1]["loss"] != log_off[1]["loss"] and log_on[1]["train_drop"] == pytest.approx(0.1)
    assert "train_drop" not in log_off[0]


def test_trained_network_carries_no_dropout(runs):
    root, _ = runs
    model, meta = load_trained(root / "on")
    assert meta["train_drop"] == 0.3
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert _weights(root / "on").keys() == _weights(root / "off").keys()


def test_resumed_training_with_dropout_equals_an_uninterrupted_run(runs, tmp_path):
    root, _ = runs
    args = {**ARGS, "train_drop": 0.3}
    # stopped after two epochs: the third's masks must not depend on the draws of the second
    train_network(args, tmp_path, width_mult=1.0, stop_after=2)
    train_network({"threads": 1}, tmp_path, resume=True)
    assert _same(_weights(tmp_path), _weights(root / "on"))
    with pytest.raises(UserError, match="--train-drop"):
        train_network({**args, "train_drop": 0.1}, tmp_path, resume=True)


def test_adjust_refuses_a_bad_train_drop_with_one_line(tmp_path, capsys):
    from widthsearch.cli.main import main

    code = main(["adjust", "--train-drop", "1", "--out", str(tmp_path / "na")])
    assert code == 2
    assert "--train-drop must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "na").exists()


def test_adjust_train_drop_zero_trains_its_rounds_without_dropout_or_any_ramp(tmp_path, monkeypatch):
    """``adjust --train-drop 0`` switches the training ramp off entirely: the epoch and depth ramps
    only scale the rate, and at 0 no dropout is even attached to the round's network."""
    import json

    import widthsearch.training.retrain as retrain
    from widthsearch.cli.main import main

    built = []
    real = retrain.TrainingChannelDropout

    def recording(model, units, rate, *args, **kwargs):
        built.append(rate)
        return real(model, units, rate, *args, **kwargs)

    monkeypatch.setattr(retrain, "TrainingChannelDropout", recording)
    flags = ["adjust", "--rounds", "1", "--epochs", "2", "--batch-size", "256", "--threads", "1", "--passes", "2",
             "--probe-images", "100", "--json"]
    assert main([*flags, "--train-drop", "0", "--out", str(tmp_path / "off")]) == 0
    train = tmp_path / "off" / "rounds" / "1" / "train"
    log = [json.loads(line) for line in (train / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and not any("train_drop" in row for row in log)  # no rate logged, not even 0
    assert load_trained(train)[1]["train_drop"] == 0.0
    assert built == []
    # the recorder does see the dropout of a positive rate: the check above is not vacuous
    train_network({**ARGS, "train_drop": 0.2, "epochs": 1}, tmp_path / "on", width_mult=1.0)
    assert built == [0.2]
    assert ramped_rates(0.0, 5, 8, 4) == [0.0] * 4
