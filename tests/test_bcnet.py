"""BCNet / BCNetV2 pieces: complementary widths, fairness of bilateral pairs, loss records, prior."""
import random

import pytest
import torch

from widthsearch.errors import UserError
from widthsearch.methods import bcnet
from widthsearch.space import SpaceSpec, build_supernet


@pytest.fixture(scope="module")
def cbm():
    return build_supernet(SpaceSpec("cbm_mobilenet", groups=4))[0].space


def _bin_usage(unit, steps, groups, bilateral):
    """How often each of the unit's ``groups`` bins runs per step, over ``steps`` (tuples of widths)."""
    usage = [0.0] * groups
    count = 0
    for widths in steps:
        for c in widths:
            used = round(c * groups / unit.max)
            sides = [range(used), range(groups - used, groups)] if bilateral else [range(used)]
            for side in sides:
                for b in side:
                    usage[b] += 1 / len(sides)
            count += 1
    return [u / count for u in usage]


def test_complement_is_physical_width_minus_c_and_max_stays(cbm):
    unit = cbm.units[1]
    q = unit.max // 4
    config = {u.name: u.choices[0] for u in cbm.units}
    assert bcnet.complement(cbm, config)[unit.name] == 3 * q
    assert bcnet.complement(cbm, {**config, unit.name: 2 * q})[unit.name] == 2 * q
    assert bcnet.complement(cbm, {**config, unit.name: 3 * q})[unit.name] == q
    assert bcnet.complement(cbm, {**config, unit.name: 4 * q})[unit.name] == 4 * q  # not the official B-c-1


def test_bilateral_complementary_pairs_train_every_bin_equally(cbm):
    unit = cbm.units[1]
    pairs = []
    for c in unit.choices:  # uniform over widths, each followed by its complement
        config = {u.name: u.choices[0] for u in cbm.units}
        config[unit.name] = c
        pairs.append((c, bcnet.complement(cbm, config)[unit.name]))
    bilateral = _bin_usage(unit, pairs, 4, bilateral=True)
    assert max(bilateral) - min(bilateral) < 1e-9
    unilateral = _bin_usage(unit, [(c,) for c in unit.choices], 4, bilateral=False)
    assert unilateral == pytest.approx([1, 0.75, 0.5, 0.25])


def test_enlarged_bcnetv2_complement_is_m_plus_b_minus_c():
    space = build_supernet(SpaceSpec("cbm_mobilenet", groups=6, bins=(2, 4), widen=1.5))[0].space
    unit = space.units[0]
    step = unit.max // 6
    for bins_used, expected in ((2, 4), (3, 3), (4, 2)):
        config = {u.name: u.choices[0] for u in space.units}
        config[unit.name] = bins_used * step
        assert bcnet.complement(space, config)[unit.name] == expected * step


def test_loss_records_keep_the_lowest_and_survive_a_round_trip():
    records = bcnet.LossRecords(capacity=3)
    for i, loss in enumerate([5.0, 1.0, 4.0, 0.5, 3.0, 2.0]):
        records.push(loss, {"u": i})
    assert [loss for loss, _ in records.records()] == [0.5, 1.0, 2.0]
    again = bcnet.LossRecords()
    again.load_state_dict(records.state_dict())
    assert again.records() == records.records()
    again.push(0.1, {"u": 9})
    assert again.records()[0] == (0.1, {"u": 9}) and len(again) == 3


def test_prior_prefers_low_loss_widths_and_meets_the_flops_target(cbm):
    rng = random.Random(0)
    top = {u.name: u.top for u in cbm.units}
    # synthetic records: the first unit is better wide, the rest do not matter
    first = cbm.units[0].name
    records = []
    for _ in range(200):
        config = cbm.random_config(rng)
        records.append((1.0 - 0.1 * cbm.units[0].choices.index(config[first]) + 0.01 * rng.random(), config))
    target = cbm.cost(top).flops * 0.5
    prior = bcnet.fit_prior(cbm, records, target, steps=400, lr=0.05)
    assert prior[first][-1] > prior[first][0]
    probs = {n: torch.tensor(p) for n, p in prior.items()}
    assert float(cbm.expected_flops(probs)) == pytest.approx(0.9 * target, rel=0.05)
    population = bcnet.prior_population(cbm, prior, target, 20, random.Random(1))
    assert len({cbm.key(c) for c in population}) == 20
    assert all(0.8 * target <= cbm.cost(c).flops <= target for c in population)
    with pytest.raises(UserError):
        bcnet.fit_prior(cbm, [], target)
    with pytest.raises(UserError, match="no config"):
        bcnet.prior_population(cbm, prior, 1.0, 5, random.Random(1), max_tries=50)


