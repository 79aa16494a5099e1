"""Supernet training: sandwich sampling, inplace distillation, exact resume, DDP, BN modes, retraining."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from widthsearch.cli.main import main
from widthsearch.data import load_data
from widthsearch.errors import UserError
from widthsearch.models import build_model
from widthsearch.space import Supernet
from widthsearch.training import (
    evaluate,
    evaluator_for_data,
    get_strategy,
    label_loss,
    load_supernet,
    make_supernet_evaluator,
    sandwich_configs,
    soft_cross_entropy,
    subnet_step,
    teacher_probs,
    train_supernet,
)
from widthsearch.training.checkpoint import load_checkpoint
from widthsearch.training.retrain import load_trained, train_network, uniform_width_for_flops

REPO = Path(__file__).resolve().parents[1]
FAST = {"epochs": 2, "batch_size": 256, "num_samples": 3, "calib_images": 256, "lr": 0.2}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDTHSEARCH_CACHE", str(tmp_path / "cache"))


def _tiny_net(groups: int = 4) -> Supernet:
    torch.manual_seed(0)
    return Supernet(build_model("tiny_cnn"), torch.zeros(2, 1, 8, 8), groups=groups)


# --- sampling -------------------------------------------------------------------------------------


def test_sandwich_configs_max_min_and_valid_random():
    space = _tiny_net().space
    rng = random.Random(0)
    seen = set()
    for _ in range(30):
        configs = sandwich_configs(space, rng, 4)
        assert len(configs) == 4
        assert configs[0] == space.max_config() and configs[1] == space.min_config()
        for cfg in configs[2:]:
            assert space.validate(cfg, strict=True) == cfg
            seen.add(space.key(cfg))
    assert len(seen) > 10  # units are drawn independently: many distinct non-uniform configs
    assert sandwich_configs(space, rng, 1) == [space.max_config()]
    assert sandwich_configs(space, rng, 2) == [space.max_config(), space.min_config()]
    with pytest.raises(UserError):
        get_strategy("nope")
    with pytest.raises(UserError):
        sandwich_configs(space, rng, 0)


def test_every_training_step_visits_max_and_min(tmp_path, monkeypatch):
    import widthsearch.training.slimmable as sn

    calls = []
    real = sn.subnet_step

    def spy(net, x, y, terms, **kw):
        calls.append([term.subnet for term in terms])
        assert [term.kind for term in terms] == ["ce", "kd", "kd", "kd"] and {t.weight for t in terms} == {1.0}
        return real(net, x, y, terms, **kw)

    monkeypatch.setattr(sn, "subnet_step", spy)
    train_supernet({**FAST, "epochs": 1, "num_samples": 4, "data": "fake:600"}, tmp_path / "run")
    net, _ = load_supernet(tmp_path / "run")
    space = net.space
    assert len(calls) == 540 // 256
    for configs in calls:
        assert configs[0] == space.max_config() and configs[1] == space.min_config()
        assert all(space.validate(c, strict=True) == c for c in configs[2:])
    assert calls[0][2:] != calls[1][2:]


def test_bf16_channels_last_steps_run_mixed_precision_on_nhwc(tmp_path, monkeypatch):
    import widthsearch.training.slimmable as sn

    seen = []
    real = sn.subnet_step

    def spy(net, x, y, terms, **kw):
        conv = next(m for m in net.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
        seen.append((
            torch.is_autocast_enabled("cpu"),
            torch.get_autocast_dtype("cpu"),
            x.is_contiguous(memory_format=torch.channels_last),
            conv.weight.is_contiguous(memory_format=torch.channels_last),
        ))
        return real(net, x, y, terms, **kw)

    monkeypatch.setattr(sn, "subnet_step", spy)
    args = {**FAST, "epochs": 2, "data": "fake:600:3x16x16", "precision": "bf16", "channels_last": True}
    result = train_supernet(args, tmp_path / "bf16")
    assert seen and all(s == (True, torch.bfloat16, True, True) for s in seen)
    assert math.isfinite(result["loss"])
    ckpt = load_checkpoint(tmp_path / "bf16" / "supernet.pt")
    assert ckpt["args"]["precision"] == "bf16" and ckpt["args"]["channels_last"] is True
    # weights and optimizer state stay fp32 under mixed precision
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())

    # the default recipe is plain fp32 in NCHW
    seen.clear()
    train_supernet({**FAST, "epochs": 1, "data": "fake:600:3x16x16"}, tmp_path / "fp32")
    assert seen and all(s[0] is False and s[2] is False and s[3] is False for s in seen)


def test_bf16_channels_last_resume_is_exact_and_export_matches(tmp_path):
    args = {**FAST, "data": "digits", "epochs": 2, "precision": "bf16", "channels_last": True}
    train_supernet(args, tmp_path / "full")
    train_supernet(args, tmp_path / "part", stop_after=1)
    resumed = train_supernet({}, tmp_path / "part", resume=True)
    assert resumed["complete"] and resumed["max_acc"] > 0.5  # it learns in bf16
    a = load_checkpoint(tmp_path / "full" / "supernet.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "supernet.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(UserError, match="differs from the checkpoint"):
        train_supernet({"precision": "fp32"}, tmp_path / "part", resume=True)
    with pytest.raises(UserError, match="--precision"):
        train_supernet({**args, "precision": "fp16"}, tmp_path / "bad")
    assert not (tmp_path / "bad" / "supernet.pt").exists()

    # a bf16-trained checkpoint is an ordinary fp32 supernet: its exports compute what it computes
    net, _ = load_supernet(tmp_path / "full")
    cfg = net.space.random_config(random.Random(5))
    x = torch.randn(16, 1, 8, 8)
    with net.using(cfg):
        expected = net.model(x)
    assert torch.allclose(net.export(cfg).eval()(x), expected, atol=1e-5)


# --- losses ------------------------------------------------------------------------------------------


def test_soft_cross_entropy_matches_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    teacher_logits = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]], requires_grad=True)
    p = teacher_probs(teacher_logits)
    loss = soft_cross_entropy(student, p)
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher_logits.tolist()):
        zt = sum(math.exp(v) for v in t_row)
        zs = sum(math.exp(v) for v in s_row)
        expected += -sum((math.exp(t) / zt) * (s - math.log(zs)) for s, t in zip(s_row, t_row))
    expected /= 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert teacher_logits.grad is None  # the teacher's distribution is detached
    # gradient of soft CE w.r.t. student logits is (softmax(student) - p) / batch
    assert torch.allclose(student.grad, (F.softmax(student.detach(), 1) - p) / 2, atol=1e-6)


def test_label_loss_with_smoothing_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    target = torch.tensor([1])
    eps = 0.1
    log_q = [v - math.log(sum(math.exp(u) for u in logits[0].tolist())) for v in logits[0].tolist()]
    smooth = [eps / 4 + (1 - eps) * (k == 1) for k in range(4)]
    expected = -sum(s * lq for s, lq in zip(smooth, log_q))
    assert label_loss(logits, target, eps).item() == pytest.approx(expected, rel=1e-6)
    assert label_loss(logits, target).item() == pytest.approx(-log_q[1], rel=1e-6)


def test_autoslim_step_accumulates_label_and_distillation_gradients():
    net = _tiny_net()
    model = net.model.train()
    space = net.space
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    cfg_min = space.min_config()
    terms = [(space.max_config(), 1.0, "ce"), (cfg_min, 1.0, "kd")]
    stats = subnet_step(net, x, y, terms, label_smoothing=0.1)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    net.set_config(space.max_config())
    out_max = model(x)
    loss_max = F.cross_entropy(out_max, y, label_smoothing=0.1)
    net.set_config(cfg_min)
    out_min = model(x)
    p = F.softmax(out_max.detach(), dim=1)
    loss_min = -(p * F.log_softmax(out_min, dim=1)).sum(1).mean()
    (loss_max + loss_min).backward()
    for n, prm in model.named_parameters():
        assert torch.allclose(got[n], prm.grad, atol=1e-5, rtol=1e-4), n
    assert stats["losses"] == pytest.approx([loss_max.item(), loss_min.item()], rel=1e-5)


# --- checkpoints and exact resume ----------------------------------------------------------------------


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    args = {**FAST, "data": "digits", "epochs": 3}
    full = train_supernet(args, tmp_path / "full")
    assert full["complete"] and full["epochs_done"] == 3
    part = train_supernet(args, tmp_path / "part", stop_after=1)
    assert part["epochs_done"] == 1 and not part["complete"]
    resumed = train_supernet({"epochs": 3}, tmp_path / "part", resume=True)
    assert resumed["complete"] and resumed["epochs_done"] == 3

    a = load_checkpoint(tmp_path / "full" / "supernet.pt")
    b = load_checkpoint(tmp_path / "part" / "supernet.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for ra, rb in zip(a["history"], b["history"]):
        assert ra["loss"] == rb["loss"] and ra["max_acc"] == rb["max_acc"] and ra["min_acc"] == rb["min_acc"]
    assert b["optimizer"]["state"].keys() == a["optimizer"]["state"].keys()

    log = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert {"loss", "max_acc", "min_acc", "seconds"} <= set(log[-1])


def test_checkpoint_is_plain_data_and_rebuilds_the_supernet(tmp_path):
    train_supernet({**FAST, "epochs": 1, "data": "fake:300", "width_mult": 0.5, "groups": 5}, tmp_path)
    ckpt = torch.load(tmp_path / "supernet.pt", weights_only=True)
    args = ckpt["args"]
    for key in ("model", "width_mult", "groups", "input_shape", "num_classes", "data", "heldout_fraction", "seed"):
        assert key in args
    net, meta = load_supernet(tmp_path / "supernet.pt")
    assert meta["width_mult"] == 0.5 and meta["epoch"] == 1
    assert all(len(u.choices) <= 5 for u in net.space.units)
    for key, value in net.model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])
    assert not list(tmp_path.glob(".*tmp")), "no temporary files left behind"


def test_existing_checkpoint_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["supernet", "--model", "tiny_cnn", "--data", "fake:300", "--epochs", "1", "--batch-size", "128",
            "--out", str(out), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["complete"] and 0 <= result["max_acc"] <= 1
    before = (out / "supernet.pt").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err
    assert (out / "supernet.pt").read_bytes() == before
    # resuming with a different recipe is refused, resuming a finished run is a no-op
    assert main(argv[:-1] + ["--resume", "--lr", "0.5"]) == 2
    assert "differs from the checkpoint" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert (out / "supernet.pt").read_bytes() == before


# --- BN at evaluation ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("sn")
    train_supernet({**FAST, "data": "digits", "epochs": 2}, out)
    return load_supernet(out)


def test_bn_calibrate_and_batch_modes(trained_digits):
    net, meta = trained_digits
    data = load_data(meta["data"], meta["heldout_fraction"], meta["seed"])
    x, y = data.heldout.x, data.heldout.y
    space = net.space
    before = {k: v.clone() for k, v in net.model.state_dict().items()}
    config_before = dict(net.config)

    cal = make_supernet_evaluator(net, x, y, bn="calibrate", calib_batches=data.train.x[:512])
    cal_small_batches = make_supernet_evaluator(net, x, y, bn="calibrate", calib_batches=data.train.x[:512], batch_size=7)
    batch = make_supernet_evaluator(net, x, y, bn="batch")
    for cfg in (space.max_config(), space.min_config(), space.random_config(random.Random(1))):
        a = cal(cfg)
        assert 0.0 <= a <= 1.0
        assert cal_small_batches(cfg) == a  # calibrated scores do not depend on the evaluation batch
        assert 0.0 <= batch(cfg) <= 1.0
    assert cal(space.max_config()) > 0.5

    # calibrating on the evaluation images themselves equals normalising with their batch statistics
    same = make_supernet_evaluator(net, x, y, bn="calibrate", calib_batches=[x])
    for cfg in (space.max_config(), space.min_config()):
        assert abs(same(cfg) - batch(cfg)) <= 1.0 / len(y)

    # evaluators leave weights, BN buffers and the active config untouched
    for k, v in net.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.config == config_before
    with pytest.raises(UserError):
        make_supernet_evaluator(net, x, y, bn="nope")
    # the data-set helper calibrates on training images and scores the held-out split
    assert evaluator_for_data(net, data)(space.max_config()) == pytest.approx(cal(space.max_config()), abs=0.05)


def test_calibrated_export_scores_what_the_evaluator_predicts(trained_digits):
    net, meta = trained_digits
    data = load_data(meta["data"], meta["heldout_fraction"], meta["seed"])
    cfg = net.space.random_config(random.Random(3))
    calib = data.train.x[:512]
    score = make_supernet_evaluator(net, data.heldout.x, data.heldout.y, calib_batches=calib)(cfg)
    state = {k: v.clone() for k, v in net.model.state_dict().items()}
    net.calibrate_bn([calib], cfg)
    static = net.export(cfg)
    net.model.load_state_dict(state)
    net.set_config(net.space.max_config())
    assert evaluate(static, data.heldout.x, data.heldout.y) == pytest.approx(score)
    # the loss metric is minus the exported net's mean cross-entropy on the same images
    neg_loss = make_supernet_evaluator(net, data.heldout.x, data.heldout.y, calib_batches=calib, metric="loss")(cfg)
    static.eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(static(data.heldout.x), data.heldout.y).item()
    assert neg_loss == pytest.approx(-expected, rel=1e-4)
    with pytest.raises(UserError):
        make_supernet_evaluator(net, data.heldout.x, data.heldout.y, calib_batches=calib, metric="top5")


# --- distributed -----------------------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    import widthsearch.training.skeleton as skeleton
    import widthsearch.training.slimmable as sn
    rank = int(os.environ["RANK"])
    out = sys.argv[1]
    seen = []
    real = sn.subnet_step
    def spy(net, x, y, terms, **kw):
        seen.append([dict(t.subnet) for t in terms])
        return real(net, x, y, terms, **kw)
    sn.subnet_step = spy
    captured = {}
    real_loop = skeleton.EpochLoop
    class Loop(real_loop):
        def run(self, stop_after=None):
            history = super().run(stop_after)
            captured["state"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return history
    skeleton.EpochLoop = Loop
    torch.set_num_threads(1)
    sn.train_supernet({"data": "fake:400", "epochs": 1, "batch_size": 64, "num_samples": 4,
                       "calib_images": 64, "device": "cpu"}, out)
    torch.save({"configs": seen, "state": captured["state"]}, os.path.join(out, f"rank{rank}.pt"))
    """
)


