"""Configuration helpers of the TABB recipe: validation, run names, devices (hashing: :mod:`~tabb_torchrl.pipeline.config_hash`).

Everything here works on a plain nested mapping (an omegaconf ``DictConfig`` or a
``dict``), so the functions can be used and tested without hydra.

The checks run **before** any data is generated or loaded (:func:`validate_config`),
then once more on the loaded datasets (:func:`validate_datasets`). Each failure
raises :class:`ConfigError`, whose message names the offending key, the problem,
and the fix.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from tabb_torchrl.pipeline.config_base import ConfigError, _get, to_container  # noqa: F401 (re-exported)
from tabb_torchrl.pipeline.config_hash import (  # noqa: F401 (re-exported)
    ADDED_DEFAULTS,
    HASH_EXCLUDED_KEYS,
    RUNTIME_KEYS,
    config_diff,
    config_hash,
    legacy_config_hashes,
    without_added_defaults,
)

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
    "config_diff",
    "legacy_config_hashes",
    "reconcile_env",
    "RUNTIME_KEYS",
    "HASH_EXCLUDED_KEYS",
    "ADDED_DEFAULTS",
    "without_added_defaults",
    "read_run_config",
    "same_run_config",
]

#: Algorithms the recipe runs (``algo=<name>``): TABB and its baselines / ablations.
ALGOS = ("tabb", "iql_mixed", "iql_target", "src_actor", "dara", "srpo", "igdf", "v2a", "otdf", "droco", "cql", "mobody", "bosa")


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(cfg: Any, key: str, low: float, high: float | None = None, *, example: str,
                 low_inclusive: bool = False, allow_null: bool = False) -> None:
    """``key`` is a finite number in ``(low, high]`` (``[low, high]`` with ``low_inclusive``)."""
    value = _get(cfg, key)
    if allow_null and value is None:
        return
    ok = _is_number(value) and (value >= low if low_inclusive else value > low)
    ok = ok and (high is None or value <= high)
    if high is None:
        bound = f">= {low}" if low_inclusive else f"> {low}"
        what = f"a number {bound}"
    else:
        what = f"a number in {'[' if low_inclusive else '('}{low}, {high}]"
    null = "null or " if allow_null else ""
    _require(ok, f"{key}={value!r} must be {null}{what}. Fix: e.g. {key}={example}.")


def _check_int(cfg: Any, key: str, low: int, high: int | None = None, *, example: str,
               allow_null: bool = False) -> None:
    """``key`` is an integer in ``[low, high]`` (or null with ``allow_null``)."""
    value = _get(cfg, key)
    if allow_null and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    null = "null or " if allow_null else ""
    _require(ok, f"{key}={value!r} must be {null}{what}. Fix: e.g. {key}={example}.")


def _same_level(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _env_field_mismatches(cfg: Any, spec) -> list[tuple[str, Any, Any]]:
    """``(field, configured, the id's)`` for each set ``env.name`` / ``env.shift`` / ``env.level`` that
    does not describe the env of ``env.id``."""
    out = []
    for field, actual in (("name", spec.env_name), ("shift", spec.shift), ("level", spec.level)):
        value = _get(cfg, f"env.{field}")
        if value is None:
            continue
        same = _same_level(value, actual) if field == "level" and actual is not None else str(value) == str(actual)
        if not same:
            out.append((field, value, actual))
    return out


def _env_id_for(name: Any, shift: Any, variant: str | None, level: Any) -> str | None:
    """The catalogue id of ``(name, shift, variant, level)`` (the alias of a default level first)."""
    from tabb_torchrl.envs.spec import catalogue

    found = [
        s for s in catalogue().values()
        if s.env_name == str(name) and s.shift == str(shift) and s.variant == variant
        and ((level is None and s.level is None) or (level is not None and s.level is not None
                                                      and _same_level(level, s.level)))
    ]
    found.sort(key=lambda s: s.alias_of is None)  # the alias (canonical id, shared datasets) first
    return found[0].env_id if found else None


def reconcile_env(cfg: Any, overridden: Any = ()) -> str | None:
    """Make ``env.id`` and its descriptive fields (``env.name``, ``env.shift``, ``env.level``) agree.

    The env a run trains on is ``env.id``. When the command line overrides
    ``env.level`` / ``env.shift`` / ``env.name`` but not ``env.id``
    (``env=hopper_friction env.level=5.0``), ``env.id`` becomes the catalogue id
    those fields name (``tabb/Hopper-friction-5.0-v0``); when it overrides
    ``env.id`` alone (``env.id=tabb/Hopper-friction-2.0-v0``), the fields are
    set from the id. A mismatch left after that (both given, and different) is
    refused by :func:`validate_config`.

    Args:
        cfg: the run configuration (changed in place; an omegaconf ``DictConfig``
            or a ``dict``).
        overridden: the dotted keys given on the command line (hydra's task
            overrides, ``"env.level"``...).

    Returns:
        str or None: the new ``env.id`` when it was derived from the fields, else ``None``.

    Raises:
        ConfigError: the fields name no catalogue env (the message lists the valid levels).

    Examples:
        >>> cfg = {"env": {"name": "Hopper", "shift": "friction", "level": 5.0, "id": "tabb/Hopper-friction-v0"}}
        >>> reconcile_env(cfg, ["env.level"]), cfg["env"]["id"]
        ('tabb/Hopper-friction-5.0-v0', 'tabb/Hopper-friction-5.0-v0')
        >>> cfg = {"env": {"name": "Hopper", "shift": "morph", "level": None, "id": "tabb/Hopper-friction-2.0-v0"}}
        >>> reconcile_env(cfg, ["env.id"]), cfg["env"]["shift"], cfg["env"]["level"]
        (None, 'friction', '2.0')
    """
    from tabb_torchrl.envs import UnknownEnvError, get_shift

    env = _get(cfg, "env")
    env_id = _get(cfg, "env.id")
    if env is None or not env_id:
        return None
    try:
        spec = get_shift(env_id)
    except UnknownEnvError:
        return None  # validate_config reports it
    mismatches = _env_field_mismatches(cfg, spec)
    if not mismatches:
        return None
    overridden = {str(k).lstrip("+~").split("=", 1)[0] for k in overridden}
    fields = {f"env.{f}" for f in ("name", "shift", "level")}
    if "env.id" not in overridden and overridden & fields:
        name = _get(cfg, "env.name") or spec.env_name
        shift = _get(cfg, "env.shift") or spec.shift
        level = _get(cfg, "env.level")
        new_id = _env_id_for(name, shift, spec.variant, level)
        if new_id is None:
            family = "-".join(str(p) for p in (name, shift, spec.variant) if p)
            try:
                from tabb_torchrl.envs.spec import NAMESPACE, VERSION_SUFFIX

                get_shift(f"{NAMESPACE}{family}-{level}{VERSION_SUFFIX}" if level is not None
                          else f"{NAMESPACE}{family}{VERSION_SUFFIX}")
                hint = ""
            except UnknownEnvError as err:
                hint = f" {err}."
            raise ConfigError(
                f"env.name={name!r} env.shift={shift!r} env.level={level!r} name no registered env.{hint} "
                "Fix: pass a level of that shift (env.level=<one of them>), or the id itself with env.id=<id> "
                "(`python -m tabb_torchrl.envs` lists them)."
            )
        env["id"] = new_id
        return new_id
    if "env.id" in overridden and not overridden & fields:  # the group's fields describe another env: all follow the id
        for field, actual in (("name", spec.env_name), ("shift", spec.shift), ("level", spec.level)):
            if field in env:
                env[field] = actual
    return None


def _env_spaces(env_id: str) -> tuple[int, int]:
    from tabb_torchrl.envs import env_spaces

    return env_spaces(env_id)[:2]


def _check_source_env(target_id: str, source_id: str) -> None:
    """``env.source_id`` is a registered env with the target's observation and action sizes
    (checked before any dataset of either env is generated)."""
    import difflib

    import gymnasium as gym

    from tabb_torchrl.envs import UnknownEnvError, get_shift, source_env_id

    default = source_env_id(target_id)
    fix = f"Fix: env.source_id=null (the target's own source, {default}) or a registered id of the same robot."
    try:
        if source_id.startswith("tabb/"):
            get_shift(source_id)
        else:
            gym.spec(source_id)
    except (UnknownEnvError, gym.error.Error) as err:
        close = difflib.get_close_matches(source_id, [str(k) for k in gym.registry], n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"env.source_id={source_id!r} is not a registered env ({err}).{hint} {fix}") from err
    target_dims, source_dims = _env_spaces(target_id), _env_spaces(source_id)
    _require(
        target_dims == source_dims,
        f"env.source_id={source_id!r} (observation {source_dims[0]}, action {source_dims[1]}) does not fit the "
        f"target env {target_id!r} (observation {target_dims[0]}, action {target_dims[1]}): source and target rows "
        f"share the networks, so their observation and action sizes must match. {fix}",
    )


def _dataset_path_given(cfg: Any, which: str) -> bool:
    return bool(_get(cfg, f"data.{which}.path"))


def validate_config(cfg: Any) -> None:
    """Check the configuration before anything is generated, loaded or trained.

    Checks: the algorithm name; the env id (through
    :func:`tabb_torchrl.envs.get_shift`, whose error lists the valid ids) and
    that ``env.name`` / ``env.shift`` / ``env.level`` describe it
    (:func:`reconcile_env` derives the id from them on the command line);
    ``env.source_id`` (registered, with the target's observation and action
    sizes: checked before any data is generated); the step, batch and
    evaluation counts; seeds (``0 <= seed < 2**32``), ``threads``, learning
    rates, rates in ``(0, 1]``, network sizes; the hold-out fraction; the batch
    split against the configured dataset sizes (when the datasets are
    generated); the choices of the string options. The loaded datasets are
    checked again by :func:`validate_datasets`.

    Args:
        cfg: the run configuration (see ``recipes/config/config.yaml``).

    Raises:
        ConfigError: naming the key, the problem and the fix.

    Examples:
        >>> validate_config({"algo": {"name": "nope"}})
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo.name='nope' is unknown; valid: tabb, iql_mixed, ... Fix: pass algo=<one of them>.
    """
    algo = _get(cfg, "algo.name")
    # a named variant (recipes/config/algo/tabb_*.yaml: algo.variant_of=tabb) runs its base algorithm's code
    base = _get(cfg, "algo.variant_of")
    _require(
        algo in ALGOS or (base in ALGOS and bool(algo)),
        f"algo.name={algo!r} is unknown; valid: {', '.join(ALGOS)} (or a variant whose algo.variant_of names one). "
        "Fix: pass algo=<one of them>.",
    )
    from tabb_torchrl.pipeline.backbones import OWN_BACKBONES

    _require(base not in OWN_BACKBONES,
             f"algo.variant_of={base} is not supported ({base} runs its own backbone, chosen by algo.name). "
             f"Fix: set the options on algo={base} itself.")
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
    for field, value, actual in _env_field_mismatches(cfg, get_shift(env_id)):
        spec = get_shift(env_id)
        wanted = {"name": spec.env_name, "shift": spec.shift, "level": spec.level, field: value}
        suggestion = _env_id_for(wanted["name"], wanted["shift"], spec.variant, wanted["level"])
        fix = (f"pass env.id={suggestion} (the env of env.{field}={value}), or drop the env.{field} override"
               if suggestion else f"drop the env.{field} override (env.id decides the env)")
        raise ConfigError(
            f"env.{field}={value!r} does not match env.id={env_id!r}, whose {field} is {actual!r}: the run would "
            f"train on {env_id}, not on what env.{field} says. Fix: {fix}."
        )
    source_id = _get(cfg, "env.source_id")
    if source_id and _get(cfg, "algo.use_source", True):
        _check_source_env(env_id, str(source_id))
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
    # seeds, threads, rates, sizes (each would otherwise fail later with a raw traceback) ----------
    _check_int(cfg, "seed", 0, 2**32 - 1, example="0")
    _check_int(cfg, "data.seed", 0, 2**32 - 1, example="0")
    _check_int(cfg, "threads", 1, example="1 (or null: torch's default, all cores)", allow_null=True)
    _check_int(cfg, "eval.max_episode_steps", 1, example="null (the env's own time limit)", allow_null=True)
    _check_int(cfg, "eval.seed_offset", 0, example="100000")
    for key in ("data.collect_envs", "data.collect_workers"):
        _check_int(cfg, key, 1, example="null (the collector's default)", allow_null=True)
    for key in ("optim.lr_qvalue", "optim.lr_value", "optim.lr_actor", "pretrain.lr"):
        _check_range(cfg, key, 0.0, example="3e-4")
    _check_range(cfg, "optim.weight_decay", 0.0, example="0.0", low_inclusive=True)
    _check_range(cfg, "optim.target_update_tau", 0.0, 1.0, example="0.005")
    _check_range(cfg, "loss.max_weight", 0.0, example="100.0")
    _check_range(cfg, "pretrain.epsilon", 0.0, example="1e-4")
    for key in ("pretrain.ema_tau", "loss.anchor_ema_tau"):
        _check_range(cfg, key, 0.0, 1.0, example="0.005")
    for key in ("pretrain.reward_weight", "pretrain.dynamics_weight", "pretrain.termination_weight"):
        _check_range(cfg, key, 0.0, example="1.0", low_inclusive=True, allow_null=True)
    _check_int(cfg, "loss.num_qvalue_nets", 1, example="2")
    for key in ("model.latent_state_dim", "model.latent_sa_dim"):
        _check_int(cfg, key, 1, example="128")
    for key in ("model.encoder_hidden", "model.predictor_hidden", "model.qvalue_hidden", "model.value_hidden",
                "model.actor_hidden"):
        value = to_container(_get(cfg, key, []))
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        _require(ok, f"{key}={value!r} must be a list of positive layer widths. Fix: e.g. {key}=[256,256].")
    lo, hi = _get(cfg, "model.actor_log_std_min"), _get(cfg, "model.actor_log_std_max")
    if lo is not None or hi is not None:
        _require(
            _is_number(lo) and _is_number(hi) and lo < hi,
            f"model.actor_log_std_min={lo!r} must be a number below model.actor_log_std_max={hi!r}. "
            "Fix: e.g. model.actor_log_std_min=-10.0 model.actor_log_std_max=2.0.",
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
        "loss.source_target": ("aligned", "realised", "gated", None),
        "model.predictor": ("mlp", "residual", None),
    }
    for key, valid in choices.items():
        value = _get(cfg, key)
        _require(
            value in valid,
            f"{key}={value!r} is not a valid choice; valid: {', '.join(str(v) for v in valid)}. "
            f"Fix: set {key}=<one of them>.",
        )
    from tabb_torchrl.pipeline.loggers import check_logger_backend

    check_logger_backend(_get(cfg, "logger.backend"))  # a missing tensorboard / wandb: before any data is made
    scale = _get(cfg, "data.reward_scale")
    _require(
        scale in ("none", "iql_locomotion", None) or (_is_number(scale) and scale > 0),
        f"data.reward_scale={scale!r} is not valid; valid: none, iql_locomotion or a positive number (a fixed "
        "factor). Fix: e.g. data.reward_scale=iql_locomotion.",
    )
    # options beyond the paper (docs/method.rst, "Variants beyond the paper") -------------------
    _check_range(cfg, "loss.gate_quantile", 0.0, 1.0, example="0.9", allow_null=True)
    _check_range(cfg, "pretrain.stage2_reg", 0.0, example="0.1", low_inclusive=True, allow_null=True)
    source_in_value = _get(cfg, "algo.source_in_value")
    _require(
        source_in_value is None or isinstance(source_in_value, bool),
        f"algo.source_in_value={source_in_value!r} must be true or false. Fix: algo.source_in_value=false.",
    )
    if _get(cfg, "algo.method") != "tabb":
        for key, default in (("loss.source_target", "aligned"), ("algo.source_in_value", False)):
            value = _get(cfg, key, default)
            _require(
                value == default,
                f"{key}={value!r} is read by TABB only, but algo.method={_get(cfg, 'algo.method')!r} "
                f"(algo={algo}). Fix: drop the {key} override, or use algo=tabb.",
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
        if key == "loss.huber_delta" and value is None:
            continue  # null: the squared error (IQL's critic loss)
        _require(
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
            f"{key}={value!r} must be a positive number. Fix: set {key}=<number > 0>.",
        )
    _check_range(cfg, "loss.gamma", 0.0, 1.0, example="0.99")
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
    # dataset files (checked before the other dataset is generated) --------------
    for which in ("target", "source"):
        if which == "source" and not _get(cfg, "algo.use_source", True):
            continue
        path = _get(cfg, f"data.{which}.path")
        if not path:
            continue
        path = str(path)
        if path.lower().endswith((".hdf5", ".h5")):
            _require(
                os.path.isfile(path),
                f"data.{which}.path={path} does not exist (looked in {os.path.abspath(path)}). "
                f"Fix: pass the path of an existing D4RL-style .hdf5 file (absolute, or relative to {os.getcwd()}).",
            )
        elif os.path.isfile(path):
            raise ConfigError(
                f"data.{which}.path={path} is a file, but only names ending with .hdf5 or .h5 are read as D4RL "
                "files (anything else is taken for a Minari dataset id). "
                f"Fix: rename it to {os.path.splitext(path)[0]}.hdf5."
            )
    tolerance = _get(cfg, "data.action_tolerance")
    _require(
        tolerance is None or (_is_number(tolerance) and tolerance >= 0),
        f"data.action_tolerance={tolerance!r} must be null (accept any action) or a number >= 0 (a fraction of "
        "the action range). Fix: e.g. +data.action_tolerance=0.01.",
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


def find_latest_run(runs_root: str | os.PathLike, cfg_hash: str | tuple[str, ...] | list[str],
                    checkpoint_name: str) -> Path | None:
    """The most recently written run directory under ``runs_root`` with this config hash.

    A run directory is recognised by its ``run_state.json`` (written at start) and
    its checkpoint file; it matches when :func:`same_run_config` says so.

    Args:
        runs_root: folder searched recursively (hydra's ``outputs/`` by default).
        cfg_hash: the :func:`config_hash` of the configuration to continue, or
            several (the current one and :func:`legacy_config_hashes`).
        checkpoint_name: the checkpoint file name inside a run directory.

    Examples:
        >>> import tempfile
        >>> find_latest_run(tempfile.mkdtemp(), "abc", "checkpoint.pt") is None
        True
    """
    root = Path(runs_root)
    if not root.exists():
        return None
    hashes = (cfg_hash,) if isinstance(cfg_hash, str) else tuple(cfg_hash)
    best, best_time = None, -math.inf
    for state_file in root.rglob("run_state.json"):
        try:
            info = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ckpt = state_file.parent / checkpoint_name
        if not isinstance(info, dict) or not ckpt.exists():
            continue
        if not same_run_config(state_file.parent, info.get("config_hash"), hashes):
            continue
        mtime = ckpt.stat().st_mtime
        if mtime > best_time:
            best, best_time = state_file.parent, mtime
    return best


def read_run_config(run_dir: str | os.PathLike) -> dict | None:
    """The resolved ``config.yaml`` a run directory holds (``None`` when missing or unreadable).

    Examples:
        >>> import tempfile
        >>> read_run_config(tempfile.mkdtemp()) is None
        True
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception:  # a damaged or hand-edited file: the hashes still decide
        return None
    return data if isinstance(data, dict) else None


def same_run_config(run_dir: str | os.PathLike, recorded_hash: str | None,
                    hashes: tuple[str, ...] | list[str]) -> bool:
    """Whether the run in ``run_dir`` is of the configuration whose hashes are ``hashes``.

    True when the hash the run recorded (``run_state.json``) is one of ``hashes``
    (the current :func:`config_hash` first, then :func:`legacy_config_hashes`), or
    when the run's own ``config.yaml`` hashes today to ``hashes[0]``: a run recorded
    under an older hash definition (a key since made runtime-only or added at its
    default) is still found.

    Examples:
        >>> import tempfile
        >>> same_run_config(tempfile.mkdtemp(), "abc", ("abc",))
        True
        >>> same_run_config(tempfile.mkdtemp(), "old", ("abc",))  # no config.yaml to re-hash
        False
    """
    if recorded_hash is not None and recorded_hash in hashes:
        return True
    saved = read_run_config(run_dir)
    return bool(hashes) and saved is not None and config_hash(saved) == hashes[0]
