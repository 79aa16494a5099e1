"""Deployment formats of a static network: ONNX and TorchScript files, and the runtimes that run them.

ONNX goes through PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
PyTorch 2.13 makes the ``torch.export``-based exporter the default, but that one needs the
``onnxscript`` package on top of ``onnx`` and took 23 s per zoo model on our 2 cores where the
TorchScript-based one takes under 2 s, with the same outputs; both run offline. The older
exporter also folds eval-mode BatchNorm into the preceding Conv, as ONNX Runtime would. An export
is checked by running the file in ONNX Runtime on random inputs (:func:`verify_onnx`).

``onnx`` and ``onnxruntime`` are optional: this module imports without them and each function
that needs one raises a one-line :class:`~widthsearch.errors.UserError` naming the package.
Every file carries the widthsearch header (model, space spec, channels, costs): ONNX in its
``metadata_props`` under ``"widthsearch"``, TorchScript as the extra file ``widthsearch.json``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import statistics
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from widthsearch.costs import Latency
from widthsearch.errors import UserError
from widthsearch.io import write_atomic

FORMATS = ("pt", "onnx", "torchscript")
SUFFIXES = {"pt": ".pt", "onnx": ".onnx", "torchscript": ".ts"}
RUNTIMES = ("torch", "onnxruntime")
#: ONNX opset of every export: supported by the pinned exporter and by onnxruntime >= 1.14
OPSET = 17
#: largest |onnxruntime - torch| accepted, relative to max(1, largest |torch output|)
TOLERANCE = 1e-4
METADATA_KEY = "widthsearch"
TORCHSCRIPT_EXTRA = "widthsearch.json"


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional package, or fail with one line saying what to install."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise UserError(
            f"{purpose} needs the Python package '{package}': pip install {package} "
            "(or pip install 'widthsearch[deploy]')"
        ) from None


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """The TorchScript tracer and the TorchScript-based ONNX exporter warn that they are deprecated
    on every call; the warning says nothing the user can act on here (docs/deploy.md does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # strided slices (option-B shortcuts) are left unfolded: a note, not a problem with the file
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        yield


# ---- ONNX ------------------------------------------------------------------------------------------
def onnx_bytes(model: nn.Module, example: torch.Tensor, metadata: Mapping[str, Any] | None = None) -> bytes:
    """The ONNX serialisation of ``model`` (eval mode) with a dynamic batch dimension.

    ``metadata`` is stored as JSON in the model's ``metadata_props`` (needs ``onnx``).
    """
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with _quiet_deprecations(), torch.no_grad():
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=OPSET,
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
    except Exception as exc:  # the exporter raises many kinds; all mean "this net has no ONNX form"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX export of {type(model).__name__} failed: {first}") from exc
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if metadata is None:
        return data
    onnx = require("onnx", "writing metadata into an ONNX file")
    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dict(metadata))
    return proto.SerializeToString()


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The widthsearch header stored in an ONNX file ({} when it has none)."""
    onnx = require("onnx", "reading an ONNX file")
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def ort_session(model: bytes | str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of a serialised model or a file, on ``threads`` intra-op threads
    (default: as many as torch uses now, so that both runtimes are compared alike)."""
    ort = require("onnxruntime", "running ONNX models")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT logs its graph rewrites as warnings
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types, e.g. InvalidGraph
        raise UserError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


def ort_runner(session: Any) -> Callable[[torch.Tensor], Any]:
    """``x -> outputs`` of an ORT session on a torch tensor (converted to numpy once per call)."""
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> Any:
        return session.run(None, {name: x.numpy()})

    return run


def random_inputs(input_shape: Sequence[int], batches: Sequence[int] = (1, 3), seed: int = 0) -> list[torch.Tensor]:
    """Seeded normal inputs of each batch size (a batch of 3 checks the dynamic batch dimension)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(b, *input_shape, generator=generator) for b in batches]


def _max_difference(reference: Callable[[torch.Tensor], torch.Tensor], candidate: Callable[[torch.Tensor], Any],
                    inputs: Sequence[torch.Tensor]) -> float:
    """Largest |candidate - reference| over ``inputs``, relative to max(1, largest |reference|)."""
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = reference(x)
            got = candidate(x)
        got = torch.as_tensor(got[0] if isinstance(got, (list, tuple)) else got)
        if tuple(got.shape) != tuple(expected.shape):
            raise UserError(f"exported output has shape {tuple(got.shape)}, the network {tuple(expected.shape)}")
        scale = max(1.0, float(expected.abs().max()))
        worst = max(worst, float((got.to(expected.dtype) - expected).abs().max()) / scale)
    return worst


def _check_tolerance(what: str, difference: float, tolerance: float) -> float:
    if not difference <= tolerance:  # also catches NaN
        raise UserError(f"{what} differs from the torch network by {difference:.3g} (tolerance {tolerance:g})")
    return difference


def verify_onnx(model: nn.Module, onnx_model: bytes | str | Path, input_shape: Sequence[int],
                tolerance: float = TOLERANCE, seed: int = 0) -> float:
    """Run the ONNX model in onnxruntime and ``model`` in torch on seeded random inputs (batches 1
    and 3); the largest relative difference, or a ``UserError`` when it exceeds ``tolerance``."""
    model.eval()
    run = ort_runner(ort_session(onnx_model, threads=1))
    difference = _max_difference(model, run, random_inputs(input_shape, seed=seed))
    return _check_tolerance("the ONNX export run by onnxruntime", difference, tolerance)


# ---- TorchScript -----------------------------------------------------------------------------------
def torchscript_bytes(model: nn.Module, example: torch.Tensor, metadata: Mapping[str, Any] | None = None) -> bytes:
    """``torch.jit.trace`` of ``model`` in eval mode, saved with the header as an extra file."""
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with _quiet_deprecations(), torch.no_grad():
            traced = torch.jit.trace(model, example)
            extra = {TORCHSCRIPT_EXTRA: json.dumps(dict(metadata or {}))}
            torch.jit.save(traced, buffer, _extra_files=extra)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"TorchScript export of {type(model).__name__} failed: {first}") from exc
    finally:
        model.train(was_training)
    return buffer.getvalue()


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A TorchScript file written here (eval mode) and its widthsearch header."""
    extra = {TORCHSCRIPT_EXTRA: ""}
    with _quiet_deprecations():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    module.eval()
    text = extra[TORCHSCRIPT_EXTRA]
    return module, json.loads(text) if text else {}


