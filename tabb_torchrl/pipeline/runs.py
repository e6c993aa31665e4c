"""Run bookkeeping of the recipes: seeding, run directories, atomic checkpoints.

* :func:`seed_everything`, :func:`spawn_seeds` -- reproducible random streams;
* :func:`resolve_run_dir`, :func:`write_run_state` -- where a run writes and how
  ``resume=true`` finds it again;
* :func:`save_checkpoint_atomic`, :func:`load_checkpoint` -- checkpoints written
  through :func:`tabb_torchrl.io.atomic_write` (a crash leaves the old or the new file).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tabb_torchrl.io import atomic_write, write_json_atomic
from tabb_torchrl.pipeline.config import ConfigError, _get, find_latest_run
from tabb_torchrl.pipeline.loggers import get_console_logger

__all__ = ["seed_everything", "spawn_seeds", "save_checkpoint_atomic", "load_checkpoint", "resolve_run_dir",
           "write_run_state"]

_LOG = get_console_logger()


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and CUDA).

    Examples:
        >>> seed_everything(0); a = torch.rand(1)
        >>> seed_everything(0); bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from ``seed`` (numpy ``SeedSequence``).

    Used for the generators of the pre-training buffer, the stage-2 sampler, the
    hold-out split and the RL buffer, so that no stream depends on another.

    Examples:
        >>> spawn_seeds(0, 2) == spawn_seeds(0, 2), len(set(spawn_seeds(0, 3)))
        (True, 3)
    """
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


def save_checkpoint_atomic(state: dict, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`tabb_torchrl.io.atomic_write` (temporary file, fsync, ``os.replace``).

    A crash at any moment leaves either the previous checkpoint or the new one.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint_atomic({"step": 3}, p)
        >>> load_checkpoint(p)["step"]
        3
    """
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint_atomic` (on the CPU).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint_atomic({"rng": np.random.get_state()}, p)
        >>> sorted(load_checkpoint(p))
        ['rng']
    """
    return torch.load(path, map_location="cpu", weights_only=False)


def resolve_run_dir(cfg: Any, default_dir: str | os.PathLike, cfg_hash: str) -> tuple[Path, Path | None]:
    """Where the run writes, and the checkpoint to resume from (or ``None``).

    * ``resume=false``: ``run_dir`` (or ``default_dir``, hydra's output dir); a
      folder that already holds a checkpoint is refused (pass ``resume=true``).
    * ``resume=true``: the configured ``run_dir`` when set, else the latest run
      directory under ``runs_root`` with the same config hash; a fresh run
      starts when there is none (so job scripts can always pass ``resume=true``).
    * ``resume=<path>``: that run directory or checkpoint file.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> cfg = {"resume": False, "run_dir": None, "runs_root": d,
        ...        "checkpoint": {"filename": "checkpoint.pt"}}
        >>> run_dir, ckpt = resolve_run_dir(cfg, d, "abc")
        >>> ckpt is None
        True
    """
    resume = _get(cfg, "resume", False)
    name = _get(cfg, "checkpoint.filename")
    configured = _get(cfg, "run_dir")
    if resume in (False, None, "false", "False"):
        run_dir = Path(configured or default_dir)
        if (run_dir / name).exists():
            raise ConfigError(
                f"run_dir={run_dir} already holds a checkpoint ({name}). "
                "Fix: pass resume=true to continue it, or choose another run_dir."
            )
        return run_dir, None
    if resume in (True, "true", "True"):
        if configured:
            run_dir = Path(configured)
            ckpt = run_dir / name
            return run_dir, (ckpt if ckpt.exists() else None)
        found = find_latest_run(_get(cfg, "runs_root"), cfg_hash, name)
        if found is None:
            _LOG.info("resume=true: no earlier run of this config (hash %s) under %s; starting a new run.",
                      cfg_hash, _get(cfg, "runs_root"))
            return Path(default_dir), None
        return found, found / name
    path = Path(str(resume))
    ckpt = path / name if path.is_dir() else path
    if not ckpt.exists():
        raise ConfigError(
            f"resume={resume}: no checkpoint at {ckpt}. "
            "Fix: pass a run directory holding a checkpoint, a checkpoint file, or resume=true."
        )
    return ckpt.parent, ckpt


def write_run_state(run_dir: Path, info: dict) -> None:
    """Write ``run_state.json`` (the marker ``resume=true`` searches for)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run_state.json"
    if path.exists():
        old = json.loads(path.read_text())
        old.update(info)
        info = old
    write_json_atomic(path, info)
