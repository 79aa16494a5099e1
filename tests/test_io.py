"""Atomic writers: content, file mode, and nothing half-written or left behind on failure."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from widthsearch.io import (
    file_mode,
    savez_atomic,
    torch_save_atomic,
    write_atomic,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)


def test_writers_roundtrip_and_create_parent_folders(tmp_path):
    target = tmp_path / "a" / "b"
    assert json.loads(write_json_atomic(target / "x.json", {"k": [1, 2]}).read_text()) == {"k": [1, 2]}
    rows = [{"epoch": 1}, {"epoch": 2}]
    lines = write_jsonl_atomic(target / "log.jsonl", rows).read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert write_text_atomic(target / "t.txt", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    with np.load(savez_atomic(target / "c.npz", a=np.arange(3))) as d:
        assert d["a"].tolist() == [0, 1, 2]
    assert torch.equal(torch.load(torch_save_atomic({"w": torch.ones(2)}, target / "m.pt"))["w"], torch.ones(2))
    assert sorted(p.name for p in target.iterdir()) == ["c.npz", "log.jsonl", "m.pt", "t.txt", "x.json"]


def test_file_mode_is_what_open_would_give(tmp_path):
    path = write_text_atomic(tmp_path / "f.txt", "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == file_mode()
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(os.stat(plain).st_mode) == file_mode()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "f.txt", "old")

    def fail(handle):
        handle.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomic(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
