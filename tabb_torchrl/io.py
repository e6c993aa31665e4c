"""Atomic file writes: write a temporary file next to the destination, flush and
``fsync`` it, then ``os.replace`` it onto the destination.

A crash at any moment leaves either the old file or the new one, never a
partial file. Every writer of the library (checkpoints, JSON summaries, dataset
files, behaviour-policy files, logs of references) goes through
:func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write", "atomic_path", "write_bytes_atomic", "write_text_atomic", "write_json_atomic"]


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry (the rename) to disk where the OS allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; on success, fsync it and move it onto ``path``.

    For writers that need a file *name* (``h5py.File``, ``torch.save`` to a path,
    ``savefig``). The temporary file is removed when the block raises. The new
    file gets the usual permissions (``0666`` minus the umask), not ``mkstemp``'s
    ``0600``.

    Args:
        path: the destination.

    Keyword Args:
        suffix (str): suffix of the temporary name (some writers choose the format
            from it, e.g. ``".png"``).

    Examples:
        >>> import tempfile, os
        >>> dest = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with atomic_path(dest) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> open(dest).read()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any):
    """Open a temporary file for writing; on success, fsync it and move it onto ``path``.

    Args:
        path: the destination.
        mode (str): ``"wb"`` (default) or ``"w"`` (text).
        **open_kwargs: passed to :func:`open` (e.g. ``encoding``).

    Examples:
        >>> import tempfile, os
        >>> dest = os.path.join(tempfile.mkdtemp(), "a.bin")
        >>> with atomic_write(dest) as f:
        ...     _ = f.write(b"abc")
        >>> open(dest, "rb").read()
        b'abc'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', got {mode!r}.")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "b")
        >>> write_bytes_atomic(p, b"x"); open(p, "rb").read()
        b'x'
    """
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "t.txt")
        >>> write_text_atomic(p, "hi"); open(p).read()
        'hi'
    """
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 2) -> None:
    """Write ``data`` as strict JSON atomically (``NaN`` / ``inf`` become ``null``).

    Examples:
        >>> import tempfile, os, json
        >>> p = os.path.join(tempfile.mkdtemp(), "s.json")
        >>> write_json_atomic(p, {"score": float("nan"), "n": 1})
        >>> json.load(open(p))
        {'score': None, 'n': 1}
    """
    text = json.dumps(_finite(data), indent=indent, allow_nan=False, default=str)
    write_text_atomic(path, text + "\n")


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
