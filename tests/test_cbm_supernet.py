"""Scoring Channel-Bench-Macro architectures with a (tiny, briefly trained) supernet."""
import json

import pytest

from conftest import shared_path
from widthsearch.cli.main import main
from widthsearch.training.supernet import train_supernet


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


def test_scoring_the_wrong_space_is_a_user_error(cbm_supernet, capsys):
    tables = shared_path("channel_bench_macro")
    code = main(["bench", "cbm", "--space", "resnet", "--tables", str(tables), "--supernet", str(cbm_supernet),
                 "--sample", "4"])
    assert code == 2 and "cbm_resnet" in capsys.readouterr().err
