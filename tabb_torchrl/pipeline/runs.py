"""Run bookkeeping of the recipes: seeding, run directories, atomic checkpoints.

* :func:`seed_everything`, :func:`spawn_seeds` -- reproducible random streams;
* :func:`resolve_run_dir`, :func:`write_run_state` -- where a run writes and how
  ``resume=true`` finds it again;
* :func:`check_resume` -- a checkpoint fits the configuration (checked before the
  recipe writes anything into the run directory);
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
from tabb_torchrl.pipeline.config import (
    HASH_EXCLUDED_KEYS,
    RUNTIME_KEYS,
    ConfigError,
    _get,
    config_diff,
    find_latest_run,
    read_run_config,
    same_run_config,
)
from tabb_torchrl.pipeline.loggers import get_console_logger

__all__ = ["seed_everything", "spawn_seeds", "save_checkpoint_atomic", "load_checkpoint", "resolve_run_dir",
           "write_run_state", "check_resume", "read_run_config"]

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

    Raises:
        ConfigError: the file is missing, truncated or not a checkpoint (the
            message names the file and the fix).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint_atomic({"rng": np.random.get_state()}, p)
        >>> sorted(load_checkpoint(p))
        ['rng']
        >>> with open(p, "r+b") as f:
        ...     _ = f.truncate(100)
        >>> load_checkpoint(p)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: checkpoint .../ckpt.pt cannot be read (truncated or corrupt: ...
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        raise ConfigError(
            f"checkpoint {path} cannot be read (truncated or corrupt: {type(err).__name__}: {err}). Nothing was "
            "written. Checkpoints are written atomically, so a damaged one comes from a copy, a full disk or another "
            "program. Fix: restore the file from a copy, or start a new run (resume=false with another run_dir)."
        ) from err
    if not isinstance(state, dict):
        raise ConfigError(
            f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint of tabb-torchrl. "
            "Fix: pass resume=<run dir or checkpoint.pt written by recipes/tabb_offline.py>."
        )
    return state


def _refuse_finished(run_dir: Path, what: str) -> None:
    if (run_dir / "summary.json").exists():
        raise ConfigError(
            f"run_dir={run_dir} already holds a finished run (summary.json) and no checkpoint to continue; "
            f"{what} would overwrite it. Fix: choose another run_dir (or delete that folder)."
        )


def _own_checkpoint(run_dir: Path, name: str, hashes: tuple[str, ...]) -> Path | None:
    """``run_dir/name`` when ``run_dir`` holds a checkpoint of one of ``hashes``; refuses another config's."""
    ckpt, state_file = run_dir / name, run_dir / "run_state.json"
    if not ckpt.exists():
        return None
    try:
        found = json.loads(state_file.read_text()).get("config_hash")
    except (OSError, ValueError, AttributeError):
        found = None
    if not same_run_config(run_dir, found, hashes):
        raise ConfigError(
            f"{run_dir} holds a checkpoint of another configuration (hash {found}, this one {hashes[0]}); "
            "resume=true would overwrite it. Fix: run with another output folder (e.g. another "
            "hydra.sweep.dir for a changed grid), or delete that folder."
        )
    return ckpt


