"""Metric loggers: TorchRL's, plus what resuming a run needs on top.

:func:`make_logger` builds a :mod:`torchrl.record.loggers` logger through
:func:`torchrl.record.loggers.get_logger` (:class:`~torchrl.record.loggers.CSVLogger`
by default, :class:`~torchrl.record.loggers.TensorboardLogger` or
:class:`~torchrl.record.loggers.WandbLogger` by configuration) under
``<run dir>/logs/<run name>``, and :func:`log_metrics` logs a dict of scalars
with TorchRL's :meth:`~torchrl.record.loggers.Logger.log_metrics` (one device
synchronisation for all tensors).

What this module adds to TorchRL:

* **A clear error for a missing backend.** ``logger=tensorboard`` needs the
  ``tensorboard`` package and ``logger=wandb`` the ``wandb`` package (the
  ``[tensorboard]`` / ``[wandb]`` extras: ``pip install -e '.[tensorboard]'``);
  without it :func:`make_logger` raises :class:`MissingLoggerBackendError`
  (a :class:`~tabb_torchrl.pipeline.config.ConfigError` and an ``ImportError``)
  that says so, instead of TorchRL's bare ``ImportError``.
* **Resume.** Given the logger ``state_dict()`` a checkpoint holds (TorchRL's:
  the experiment name and counters), the CSV logger restores its rows and also
  rewrites the ``scalars/*.csv`` files to the checkpoint, so a resumed run's CSV
  files hold exactly the rows of an uninterrupted run (rows written after the
  last checkpoint by the killed session are dropped). The logger is reopened in
  the run directory of this session (TorchRL's ``get_logger(state_dict=...)``
  reopens the absolute path saved in the checkpoint, and nests a TensorBoard
  resume one folder deeper). TensorBoard appends a new event file to the same
  folder: the events the killed session wrote after its last checkpoint stay
  in the older file. W&B resumes the same run (TorchRL's ``resume="must"``).

Files (CSV backend): ``<run dir>/logs/<run name>/scalars/<metric>.csv``, one
``step,value`` line per entry (``train/loss_qvalue.csv``, ...), and the
hyper-parameters in ``texts/hparams0.txt``.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tabb_torchrl.io import atomic_write
from tabb_torchrl.pipeline.config import ConfigError

__all__ = ["BACKENDS", "MissingLoggerBackendError", "check_logger_backend", "make_logger", "log_metrics",
           "get_console_logger"]

#: The logger backends and the package each one needs (``None``: none beyond the base install).
BACKENDS: dict[str, str | None] = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb"}


class MissingLoggerBackendError(ConfigError, ImportError):
    """A logger backend whose package is not installed (the message names the extra to install).

    Both a :class:`~tabb_torchrl.pipeline.config.ConfigError` (the recipe reports
    it as a configuration error) and an ``ImportError``.

    Examples:
        >>> issubclass(MissingLoggerBackendError, ImportError)
        True
    """


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


def check_logger_backend(backend: str | None) -> None:
    """Raise a clear error for an unknown backend or one whose package is missing.

    Args:
        backend: ``"csv"``, ``"tensorboard"``, ``"wandb"`` or ``""`` / ``None`` (no logger).

    Raises:
        MissingLoggerBackendError: the backend's package is not installed; the
            message names the extra that installs it.
        ConfigError: an unknown backend.

    Examples:
        >>> check_logger_backend("csv")
        >>> check_logger_backend("mlflow")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: logger=mlflow is not a logger backend; valid: csv, ... Fix: logger=csv.
    """
    if not backend:
        return
    if backend not in BACKENDS:
        raise ConfigError(
            f"logger={backend} is not a logger backend; valid: {', '.join(BACKENDS)}, or \"\" (none). Fix: logger=csv."
        )
    package = BACKENDS[backend]
    if package is not None and importlib.util.find_spec(package) is None:
        raise MissingLoggerBackendError(
            f"logger={backend} needs the {package} package: pip install -e '.[{backend}]' "
            f"(in a checkout; pip install 'tabb-torchrl[{backend}]' otherwise). Or use logger=csv, which needs "
            "nothing more."
        )


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


def _state_fits(backend: str, state_dict: Mapping[str, Any]) -> bool:
    """Whether a saved logger state is one of ``backend``'s (the logger may change between sessions)."""
    local = state_dict.get("local") or {}
    if backend == "csv":
        return "scalars" in local
    if backend == "wandb":
        return bool(local.get("id"))
    return not local  # TensorBoard keeps no local state


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
        state_dict: a logger ``state_dict()`` from a checkpoint (resume). A state
            written by another backend (the logger changed between sessions) is
            not restored: the logger starts anew.

    Returns:
        a :class:`torchrl.record.loggers.Logger`, or ``None`` without a backend.

    Raises:
        MissingLoggerBackendError: ``tensorboard`` / ``wandb`` without its package
            (``pip install -e '.[tensorboard]'`` / ``'.[wandb]'``).
        ConfigError: an unknown backend.

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
    check_logger_backend(backend)
    if not backend:
        return None
    from torchrl.record.loggers import get_logger

    log_dir = str(Path(run_dir) / "logs")
    kwargs = {}
    if backend == "wandb":
        kwargs["wandb_kwargs"] = {"project": project, "config": dict(config or {})}
    resume = state_dict is not None and _state_fits(backend, state_dict)
    if resume and backend == "wandb":  # TorchRL reopens the saved W&B run (resume="must")
        return get_logger(backend, logger_name=log_dir, experiment_name=name, state_dict=state_dict, **kwargs)
    if resume:
        name = state_dict.get("exp_name", name)
    logger = get_logger(backend, logger_name=log_dir, experiment_name=name, **kwargs)
    if resume:
        logger.load_state_dict(copy.deepcopy(state_dict))  # TorchRL keeps the lists it is given
        if backend == "csv":
            _rewind_csv(logger)
    elif state_dict is None and config is not None and backend != "wandb":
        try:
            logger.log_hparams(dict(config))
        except Exception:  # noqa: BLE001 - hparams are a convenience
            pass
    return logger


def log_metrics(logger: Any, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
    """Log a dict of scalars with TorchRL's :meth:`~torchrl.record.loggers.Logger.log_metrics`.

    TorchRL converts the tensors with one device synchronisation for all of
    them; without a logger (``None``) the values are only converted.

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
    if logger is not None:
        metrics = logger.log_metrics(dict(metrics), step=step)
    return {k: float(v) for k, v in metrics.items()}
