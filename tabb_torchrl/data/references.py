"""Reference returns and the D4RL normalised score.

``score = 100 * (R - R_min) / (R_max - R_min)``

Two reference tables:

* ``"odrl"`` (default): ODRL's ``envs/infos.py`` values, for comparability with
  published cross-domain tables (TABB, OTDF, ODRL). ``R_min`` is one value per
  env (all shifts); ``R_max`` is one value per env for the kinematic and morph
  shifts, and one per level for the friction shift. These were measured by ODRL
  with the old gym / mujoco-py envs.

  How our env ids map to it:

  - ``morph*`` / ``kinematic*`` shifts (the paper's and ODRL's catalogue
    variants at every level), the Adroit shifts, and the plain source env
    (``"Hopper-v5"``): the env's kinematic/morph ``R_max``.
  - ``friction-<k>`` (and the ``friction-floor-<k>`` variant, same levels):
    the friction ``R_max`` of level ``k``; ``friction`` without a level is the
    default level 0.5. Levels other than 0.1 / 0.5 / 2.0 / 5.0 have no ODRL
    entry (error). Hopper has one ``R_max`` for all shifts.
  - ``gravity-<k>``: ODRL's table (as we have it) gives no gravity entry, so the
    env's kinematic/morph ``R_max`` is used. Normalised gravity scores are
    therefore comparable across methods, not across shift types.
  - HalfCheetah friction 0.1 has ``R_max = 41696.55``, which looks anomalous
    (over 3x the other levels); it is shipped unchanged and a warning is issued.

* ``"ours"``: measured in our envs (random policy for ``R_min``, the best
  behaviour policy in each target env for ``R_max``), read from
  ``tabb_torchrl/assets/references_ours.json``, keyed by the canonical env id
  (a default-level id and its alias, ``tabb/Walker2d-friction-0.5-v0`` and
  ``tabb/Walker2d-friction-v0``, share the alias's entry)::

      {"tabb/Hopper-morph-v0": {"min": -20.1, "max": 3100.0,
                                 "min_source": "...", "max_source": "..."}, ...}

  The file is written by ``python -m tabb_torchrl.behavior.compute_references``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ODRL_REFERENCES",
    "OURS_REFERENCES_PATH",
    "MissingReferenceError",
    "medium_return_threshold",
    "reference_returns",
    "normalized_score",
]

ODRL_REFERENCES: dict[str, dict[str, Any]] = {
    "HalfCheetah": {
        "min": -280.178953,
        "max": 12135.0,
        "friction_max": {0.1: 41696.55, 0.5: 7357.07, 2.0: 11255.97, 5.0: 10199.33},
    },
    "Hopper": {
        "min": -26.3360015397715,
        "max": 3234.3,
        "friction_max": {0.1: 3234.3, 0.5: 3234.3, 2.0: 3234.3, 5.0: 3234.3},
    },
    "Walker2d": {
        "min": 10.079455055289959,
        "max": 4592.3,
        "friction_max": {0.1: 3360.181, 0.5: 4229.348, 2.0: 5180.044, 5.0: 4988.835},
    },
    "Ant": {
        "min": -325.6,
        "max": 5139.832,
        "friction_max": {0.1: 7938.962, 0.5: 8301.338, 2.0: 5167.376, 5.0: 4545.021},
    },
    "AdroitHandPen": {"min": -12.172796387517222, "max": 6408.384, "friction_max": {}},
    "AdroitHandDoor": {"min": -52.33817104624433, "max": 2880.569, "friction_max": {}},
}
"""ODRL reference returns (``envs/infos.py``), per env family."""

_ANOMALOUS = {("HalfCheetah", 0.1)}
_DEFAULT_FRICTION_LEVEL = 0.5
_ALIASES = {"Pen": "AdroitHandPen", "Door": "AdroitHandDoor"}

OURS_REFERENCES_PATH: Path = Path(__file__).resolve().parent.parent / "assets" / "references_ours.json"
"""Where the ``"ours"`` reference table lives."""

_COMPUTE_HINT = "python -m tabb_torchrl.behavior.compute_references"


class MissingReferenceError(ValueError):
    """No reference return is known for an env (or a friction level).

    Examples:
        >>> from tabb_torchrl.data import MissingReferenceError
        >>> issubclass(MissingReferenceError, ValueError)
        True
    """


def _parse(env_id: str) -> tuple[str, str]:
    """``"tabb/Walker2d-kinematic-footjnt-medium-v0"`` -> ``("Walker2d", "kinematic-footjnt-medium")``."""
    body = env_id.split("/", 1)[1] if env_id.startswith("tabb/") else env_id
    body = re.sub(r"-v\d+$", "", body)
    family, _, shift = body.partition("-")
    return _ALIASES.get(family, family), shift


def _friction_level(shift: str) -> float | None:
    """The friction level of a shift string, ``None`` if it is not a friction shift."""
    parts = shift.split("-")
    if parts[0] != "friction":
        return None
    try:
        return float(parts[-1])
    except ValueError:
        return _DEFAULT_FRICTION_LEVEL  # "friction" / "friction-floor": the default level


def _unknown_env(env_id: str, known: list[str], reference: str) -> MissingReferenceError:
    return MissingReferenceError(
        f"No {reference!r} reference returns for env {env_id!r}. References exist for: "
        f"{', '.join(known)}."
    )


def _odrl(env_id: str) -> tuple[float, float]:
    family, shift = _parse(env_id)
    entry = ODRL_REFERENCES.get(family)
    if entry is None:
        known = [f"{f} (tabb/{f}-<shift>-v0 ids and the plain gymnasium id)" for f in ODRL_REFERENCES]
        raise _unknown_env(env_id, known, "odrl")
    level = _friction_level(shift)
    if level is None:
        return float(entry["min"]), float(entry["max"])
    levels = entry["friction_max"]
    match = [k for k in levels if math.isclose(k, level)]
    if not match:
        available = ", ".join(str(k) for k in levels) or "none"
        raise MissingReferenceError(
            f"ODRL has no reference return for {family} friction level {level} "
            f"(env {env_id!r}; ODRL friction levels: {available}). Use "
            f"reference='ours' after computing it with {_COMPUTE_HINT}."
        )
    if (family, match[0]) in _ANOMALOUS:
        warnings.warn(
            f"ODRL's reference R_max for {family} friction {match[0]} "
            f"({levels[match[0]]}) looks anomalous (over 3x the other levels); "
            f"normalised scores in {env_id!r} are small for that reason. Consider "
            f"reference='ours'.",
            UserWarning,
            stacklevel=3,
        )
    return float(entry["min"]), float(levels[match[0]])


def _canonical_ids(env_id: str) -> list[str]:
    """The keys of ``env_id`` in the ``"ours"`` table, the canonical one first.

    The table is keyed by :func:`~tabb_torchrl.behavior.policies.canonical_env_id`
    (a default-level id such as ``tabb/Walker2d-friction-0.5-v0`` is stored
    under its alias ``tabb/Walker2d-friction-v0``, as the behaviour policies);
    the other spelling is tried after it, for tables written under it.
    """
    from tabb_torchrl.behavior.policies import env_id_spellings

    return env_id_spellings(env_id)


def _ours(env_id: str, path: Path) -> tuple[float, float]:
    if not path.is_file():
        raise MissingReferenceError(
            f"No 'ours' reference table at {path}. Compute it with {_COMPUTE_HINT} "
            f"(random-policy returns for R_min, the best behaviour policy in each "
            f"target env for R_max), or use reference='odrl'."
        )
    try:
        table = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MissingReferenceError(
            f"The 'ours' reference table {path} is unreadable ({err}). Recompute it "
            f"with {_COMPUTE_HINT}."
        ) from err
    for key in _canonical_ids(env_id):
        if key in table:
            entry = table[key]
            try:
                return float(entry["min"]), float(entry["max"])
            except (KeyError, TypeError, ValueError) as err:
                raise MissingReferenceError(
                    f"The 'ours' entry for {key!r} in {path} lacks numeric 'min' / "
                    f"'max' ({entry!r}). Recompute it with {_COMPUTE_HINT}."
                ) from err
    raise MissingReferenceError(
        f"No 'ours' reference returns for env {env_id!r} in {path}. Compute them with "
        f"{_COMPUTE_HINT} (see its --help to select this env), or use "
        f"reference='odrl'. Entries present: {', '.join(sorted(table)) or 'none'}."
    )


def reference_returns(
    env_id: str, reference: str = "odrl", *, path: str | Path | None = None
) -> tuple[float, float]:
    """The ``(R_min, R_max)`` reference returns of an env.

    Args:
        env_id (str): a target id such as ``"tabb/Hopper-morph-v0"``,
            ``"tabb/HalfCheetah-friction-0.5-v0"``,
            ``"tabb/Walker2d-kinematic-footjnt-medium-v0"``, or a plain gymnasium id
            such as ``"Hopper-v5"``.
        reference (str, optional): ``"odrl"`` (ODRL's published table, default) or
            ``"ours"`` (measured in our envs, see the module docstring).

    Keyword Args:
        path (str or Path, optional): the ``"ours"`` table to read instead of
            :data:`OURS_REFERENCES_PATH`.

    Returns:
        tuple[float, float]: ``(R_min, R_max)``.

    Raises:
        MissingReferenceError: unknown env (the message lists the envs with
            references), friction level without an ODRL entry, or a missing
            ``"ours"`` table / entry (the message says how to compute it).
        ValueError: unknown ``reference``.

    Examples:
        >>> reference_returns("tabb/Hopper-morph-v0")
        (-26.3360015397715, 3234.3)
        >>> reference_returns("tabb/Walker2d-friction-2.0-v0")
        (10.079455055289959, 5180.044)
        >>> reference_returns("tabb/Ant-kinematic-hipjnt-hard-v0")[1]
        5139.832
    """
    if reference == "odrl":
        return _odrl(env_id)
    if reference == "ours":
        return _ours(env_id, Path(path) if path is not None else OURS_REFERENCES_PATH)
    raise ValueError(f"reference must be 'odrl' or 'ours', got {reference!r}.")


def normalized_score(
    env_id: str, returns, reference: str = "odrl", *, path: str | Path | None = None
):
    """The D4RL normalised score ``100 * (R - R_min) / (R_max - R_min)``.

    Args:
        env_id (str): the env the returns were measured in (see
            :func:`reference_returns`).
        returns (float, sequence, numpy array or torch tensor): undiscounted
            episode returns.
        reference (str, optional): ``"odrl"`` (default) or ``"ours"``.

    Keyword Args:
        path (str or Path, optional): the ``"ours"`` table to read.

    Returns:
        float for a scalar input (Python or numpy scalar), an array / tensor of the
        same shape otherwise (a list gives a numpy array).

    Raises:
        MissingReferenceError: see :func:`reference_returns`.

    Examples:
        >>> import numpy as np
        >>> round(normalized_score("tabb/Hopper-morph-v0", 1603.98), 2)
        50.0
        >>> normalized_score("tabb/Hopper-morph-v0", np.array([-26.3360015397715, 3234.3]))
        array([  0., 100.])
    """
    low, high = reference_returns(env_id, reference, path=path)
    scale = 100.0 / (high - low)
    if isinstance(returns, (int, float, np.floating, np.integer)):
        return float((float(returns) - low) * scale)
    if isinstance(returns, (list, tuple)):
        returns = np.asarray(returns, dtype=np.float64)
    return (returns - low) * scale


def medium_return_threshold(env_id: str, source_thresholds: dict[str, float]) -> float:
    """The default return at which a behaviour policy of ``env_id`` counts as *medium*.

    D4RL's medium policy is stopped at about one third of expert return. The
    ``source_thresholds`` give that return per task in the source env (``{"Hopper":
    1050, ...}``, ``recipes/config/behavior`` uses one third of ODRL's ``R_max``).
    A target env whose ODRL ``R_max`` differs from its source's (the friction
    levels) gets the source threshold scaled by ``R_max(target) / R_max(source)``,
    so that "medium" means the same fraction of expert return in every env; the
    morph, kinematic and gravity shifts share the source ``R_max`` and keep the
    source threshold. HalfCheetah friction 0.1, whose ODRL ``R_max`` looks
    anomalous (41696.55), and friction levels without an ODRL entry keep the
    source threshold too.

    Args:
        env_id (str): a source id (``"Hopper-v5"``) or a target id
            (``"tabb/Walker2d-friction-0.5-v0"``).
        source_thresholds (dict): medium return per task name (the env family).

    Returns:
        float: the threshold.

    Raises:
        KeyError: no threshold for the env's task in ``source_thresholds`` (the
            message says how to pass one).

    Examples:
        >>> medium_return_threshold("tabb/Hopper-morph-v0", {"Hopper": 1050})
        1050.0
        >>> round(medium_return_threshold("tabb/HalfCheetah-friction-0.5-v0", {"HalfCheetah": 4000}), 1)
        2425.1
    """
    family, shift = _parse(env_id)
    task = env_id.split("/")[-1].split("-")[0]
    if task not in source_thresholds:
        raise KeyError(
            f"No default medium return for task {task!r} (env {env_id!r}); known tasks: "
            f"{', '.join(sorted(source_thresholds)) or 'none'}. Pass one explicitly, e.g. "
            f"medium_return=1000, or add {task} to medium_returns."
        )
    base = float(source_thresholds[task])
    level = _friction_level(shift)
    if level is None or family not in ODRL_REFERENCES or (family, level) in _ANOMALOUS:
        return base
    try:
        _, target_max = _odrl(env_id)
    except MissingReferenceError:  # a friction level without an ODRL entry
        return base
    return base * target_max / float(ODRL_REFERENCES[family]["max"])
