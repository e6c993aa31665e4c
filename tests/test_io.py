"""tabb_torchrl.io: atomic writes (old file intact on failure, no temporary file left, usual permissions)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tabb_torchrl.io import atomic_path, atomic_write, write_bytes_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_failing_writer_keeps_old_file_and_leaves_no_temporary_file(tmp_path):
    dest = tmp_path / "data.txt"
    write_text_atomic(dest, "old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_write(dest, "w") as f:
            f.write("half of the new content")
            raise RuntimeError("writer failed")
    assert dest.read_text() == "old"
    assert _listing(tmp_path) == ["data.txt"]
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(dest) as tmp:
            tmp.write_text("new")
            raise RuntimeError("writer failed")
    assert dest.read_text() == "old" and _listing(tmp_path) == ["data.txt"]


def test_failing_rename_keeps_old_file(tmp_path, monkeypatch):
    dest = tmp_path / "data.bin"
    write_bytes_atomic(dest, b"old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(dest, b"new")
    monkeypatch.undo()
    assert dest.read_bytes() == b"old" and _listing(tmp_path) == ["data.bin"]


def test_unserialisable_json_keeps_old_file(tmp_path):
    dest = tmp_path / "s.json"
    write_json_atomic(dest, {"a": 1})

    class Bad:
        def __str__(self):
            raise ValueError("cannot serialise")

    with pytest.raises(ValueError, match="cannot serialise"):
        write_json_atomic(dest, {"a": Bad()})
    assert json.loads(dest.read_text()) == {"a": 1} and _listing(tmp_path) == ["s.json"]


@pytest.mark.parametrize("writer", ["text", "bytes", "json", "path", "torch"])
def test_permissions_follow_the_umask_not_0600(tmp_path, umask_022, writer):
    dest = tmp_path / "sub" / "f"  # the folder is created
    if writer == "text":
        write_text_atomic(dest, "x")
    elif writer == "bytes":
        write_bytes_atomic(dest, b"x")
    elif writer == "json":
        write_json_atomic(dest, {"x": 1})
    elif writer == "path":
        with atomic_path(dest, suffix=".png") as tmp:
            assert tmp.name.endswith(".png") and tmp.parent == dest.parent
            tmp.write_bytes(b"x")
    else:
        with atomic_write(dest) as f:
            torch.save({"x": torch.ones(2)}, f)
    assert os.stat(dest).st_mode & 0o777 == 0o644
    assert _listing(dest.parent) == ["f"]


def test_replacing_an_existing_file(tmp_path):
    dest = tmp_path / "f.txt"
    write_text_atomic(dest, "one")
    write_text_atomic(dest, "two")
    assert dest.read_text() == "two" and _listing(tmp_path) == ["f.txt"]


def test_json_is_strict(tmp_path):
    dest = tmp_path / "s.json"
    write_json_atomic(dest, {"nan": float("nan"), "inf": [float("inf"), -float("inf")], "ok": 1.5,
                             "nested": {"t": (1.0, float("nan"))}})
    text = dest.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("\n")
    # a strict parser reads it back
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data == {"nan": None, "inf": [None, None], "ok": 1.5, "nested": {"t": [1.0, None]}}


def test_atomic_write_rejects_non_write_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "f", "a"):
            pass
    assert _listing(tmp_path) == []
