"""Channel-Bench-Macro supernets on equal sub-network passes, trained side by side and scored alike.

Arms (issue "BCNet / BCNetV2", item 8):

* ``autoslim`` -- sandwich rule with inplace distillation, 4 sub-networks per step, E epochs;
* ``bcnet``    -- left- and right-aligned sub-network per step (2 passes), complementary
  sampling, 2E epochs;
* ``uniform``  -- the unilateral ablation: 2 random sub-networks per step, no KD, 2E epochs.

Every arm therefore runs the same number of sub-network forward/backward passes. The arms run as
concurrent ``widthsearch supernet`` processes (one GPU holds them all; small CIFAR nets leave a
GPU mostly idle, so they overlap well). Then the same FLOPs-stratified sample of architectures is
scored by every supernet (``bench cbm --supernet``; bcnet and uniform also bilaterally) and each
score file is compared with the AutoSlim scores and with FLOPs (``bench cbm --compare``, paired
bootstrap over architectures).

A wall-clock budget (``--deadline-s``) guards a lease of fixed length: a short probe measures each
arm's speed and, if the schedule would not fit, restarts every arm with a larger batch (and the
learning rate scaled alike, the linear scaling rule), which keeps the passes equal. Before any of
that, ``--preflight`` trains and scores tiny supernets on fake data on the same device, so that a
failure costs seconds, not the lease.

Example (the 2026-11-25 run on an H100; see docs/benchmarks.md)::

    python benchmarks/cbm_equal_passes.py --data cifar10:../shared/data/cifar10_jpg.tar.gz \\
        --tables ../shared/channel_bench_macro --device cuda --out runs/cbm_equal --deadline-s 480 --preflight

Run it again with the same ``--out`` to resume: finished arms and scores are kept, unfinished
arms continue from their last epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^epoch (\d+)/(\d+): (\d+)/(\d+) steps")


@dataclass
class Arm:
    name: str
    strategy_args: list[str]
    passes_per_step: int
    aligns: list[str]
    proc: subprocess.Popen | None = None
    log_pos: int = 0
    seen: list[tuple[float, int]] = field(default_factory=list)  # (driver time, steps done)
    total_steps: int = 0

    def folder(self, out: Path) -> Path:
        return out / self.name

    def log(self, out: Path) -> Path:
        return out / f"{self.name}.log"


ARMS = {
    "autoslim": lambda: Arm("autoslim", ["--strategy", "autoslim", "--num-samples", "4"], 4, ["left"]),
    "bcnet": lambda: Arm("bcnet", ["--strategy", "bcnet"], 2, ["both", "left"]),
    "uniform": lambda: Arm("uniform", ["--strategy", "uniform", "--num-samples", "2"], 2, ["left"]),
}


def widthsearch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "widthsearch", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["WIDTHSEARCH_PROGRESS_SECONDS"] = "5"
    return env


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def arm_epochs(arm: Arm, autoslim_epochs: int) -> int:
    """Epochs giving ``arm`` as many sub-network passes as AutoSlim's 4 per step for ``autoslim_epochs``."""
    passes = autoslim_epochs * 4
    if passes % arm.passes_per_step:
        raise SystemExit(f"{arm.name}: {passes} passes are not a whole number of epochs")
    return passes // arm.passes_per_step


def start_arm(arm: Arm, a: argparse.Namespace, out: Path, scale: int) -> None:
    folder = arm.folder(out)
    cmd = widthsearch_cmd(
        "supernet", "--model", "cbm_mobilenet", "--groups", "4", "--data", a.data, "--heldout-fraction", "0.1",
        "--epochs", str(arm_epochs(arm, a.epochs)), "--batch-size", str(a.batch_size * scale),
        "--lr", repr(a.lr * scale), "--warmup-epochs", "0.2", "--calib-images", str(a.calib_images),
        "--device", a.device, "--threads", str(a.threads), "--seed", str(a.seed), *arm.strategy_args,
        "--out", str(folder))
    if folder.exists():
        cmd.append("--resume")
    say(f"{arm.name}: {' '.join(cmd[2:])}")
    log = open(arm.log(out), "a")
    arm.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT,
                                start_new_session=True)
    arm.log_pos, arm.seen = arm.log(out).stat().st_size, []


def poll_progress(arm: Arm, out: Path, now: float) -> None:
    with open(arm.log(out)) as f:
        f.seek(arm.log_pos)
        text = f.read()
        arm.log_pos = f.tell()
    for line in text.splitlines():
        m = PROGRESS.match(line.strip())
        if m:
            epoch, epochs, step, steps = map(int, m.groups())
            arm.total_steps = epochs * steps
            arm.seen.append((now, (epoch - 1) * steps + step))


def stop(arm: Arm) -> None:
    if arm.proc is not None and arm.proc.poll() is None:
        os.killpg(arm.proc.pid, signal.SIGKILL)
        arm.proc.wait()