@pytest.mark.distributed
def test_torchrun_two_processes_share_weights_but_not_configs(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(script), str(out)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    steps = (360 // 2) // 32
    assert len(r0["configs"]) == len(r1["configs"]) == steps
    for c0, c1 in zip(r0["configs"], r1["configs"]):
        assert c0[:2] == c1[:2]  # both ranks train the max and min configs
    assert [c[2:] for c in r0["configs"]] != [c[2:] for c in r1["configs"]]  # rank-dependent sampling
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    ckpt = load_checkpoint(out / "supernet.pt")
    assert ckpt["world_size"] == 2
    for key, value in ckpt["model"].items():
        assert torch.equal(value, r0["state"][key]), key


# --- retraining --------------------------------------------------------------------------------------------


def test_train_cli_tiny(tmp_path, capsys):
    out = tmp_path / "net"
    code = main(["train", "--model", "tiny_cnn", "--data", "digits", "--epochs", "2", "--batch-size", "128",
                 "--width-mult", "0.5", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["accuracy"] > 0.3
    assert isinstance(result["flops"], int) and isinstance(result["params"], int)
    assert Path(result["checkpoint"]).is_file()
    model, meta = load_trained(result["checkpoint"])
    data = load_data("digits")
    assert evaluate(model, data.test.x, data.test.y) == pytest.approx(result["accuracy"])
    assert sum(p.numel() for p in model.parameters()) == result["params"]
    assert main(["train", "--model", "tiny_cnn", "--epochs", "1", "--out", str(out)]) == 2  # never overwrite
    # the same network in bf16 mixed precision and NHWC: the flags reach the checkpoint, it still learns
    code = main(["train", "--model", "tiny_cnn", "--data", "digits", "--epochs", "2", "--batch-size", "128",
                 "--width-mult", "0.5", "--precision", "bf16", "--channels-last", "--out", str(tmp_path / "bf16"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.3
    saved = load_checkpoint(tmp_path / "bf16" / "model.pt")["args"]
    assert saved["precision"] == "bf16" and saved["channels_last"] is True


def test_train_searched_config_and_uniform_baseline(tmp_path):
    from widthsearch.space.config import save_config

    net = _tiny_net(groups=10)
    cfg = net.space.uniform_config(0.5)
    cfg[net.space.units[0].name] = net.space.units[0].max
    path = save_config(tmp_path / "cfg.yaml", net.space, cfg, model="tiny_cnn", width_mult=1.0, groups=10)
    res = train_network({"data": "fake:300", "epochs": 1, "batch_size": 64}, tmp_path / "searched", channels=path)
    assert res["flops"] == net.space.cost(cfg).flops
    assert res["channels"] == cfg
    as_dict = train_network({"data": "fake:300", "epochs": 1, "batch_size": 64}, tmp_path / "dict", channels=cfg,
                            width_mult=1.0)
    assert as_dict["flops"] == res["flops"] and as_dict["accuracy"] == res["accuracy"]

    data = load_data("fake:300")
    w, flops = uniform_width_for_flops("tiny_cnn", data, res["flops"])
    assert 0 < w < 1 and abs(flops - res["flops"]) / res["flops"] < 0.1
    base = train_network({"data": "fake:300", "epochs": 1, "batch_size": 64}, tmp_path / "uniform", uniform_flops=res["flops"])
    assert base["flops"] == flops and base["network"]["width_mult"] == pytest.approx(w)

    with pytest.raises(UserError):
        train_network({"data": "fake:300"}, tmp_path / "x", channels=tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="written for model"):
        train_network({"data": "fake:300", "model": "resnet20"}, tmp_path / "y", channels=path)


def test_progress_prints_plain_lines_off_a_terminal(capsys):
    from widthsearch.progress import Progress

    progress = Progress(4, "epoch 1/2", initial=1, interval=0.0)
    for loss in (2.0, 1.5, 1.25):
        progress.update(loss=loss)
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "\r" not in "".join(lines)
    assert lines[0].startswith("epoch 1/2: 2/4 steps") and "min left" in lines[0]
    assert lines[-1].startswith("epoch 1/2: 4/4 steps") and lines[-1].endswith("loss 1.25")


def test_resolve_device():
    from widthsearch.training.distributed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")


def test_a_search_evaluator_moves_its_images_to_the_supernet_once(monkeypatch):
    # a GPU search scores thousands of candidates on the same images: they go to the device once;
    # "meta" stands in for a GPU, and the scoring itself is recorded instead of run
    import importlib

    # the module, not the function of the same name that widthsearch.training exports
    evaluate_module = importlib.import_module("widthsearch.training.evaluate")
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    net = Supernet(build_model("tiny_cnn", num_classes=10), x[:1], groups=2)
    seen = []
    monkeypatch.setattr(evaluate_module, "supernet_metrics",
                        lambda net, config, x, y, calib=None, **kw: seen.append([x.device, y.device] +
                                                                                [b.device for b in calib])
                        or {"accuracy": 0.5, "loss": 1.0})
    on_cpu = make_supernet_evaluator(net, x, y, num_calib_images=32)
    net.model.to("meta")
    on_gpu = make_supernet_evaluator(net, x, y, num_calib_images=32)
    on_cpu(net.space.max_config()), on_gpu(net.space.max_config())
    assert {d.type for d in seen[0]} == {"cpu"} and {d.type for d in seen[1]} == {"meta"}
    monkeypatch.setattr(evaluate_module, "DEVICE_COPY_LIMIT_BYTES", x.nbytes)  # too large: left where it is
    make_supernet_evaluator(net, x, y, num_calib_images=32)(net.space.max_config())
    assert {d.type for d in seen[2]} == {"cpu"}


def test_compiled_training_step_learns_what_the_eager_one_does_and_resumes_with_or_without(tmp_path):
    """``--compile`` changes float rounding only: the first epoch's loss equals the eager run's to
    rounding, the optimizer and checkpoint keep the plain module (no ``_orig_mod.`` keys), and a
    run may add or drop the flag on resume."""
    recipe = {"data": "digits", "model": "tiny_cnn", "epochs": 2, "batch_size": 128, "threads": 1}
    eager = train_network(recipe, tmp_path / "eager")
    first = train_network({**recipe, "compile": True}, tmp_path / "compiled", stop_after=1)
    saved = load_checkpoint(tmp_path / "compiled" / "model.pt")
    assert saved["args"]["compile"] is True
    assert not any(k.startswith("_orig_mod") for k in saved["model"])
    eager_log = [json.loads(line) for line in (tmp_path / "eager" / "log.jsonl").read_text().splitlines()]
    compiled_log = [json.loads(line) for line in (tmp_path / "compiled" / "log.jsonl").read_text().splitlines()]
    assert compiled_log[0]["loss"] == pytest.approx(eager_log[0]["loss"], rel=1e-3)
    assert first["complete"] is False
    # resumed without the flag: the rest trains eagerly, to an accuracy near the eager run's
    done = train_network({"compile": False}, tmp_path / "compiled", resume=True)
    assert done["complete"] and abs(done["accuracy"] - eager["accuracy"]) < 0.05
    model, _ = load_trained(done["checkpoint"])
    assert sum(p.numel() for p in model.parameters()) == eager["params"]


def test_compile_is_refused_where_it_does_not_apply(tmp_path, capsys):
    # a supernet switches sub-networks every step; the dropout hooks of --train-drop change every epoch
    assert main(["supernet", "--model", "tiny_cnn", "--epochs", "1", "--compile", "--out", str(tmp_path / "s")]) == 2
    assert "--compile is for static networks, not a supernet run" in capsys.readouterr().err
    with pytest.raises(UserError, match="--compile does not work with --train-drop"):
        train_network({"model": "tiny_cnn", "epochs": 1, "compile": True, "train_drop": 0.05}, tmp_path / "t")
    assert not (tmp_path / "s" / "supernet.pt").exists() and not (tmp_path / "t" / "model.pt").exists()


def test_a_failing_compile_becomes_one_line_naming_the_way_out():
    from torch._dynamo.exc import TorchDynamoException

    from widthsearch.training.precision import compile_failures

    with pytest.raises(UserError, match=r"torch.compile failed \(no C\+\+ compiler\); train without --compile"):
        with compile_failures(True):
            raise TorchDynamoException("no C++ compiler\nlong traceback")
    with pytest.raises(TorchDynamoException):  # without --compile such an error is not ours to explain
        with compile_failures(False):
            raise TorchDynamoException("boom")


def test_auto_evaluation_batch_suits_the_device_and_changes_no_number():
    from widthsearch.training.evaluate import CPU_EVAL_BATCH, GPU_EVAL_BATCH, correct_predictions, eval_batch_size, evaluate_metrics

    assert eval_batch_size("auto", torch.device("cpu")) == CPU_EVAL_BATCH
    assert eval_batch_size("auto", torch.device("cuda", 0)) == GPU_EVAL_BATCH
    assert eval_batch_size(37, torch.device("cpu")) == 37 and eval_batch_size(None, torch.device("cpu")) is None
    torch.manual_seed(0)
    model = build_model("tiny_cnn")
    data = load_data("digits")
    assert len(data.test) > CPU_EVAL_BATCH  # so "auto" cuts the images into several batches
    auto = evaluate_metrics(model, data.test.x, data.test.y)
    whole = evaluate_metrics(model, data.test.x, data.test.y, batch_size=None)
    assert auto["accuracy"] == whole["accuracy"] and auto["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert int(correct_predictions(model, data.test.x, data.test.y).sum()) == round(auto["accuracy"] * len(data.test))