def resolve_run_dir(cfg: Any, default_dir: str | os.PathLike, cfg_hash: str,
                    legacy_hashes: tuple[str, ...] | list[str] = ()) -> tuple[Path, Path | None]:
    """Where the run writes, and the checkpoint to resume from (or ``None``).

    Nothing is written: the recipe writes into the run directory only after
    :func:`check_resume` accepted the checkpoint.

    * ``resume=false``: ``run_dir`` (or ``default_dir``, hydra's output dir); a
      folder that already holds a checkpoint or a finished run is refused (pass
      ``resume=true``, or another ``run_dir``).
    * ``resume=true``: the configured ``run_dir`` when set; else ``default_dir``
      when it holds a checkpoint of this configuration (a hydra sweep run again
      over the same sweep folder continues each job in its own folder, and a
      finished job is only summarised again); else the latest run
      directory under ``runs_root`` with the same config hash (or one of
      ``legacy_hashes``, the hashes older versions gave this configuration); a
      fresh run starts when there is none (so job scripts can always pass
      ``resume=true``).
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
        _refuse_finished(run_dir, "a new run")
        return run_dir, None
    if resume in (True, "true", "True"):
        if configured:
            run_dir = Path(configured)
            ckpt = run_dir / name
            if not ckpt.exists():
                _refuse_finished(run_dir, "resume=true (nothing to resume: a new run)")
            return run_dir, (ckpt if ckpt.exists() else None)
        here = _own_checkpoint(Path(default_dir), name, (cfg_hash, *legacy_hashes))
        if here is not None:  # hydra's output dir already holds this run (a sweep run again): continue it
            return Path(default_dir), here
        found = find_latest_run(_get(cfg, "runs_root"), (cfg_hash, *legacy_hashes), name)
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
    """Write ``run_state.json`` (the marker ``resume=true`` searches for), merged into the existing one.

    Examples:
        >>> import tempfile, json
        >>> d = Path(tempfile.mkdtemp())
        >>> write_run_state(d, {"config_hash": "a", "seed": 0}); write_run_state(d, {"config_hash": "b"})
        >>> json.loads((d / "run_state.json").read_text())
        {'config_hash': 'b', 'seed': 0}
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run_state.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):  # a damaged marker is rewritten whole
            old = {}
        if isinstance(old, dict):
            old.update(info)
            info = old
    write_json_atomic(path, info)


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def check_resume(checkpoint: dict, cfg: Any, cfg_hash: str, *, run_dir: str | os.PathLike,
                 checkpoint_path: str | os.PathLike | None = None,
                 legacy_hashes: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Check that a checkpoint continues this configuration; returns the runtime-only changes.

    Called by the recipe before it writes anything, so a refused resume leaves
    the run directory as it was. The checkpoint's config hash must be
    ``cfg_hash`` or one of ``legacy_hashes`` (the hash older versions gave this
    configuration), or the run's ``config.yaml`` must hash to ``cfg_hash`` today
    (:func:`~tabb_torchrl.pipeline.config.same_run_config`); the refusal names the settings that differ from the run's
    ``config.yaml``. Settings of :data:`~tabb_torchrl.pipeline.config.RUNTIME_KEYS`
    (threads, device, ``torch.compile``, logger...) may change: each change is
    returned as a line ``"<key>: <old> -> <new>"`` for the log.

    Args:
        checkpoint: from :func:`load_checkpoint`.
        cfg: the configuration of this session.
        cfg_hash: its :func:`~tabb_torchrl.pipeline.config_hash`.

    Keyword Args:
        run_dir: the run directory (its ``config.yaml`` is the earlier session's).
        checkpoint_path: the file, named in messages.
        legacy_hashes: other accepted hashes.

    Returns:
        list of str: the runtime-only settings this session changes.

    Raises:
        ConfigError: another format version, or another configuration.

    Examples:
        >>> import tempfile
        >>> from tabb_torchrl.pipeline.config import config_hash
        >>> old = {"seed": 0, "threads": None}
        >>> from omegaconf import OmegaConf
        >>> d = tempfile.mkdtemp(); OmegaConf.save(OmegaConf.create(old), f"{d}/config.yaml")
        >>> from tabb_torchrl.pipeline.trainer import CHECKPOINT_VERSION
        >>> ckpt = {"version": CHECKPOINT_VERSION, "config_hash": config_hash(old)}
        >>> new = {"seed": 0, "threads": 1}
        >>> check_resume(ckpt, new, config_hash(new), run_dir=d)
        ['threads: null -> 1']
        >>> check_resume(ckpt, {"seed": 1}, config_hash({"seed": 1}), run_dir=d)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: resume: the checkpoint ... was written by another configuration (hash ..., this one ...): seed 0 -> 1. Nothing was written. Fix: ...
    """
    from tabb_torchrl.pipeline.trainer import CHECKPOINT_VERSION

    where = checkpoint_path or Path(run_dir)
    version = checkpoint.get("version")
    if version != CHECKPOINT_VERSION:
        raise ConfigError(
            f"resume: the checkpoint {where} has format version {version}; this version of tabb-torchrl reads "
            f"version {CHECKPOINT_VERSION}. Nothing was written. Fix: resume it with the tabb-torchrl version that "
            "wrote it, or start a new run (resume=false with another run_dir)."
        )
    saved_cfg = read_run_config(run_dir)
    saved_hash = checkpoint.get("config_hash")
    if not same_run_config(run_dir, saved_hash, (cfg_hash, *legacy_hashes)):
        differ = {} if saved_cfg is None else config_diff(saved_cfg, cfg, exclude=HASH_EXCLUDED_KEYS)
        listed = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in differ.items())
        overrides = " ".join(f"{k}={_show(a)}" for k, (a, _) in differ.items() if a != "<absent>")
        raise ConfigError(
            f"resume: the checkpoint {where} was written by another configuration (hash {saved_hash}, this one "
            f"{cfg_hash}){': ' + listed if listed else ''}. Nothing was written. Fix: resume with the run's own "
            f"settings{' (' + overrides + ')' if overrides else ''}, or start a new run with these settings "
            "(resume=false, and another run_dir if you set one)."
        )
    if saved_cfg is None:
        return []
    return [f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in config_diff(saved_cfg, cfg, include=RUNTIME_KEYS).items()]
