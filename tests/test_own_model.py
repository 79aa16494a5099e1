"""A user's own model (``--model pkg.mod:factory`` / ``file.py:factory``, or an nn.Module) through every command."""
import json

import pytest
import torch
import yaml

from widthsearch.cli.main import main
from widthsearch.errors import UserError
from widthsearch.export import load_static
from widthsearch.models.user import resolve_factory
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.training.checkpoint import load_checkpoint
from widthsearch.training.slimmable import load_supernet, train_supernet

from conftest import REPO

EXAMPLE = f"{REPO / 'examples' / 'my_model.py'}:build"
QUICK = ("--threads", "1", "--batch-size", "64")


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys, *argv):
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def cli_error(capsys, *argv) -> str:
    code, out, err = cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_module_and_file_forms_give_the_same_space(capsys):
    by_file = cli_json(capsys, "space", "--model", EXAMPLE, "--input", "1x8x8")
    factory = resolve_factory(EXAMPLE)
    assert factory.__name__ == "build"
    by_module = cli_json(capsys, "space", "--model", "widthsearch.models.tiny:TinyCNN", "--input", "1x8x8")
    zoo = cli_json(capsys, "space", "--model", "tiny_cnn")
    assert by_module["units"] == zoo["units"] and by_module["max_flops"] == zoo["max_flops"]
    # the example's residual add ties the stem to the projection; the depthwise conv follows the expansion
    assert [u["name"] for u in by_file["units"]] == ["stem.0", "expand.0", "down.0"]
    assert "project.0" in by_file["units"][0]["members"] and "depthwise.0" in by_file["units"][1]["members"]


def test_profile_passes_model_args_to_the_factory(capsys):
    narrow = cli_json(capsys, "profile", "--model", EXAMPLE, "--input", "1x8x8", "--model-arg", "width=8")
    model = resolve_factory(EXAMPLE)(width=8)
    assert narrow["params"] == sum(p.numel() for p in model.parameters())
    wide = cli_json(capsys, "profile", "--model", EXAMPLE, "--input", "1x8x8", "--model-arg", "width=16")
    assert wide["flops"] > narrow["flops"]


