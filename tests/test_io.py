"""Atomic writers: content, file mode, and nothing half-written or left behind on failure; the YAML
reader: plain data, one-line errors."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from widthsearch.errors import ConfigError, UserError

from widthsearch.io import (
    file_mode,
    read_yaml,
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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"a: 1\nb: [2, 3\n", "broken YAML (line 3)"),  # the flow list is still open at the end
        (b"a: 1\nb:\n  - 2\n c: 4\n", "broken YAML (line 4)"),
        (b"a: 1\nb: \x01\n", "broken YAML (line 2): special characters are not allowed"),
        (b"a: 1\nb: caf\xe9\n", "is not UTF-8 text (byte 0xe9 on line 2)"),
        (b"- 1\n- 2\n", "expected a mapping of things, found a list"),
        (b"just words\n", "expected a mapping of things, found a string"),
        (b"", "expected a mapping of things, found an empty document"),
        (b"[" * 5000, "nested too deeply"),
        (b"a: !!python/object/apply:os.getcwd []\n", "broken YAML (line 1)"),  # safe_load builds no objects
    ],
)
def test_read_yaml_refuses_unusable_files_in_one_line(tmp_path, content, message):
    path = tmp_path / "f.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        read_yaml(path, "thing file", shape="a mapping of things")
    text = str(caught.value)
    assert message in text and text.startswith(f"thing file {path}") and "\n" not in text


def test_read_yaml_missing_folder_and_error_class(tmp_path):
    with pytest.raises(ConfigError, match=r"^channel config .*nope.yaml does not exist$"):
        read_yaml(tmp_path / "nope.yaml", "channel config", error=ConfigError)
    with pytest.raises(UserError, match="is not a file"):
        read_yaml(tmp_path, "recipe")
    path = tmp_path / "ok.yaml"
    path.write_bytes("name: café\nlist: [1, 2]\n".encode("utf-8"))
    assert read_yaml(path, "recipe") == {"name": "café", "list": [1, 2]}
    path.write_text("- 1\n- 2\n")
    assert read_yaml(path, "list file", expected=list, shape="a list") == [1, 2]


def test_json_ready_keeps_what_json_holds_and_names_the_rest():
    from pathlib import Path

    from widthsearch.io import json_ready

    value = {"a": (1, 2.5, None, True), 3: {"path": Path("/x/y")}, "odd": object}
    ready = json_ready(value)
    assert json.loads(json.dumps(ready)) == ready
    assert ready == {"a": [1, 2.5, None, True], "3": {"path": "/x/y"}, "odd": repr(object)}


def test_json_text_reads_back_as_json_dumps_and_keeps_flat_lists_on_one_line(tmp_path):
    from widthsearch.io import json_text

    value = {"answers": [True, False] * 500, "net": {"channels": [16, 32, None, "x"], "empty": [], "no": {}},
             "rows": [[1, 2], [3]], "dicts": [{"a": 1.5}], 1: 2, False: float("inf"), None: "n", "s": "é\"\n"}
    text = json_text(value)
    assert json.loads(text) == json.loads(json.dumps(value))  # same keys (1 -> "1", False -> "false") and values
    assert '"answers": [true, false, true' in text and len(text.splitlines()) == 21
    assert '    "channels": [16, 32, null, "x"],' in text.splitlines()  # indented as json.dumps(indent=2)
    for flat in ([], {}, 3, "s", [1, 2]):
        assert json_text(flat) == json.dumps(flat)
    assert json_text({"k": {"j": {"m": 1}}}) == json.dumps({"k": {"j": {"m": 1}}}, indent=2)
    assert write_json_atomic(tmp_path / "a.json", value).read_text() == text + "\n"