def predicted_seconds_left(arm: Arm) -> float | None:
    """Seconds until the arm's last step, from its speed between its first and last progress line."""
    if len(arm.seen) < 2 or arm.seen[-1][1] <= arm.seen[0][1]:
        return None
    (t0, s0), (t1, s1) = arm.seen[0], arm.seen[-1]
    rate = (s1 - s0) / (t1 - t0)
    return (arm.total_steps - s1) / rate


def failed(arms: list[Arm]) -> list[Arm]:
    return [arm for arm in arms if arm.proc is not None and arm.proc.poll() not in (None, 0)]


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def train(arms: list[Arm], a: argparse.Namespace, out: Path, t_start: float) -> int:
    """Train every arm that has no result yet; the batch scale used (1 if nothing was rescaled)."""
    todo = [arm for arm in arms if not (arm.folder(out) / "result.json").exists()]
    scale_file = out / "batch_scale.json"
    scale = json.loads(scale_file.read_text())["scale"] if scale_file.exists() else 1
    if not todo:
        return scale
    for arm in todo:
        start_arm(arm, a, out, scale)
    probed = scale_file.exists() or a.deadline_s is None
    train_deadline = None if a.deadline_s is None else t_start + a.deadline_s - a.scoring_reserve_s
    while any(arm.proc.poll() is None for arm in todo):
        time.sleep(1.0)
        now = time.perf_counter()
        for arm in todo:
            poll_progress(arm, out, now)
        broken = failed(todo)
        if broken:
            for arm in broken:
                say(f"{arm.name} FAILED (exit {arm.proc.returncode}):\n{tail(arm.log(out))}")
            for arm in todo:
                stop(arm)
            raise SystemExit(3)
        running = [arm for arm in todo if arm.proc.poll() is None]
        if not probed and running and all(len(arm.seen) >= 2 and arm.seen[-1][0] - arm.seen[0][0] >= a.probe_s
                                          for arm in running):
            probed = True
            left = max(predicted_seconds_left(arm) or 0.0 for arm in running)
            fits = now + left * 1.1 <= train_deadline
            say(f"probe: slowest arm needs ~{left:.0f} s more; training deadline in {train_deadline - now:.0f} s")
            if not fits:
                # time per step grows less than linearly with the batch on a launch-bound GPU: assume
                # it grows with the square root, and keep the fit conservative
                budget = train_deadline - time.perf_counter()
                whole = left + (now - min(arm.seen[0][0] for arm in todo))
                new = next((s for s in (2, 4, 8) if s <= a.max_scale and whole * s ** -0.5 * 1.15 <= budget), None)
                if new is None:
                    for arm in todo:
                        stop(arm)
                    say("the schedule does not fit the deadline even at the largest batch scale; stopping")
                    raise SystemExit(4)
                say(f"restarting every arm with batch x{new} and lr x{new} (equal passes are kept)")
                for arm in todo:
                    stop(arm)
                    shutil.rmtree(arm.folder(out))
                scale = new
                for arm in todo:
                    start_arm(arm, a, out, scale)
            scale_file.write_text(json.dumps({"scale": scale}))
        if train_deadline is not None and now > train_deadline:
            for arm in todo:
                stop(arm)
            say("training deadline passed; arms stopped (rerun with the same --out to resume)")
            raise SystemExit(5)
    scale_file.write_text(json.dumps({"scale": scale}))
    for arm in todo:
        say(f"{arm.name} done: {tail(arm.log(out), 1)}")
    return scale


def run_json(cmd: list[str], log: Path) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT)
    log.write_text(res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


def score_files(arms: list[Arm], out: Path) -> list[tuple[Arm, str, Path]]:
    return [(arm, align, out / f"scores_{arm.name}_{align}.json") for arm in arms for align in arm.aligns]


def score(arms: list[Arm], a: argparse.Namespace, out: Path) -> None:
    """Score the same sample with every supernet and side, all at once."""
    procs = []
    for arm, align, path in score_files(arms, out):
        cmd = widthsearch_cmd(
            "bench", "cbm", "--space", "mobilenet", "--tables", a.tables,
            "--supernet", str(arm.folder(out) / "supernet.pt"), "--sample", str(a.sample),
            "--eval-images", str(a.eval_images), "--calib-images", str(a.calib_images), "--align", align,
            "--device", a.device, "--scores-out", str(path), "--json")
        log = open(out / f"{path.stem}.log", "w")
        procs.append((path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=child_env(), cwd=ROOT)))
    for path, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"scoring {path.name} failed:\n{tail(out / f'{path.stem}.log')}")
        say(f"scored {path.name}")


