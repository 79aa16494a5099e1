"""Users' own models: an import spec, a callable or an ``nn.Module`` instance instead of a zoo name.

An *import spec* names a callable that returns an ``nn.Module``: ``package.module:factory`` (any
importable module; the current folder is searched too, after the installed packages) or
``path/to/file.py:factory`` (a file, relative to the current folder; the part after the colon may
be dotted, ``file.py:Class.build``). The spec string is what artifacts store as their model, so
a checkpoint rebuilds the same network by importing the same factory again.

An ``nn.Module`` *instance* (the Python API only) cannot be rebuilt from a string: artifacts store
``"<package.module.Class instance>"`` and loading them needs the same module passed again.

Every failure -- a module that does not import, a missing attribute, a factory that raises or
returns something else than a module, a model that does not run on the input shape or whose
outputs do not match the classes -- is a one-line :class:`~widthsearch.errors.UserError`.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import UserError

__all__ = [
    "RESERVED_KWARGS",
    "accepts",
    "build_user_model",
    "check_output",
    "instance_name",
    "is_import_spec",
    "is_instance_name",
    "is_zoo_model",
    "model_source",
    "require_width_mult",
    "resolve_factory",
    "unknown_model_error",
]

#: arguments the library passes itself (when the factory takes them); ``--model-arg`` may not set them
RESERVED_KWARGS = ("num_classes", "width_mult")

#: a file loaded from an import spec, by absolute path: loading it twice would give two classes
_FILE_MODULES: dict[str, Any] = {}


def is_zoo_model(name: object) -> bool:
    from . import MODEL_NAMES

    return isinstance(name, str) and name in MODEL_NAMES


def is_instance_name(name: object) -> bool:
    """True for the model name of an artifact built from an ``nn.Module`` instance."""
    return isinstance(name, str) and name.startswith("<") and name.endswith(" instance>")


def is_import_spec(name: object) -> bool:
    """True for ``module:factory`` / ``file.py:factory`` (checked for form only, nothing imported)."""
    if not isinstance(name, str) or is_zoo_model(name) or is_instance_name(name):
        return False
    where, _, attr = name.rpartition(":")
    return bool(where) and bool(attr)


def instance_name(module: nn.Module) -> str:
    """What an artifact of ``module`` stores as its model: its class's qualified name."""
    cls = type(module)
    return f"<{cls.__module__}.{cls.__qualname__} instance>"


def unknown_model_error(name: object) -> UserError:
    from . import MODEL_NAMES

    if not isinstance(name, str):  # an object's repr may span many lines: name its type only
        return UserError(f"a model must be named here (a zoo name or an import spec package.module:factory), not "
                         f"given as a {type(name).__name__}; train_supernet and load_supernet take nn.Module instances")
    return UserError(
        f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}; or your own model as "
        "package.module:factory or path/to/file.py:factory"
    )


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _import_file(where: str, spec: str):
    path = Path(where).expanduser()
    if not path.is_file():
        raise UserError(f"--model {spec}: no file {where} (relative to {os.getcwd()})")
    key = str(path.resolve())
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    # a readable module name for messages, unique per file so two my_model.py never collide
    name = f"{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    loader_spec = importlib.util.spec_from_file_location(name, key)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"--model {spec}: {where} is not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling inside the file look themselves up here
    sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserError(f"--model {spec}: loading {where} failed: {_one_line(exc)}") from None
    finally:
        sys.path.remove(str(path.parent))
    _FILE_MODULES[key] = module
    return module


def _import_module(where: str, spec: str):
    # like `python -m`, let a module in the current folder be found (after the installed ones)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (where == exc.name or where.startswith(exc.name + ".")):
            raise UserError(f"--model {spec}: no module named {where!r} (not installed, not in {os.getcwd()})"
                            ) from None
        raise UserError(f"--model {spec}: importing {where} failed: {_one_line(exc)}") from None
    except Exception as exc:
        raise UserError(f"--model {spec}: importing {where} failed: {_one_line(exc)}") from None


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable an import spec names (importing its module or loading its file)."""
    if not is_import_spec(spec):
        raise unknown_model_error(spec)
    where, _, attr = spec.rpartition(":")
    module = _import_file(where, spec) if _is_file(where) else _import_module(where, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"--model {spec}: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"--model {spec}: {attr} is a {type(obj).__name__}, not a callable returning an nn.Module")
    return obj


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword argument ``name`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass nothing it might not take
        return False
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in params)


def require_width_mult(name: str, why: str) -> None:
    """A one-line error, before any work, when ``why`` needs other widths than a user's factory can build."""
    if is_zoo_model(name) or not is_import_spec(name):
        return  # zoo models take width_mult; other names fail with their own error where they are built
    if not accepts(resolve_factory(name), "width_mult"):
        raise UserError(f"{why} needs the model at other widths, but {name} takes no width_mult argument "
                        "(add width_mult to the factory)")


