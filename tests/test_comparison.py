"""The statistics of the run reports: mean ± std, the t-interval over seeds, the paired bootstrap, the verdict."""
import math

import numpy as np
import pytest
import torch

from widthsearch.methods.autoslim import check_seeds
from widthsearch.errors import UserError
from widthsearch.methods.comparison import accuracy_summary, bootstrap_interval, compare_networks, t_interval


def test_accuracy_summary_uses_the_sample_standard_deviation():
    s = accuracy_summary([0.9, 0.8, 0.7])
    assert s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(0.1)
    assert accuracy_summary([0.5])["std"] is None


def test_t_interval_matches_a_hand_computation():
    # deltas 1, 2, 3: mean 2, sd 1, t(0.975, 2 df) = 4.302653 -> half width 4.302653 / sqrt(3)
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749462 / math.sqrt(3)
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert t_interval([0.5]) is None


def test_bootstrap_interval_is_close_to_the_normal_interval_of_the_per_image_mean():
    rng = np.random.default_rng(1)
    found = rng.random((2, 4000)) < 0.8
    base = rng.random((2, 4000)) < 0.7
    per_image = (found.astype(float) - base).mean(axis=0)
    se = per_image.std(ddof=1) / math.sqrt(per_image.size)
    lo, hi = bootstrap_interval(found, base, resamples=4000)
    assert lo == pytest.approx(per_image.mean() - 1.96 * se, abs=0.2 * se)
    assert hi == pytest.approx(per_image.mean() + 1.96 * se, abs=0.2 * se)


def test_bootstrap_pairs_the_images_so_shared_errors_cancel():
    # both nets miss the same 30 % of the images: no difference at all, whatever the test set
    correct = np.arange(1000) % 10 >= 3
    assert bootstrap_interval(np.stack([correct]), np.stack([correct])) == [0.0, 0.0]


def _nets(acc_found, acc_base, images=400):
    """Per seed, per image correctness with exactly the given accuracies (the same images in error)."""
    rows = lambda accs: [[i < round(a * images) for i in range(images)] for a in accs]  # noqa: E731
    return rows(acc_found), rows(acc_base)


def test_a_consistent_large_win_is_significant():
    found, base = _nets([0.95, 0.96, 0.95], [0.80, 0.80, 0.81])
    c = compare_networks(found, base, [0, 1, 2])
    assert c["significant"] is True and c["verdict"] == "searched better"
    assert c["delta"] == pytest.approx(0.15) and c["deltas"] == pytest.approx([0.15, 0.16, 0.14])
    assert c["t_interval"][0] > 0 and c["bootstrap_interval"][0] > 0
    assert c["found"]["mean"] == pytest.approx(0.9533333) and c["test_images"] == 400


def test_a_win_on_one_seed_and_a_loss_on_another_is_no_significant_difference():
    found, base = _nets([0.97, 0.90, 0.96], [0.90, 0.97, 0.90])
    c = compare_networks(found, base, [0, 1, 2])
    assert c["delta"] > 0 and c["t_interval"][0] < 0 < c["t_interval"][1]
    assert c["significant"] is False and c["verdict"] == "no significant difference"


def test_a_tiny_consistent_difference_on_few_images_is_no_significant_difference():
    # one image more on every seed: the seeds agree (zero spread) but the test set cannot tell
    found, base = _nets([0.9025, 0.9025, 0.9025], [0.9, 0.9, 0.9])
    c = compare_networks(found, base, [0, 1, 2])
    assert c["t_interval"] == pytest.approx([0.0025, 0.0025])
    assert c["bootstrap_interval"][0] <= 0 and c["significant"] is False


def test_identical_per_seed_deltas_prove_nothing_about_the_seed_noise():
    # two seeds, both +10 points: the bootstrap excludes 0 but the zero-width t-interval is no evidence
    found, base = _nets([0.95, 0.95], [0.85, 0.85])
    c = compare_networks(found, base, [0, 1])
    assert c["bootstrap_interval"][0] > 0 and c["t_interval"][0] == c["t_interval"][1]
    assert c["significant"] is False and "not estimable" in c["verdict"]


def test_one_seed_gives_no_verdict():
    found, base = _nets([0.95], [0.80])
    c = compare_networks(found, base, [7])
    assert c["t_interval"] is None and c["significant"] is None and c["verdict"] == "one seed: not tested"


def test_seeds_are_checked_before_any_training():
    assert check_seeds((0, 1, 2)) == (0, 1, 2) and check_seeds(5) == (5,)
    for bad in [(0, 0), (), (-1,), ("x",)]:
        with pytest.raises(UserError):
            check_seeds(bad)


def test_correct_predictions_average_to_evaluate():
    from widthsearch.training.evaluate import correct_predictions, evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(50, 3, 2, 2), torch.randint(0, 3, (50,))
    correct = correct_predictions(model, x, y, batch_size=16)
    assert correct.dtype == torch.bool and correct.shape == (50,)
    assert float(correct.float().mean()) == pytest.approx(evaluate(model, x, y))
