"""Configuration helpers of the TABB recipe: validation, hashing, run names, devices.

Everything here works on a plain nested mapping (an omegaconf ``DictConfig`` or a
``dict``), so the functions can be used and tested without hydra.

The checks run **before** any data is generated or loaded (:func:`validate_config`),
then once more on the loaded datasets (:func:`validate_datasets`). Each failure
raises :class:`ConfigError`, whose message names the offending key, the problem,
and the fix.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ALGOS",
    "ConfigError",
    "config_hash",
    "resolve_device",
    "run_name",
    "to_container",
    "validate_config",
    "validate_datasets",
    "batch_split",
]

#: Algorithms the recipe runs (``algo=<name>``): TABB and its baselines / ablations.
ALGOS = ("tabb", "iql_mixed", "iql_target", "src_actor", "dara", "srpo")

#: Top-level keys that do not change what a run computes: they are left out of the
#: config hash, so a resumed run (``resume=true``) or the same run with another
#: logger or checkpoint interval finds the same hash.
HASH_EXCLUDED_KEYS = (
    "resume",
    "run_dir",
    "runs_root",
    "max_steps_this_session",
    "logger",
    "progress",
    "checkpoint",
    "hydra",
    "preset",
)


class ConfigError(ValueError):
    """A bad configuration value, raised at start with the key, the problem and the fix.

    Examples:
        >>> err = ConfigError("algo.name='foo' is unknown. Fix: use algo=tabb.")
        >>> isinstance(err, ValueError)
        True
    """


def to_container(cfg: Any) -> Any:
    """Return ``cfg`` as plain python containers (resolving omegaconf interpolations).

    Args:
        cfg: an omegaconf ``DictConfig`` / ``ListConfig`` or plain python data.

    Examples:
        >>> to_container({"a": [1, 2]})
        {'a': [1, 2]}
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping) or hasattr(node, "get"):
            node = node.get(part, None)
        else:
            return default
    return default if node is None else node