def build_user_model(spec: str, *, num_classes: int | None = None, width_mult: float = 1.0,
                     kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the factory of ``spec`` with ``kwargs``, plus ``num_classes`` and ``width_mult`` when it takes them.

    A factory without ``width_mult`` can only be built at width 1 (wider or narrower networks --
    uniform baselines, SP-Net's bases, widened spaces -- need it); one without ``num_classes``
    keeps its own outputs, which :func:`check_output` compares with the classes.
    """
    if is_instance_name(spec):
        raise UserError(
            f"this artifact was built from an nn.Module instance ({spec[1:-len(' instance>')]}), which cannot be "
            "rebuilt from its name: pass the same module again (Python: model=...), or use an import spec "
            "package.module:factory"
        )
    kwargs = dict(kwargs or {})
    reserved = sorted(set(kwargs) & set(RESERVED_KWARGS))
    if reserved:
        flags = ", ".join("--" + k.replace("_", "-") for k in reserved)
        raise UserError(f"--model-arg may not set {', '.join(reserved)}: use {flags}")
    factory = resolve_factory(spec)
    if accepts(factory, "width_mult"):
        kwargs["width_mult"] = float(width_mult)
    elif float(width_mult) != 1.0:
        raise UserError(f"{spec} takes no width_mult argument, so it cannot be built at width x{width_mult:g} "
                        "(add width_mult to the factory to use widths other than 1)")
    if num_classes is not None and accepts(factory, "num_classes"):
        kwargs["num_classes"] = int(num_classes)
    try:
        model = factory(**kwargs)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{spec}({_call_text(kwargs)}) raised {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def check_output(model: nn.Module, example: torch.Tensor, name: str, num_classes: int | None) -> int:
    """Run ``model`` once (eval mode, no gradients) and return its number of outputs per image.

    The forward is the first time a user's model meets the input shape, so a mismatch here is a
    one-line error naming the shape rather than a traceback from deep inside the analysis.
    """
    shape = "x".join(str(s) for s in example.shape[1:])
    was_training = model.training
    model.eval()  # no BatchNorm statistics change
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as exc:
        raise UserError(f"{name} does not run on {shape} inputs: {_one_line(exc)} (is --input right?)") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != example.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{name} must return logits of shape (batch, classes); it returned {got}")
    classes = int(out.shape[1])
    if num_classes is not None and classes != int(num_classes):
        raise UserError(f"{name} gives {classes} outputs but {num_classes} classes are needed (the data's or "
                        "--num-classes): let the factory take num_classes, or build it with that many outputs")
    return classes


def model_source(model: object) -> tuple[str | None, nn.Module | None]:
    """``(model name to store, instance or None)`` for what the Python API was given as model.

    A string (zoo name or import spec) is kept; a module instance is stored by its class name; a
    plain callable by its import spec ``module:qualname`` when it can be imported back.
    """
    if model is None or isinstance(model, str):
        return model, None
    if isinstance(model, nn.Module):
        return instance_name(model), model
    if callable(model):
        return _callable_spec(model), None
    raise UserError(f"model must be a zoo name, an import spec, a factory or an nn.Module, not {type(model).__name__}")


def _callable_spec(fn: Callable[..., Any]) -> str:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    for key, loaded in _FILE_MODULES.items():
        if loaded.__name__ == module:
            spec = f"{os.path.relpath(key)}:{qualname}"
            break
    else:
        spec = f"{module}:{qualname}"
    if module in (None, "__main__") or "<" in qualname:
        raise UserError(f"{qualname or fn!r} cannot be imported back by name (defined in a script or a function): "
                        "pass it as 'path/to/file.py:name', or pass the nn.Module it returns")
    try:
        same = resolve_factory(spec) is fn
    except UserError:
        same = False
    if not same:
        raise UserError(f"{spec} does not import back to the same callable: pass an import spec string instead")
    return spec


def _call_text(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