def test_supernet_search_export_and_resume_without_model(tmp_path, capsys):
    sn = tmp_path / "sn"
    first = cli_json(capsys, "supernet", "--model", EXAMPLE, "--model-arg", "width=8", "--data", "digits",
                     "--epochs", "2", "--stop-after", "1", "--groups", "4", "--out", sn, *QUICK)
    assert first["epochs_done"] == 1 and first["model"] == EXAMPLE
    space = load_checkpoint(sn / "supernet.pt")["space"]
    assert space["model"] == EXAMPLE and space["model_kwargs"] == {"width": 8} and space["num_classes"] == 10
    # resumed without --model: the checkpoint's import spec rebuilds the network
    done = cli_json(capsys, "supernet", "--resume", "--out", sn, *QUICK)
    assert done["epochs_done"] == 2 and done["complete"]
    found = cli_json(capsys, "search", "--checkpoint", sn / "supernet.pt", "--target", "flops=0.5",
                     "--search-images", "200", "--out", tmp_path / "search")["found"]
    config = found[0]["config"]
    assert yaml.safe_load(open(config))["space"]["model_kwargs"] == {"width": 8}
    exported = cli_json(capsys, "export", "--checkpoint", sn / "supernet.pt", "--channels", config,
                        "--out", tmp_path / "static.pt")["exported"]
    static, header = load_static(tmp_path / "static.pt")
    assert header["model"] == EXAMPLE and header["num_classes"] == 10
    assert sum(p.numel() for p in static.parameters()) == exported[0]["params"]
    assert static(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_export_of_a_plain_state_dict_needs_input_and_takes_model_args(tmp_path, capsys):
    model = resolve_factory(EXAMPLE)(width=8)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    net, _ = build_supernet(SpaceSpec(EXAMPLE, input_shape=(1, 8, 8), model_kwargs={"width": 8}, groups=4))
    config = net.space.min_config()
    from widthsearch.space.config import save_config

    save_config(tmp_path / "min.yaml", net.space, config, model=EXAMPLE)
    common = ("export", "--checkpoint", tmp_path / "weights.pt", "--channels", tmp_path / "min.yaml",
              "--model", EXAMPLE, "--model-arg", "width=8", "--groups", "4")
    assert "--input CxHxW is required" in cli_error(capsys, *common, "--out", tmp_path / "a.pt")
    cli_json(capsys, *common, "--input", "1x8x8", "--out", tmp_path / "b.pt")
    static, header = load_static(tmp_path / "b.pt")
    assert header["num_classes"] == 10 and header["flops"] == net.space.cost(config).flops


def test_train_and_its_uniform_baseline(tmp_path, capsys):
    result = cli_json(capsys, "train", "--model", EXAMPLE, "--model-arg", "width=8", "--data", "digits",
                      "--uniform-flops", "20K", "--epochs", "1", "--out", tmp_path / "t", *QUICK)
    assert result["network"]["kind"] == "width" and result["network"]["width_mult"] < 1
    assert load_checkpoint(tmp_path / "t" / "model.pt")["space"]["model_kwargs"] == {"width": 8}
    err = cli_error(capsys, "train", "--model", "own_models:no_width", "--data", "digits", "--uniform-flops", "1K",
                    "--epochs", "1", "--out", tmp_path / "u", *QUICK)
    assert "takes no width_mult" in err


def test_run_end_to_end_on_digits(tmp_path, capsys):
    result = cli_json(capsys, "run", "--model", EXAMPLE, "--model-arg", "width=8", "--epochs", "1",
                      "--retrain-epochs", "1", "--targets", "0.5", "--search-images", "200", "--threads", "1",
                      "--out", tmp_path / "run")
    (row,) = result["targets"]
    assert 0 <= row["accuracy"] <= 1 and row["flops"] <= row["target_flops"]
    assert f"`{EXAMPLE}`" in (tmp_path / "run" / "report.md").read_text()


def test_run_refuses_a_factory_without_width_mult_before_any_work(tmp_path, capsys):
    err = cli_error(capsys, "run", "--model", "own_models:no_width", "--epochs", "1", "--out", tmp_path / "r")
    assert "uniform-width baselines" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("model, args, message", [
    ("no_such_module_xyz:build", (), "no module named 'no_such_module_xyz'"),
    ("own_models:missing", (), "has no attribute 'missing'"),
    ("own_models:NOT_CALLABLE", (), "not a callable"),
    ("own_models:raising", (), "raised ValueError: depth must be even"),
    ("own_models:not_a_module", (), "returned a int, not an nn.Module"),
    ("examples/nothing_here.py:build", (), "no file examples/nothing_here.py"),
    ("resnet21", (), "unknown model 'resnet21'"),
    (EXAMPLE, ("--model-arg", "depth=2"), "unexpected keyword argument 'depth'"),
    (EXAMPLE, ("--model-arg", "width"), "expected NAME=VALUE"),
    (EXAMPLE, ("--model-arg", "num_classes=3"), "may not set num_classes: use --num-classes"),
    (EXAMPLE, ("--model-arg", "width={a: 1}"), "must be a number"),
    ("own_models:fixed_classes", ("--num-classes", "10"), "gives 3 outputs but 10 classes are needed"),
    (EXAMPLE, ("--input", "3x8x8"), "does not run on 3x8x8 inputs"),
])
def test_one_line_errors(capsys, model, args, message):
    argv = ("space", "--model", model, *args)
    if "--input" not in args:
        argv += ("--input", "1x8x8")
    assert message in cli_error(capsys, *argv)


def test_missing_input_shape_is_one_line(capsys):
    assert "--input CxHxW is required" in cli_error(capsys, "profile", "--model", EXAMPLE)


def test_data_classes_are_checked_against_a_factory_without_num_classes(tmp_path, capsys):
    err = cli_error(capsys, "supernet", "--model", "own_models:fixed_classes", "--data", "digits", "--epochs", "1",
                    "--out", tmp_path / "sn", *QUICK)
    assert "gives 3 outputs but 10 classes are needed" in err


def test_python_api_trains_a_module_instance_and_needs_it_to_load(tmp_path):
    build = resolve_factory(EXAMPLE)
    mine = build(width=8)
    before = {k: v.clone() for k, v in mine.state_dict().items()}
    classes = {name: type(m) for name, m in mine.named_modules()}
    result = train_supernet({"data": "digits", "epochs": 1, "groups": 4, "threads": 1, "batch_size": 64},
                            tmp_path / "sn", model=mine)
    assert result["model"].startswith("<my_model_") and result["model"].endswith(".MyNet instance>")
    # the user's module is neither converted nor trained in place
    assert {name: type(m) for name, m in mine.named_modules()} == classes
    assert all(torch.equal(v, mine.state_dict()[k]) for k, v in before.items())
    with pytest.raises(UserError, match="built from an nn.Module instance"):
        load_supernet(tmp_path / "sn")
    with pytest.raises(UserError, match="not from a"):
        load_supernet(tmp_path / "sn", model=torch.nn.Sequential(torch.nn.Linear(64, 10)))
    net, meta = load_supernet(tmp_path / "sn", model=build(width=8))
    assert net.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(UserError, match="units"):  # same class, other widths
        load_supernet(tmp_path / "sn", model=build(width=12))


def test_python_api_takes_an_importable_factory(tmp_path):
    build = resolve_factory(EXAMPLE)
    result = train_supernet({"data": "digits", "epochs": 1, "groups": 4, "threads": 1, "batch_size": 64,
                             "model_kwargs": {"width": 8}}, tmp_path / "sn", model=build)
    assert result["model"].endswith("my_model.py:build")
    net, meta = load_supernet(tmp_path / "sn")  # rebuilt from the recorded file and function
    assert meta["space"]["model_kwargs"] == {"width": 8}