def _reference_prior(space, records, target, *, steps, lr, seed, flops_ratio=0.9, penalty=1000.0):
    """The prior fit written plainly, one tensor per unit and autograd through ``expected_flops``
    (how ``fit_prior`` was written before it was vectorised): the result to match."""
    losses = {}
    worst = max(loss for loss, _ in records)
    for unit in space.units:
        picked = {c: [loss for loss, config in records if config.get(unit.name) == c] for c in unit.choices}
        losses[unit.name] = torch.tensor([sum(v) / len(v) if v else worst for v in picked.values()],
                                         dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    logits = {u.name: torch.randn(len(u.choices), generator=gen, dtype=torch.float64).requires_grad_(True)
              for u in space.units}
    optimizer = torch.optim.SGD(list(logits.values()), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        probs = {name: torch.softmax(z, 0) for name, z in logits.items()}
        expected_loss = torch.stack([(probs[n] * losses[n]).sum() for n in probs]).mean()
        flops_term = (1 - space.expected_flops(probs) / (flops_ratio * target)) ** 2
        (expected_loss + penalty * flops_term).backward()
        optimizer.step()
    return {name: torch.softmax(z.detach(), 0).tolist() for name, z in logits.items()}


@pytest.mark.parametrize("residual", ["tie", "pad"])  # tie: closed-form gradient; pad: autograd
def test_prior_fit_matches_the_plain_per_unit_fit(residual):
    from toy_models import ResidualConcatDepthwise
    from widthsearch.space import ChannelSpace

    torch.manual_seed(0)
    # divisor 4: units of 16, 8, 12 and 24 channels get 4, 2, 3 and 6 choices (padded rows in the fit)
    space = ChannelSpace.from_model(ResidualConcatDepthwise(), torch.randn(1, 3, 8, 8), divisor=4,
                                    residual=residual)
    assert len({len(u.choices) for u in space.units}) > 1
    assert (space.expected_flops_quadratic() is None) == (residual == "pad")
    rng = random.Random(3)
    records = [(rng.random(), space.random_config(rng)) for _ in range(30)]
    target = 0.5 * space.cost(space.max_config()).flops
    want = _reference_prior(space, records, target, steps=300, lr=0.01, seed=5)
    with torch.no_grad():  # a search may fit the prior while it evaluates without gradients
        got = bcnet.fit_prior(space, records, target, steps=300, lr=0.01, seed=5)
    assert list(got) == list(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-9, abs=0)


def test_bcnet_strategy_plans_bilateral_pairs_then_the_complement(cbm):
    strategy = bcnet.BilateralStrategy()
    rng = random.Random(0)
    first = strategy.plan(cbm, rng)
    second = strategy.plan(cbm, rng)
    assert [(t.weight, t.kind, t.subnet.alignment) for t in first] == [(0.5, "ce", "left"), (0.5, "ce", "right")]
    assert dict(second[0].subnet) == bcnet.complement(cbm, dict(first[0].subnet))
    full = bcnet.BilateralStrategy(full_every=3)
    plans = [full.plan(cbm, rng) for _ in range(6)]
    assert [len(p) for p in plans] == [2, 2, 1, 2, 2, 1]
    assert dict(plans[2][0].subnet) == cbm.max_config()


def test_loss_records_survive_resume_of_a_bcnet_supernet(tmp_path):
    from widthsearch.training.slimmable import train_supernet

    args = {"model": "tiny_cnn", "data": "digits", "strategy": "bcnet", "epochs": 2, "groups": 4, "threads": 1}
    train_supernet(args, tmp_path / "full")
    train_supernet(args, tmp_path / "split", stop_after=1)
    train_supernet(args, tmp_path / "split", resume=True)
    full = torch.load(tmp_path / "full" / "supernet.pt", weights_only=True)
    split = torch.load(tmp_path / "split" / "supernet.pt", weights_only=True)
    assert full["states"]["strategy"] == split["states"]["strategy"]
    records = full["states"]["strategy"]["records"]["records"]
    assert len(records) == 20 and full["states"]["strategy"]["steps"] == 20
    for key, value in full["model"].items():
        assert torch.equal(value, split["model"][key]), key


def test_run_method_bcnet_end_to_end(tmp_path, capsys):
    import json

    from widthsearch.cli.main import main

    out = tmp_path / "run"
    code = main(["run", "--method", "bcnet", "--epochs", "2", "--retrain-epochs", "1", "--targets", "0.5",
                 "--threads", "1", "--seeds", "0,1", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["targets"]) == 1 and result["targets"][0]["accuracy"] > 0
    assert result["targets"][0]["comparison"]["seeds"] == [0, 1]  # the shared retraining: seeds and intervals
    report = (out / "report.md").read_text()
    assert "BCNet run" in report and "143 held-out training images" in report and "left- and right-aligned" in report
    state = json.loads((out / "search" / "flops-0.5" / "search_state.json").read_text())
    assert state["scoring"]["align"] == "both" and state["scoring"]["prior"] == "records"
