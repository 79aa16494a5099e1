"""Scoring Channel-Bench-Macro architectures with a (tiny, briefly trained) supernet."""
import json

import pytest

from conftest import shared_path
from widthsearch.cli.main import main
from widthsearch.training.slimmable import train_supernet


@pytest.fixture(scope="module")
def cbm_supernet(tmp_path_factory):
    out = tmp_path_factory.mktemp("cbm_supernet")
    train_supernet({"model": "cbm_mobilenet", "data": "fake:48:3x32x32", "groups": 4, "epochs": 1,
                    "batch_size": 16, "threads": 1, "calib_images": 16}, out)
    return out / "supernet.pt"


def test_supernet_scores_are_correlated_and_resumable(cbm_supernet, tmp_path, capsys):
    tables = shared_path("channel_bench_macro")
    scores_file = tmp_path / "scores.json"
    argv = ["bench", "cbm", "--space", "mobilenet", "--tables", str(tables), "--supernet", str(cbm_supernet),
            "--sample", "5", "--eval-images", "8", "--calib-images", "16", "--scores-out", str(scores_file), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == 5
    # a barely trained supernet may give every arch the same score: then tau is undefined (null)
    assert result["kendall"] is None or -1 <= result["kendall"] <= 1
    saved = json.loads(scores_file.read_text())
    assert len(saved["scores"]) == 5 and all(0 <= v <= 100 for v in saved["scores"].values())
    # a second run reuses the saved scores instead of evaluating again
    before = scores_file.stat().st_mtime_ns
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["kendall"] == result["kendall"]
    assert json.loads(scores_file.read_text())["scores"] == saved["scores"]
    assert scores_file.stat().st_mtime_ns >= before
    # the same pass recorded each arch's cross-entropy, and FLOPs alone on the same archs is reported
    assert set(saved["loss"]) == set(saved["scores"]) and all(v > 0 for v in saved["loss"].values())
    assert result["flops_proxy"]["count"] == 5 and -1 <= result["flops_proxy"]["kendall"] <= 1


def test_loss_metric_and_scores_file_reuse_the_recorded_pass(cbm_supernet, tmp_path, capsys):
    tables = shared_path("channel_bench_macro")
    scores_file = tmp_path / "scores.json"
    common = ["bench", "cbm", "--space", "mobilenet", "--tables", str(tables), "--json"]
    assert main([*common, "--supernet", str(cbm_supernet), "--sample", "6", "--eval-images", "8",
                 "--calib-images", "16", "--scores-out", str(scores_file), "--metric", "loss"]) == 0
    by_loss = json.loads(capsys.readouterr().out)
    saved = json.loads(scores_file.read_text())
    # the scores file written by --supernet is itself a valid --scores input, for either metric
    assert main([*common, "--scores", str(scores_file), "--metric", "loss"]) == 0
    assert json.loads(capsys.readouterr().out)["kendall"] == by_loss["kendall"]
    assert main([*common, "--scores", str(scores_file)]) == 0
    by_acc = json.loads(capsys.readouterr().out)
    assert by_acc["count"] == 6 and by_acc["picks"]["50%"]["score"] in saved["scores"].values()
    # the loss pick's score is a negative cross-entropy from the file
    assert -by_loss["picks"]["50%"]["score"] in saved["loss"].values()


def test_scoring_the_wrong_space_is_a_user_error(cbm_supernet, capsys):
    tables = shared_path("channel_bench_macro")
    code = main(["bench", "cbm", "--space", "resnet", "--tables", str(tables), "--supernet", str(cbm_supernet),
                 "--sample", "4"])
    assert code == 2 and "cbm_resnet" in capsys.readouterr().err


def test_bilateral_scores_are_the_mean_of_left_and_right(cbm_supernet, tmp_path, capsys):
    tables = shared_path("channel_bench_macro")
    losses = {}
    for align in ("left", "right", "both"):
        out = tmp_path / f"{align}.json"
        argv = ["bench", "cbm", "--space", "mobilenet", "--tables", str(tables), "--supernet", str(cbm_supernet),
                "--sample", "3", "--eval-images", "8", "--calib-images", "16", "--align", align,
                "--scores-out", str(out), "--json"]
        assert main(argv) == 0
        capsys.readouterr()
        losses[align] = json.loads(out.read_text())["loss"]
    for key, both in losses["both"].items():
        assert both == pytest.approx((losses["left"][key] + losses["right"][key]) / 2)
    # a scores file of one side is not resumed as another
    argv[argv.index("--align") + 1] = "left"
    assert main(argv) == 2
