"""The command line: JSON contracts, one-line errors with exit code 2, nothing overwritten."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from widthsearch.cli.main import main
from widthsearch.export import load_static
from widthsearch.models import build_model
from widthsearch.space import Supernet
from widthsearch.space.config import save_config


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_has_the_standard_numbers(capsys):
    code, out, _ = run_cli(capsys, "profile", "--model", "mobilenet_v2", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["flops"], result["params"]) == (300_774_272, 3_504_872)
    assert result["latency_ms"] is None


def test_profile_latency_is_measured(capsys):
    code, out, _ = run_cli(capsys, "profile", "--model", "tiny_cnn", "--latency", "--runs", "3", "--json")
    result = json.loads(out)
    assert code == 0 and result["latency_ms"] > 0
    assert result["latency"]["batch_size"] == 1 and result["latency"]["runs"] == 3


def test_space_json_of_the_cbm_net(capsys):
    code, out, _ = run_cli(capsys, "space", "--model", "cbm_mobilenet", "--groups", "4", "--json")
    result = json.loads(out)
    assert code == 0 and result["size"] == 16384
    assert [u["max"] for u in result["units"]] == [128, 768, 768, 768, 256, 1536, 1024]
    assert result["units"][0]["choices"] == [32, 64, 96, 128]


def _config_file(tmp_path, model="tiny_cnn", mutate=None):
    net = Supernet(build_model(model), torch.randn(1, 1, 8, 8), groups=10)
    config = {u.name: u.choices[len(u.choices) // 2] for u in net.space.units}
    path = save_config(tmp_path / "cfg.yaml", net.space, config, model=model, groups=10)
    if mutate:
        doc = yaml.safe_load(path.read_text())
        mutate(doc)
        path.write_text(yaml.safe_dump(doc))
    return path, net, config


def test_profile_of_a_config_equals_its_cost(tmp_path, capsys):
    path, net, config = _config_file(tmp_path)
    code, out, _ = run_cli(capsys, "profile", "--model", "tiny_cnn", "--channels", str(path), "--json")
    assert code == 0
    cost = net.space.cost(config)
    assert (json.loads(out)["flops"], json.loads(out)["params"]) == (cost.flops, cost.params)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile", "--model", "nope"], "unknown model"),
        (["profile", "--model", "tiny_cnn", "--input", "3x8"], "bad input shape"),
        (["profile", "--model", "tiny_cnn", "--input", "1xax8"], "bad input shape"),
        (["profile", "--model", "tiny_cnn", "--channels", "/does/not/exist.yaml"], "does not exist"),
        (["space", "--model", "tiny_cnn", "--groups", "0"], "groups"),
        (["export", "--checkpoint", "/no/such.pt", "--channels", "/no/c.yaml", "--out", "x.pt"], "does not exist"),
        (["search", "--checkpoint", "/no/such.pt", "--target", "flops=0.5", "--out", "x"], "does not exist"),
        (["run", "--targets", "2", "--out", "x"], "fraction"),
        (["run", "--seeds", "0,x", "--out", "x"], "expected integers"),
        (["run", "--seeds", "1,1", "--out", "x"], "distinct non-negative seeds"),
        (["run", "--method", "annealing", "--out", "x"], "unknown method 'annealing'; choose one of: autoslim, bcnet, netadjust, spnet"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["channels"].__setitem__("ghost", 4), "unknown unit"),
        (lambda d: d["channels"].pop(next(iter(d["channels"]))), "missing unit"),
        (lambda d: d["channels"].__setitem__(next(iter(d["channels"])), 10_000), "above its maximum"),
        (lambda d: d["channels"].__setitem__(next(iter(d["channels"])), -3), "at least 1"),
        (lambda d: d["channels"].__setitem__(next(iter(d["channels"])), "wide"), "whole number"),
        (lambda d: d.__setitem__("model", "resnet50"), "written for model"),
    ],
)
def test_bad_configs_are_rejected_in_one_line(tmp_path, capsys, mutate, message):
    path, _, _ = _config_file(tmp_path, mutate=mutate)
    code, _, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--channels", str(path))
    assert code == 2 and message in err and err.count("\n") == 1


def test_broken_yaml_is_rejected(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("channels: {a: 1\n  b: [\n")
    code, _, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--channels", str(path))
    assert code == 2 and "broken YAML (line 2)" in err and err.count("\n") == 1


def test_config_that_is_not_utf8_is_rejected_in_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: tiny_cnn\nnote: café\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--channels", str(path))
    assert code == 2 and "is not UTF-8 text (byte 0xe9 on line 2)" in err and err.count("\n") == 1


def test_export_of_a_plain_state_dict_equals_the_supernet(tmp_path, capsys):
    model = build_model("tiny_cnn")
    torch.save(model.state_dict(), tmp_path / "full.pt")
    path, net, config = _config_file(tmp_path)
    out = tmp_path / "static.pt"
    code, _, _ = run_cli(capsys, "export", "--model", "tiny_cnn", "--checkpoint", str(tmp_path / "full.pt"),
                         "--channels", str(path), "--out", str(out))
    assert code == 0
    static, header = load_static(out)
    reference = Supernet(model, torch.randn(1, 1, 8, 8), groups=10).export(config).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(static(x), reference(x), atol=1e-6)
    assert header["channels"] == config
    before = out.read_bytes()
    code, _, err = run_cli(capsys, "export", "--model", "tiny_cnn", "--checkpoint", str(tmp_path / "full.pt"),
                           "--channels", str(path), "--out", str(out))
    assert code == 2 and "already exists" in err and out.read_bytes() == before


def test_a_real_process_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "widthsearch.cli.main", "profile", "--model", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: unknown model")


def test_cli_reference_in_docs_is_current():
    from pathlib import Path

    from widthsearch.cli.reference import cli_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    assert doc.read_text() == cli_reference(), "regenerate: python -m widthsearch.cli.reference > docs/cli.md"