def verify_torchscript(model: nn.Module, path: str | Path, input_shape: Sequence[int],
                       tolerance: float = TOLERANCE, seed: int = 0) -> float:
    """Load the TorchScript file with ``torch.jit.load`` and compare it with ``model`` (as
    :func:`verify_onnx`)."""
    model.eval()
    loaded, _ = load_torchscript(path)
    with _quiet_deprecations():
        difference = _max_difference(model, lambda x: loaded(x), random_inputs(input_shape, seed=seed))
    return _check_tolerance("the TorchScript export", difference, tolerance)


# ---- files -----------------------------------------------------------------------------------------
def save_deployed(path: str | Path, fmt: str, model: nn.Module, input_shape: Sequence[int],
                  metadata: Mapping[str, Any], verify: bool = True) -> float | None:
    """Write ``model`` as ``fmt`` ("onnx" or "torchscript") atomically; with ``verify``, load the
    file back in its runtime and compare it with ``model`` (the largest relative difference is
    returned; a larger one than :data:`TOLERANCE` removes nothing and raises)."""
    example = torch.randn(1, *input_shape)
    if fmt == "onnx":
        require("onnx", "--format onnx")
        if verify:
            require("onnxruntime", "verifying an ONNX export")
        data = onnx_bytes(model, example, metadata)
        check = verify_onnx
    elif fmt == "torchscript":
        data = torchscript_bytes(model, example, metadata)
        check = verify_torchscript
    else:
        raise UserError(f"unknown export format {fmt!r}; choose one of: onnx, torchscript (or pt)")
    path = Path(path)
    staged = path.with_name(f".{path.name}.verify")  # checked before it replaces anything of the user's
    write_atomic(staged, lambda handle: handle.write(data))
    try:
        difference = check(model, staged, input_shape) if verify else None
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)
    return difference


# ---- latency on a runtime ----------------------------------------------------------------------------
def measure_runtime_latency(model: nn.Module, example: torch.Tensor, runtime: str = "torch", runs: int = 30,
                            warmup: int = 5, threads: int | None = None, clock: str = "wall") -> Latency:
    """Median latency of ``model`` on ``runtime``: torch eager or onnxruntime on its ONNX export,
    with ``threads`` intra-op threads either way.

    ``clock="cpu"`` times the CPU time of the calling thread instead of the wall clock: with one
    thread, where both runtimes compute in the caller, that is the latency the forward would have on
    an idle core, without the time the OS gives other processes (a shared machine).
    """
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if runs < 1:
        raise UserError(f"--runs must be at least 1, got {runs}")
    previous = torch.get_num_threads()
    threads = int(threads or previous)
    if clock == "cpu" and threads != 1:
        raise UserError("the cpu clock times the calling thread only: use it with 1 thread")
    if runtime == "torch":
        model.eval()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                times = time_calls(lambda: model(example), runs, warmup, clock)
        finally:
            torch.set_num_threads(previous)
        device = str(example.device)
    else:
        run = ort_runner(ort_session(onnx_bytes(model, example[:1]), threads=threads))
        times = time_calls(lambda: run(example), runs, warmup, clock)
        device = "cpu (onnxruntime)"
    return Latency(median_ms=statistics.median(times), p90_ms=times[min(len(times) - 1, int(0.9 * len(times)))],
                   runs=runs, warmup=warmup, batch_size=int(example.shape[0]), threads=threads, device=device)


def time_calls(call: Callable[[], Any], runs: int, warmup: int, clock: str = "wall") -> list[float]:
    """Sorted times (ms) of ``runs`` calls after ``warmup`` untimed ones: wall clock, or the CPU
    time of the calling thread (``clock="cpu"``)."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = now()
        call()
        times.append((now() - start) * 1000.0)
    return sorted(times)
