"""``--recipe FILE``: every file in recipes/ runs each of its sections for a few steps on fake: data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, shared_path
from widthsearch.cli.main import main

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))

#: what shrinks each section to a few steps on fake data (flags override the recipe)
FAKE = "fake:24:3x16x16:4"
SMALL = {
    "supernet": ["--data", FAKE, "--heldout-fraction", "0.25", "--epochs", "1", "--batch-size", "8",
                 "--calib-images", "4", "--in-memory", "--device", "cpu", "--threads", "1"],
    "search": ["--search-images", "4", "--device", "cpu"],
    "search evolution": ["--population", "4", "--generations", "1"],
    "train": ["--data", FAKE, "--epochs", "1", "--batch-size", "8", "--in-memory", "--device", "cpu",
              "--threads", "1"],
    "adjust": ["--data", FAKE, "--heldout-fraction", "0.25", "--rounds", "1", "--epochs", "1", "--batch-size", "8",
               "--probe-images", "4", "--passes", "1", "--device", "cpu", "--threads", "1"],
    "bench cbm": ["--sample", "3", "--eval-images", "4", "--calib-images", "4", "--device", "cpu"],
}


def _run(capsys, words: list[str]) -> dict:
    code = main(words + ["--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return json.loads(captured.out)


def test_every_recipe_names_known_commands_and_an_8_gpu_command():
    assert RECIPES, "recipes/ holds the published settings"
    for path in RECIPES:
        doc = yaml.safe_load(path.read_text())
        assert set(doc) <= set(SMALL) - {"search evolution"}, (path.name, set(doc) - set(SMALL))
        text = path.read_text()
        assert "arxiv" in text.lower() and "github.com/" in text, f"{path.name} cites its sources"
        if "supernet" in doc:
            assert "--nproc_per_node 8" in text, f"{path.name} gives the 8-GPU command"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_a_few_steps_on_fake_data(path, tmp_path, capsys):
    doc = yaml.safe_load(path.read_text())
    recipe = ["--recipe", str(path)]
    done: dict[str, dict] = {}
    if "supernet" in doc:
        out = tmp_path / "supernet"
        done["supernet"] = _run(capsys, ["supernet", *recipe, *SMALL["supernet"], "--out", str(out)])
        ckpt = json.loads((out / "result.json").read_text())
        # the recipe's settings reached the run, the overrides won
        args = _checkpoint_args(out / "supernet.pt")
        for key, value in doc["supernet"].items():
            if key not in ("data", "heldout_fraction", "epochs", "batch_size", "loading"):
                assert args[key] == value, key
        assert args["data"] == FAKE and args["epochs"] == 1 and ckpt["epochs_done"] == 1
    if "search" in doc:
        small = SMALL["search"] + (SMALL["search evolution"] if doc["search"].get("algo") == "evolution" else [])
        found = _run(capsys, ["search", *recipe, *small, "--target", "flops=0.995",
                              "--checkpoint", str(tmp_path / "supernet" / "supernet.pt"), "--out", str(tmp_path / "search")])
        assert found
        configs = sorted((tmp_path / "search" / "configs").glob("*.yaml"))
        assert configs, "the search wrote a config"
        if "train" in doc:
            trained = _run(capsys, ["train", *recipe, *SMALL["train"], "--channels", str(configs[0]),
                                    "--out", str(tmp_path / "train")])
            assert trained["epochs_done"] == 1
            args = _checkpoint_args(tmp_path / "train" / "model.pt")
            assert args["label_smoothing"] == doc["train"]["label_smoothing"] and args["lr"] == doc["train"]["lr"]
    if "adjust" in doc:
        adjusted = _run(capsys, ["adjust", *recipe, *SMALL["adjust"], "--out", str(tmp_path / "adjust")])
        assert adjusted
    if "bench cbm" in doc:
        tables = shared_path("channel_bench_macro")
        scored = _run(capsys, ["bench", "cbm", *recipe, *SMALL["bench cbm"], "--tables", str(tables),
                               "--supernet", str(tmp_path / "supernet" / "supernet.pt")])
        assert scored


def _checkpoint_args(path: Path) -> dict:
    from widthsearch.training.checkpoint import load_checkpoint

    return load_checkpoint(path)["args"]


def test_recipe_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("supernet:\n  epochs: 3\n  colour: blue\n")
    assert main(["supernet", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["train", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "no 'train' section" in capsys.readouterr().err
    bad.write_text("supernet:\n  strategy: nope\n")
    assert main(["supernet", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "strategy" in capsys.readouterr().err
    bad.write_text("supernet:\n  epochs: many\n")
    assert main(["supernet", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "epochs" in err and "\n" not in err.strip()
    assert main(["supernet", "--recipe", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for content, message in [(b"supernet:\n  epochs: [3\n", "broken YAML (line 3)"),
                             (b"supernet:\n  note: caf\xe9\n", "not UTF-8 text (byte 0xe9 on line 2)"),
                             (b"- supernet\n", "expected a mapping of command names")]:
        bad.write_bytes(content)
        assert main(["supernet", "--recipe", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_flags_override_the_recipe_and_replace_its_lists(tmp_path):
    from widthsearch.cli.main import _recipe_defaults, build_parser
    from widthsearch.cli.recipe_file import drop_recipe_lists

    recipe = tmp_path / "r.yaml"
    recipe.write_text("search:\n  target: [flops=0.5, flops=0.25]\n  bn: calibrate\n"
                      "supernet:\n  epochs: 7\n  lr: 5e-1\n  loading: stream\n")

    def parse(argv):
        parser = build_parser()
        appended = _recipe_defaults(parser, argv)
        args = parser.parse_args(argv)
        drop_recipe_lists(args, appended)
        return args

    base = ["search", "--recipe", str(recipe), "--checkpoint", "c.pt", "--out", "o"]
    assert parse(base).target == ["flops=0.5", "flops=0.25"] and parse(base).bn == "calibrate"
    args = parse(base + ["--target", "flops=0.1", "--bn", "batch"])
    assert args.target == ["flops=0.1"] and args.bn == "batch"
    sn = ["supernet", "--recipe", str(recipe), "--out", "o"]
    args = parse(sn)
    assert args.epochs == 7 and args.lr == 0.5 and args.loading == "stream"
    args = parse(sn + ["--epochs", "2", "--in-memory"])
    assert args.epochs == 2 and args.loading == "memory"