def compare(arms: list[Arm], a: argparse.Namespace, out: Path) -> list[dict]:
    base = out / "scores_autoslim_left.json"
    rows = []
    for arm, align, path in score_files(arms, out):
        for metric in ("loss", "accuracy"):
            for against in ("flops", base):
                if against == base and path == base:
                    continue
                cmd = widthsearch_cmd("bench", "cbm", "--space", "mobilenet", "--tables", a.tables,
                                      "--scores", str(path), "--metric", metric, "--compare", str(against),
                                      "--bootstrap", str(a.bootstrap), "--json")
                res = run_json(cmd, out / "compare.log")
                rows.append({"arm": arm.name, "align": align, "metric": metric,
                             "against": "flops" if against == "flops" else "autoslim_left", "result": res})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data spec, e.g. cifar10:PATH")
    p.add_argument("--tables", required=True, help="the Channel-Bench-Macro tables directory")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--arms", default="autoslim,bcnet,uniform")
    p.add_argument("--epochs", type=int, default=8, help="AutoSlim's epochs; 2-pass arms get twice as many")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--calib-images", type=int, default=512)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--sample", type=int, default=192)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per arm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline-s", type=float, default=None, help="wall-clock budget of the whole driver")
    p.add_argument("--scoring-reserve-s", type=float, default=120.0, help="of the budget, kept for scoring")
    p.add_argument("--probe-s", type=float, default=40.0)
    p.add_argument("--max-scale", type=int, default=4, help="largest batch multiplier the probe may choose")
    p.add_argument("--no-compare", action="store_true",
                   help="stop after scoring (compare later with the same command: trained arms and scores are kept)")
    p.add_argument("--preflight", action="store_true", help="first train and score tiny supernets on fake data")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    names = [n.strip() for n in a.arms.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown or "autoslim" not in names:
        p.error(f"--arms takes autoslim (required) and any of {', '.join(ARMS)}; got {a.arms}")
    arms = [ARMS[n]() for n in names]
    a.out.mkdir(parents=True, exist_ok=True)
    # decode the images once, beside the preflight, so that the arms find them in the cache
    decode = None if a.data.startswith("fake:") else subprocess.Popen(
        [sys.executable, "-c", f"from widthsearch.data import load_data; load_data({a.data!r})"],
        env=child_env(), cwd=ROOT, stderr=open(a.out / "decode.log", "w"))
    if a.preflight:
        preflight(a, [ARMS[n]() for n in names])
        say(f"preflight passed in {time.perf_counter() - t_start:.0f} s")
    if decode is not None and decode.wait() != 0:
        raise SystemExit(f"loading {a.data} failed:\n{tail(a.out / 'decode.log')}")
    scale = train(arms, a, a.out, t_start)
    say(f"training done at {time.perf_counter() - t_start:.0f} s (batch scale {scale})")
    score(arms, a, a.out)
    say(f"scoring done at {time.perf_counter() - t_start:.0f} s")
    rows = [] if a.no_compare else compare(arms, a, a.out)
    summary = {"date": time.strftime("%Y-%m-%d"), "args": {k: str(v) for k, v in vars(a).items()},
               "batch_scale": scale, "wall_s": round(time.perf_counter() - t_start, 1),
               "arms": {arm.name: json.loads((arm.folder(a.out) / "result.json").read_text()) for arm in arms},
               "comparisons": rows}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for row in rows:
        r = row["result"]
        say(f"{row['arm']:9s} {row['align']:5s} {row['metric']:8s} vs {row['against']:13s} "
            + json.dumps({k: r[k] for k in r if k in ("kendall", "delta_kendall", "delta_ci95", "n")}))
    return 0


def preflight(a: argparse.Namespace, arms: list[Arm]) -> None:
    """Train each arm's strategy for one tiny epoch on fake data and score two archs both ways."""
    root = a.out / "preflight"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    procs = []
    for arm in arms:
        cmd = widthsearch_cmd(
            "supernet", "--model", "cbm_mobilenet", "--groups", "4", "--data", "fake:256:3x32x32:10", "--epochs", "1",
            "--batch-size", "32", "--calib-images", "32", "--device", a.device, "--threads", str(a.threads),
            *arm.strategy_args, "--out", str(root / arm.name))
        procs.append((arm, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(root / f"{arm.name}.log", "w"),
                                            env=child_env(), cwd=ROOT)))
    for arm, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"preflight: {arm.name} training failed:\n{tail(root / f'{arm.name}.log')}")
    for arm in arms:
        for align in arm.aligns:
            cmd = widthsearch_cmd("bench", "cbm", "--space", "mobilenet", "--tables", a.tables, "--supernet",
                                  str(root / arm.name / "supernet.pt"), "--sample", "2", "--eval-images", "32",
                                  "--calib-images", "32", "--align", align, "--device", a.device,
                                  "--scores-out", str(root / f"{arm.name}_{align}.json"), "--json")
            run_json(cmd, root / f"{arm.name}_{align}_score.log")
    # the comparison path too, on the tiny scores (2 archs: statistics are meaningless, the code path is not)
    run_json(widthsearch_cmd("bench", "cbm", "--space", "mobilenet", "--tables", a.tables, "--scores",
                             str(root / f"{arms[-1].name}_{arms[-1].aligns[0]}.json"), "--compare",
                             str(root / "autoslim_left.json"), "--json"), root / "compare.log")


if __name__ == "__main__":
    sys.exit(main())