def config_hash(cfg: Any, length: int = 10) -> str:
    """A short, stable hash of everything in ``cfg`` that changes what a run computes.

    Keys listed in :data:`HASH_EXCLUDED_KEYS` (resume, run directory, logger,
    checkpoint interval, ...) are ignored, so that a resumed session or the same run
    logged elsewhere has the same hash.

    Args:
        cfg: the run configuration.
        length: number of hex digits kept.

    Examples:
        >>> a = config_hash({"seed": 0, "resume": False})
        >>> a == config_hash({"seed": 0, "resume": True})
        True
        >>> a == config_hash({"seed": 1})
        False
    """
    data = to_container(cfg)
    data = {k: v for k, v in dict(data).items() if k not in HASH_EXCLUDED_KEYS}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def resolve_device(name: str | None) -> torch.device:
    """Turn the ``device`` option into a :class:`torch.device`.

    ``"auto"`` (or ``None``) picks CUDA when it is available, else the CPU.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} was requested but CUDA is not available on this machine. "
            "Fix: use device=auto or device=cpu."
        )
    return device


def run_name(algo: str, env_id: str, seed: int) -> str:
    """The CORL-style run name ``<algo>_<env>_seed<seed>`` (file-system safe).

    Args:
        algo: algorithm name (``tabb``, ``iql_mixed``, ...).
        env_id: the target env id; ``/`` becomes ``-``.
        seed: the run seed.

    Examples:
        >>> run_name("tabb", "tabb/Hopper-morph-v0", 3)
        'tabb_tabb-Hopper-morph-v0_seed3'
    """
    safe_env = env_id.replace("/", "-").replace(" ", "_")
    return f"{algo}_{safe_env}_seed{seed}"


def batch_split(cfg: Any) -> tuple[int, int]:
    """The ``(n_source, n_target)`` rows per RL batch for the configured algorithm.

    ``iql_target`` (``algo.use_source=false``) uses no source rows.

    Examples:
        >>> batch_split({"algo": {"use_source": True}, "data": {"n_source": 128, "n_target": 128}})
        (128, 128)
        >>> batch_split({"algo": {"use_source": False}, "data": {"n_source": 128, "n_target": 128}})
        (0, 128)
    """
    n_target = int(_get(cfg, "data.n_target"))
    n_source = int(_get(cfg, "data.n_source")) if _get(cfg, "algo.use_source", True) else 0
    return n_source, n_target


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_positive_int(cfg: Any, key: str, allow_zero: bool = False) -> None:
    value = _get(cfg, key)
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    bound = ">= 0" if allow_zero else "> 0"
    _require(ok, f"{key}={value!r} must be an integer {bound}. Fix: set {key}=<int {bound}>.")


def _check_fraction(cfg: Any, key: str) -> None:
    value = _get(cfg, key)
    ok = isinstance(value, (int, float)) and 0.0 < float(value) < 1.0
    _require(ok, f"{key}={value!r} must lie strictly between 0 and 1. Fix: e.g. {key}=0.1.")


def _dataset_path_given(cfg: Any, which: str) -> bool:
    return bool(_get(cfg, f"data.{which}.path"))


def validate_config(cfg: Any) -> None:
    """Check the configuration before anything is generated, loaded or trained.

    Checks: the algorithm name; the env id (through
    :func:`tabb_torchrl.envs.get_shift`, whose error lists the valid ids); the
    step, batch and evaluation counts; the hold-out fraction; the batch split
    against the configured dataset sizes (when the datasets are generated); the
    choices of the string options. The loaded datasets are checked again by
    :func:`validate_datasets`.

    Args:
        cfg: the run configuration (see ``recipes/config/config.yaml``).

    Raises:
        ConfigError: naming the key, the problem and the fix.

    Examples:
        >>> validate_config({"algo": {"name": "nope"}})
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo.name='nope' is unknown; valid: tabb, iql_mixed, iql_target, src_actor. Fix: pass algo=<one of them>.
    """
    algo = _get(cfg, "algo.name")
    _require(
        algo in ALGOS,
        f"algo.name={algo!r} is unknown; valid: {', '.join(ALGOS)}. Fix: pass algo=<one of them>.",
    )
    # env ------------------------------------------------------------------
    env_id = _get(cfg, "env.id")
    _require(bool(env_id), "env.id is empty. Fix: pick a task with env=<group> or env.id=<id>.")
    from tabb_torchrl.envs import UnknownEnvError, get_shift

    try:
        get_shift(env_id)
    except UnknownEnvError as err:
        raise ConfigError(
            f"env.id={env_id!r} is not a known target env. {err} "
            "Fix: pass env=<group> (recipes/config/env/) or env.id=<one of the valid ids>; "
            "`python -m tabb_torchrl.envs` lists them."
        ) from err
    # counts -------------------------------------------------------------------
    for key in ("optim.steps", "pretrain.stage1_steps", "pretrain.stage2_steps"):
        _check_positive_int(cfg, key, allow_zero=True)
    for key in (
        "data.n_target",
        "data.target.size",
        "eval.every",
        "eval.episodes",
        "checkpoint.every",
        "logger.log_every",
        "pretrain.n_target",
        "pretrain.stage2_batch_size",
        "pretrain.holdout_every",
        "pretrain.cache_batch_size",
    ):
        _check_positive_int(cfg, key)
    for key in ("data.n_source", "pretrain.n_source", "data.source.size"):
        _check_positive_int(cfg, key, allow_zero=True)
    _check_fraction(cfg, "pretrain.holdout_fraction")
    max_session = _get(cfg, "max_steps_this_session")
    _require(
        max_session is None or (isinstance(max_session, int) and max_session > 0),
        f"max_steps_this_session={max_session!r} must be null or a positive integer. "
        "Fix: max_steps_this_session=null.",
    )
    # choices --------------------------------------------------------------------
    choices = {
        "loss.scaling": ("batch_std", "absolute"),
        "loss.anchor": ("value", "ema"),
        "pretrain.target_encoder": ("stop_grad", "ema"),
        "data.storage": ("tensor", "memmap"),
        "model.activation": ("relu", "elu", "tanh", "silu", "mish"),
        "logger.backend": ("csv", "tensorboard", "wandb", "", None),
        "eval.reference": ("odrl", "ours"),
        "optim.update": ("fused", "modular", None),
        "algo.features": ("latent", "raw", None),
        "data.reward_scale": ("none", "iql_locomotion", None),
    }
    for key, valid in choices.items():
        value = _get(cfg, key)
        _require(
            value in valid,
            f"{key}={value!r} is not a valid choice; valid: {', '.join(str(v) for v in valid)}. "
            f"Fix: set {key}=<one of them>.",
        )
    # the reference returns of the normalised score exist for this env (checked now, not at the first evaluation)
    from tabb_torchrl.data.references import MissingReferenceError, reference_returns

    reference = _get(cfg, "eval.reference")
    try:
        reference_returns(env_id, reference)
    except MissingReferenceError as err:
        raise ConfigError(
            f"eval.reference={reference!r} has no reference returns for env.id={env_id!r}: {err} "
            "Fix: eval.reference=odrl, or compute ours with `python -m tabb_torchrl.behavior.compute_references`."
        ) from err
    from tabb_torchrl.methods import METHODS

    module = _get(cfg, "algo.method_module")
    if module:  # a user's module that registers its method (tabb_torchrl.methods.register_method)
        import importlib

        try:
            importlib.import_module(str(module))
        except ImportError as err:
            raise ConfigError(
                f"algo.method_module={module!r} cannot be imported ({err}). Fix: pass an importable module "
                "(on PYTHONPATH) that calls tabb_torchrl.methods.register_method."
            ) from err
    method = _get(cfg, "algo.method")
    _require(
        method in METHODS,
        f"algo.method={method!r} is not a registered cross-domain method; valid: {', '.join(sorted(METHODS))}. "
        "Fix: set algo.method=<one of them> (or register yours with tabb_torchrl.methods.register_method).",
    )
    for key in ("loss.tau", "loss.beta", "loss.huber_delta", "loss.gamma", "loss.std_eps"):
        value = _get(cfg, key)
        _require(
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
            f"{key}={value!r} must be a positive number. Fix: set {key}=<number > 0>.",
        )
    expectile = _get(cfg, "loss.expectile")
    _require(
        isinstance(expectile, (int, float)) and 0.0 < expectile < 1.0,
        f"loss.expectile={expectile!r} must lie in (0, 1). Fix: loss.expectile=0.7 (IQL).",
    )
    if _get(cfg, "loss.use_predicted_termination", False):
        _require(
            bool(_get(cfg, "model.termination_head", False)),
            "loss.use_predicted_termination=true needs a termination head on h. "
            "Fix: also set model.termination_head=true.",
        )
    patience = _get(cfg, "pretrain.stage2_patience")
    _require(
        patience is None or (isinstance(patience, int) and patience > 0),
        f"pretrain.stage2_patience={patience!r} must be null or a positive integer. "
        "Fix: pretrain.stage2_patience=null.",
    )
    # batch split against the dataset sizes we will generate -------------------
    n_source, n_target = batch_split(cfg)
    if _get(cfg, "algo.use_source", True):
        _require(
            n_source > 0,
            f"algo={algo} uses source data but data.n_source=0. "
            "Fix: data.n_source=128, or algo=iql_target for a target-only run.",
        )
    if not _dataset_path_given(cfg, "target"):
        size = int(_get(cfg, "data.target.size"))
        _require(
            n_target <= size,
            f"data.n_target={n_target} target rows per batch is larger than the target "
            f"dataset (data.target.size={size}). Fix: lower data.n_target or raise data.target.size.",
        )
        n_train = size - max(1, int(round(size * float(_get(cfg, "pretrain.holdout_fraction")))))
        for key in ("pretrain.n_target", "pretrain.stage2_batch_size"):
            value = int(_get(cfg, key))
            _require(
                value <= n_train,
                f"{key}={value} is larger than the {n_train} target transitions left for "
                f"pre-training after the hold-out (data.target.size={size}). "
                f"Fix: lower {key} or raise data.target.size.",
            )
    if n_source and not _dataset_path_given(cfg, "source"):
        size = int(_get(cfg, "data.source.size"))
        for key, value in (("data.n_source", n_source), ("pretrain.n_source", int(_get(cfg, "pretrain.n_source")))):
            _require(
                value <= size,
                f"{key}={value} source rows per batch is larger than the source dataset "
                f"(data.source.size={size}). Fix: lower {key} or raise data.source.size.",
            )


def validate_datasets(cfg: Any, source: Any, target: Any) -> None:
    """Check the loaded datasets against the batch split (sizes are known only now).

    Args:
        cfg: the run configuration.
        source: the source TensorDict (or ``None`` for target-only runs).
        target: the target TensorDict.

    Raises:
        ConfigError: when a batch asks for more rows than a dataset has.

    Examples:
        >>> from tensordict import TensorDict
        >>> cfg = {"algo": {"use_source": False}, "data": {"n_source": 4, "n_target": 8},
        ...        "pretrain": {"n_target": 8, "stage2_batch_size": 8, "holdout_fraction": 0.1}}
        >>> validate_datasets(cfg, None, TensorDict({}, batch_size=[4]))
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: data.n_target=8 target rows per batch is larger than the target dataset (4 transitions). Fix: lower data.n_target or use a larger target dataset (data.target.size / data.target.path).
    """
    n_source, n_target = batch_split(cfg)
    n_tar = int(target.shape[0])
    _require(
        n_target <= n_tar,
        f"data.n_target={n_target} target rows per batch is larger than the target dataset "
        f"({n_tar} transitions). Fix: lower data.n_target or use a larger target dataset "
        "(data.target.size / data.target.path).",
    )
    n_hold = max(1, int(round(n_tar * float(_get(cfg, "pretrain.holdout_fraction")))))
    n_train = n_tar - n_hold
    for key in ("pretrain.n_target", "pretrain.stage2_batch_size"):
        value = int(_get(cfg, key))
        _require(
            value <= n_train,
            f"{key}={value} is larger than the {n_train} target transitions left for "
            f"pre-training after the hold-out ({n_tar} in the target dataset). "
            f"Fix: lower {key} or use a larger target dataset.",
        )
    if n_source:
        n_src = 0 if source is None else int(source.shape[0])
        for key, value in (("data.n_source", n_source), ("pretrain.n_source", int(_get(cfg, "pretrain.n_source")))):
            _require(
                value <= n_src,
                f"{key}={value} source rows per batch is larger than the source dataset "
                f"({n_src} transitions). Fix: lower {key} or use a larger source dataset "
                "(data.source.size / data.source.path).",
            )


def find_latest_run(runs_root: str | os.PathLike, cfg_hash: str, checkpoint_name: str) -> Path | None:
    """The most recently written run directory under ``runs_root`` with this config hash.

    A run directory is recognised by its ``run_state.json`` (written at start) and
    its checkpoint file.

    Args:
        runs_root: folder searched recursively (hydra's ``outputs/`` by default).
        cfg_hash: the :func:`config_hash` of the configuration to continue.
        checkpoint_name: the checkpoint file name inside a run directory.

    Examples:
        >>> import tempfile
        >>> find_latest_run(tempfile.mkdtemp(), "abc", "checkpoint.pt") is None
        True
    """
    root = Path(runs_root)
    if not root.exists():
        return None
    best, best_time = None, -math.inf
    for state_file in root.rglob("run_state.json"):
        try:
            info = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ckpt = state_file.parent / checkpoint_name
        if info.get("config_hash") != cfg_hash or not ckpt.exists():
            continue
        mtime = ckpt.stat().st_mtime
        if mtime > best_time:
            best, best_time = state_file.parent, mtime
    return best
