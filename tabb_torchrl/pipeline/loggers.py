"""Metric loggers (TorchRL's) with checkpointable positions.

:func:`make_logger` builds a :mod:`torchrl.record.loggers` logger (CSV by default,
TensorBoard or W&B by configuration) under ``<run dir>/logs``; given a logger
``state_dict`` saved in a checkpoint it reopens the same experiment, and for the
CSV logger it also rewinds the ``scalars/*.csv`` files to the checkpoint, so a
resumed run's CSV files hold exactly the rows of an uninterrupted run (rows
written after the last checkpoint by the killed session are dropped).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tabb_torchrl.io import atomic_write

__all__ = ["make_logger", "log_metrics", "get_console_logger"]


def get_console_logger() -> logging.Logger:
    """The python logger of the pipeline (hydra writes it to the job's log file too).

    Examples:
        >>> get_console_logger().name
        'tabb_torchrl.pipeline'
    """
    log = logging.getLogger("tabb_torchrl.pipeline")
    if not log.handlers and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return log


def _rewind_csv(logger: Any) -> None:
    """Rewrite the CSV scalar files from the logger's restored in-memory rows."""
    experiment = logger.experiment
    scalars_dir = Path(experiment.log_dir) / "scalars"
    for fd in list(experiment.files.values()):
        fd.close()
    experiment.files.clear()
    kept = set()
    for name, rows in experiment.scalars.items():
        path = scalars_dir / f"{name}.csv"
        with atomic_write(path, "w") as f:
            for step, value in rows:
                f.write(f"{step},{value}\n")
        kept.add(path.resolve())
    if scalars_dir.exists():
        for path in scalars_dir.rglob("*.csv"):
            if path.resolve() not in kept:
                path.unlink()


def make_logger(
    backend: str | None,
    run_dir: str | os.PathLike,
    name: str,
    *,
    project: str = "tabb-torchrl",
    config: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, Any] | None = None,
):
    """Build a TorchRL logger under ``<run_dir>/logs``, or reopen one from a checkpoint.

    Args:
        backend: ``"csv"``, ``"tensorboard"``, ``"wandb"`` or ``""`` / ``None`` (none).
        run_dir: the run directory.
        name: experiment name (the run name).
        project: W&B project.
        config: hyper-parameters logged once (new runs only).
        state_dict: a logger ``state_dict()`` from a checkpoint (resume).

    Returns:
        a :class:`torchrl.record.loggers.Logger`, or ``None`` without a backend.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> lg = make_logger("csv", d, "demo")
        >>> lg.log_scalar("a", 1.0, step=1)
        >>> import copy
        >>> state = copy.deepcopy(lg.state_dict())  # what a checkpoint file holds
        >>> lg.log_scalar("a", 2.0, step=2)  # written after the "checkpoint"
        >>> lg2 = make_logger("csv", d, "demo", state_dict=state)
        >>> open(f"{d}/logs/demo/scalars/a.csv").read()
        '1,1.0\\n'
    """
    from torchrl.record.loggers import get_logger

    if not backend:
        return None
    log_dir = str(Path(run_dir) / "logs")
    kwargs = {}
    if backend == "wandb":
        kwargs["wandb_kwargs"] = {"project": project, "config": dict(config or {})}
    logger = get_logger(backend, logger_name=log_dir, experiment_name=name, state_dict=state_dict, **kwargs)
    if state_dict is not None and backend == "csv":
        _rewind_csv(logger)
    elif state_dict is None and config is not None and backend != "wandb":
        try:
            logger.log_hparams(dict(config))
        except Exception:  # noqa: BLE001 - hparams are a convenience
            pass
    return logger


def log_metrics(logger: Any, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
    """Log a dict of scalars (tensors are converted with one synchronisation).

    Args:
        logger: a TorchRL logger or ``None`` (then nothing is logged).
        metrics: name -> float or 0-d tensor.
        step: the x value.

    Returns:
        the metrics as python floats.

    Examples:
        >>> import torch
        >>> log_metrics(None, {"a": torch.tensor(2.0)}, step=1)
        {'a': 2.0}
    """
    names = list(metrics)
    values = [metrics[k] for k in names]
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if tensors:
        stacked = torch.stack([t.detach().float().reshape(()) for t in tensors]).cpu().tolist()
        it = iter(stacked)
        values = [next(it) if isinstance(v, torch.Tensor) else float(v) for v in values]
    out = {k: float(v) for k, v in zip(names, values)}
    if logger is not None:
        for k, v in out.items():
            logger.log_scalar(k, v, step=step)
    return out
