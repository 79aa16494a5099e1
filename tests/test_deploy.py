"""Deployment formats: ONNX checked by onnxruntime, TorchScript by torch.jit.load, optional packages."""
import json
import random
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from widthsearch.cli.main import main
from widthsearch.deploy import load_torchscript, onnx_bytes, onnx_metadata, require, save_deployed, torchscript_bytes
from widthsearch.errors import UserError
from widthsearch.models import build_model
from widthsearch.space.config import save_config
from widthsearch.space.spec import SpaceSpec, build_supernet

SHAPE = (3, 16, 16)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _static(residual: str, seed: int = 0):
    """resnet20 on 16x16 inputs at a random config: under pad its sums are zero-padded PadAdds."""
    net, _ = build_supernet(SpaceSpec("resnet20", input_shape=SHAPE, groups=4, residual=residual))
    config = net.space.random_config(random.Random(seed))
    for module in net.model.modules():  # non-trivial BN statistics, so that folding them is checked
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.export(config).eval(), config


@pytest.mark.parametrize("residual", ["pad", "tie"])
def test_onnx_export_runs_in_onnxruntime_like_torch(residual):
    static, _ = _static(residual)
    if residual == "pad":
        assert any(type(m).__name__ == "PadAdd" for m in static.modules())
    data = onnx_bytes(static, torch.randn(1, *SHAPE))
    onnx.checker.check_model(onnx.load_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch dimension is dynamic
        x = torch.randn(batch, *SHAPE)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            expected = static(x).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4


def test_torchscript_export_loads_with_torch_jit_load_and_matches(tmp_path):
    static, config = _static("pad", seed=1)
    path = tmp_path / "net.ts"
    path.write_bytes(torchscript_bytes(static, torch.randn(1, *SHAPE), {"channels": config}))
    loaded = torch.jit.load(str(path))
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(loaded(x), static(x), atol=1e-5)
    assert load_torchscript(path)[1] == {"channels": config}


def test_a_wrong_export_is_caught_and_nothing_is_written(tmp_path):
    static, _ = _static("tie")
    other, _ = _static("tie", seed=3)  # other widths, other weights: a different function
    path = tmp_path / "net.onnx"
    path.write_bytes(b"the user's file")
    data = onnx_bytes(other, torch.randn(1, *SHAPE))
    from widthsearch import deploy

    with pytest.raises(UserError, match="differs from the torch network"):
        deploy.verify_onnx(static, data, SHAPE)
    # save_deployed verifies before it replaces the user's file
    original = deploy.onnx_bytes
    try:
        deploy.onnx_bytes = lambda model, example, metadata=None: data
        with pytest.raises(UserError, match="differs"):
            save_deployed(path, "onnx", static, SHAPE, {})
    finally:
        deploy.onnx_bytes = original
    assert path.read_bytes() == b"the user's file"
    assert list(tmp_path.iterdir()) == [path]


def _checkpoint_and_configs(tmp_path, count=2):
    """A plain state_dict of resnet20 (pad) and channel configs of its space."""
    torch.save(build_model("resnet20").state_dict(), tmp_path / "full.pt")
    net, spec = build_supernet(SpaceSpec("resnet20", input_shape=SHAPE, groups=4, residual="pad"))
    rng = random.Random(0)
    paths = []
    for i in range(count):
        paths.append(save_config(tmp_path / f"c{i}.yaml", net.space, net.space.random_config(rng), model="resnet20",
                                 space=spec.to_dict()))
    return [str(p) for p in paths]


def test_cli_exports_onnx_and_torchscript_verified(tmp_path, capsys):
    configs = _checkpoint_and_configs(tmp_path)
    common = ["export", "--model", "resnet20", "--input", "3x16x16", "--groups", "4", "--residual", "pad",
              "--checkpoint", str(tmp_path / "full.pt"), "--channels", *configs, "--json"]
    code, out, err = run_cli(capsys, *common, "--format", "onnx", "--out", str(tmp_path / "onnx"))
    assert code == 0, err
    exported = json.loads(out)["exported"]
    assert [e["format"] for e in exported] == ["onnx", "onnx"]
    assert all(e["verified"] and e["max_difference"] <= 1e-4 for e in exported)
    first = tmp_path / "onnx" / "c0.onnx"
    meta = onnx_metadata(first)
    assert meta["model"] == "resnet20" and meta["flops"] == exported[0]["flops"] and "state_dict" not in meta
    before = first.read_bytes()
    code, _, err = run_cli(capsys, *common, "--format", "onnx", "--out", str(tmp_path / "onnx"))
    assert code == 2 and "already exists" in err and first.read_bytes() == before
    code, out, err = run_cli(capsys, *common[:-3], configs[0], "--json", "--format", "torchscript",
                             "--out", str(tmp_path / "c0.ts"))
    assert code == 0, err
    assert json.loads(out)["exported"][0]["verified"]
    assert load_torchscript(tmp_path / "c0.ts")[1]["channels"] == meta["channels"]


def test_a_static_pt_converts_to_onnx(tmp_path, capsys):
    configs = _checkpoint_and_configs(tmp_path, count=1)
    code, _, err = run_cli(capsys, "export", "--model", "resnet20", "--input", "3x16x16", "--groups", "4",
                           "--residual", "pad", "--checkpoint", str(tmp_path / "full.pt"), "--channels", configs[0],
                           "--out", str(tmp_path / "static.pt"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "export", "--checkpoint", str(tmp_path / "static.pt"), "--format", "onnx",
                             "--out", str(tmp_path / "static.onnx"), "--json")
    assert code == 0, err
    assert json.loads(out)["exported"][0]["verified"]
    code, _, err = run_cli(capsys, "export", "--checkpoint", str(tmp_path / "static.pt"), "--out", str(tmp_path / "x.pt"))
    assert code == 2 and "--format onnx or torchscript" in err


def test_missing_optional_packages_give_one_line_naming_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(UserError, match="'onnxruntime'"):
        require("onnxruntime", "running ONNX models")
    code, _, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--latency", "--runtime", "onnxruntime",
                           "--runs", "1")
    assert code == 2 and "'onnxruntime'" in err and "pip install onnxruntime" in err
    monkeypatch.setitem(sys.modules, "onnx", None)
    configs = _checkpoint_and_configs(tmp_path, count=1)
    code, _, err = run_cli(capsys, "export", "--model", "resnet20", "--input", "3x16x16", "--groups", "4",
                           "--residual", "pad", "--checkpoint", str(tmp_path / "full.pt"), "--channels", configs[0],
                           "--format", "onnx", "--out", str(tmp_path / "c.onnx"))
    assert code == 2 and "'onnx'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.onnx").exists()


def test_the_library_imports_without_onnx_and_onnxruntime():
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
            "import widthsearch.deploy, widthsearch.latency, widthsearch.cli.main\n"
            "widthsearch.cli.main.build_parser()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_profile_measures_latency_on_onnxruntime(capsys):
    code, out, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--latency", "--runtime", "onnxruntime",
                             "--runs", "3", "--threads", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["runtime"] == "onnxruntime" and result["latency"]["device"] == "cpu (onnxruntime)"
    assert result["latency_ms"] > 0 and result["latency"]["threads"] == 1
