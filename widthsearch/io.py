"""Atomic file writes (a temporary file in the target's folder, then ``os.replace``) and the one
YAML reader of the package.

A reader (or a run that crashes mid-write) sees either the old file or the complete new one,
never half of it: the rename is atomic on one file system, which is why the temporary file lives
in the target's own folder. Every writer here creates the parent folder and gives the file the
mode ``open()`` would have given it (``mkstemp`` alone would leave it readable by its owner only).

:func:`read_yaml` reads the YAML files users hand to commands (channel configs, recipes): plain
data only, and a one-line :class:`~widthsearch.errors.UserError` for every way a file can be
unusable.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

from widthsearch.errors import UserError

__all__ = [
    "read_yaml",
    "same_path",
    "file_mode",
    "write_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "json_text",
    "write_jsonl_atomic",
    "torch_save_atomic",
    "savez_atomic",
]


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two spellings name the same file or folder: relative or absolute, through links
    (``os.path.samefile`` when both exist, else the resolved paths). Resumed runs compare recorded
    paths with it, so ``../data/x.tar.gz`` continues a run recorded as ``/work/data/x.tar.gz``."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def file_mode() -> int:
    """``0o666`` minus the process umask: what ``open()`` would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None], *, fsync: bool = False) -> Path:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, then move it into place.

    ``fsync`` flushes the data to disk before the rename, for files whose loss after a power cut
    would cost hours (checkpoints). On any error the temporary file is removed and the old file,
    if any, is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON plus a final newline, atomically (see :func:`json_text`)."""
    return write_text_atomic(path, json_text(obj) + "\n")


def json_text(obj: Any, indent: int = 2) -> str:
    """``obj`` as JSON indented like ``json.dumps(obj, indent=2)``, except that a list holding
    only numbers, strings, booleans or nulls stays on one line: a channel config reads as one
    row, and a training's 10,000 per-image answers take one line instead of 10,000."""
    return _json_lines(obj, indent, 0)


def _json_lines(obj: Any, indent: int, depth: int) -> str:
    inner, outer = " " * (indent * (depth + 1)), " " * (indent * depth)
    if isinstance(obj, Mapping) and obj:
        items = [f"{inner}{_json_key(k)}: {_json_lines(v, indent, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        items = [inner + _json_lines(v, indent, depth + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + outer + "]"
    return json.dumps(obj)


def _json_key(key: Any) -> str:
    """A mapping key as ``json.dumps`` writes it: ``True`` as ``"true"``, ``1`` as ``"1"``."""
    return json.dumps(key if isinstance(key, str) else json.dumps(key))


def json_ready(value: Any) -> Any:
    """``value`` as JSON can hold it: tuples as lists, keys as strings, anything else JSON has no
    type for (a model factory's keyword argument, say) as its ``repr``, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def write_jsonl_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically (the whole log is rewritten each time)."""
    return write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically and synced to disk (checkpoints are expensive to lose)."""
    import torch

    return write_atomic(path, lambda handle: torch.save(obj, handle), fsync=True)


def savez_atomic(path: str | Path, **arrays: Any) -> Path:
    """``numpy.savez`` (uncompressed) atomically; the name is used as given (no ``.npz`` added)."""
    import numpy as np

    return write_atomic(path, lambda handle: np.savez(handle, **arrays))


def read_yaml(path: str | Path, what: str, *, expected: type = dict, shape: str = "a mapping",
              error: type[UserError] = UserError) -> Any:
    """The document of the YAML file at ``path``, parsed by ``yaml.safe_load`` (plain data: no tag
    can make it build Python objects).

    A file that cannot be used is one ``error`` naming ``what`` (``"recipe"``, ``"channel
    config"``) and the path: missing or not a file, unreadable, not UTF-8, broken YAML (with the
    line), or a top-level value that is not an ``expected`` (``shape`` says in words what it should
    be: ``"a mapping with a 'channels' entry"``).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    if not path.is_file():
        raise error(f"{what} {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        # decoded here rather than with the locale's encoding, so a file reads the same everywhere
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: broken YAML{_yaml_error_line(exc, text)}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise error(f"{what} {path}: broken YAML: nested too deeply") from None
    if not isinstance(doc, expected):
        raise error(f"{what} {path}: expected {shape}, found {_yaml_kind(doc)}")
    return doc


def _yaml_error_line(exc: Exception, text: str) -> str:
    """`` (line N)`` where a YAML error happened, or nothing when PyYAML does not say."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f" (line {mark.line + 1})"
    position = getattr(exc, "position", None)  # a ReaderError (a control character) has only this
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        return f" (line {line})"
    return ""


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's description of the error, without its multi-line source excerpt."""
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
    if problem:
        return str(problem)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _yaml_kind(doc: Any) -> str:
    """What a YAML document turned out to be, in words."""
    if doc is None:
        return "an empty document"
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number",
             float: "a number"}
    return kinds.get(type(doc), type(doc).__name__)
