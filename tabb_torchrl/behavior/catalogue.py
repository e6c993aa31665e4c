"""Every dataset a user can ask for, with its availability and returns.

``python -m tabb_torchrl.behavior.catalogue [--markdown] [--env SUBSTRING] [--quality Q] [--role R] [--available]``

One :class:`CatalogueRow` per dataset:

* **source** datasets: the plain gymnasium source env of each robot of
  :mod:`tabb_torchrl.envs` (``Hopper-v5``, ..., ``AdroitHandPen-v1``) at every
  quality of :data:`~tabb_torchrl.behavior.minari_writer.DATASET_QUALITIES`, 1,000,000
  transitions by default;
* **target** datasets: every id of :func:`tabb_torchrl.envs.list_env_ids` at
  every quality, 5,000 transitions by default (``medium-expert``: twice the
  size, ``medium`` then ``expert``).

Each row says whether the dataset can be generated now (``"ready"``: it needs
no behaviour policy, or the policies it needs ship with the package), otherwise
what is missing and the command that makes it; the evaluation return of the
shipped behaviour policy; the reference returns (random / best policy) of
:func:`~tabb_torchrl.data.reference_returns` in ODRL's table (its expert) and
ours (the best shipped behaviour policy in that env, which may be a medium one); and the
measured return of the dataset when it was recorded in
``tabb_torchrl/assets/dataset_returns.json`` (written by
``python -m tabb_torchrl.behavior.collect ... --record``).

A default-level id and its alias (``tabb/Walker2d-friction-0.5-v0`` and
``tabb/Walker2d-friction-v0``) are one env: both rows look the policies,
references and recorded returns up under the canonical id
(:func:`~tabb_torchrl.behavior.policies.canonical_env_id`, the alias) and name the
same Minari dataset.

The docs page *Datasets* shows the ``--markdown`` output (one section per
robot, generated at docs-build time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tabb_torchrl.behavior import collect
from tabb_torchrl.behavior.minari_writer import DATASET_QUALITIES, dataset_id_for
from tabb_torchrl.behavior.policies import (
    canonical_env_id,
    env_id_to_dirname,
    list_behavior_policies,
    load_policy_returns,
)
from tabb_torchrl.behavior.stats import _read_returns_file
from tabb_torchrl.data.references import MissingReferenceError, reference_returns

__all__ = [
    "DATASET_RETURNS_PATH",
    "SOURCE_SIZE",
    "TARGET_SIZE",
    "QUALITIES",
    "CatalogueRow",
    "source_env_ids",
    "default_size",
    "load_dataset_returns",
    "build_catalogue",
    "format_text",
    "format_markdown",
    "MARKDOWN_LEGEND",
    "main",
]

#: The measured dataset returns shipped with the package, ``tabb_torchrl/assets/dataset_returns.json``
#: (written by ``python -m tabb_torchrl.behavior.collect --record PATH``).
#:
#: :meta hide-value:
DATASET_RETURNS_PATH: Path = Path(__file__).resolve().parent.parent / "assets" / "dataset_returns.json"

#: Default size of a source dataset (transitions), D4RL's (:data:`tabb_torchrl.behavior.collect.SOURCE_SIZE`).
SOURCE_SIZE = collect.SOURCE_SIZE

#: Default size of a target dataset (transitions), ODRL / OTDF's (:data:`tabb_torchrl.behavior.collect.TARGET_SIZE`).
TARGET_SIZE = collect.TARGET_SIZE

#: Qualities listed for source and target envs alike.
QUALITIES: tuple[str, ...] = tuple(DATASET_QUALITIES)

_TRAIN = "python recipes/train_behavior.py env={env}"
_SHIP = "python -m tabb_torchrl.behavior.policies ship behavior_runs/{slug}_s0"
_REPLAY = "python -m tabb_torchrl.behavior.collect --env {env} --quality medium-replay --run-dir {run_dir}"


@dataclasses.dataclass(frozen=True)
class CatalogueRow:
    """One dataset of the catalogue.

    Attributes:
        env_id: Env the data are collected in (``"Hopper-v5"``, ``"tabb/Hopper-morph-v0"``).
        robot: The env family (``"Hopper"``, ``"AdroitHandPen"``).
        role: ``"source"`` or ``"target"``.
        quality: One of :data:`QUALITIES`.
        dataset_id: The Minari id (:func:`~tabb_torchrl.behavior.minari_writer.dataset_id_for`).
        default_size: Transitions by default (``medium-replay``: at most this, the
            replay buffer up to the medium snapshot may be smaller).
        available: ``True`` when the dataset can be generated with what ships.
        missing: What is missing (``""`` when available).
        commands: The commands that make what is missing, in order (empty when available).
        policy_return: Evaluation return of the shipped behaviour policy of this
            quality (``medium`` / ``expert`` only), else ``None``.
        reference_odrl: ``(random, expert)`` reference returns of ODRL's table, or ``None``.
        reference_ours: ``(random, best shipped policy)`` reference returns measured in our envs, or ``None``.
        measured: The recorded statistics of the dataset (``return_mean``,
            ``return_std``, ``episodes``, ``size``, ...), or ``None``.
        notes: Remarks (e.g. an anomalous reference return).
        requires: The optional package the env needs (``"gymnasium_robotics"``), or ``None``.

    Examples:
        >>> row = build_catalogue(env="Hopper-v5", quality="random")[0]
        >>> row.dataset_id, row.role, row.available, row.status
        ('tabb/Hopper/random-v0', 'source', True, 'ready')
    """

    env_id: str
    robot: str
    role: str
    quality: str
    dataset_id: str
    default_size: int
    available: bool
    missing: str = ""
    commands: tuple[str, ...] = ()
    policy_return: float | None = None
    reference_odrl: tuple[float, float] | None = None
    reference_ours: tuple[float, float] | None = None
    measured: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    requires: str | None = None

    @property
    def status(self) -> str:
        """``"ready"``, or what is missing and the command that makes it."""
        if self.available:
            return "ready"
        return f"missing {self.missing}: {', then '.join(self.commands)}"

    @property
    def measured_return(self) -> float | None:
        """Mean return of the recorded dataset (``None`` if not measured)."""
        return None if not self.measured else self.measured.get("return_mean")

    def as_dict(self) -> dict[str, Any]:
        """The row as a JSON-friendly dictionary (with ``status``)."""
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        d["commands"] = list(self.commands)
        d["status"] = self.status
        return d


def _robots() -> dict[str, tuple[str, list[str], str | None]]:
    """``{robot: (source env id, [target ids], required package)}`` in the registry's order."""
    from tabb_torchrl.envs import get_shift, list_env_ids

    out: dict[str, tuple[str, list[str], str | None]] = {}
    for env_id in list_env_ids():
        spec = get_shift(env_id)
        out.setdefault(spec.env_name, (spec.source_id, [], spec.requires))[1].append(env_id)
    return out


def source_env_ids() -> list[str]:
    """The plain gymnasium source env of each robot, in the registry's order.

    Examples:
        >>> source_env_ids()[:4]
        ['HalfCheetah-v5', 'Hopper-v5', 'Walker2d-v5', 'Ant-v5']
    """
    return [src for src, _, _ in _robots().values()]


def default_size(role: str, quality: str) -> int:
    """Default transitions of a dataset: 1,000,000 source, 5,000 target, twice that for ``medium-expert``.

    Examples:
        >>> default_size("source", "medium"), default_size("target", "medium-expert")
        (1000000, 10000)
    """
    if role not in ("source", "target"):
        raise ValueError(f"role must be 'source' or 'target', got {role!r}")
    base = SOURCE_SIZE if role == "source" else TARGET_SIZE
    return 2 * base if quality == "medium-expert" else base


def load_dataset_returns(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The recorded dataset statistics, ``{dataset id: record}`` (``{}`` if the file is absent).

    Args:
        path: The JSON file written by ``python -m tabb_torchrl.behavior.collect --record``
            (default: :data:`DATASET_RETURNS_PATH`).

    Raises:
        ValueError: the file exists but is not a dataset-returns file.

    Examples:
        >>> load_dataset_returns("/no/such/file.json")
        {}
    """
    p = Path(path) if path is not None else DATASET_RETURNS_PATH
    return dict(_read_returns_file(p)["datasets"])  # the reader of `collect --record`


def _check_quality(quality: str | None) -> None:
    if quality is not None and quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; valid qualities: {', '.join(QUALITIES)}")


def _references(env_id: str) -> tuple[tuple[float, float] | None, tuple[float, float] | None, tuple[str, ...]]:
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            odrl = reference_returns(env_id, "odrl")
        except MissingReferenceError:
            odrl = None
    notes += [str(w.message) for w in caught]
    try:
        ours = reference_returns(env_id, "ours")
    except MissingReferenceError:
        ours = None
    return odrl, ours, tuple(notes)


def _availability(env_id: str, quality: str, shipped: set[tuple[str, str]],
                  check_runs: bool) -> tuple[bool, str, tuple[str, ...]]:
    """``(available, missing, commands)``."""
    train = _TRAIN.format(env=env_id)
    if quality == "random":
        return True, "", ()
    if quality == "medium-replay":
        run_dir = collect._default_run_dir(env_id)
        if check_runs and (run_dir / "medium_replay.pt").is_file():
            return True, "", ()
        return (False, "a SAC run directory with medium_replay.pt",
                (train, _REPLAY.format(env=env_id, run_dir=run_dir.as_posix())))
    needed = ("medium", "expert") if quality == "medium-expert" else (quality,)
    lacking = [q for q in needed if (canonical_env_id(env_id), q) not in shipped]
    if not lacking:
        return True, "", ()
    what = " and ".join(lacking) + (" behaviour policies" if len(lacking) > 1 else " behaviour policy")
    return False, what, (train, _SHIP.format(slug=env_id_to_dirname(env_id)))


def build_catalogue(
    *,
    env: str | None = None,
    quality: str | None = None,
    available: bool = False,
    role: str | None = None,
    policy_root: str | os.PathLike | None = None,
    returns_path: str | os.PathLike | None = None,
    check_runs: bool = False,
) -> list[CatalogueRow]:
    """One row per dataset: source envs first (per robot), then every target id.

    Args:
        env: Keep env ids containing this substring (case-insensitive).
        quality: Keep this quality only (one of :data:`QUALITIES`).
        available: Keep the datasets that can be generated now.
        role: Keep ``"source"`` or ``"target"`` rows only.
        policy_root: Behaviour-policy folder (default: the shipped assets).
        returns_path: Recorded dataset returns (default: :data:`DATASET_RETURNS_PATH`).
        check_runs: Count ``medium-replay`` as available when the default SAC run
            directory (``behavior_runs/<env>_s0/medium_replay.pt``, or under
            ``$TABB_BEHAVIOR_RUNS``) exists on this machine.

    Raises:
        ValueError: unknown ``quality`` (the message lists the valid ones) or ``role``.

    Examples:
        >>> rows = build_catalogue()
        >>> len({r.env_id for r in rows if r.role == "target"}), len(QUALITIES)
        (108, 5)
        >>> [r.dataset_id for r in build_catalogue(env="Hopper-morph-v0", quality="medium")]
        ['tabb/Hopper-morph/medium-v0']
        >>> build_catalogue(quality="mediocre")
        Traceback (most recent call last):
        ...
        ValueError: unknown quality 'mediocre'; valid qualities: random, medium, medium-replay, expert, medium-expert
    """
    _check_quality(quality)
    if role not in (None, "source", "target"):
        raise ValueError(f"role must be 'source' or 'target', got {role!r}")
    if returns_path is None:
        returns_path = DATASET_RETURNS_PATH  # read at call time (tests patch it)
    measured = load_dataset_returns(returns_path)
    shipped = set(list_behavior_policies(policy_root))
    qualities = QUALITIES if quality is None else (quality,)
    needle = env.lower() if env else None
    rows: list[CatalogueRow] = []
    for robot, (source_id, targets, requires) in _robots().items():
        for r, ids in (("source", [source_id]), ("target", targets)):
            if role is not None and r != role:
                continue
            for env_id in ids:
                if needle is not None and needle not in env_id.lower():
                    continue
                odrl, ours, notes = _references(env_id)
                policy_returns = load_policy_returns(env_id, policy_root)
                for q in qualities:
                    ok, missing, commands = _availability(env_id, q, shipped, check_runs)
                    if available and not ok:
                        continue
                    pol = None
                    if q in ("medium", "expert") and (canonical_env_id(env_id), q) in shipped:
                        pol = policy_returns.get(q, {}).get("eval_return")
                        pol = float(pol) if pol is not None else None
                    did = dataset_id_for(env_id, q)
                    rows.append(CatalogueRow(
                        env_id=env_id, robot=robot, role=r, quality=q, dataset_id=did,
                        default_size=default_size(r, q), available=ok, missing=missing, commands=commands,
                        policy_return=pol, reference_odrl=odrl, reference_ours=ours,
                        measured=measured.get(did), notes=notes, requires=requires,
                    ))
    return rows


# --------------------------------------------------------------------------- formatting


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def _ref(pair: tuple[float, float] | None) -> str:
    return "" if pair is None else f"{pair[0]:.1f} / {pair[1]:.1f}"


def _measured(row: CatalogueRow) -> str:
    m = row.measured
    if not m or m.get("return_mean") is None:
        return ""
    text = f"{m['return_mean']:.1f}"
    if m.get("return_std") is not None:
        text += f" ± {m['return_std']:.1f}"
    extra = [f"{m.get('episodes')} ep"]
    if m.get("size") is not None and int(m["size"]) != row.default_size // (2 if row.quality == "medium-expert"
                                                                          else 1):
        extra.append(f"size {int(m['size']):,}")
    return f"{text} ({', '.join(extra)})"


_TEXT_COLUMNS = ("env id", "role", "quality", "dataset id", "size", "policy return", "ODRL ref (rnd / exp)",
                 "ours ref (rnd / best)", "measured return", "availability")


def _text_cells(row: CatalogueRow) -> list[str]:
    return [row.env_id, row.role, row.quality, row.dataset_id, f"{row.default_size:,}", _num(row.policy_return),
            _ref(row.reference_odrl), _ref(row.reference_ours), _measured(row), row.status]


def format_text(rows: Sequence[CatalogueRow]) -> str:
    """A plain-text table (:func:`tabulate.tabulate`, ``simple`` format), one line per row.

    Examples:
        >>> print(format_text(build_catalogue(env="Hopper-v5", quality="random")).splitlines()[0].split()[:3])
        ['env', 'id', 'role']
    """
    from tabulate import tabulate

    table = tabulate([_text_cells(r) for r in rows], headers=_TEXT_COLUMNS, tablefmt="simple", disable_numparse=True)
    return "\n".join(line.rstrip() for line in table.splitlines()) + "\n"


def _md_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    """A markdown table (:func:`tabulate.tabulate`, ``github`` format); ``|`` in a cell is escaped."""
    from tabulate import tabulate

    body = [[c.replace("|", "\\|") for c in line] for line in lines]
    return tabulate(body, headers=list(header), tablefmt="github", disable_numparse=True) + "\n"


def _source_section(rows: list[CatalogueRow]) -> str:
    r0 = rows[0]
    refs = [f"ODRL {_ref(r0.reference_odrl)}" if r0.reference_odrl else "ODRL none"]
    refs.append(f"ours {_ref(r0.reference_ours)}" if r0.reference_ours else "ours not measured yet")
    lines = []
    for r in rows:
        size = f"{r.default_size:,}" if r.quality != "medium-replay" else f"≤ {r.default_size:,}"
        lines.append([r.quality, f"`{r.dataset_id}`", size, "ready" if r.available else f"missing {r.missing}",
                      _num(r.policy_return), _measured(r)])
    text = (
        f"Source env `{r0.env_id}`; reference returns (random / best): {'; '.join(refs)}.\n\n"
        + _md_table(["quality", "Minari id", "size", "availability", "policy return", "measured return"], lines)
    )
    todo = list(dict.fromkeys(c for r in rows if not r.available for c in r.commands))
    if todo:  # the training command first, then shipping / collecting from its run
        text += f"\nTo make the missing ones: `{todo[0]}`, then " + " and ".join(f"`{c}`" for c in todo[1:]) + ".\n"
    return text


def _target_cell(r: CatalogueRow) -> str:
    if r.available:
        parts = ["ready"]
    else:
        parts = ["run" if r.quality == "medium-replay" else "train"]
    if r.policy_return is not None:
        parts.append(f"policy {r.policy_return:.1f}")
    if _measured(r):
        parts.append(f"data {_measured(r)}")
    return " · ".join(parts)


def _target_section(rows: list[CatalogueRow]) -> str:
    ids = list(dict.fromkeys(r.env_id for r in rows))
    qualities = [q for q in QUALITIES if any(r.quality == q for r in rows)]
    by_key = {(r.env_id, r.quality): r for r in rows}
    lines = []
    for env_id in ids:
        first = next(r for r in rows if r.env_id == env_id)
        cells = [_target_cell(by_key[env_id, q]) if (env_id, q) in by_key else "" for q in qualities]
        lines.append([f"`{env_id}`", *cells, _ref(first.reference_odrl), _ref(first.reference_ours)])
    robot = rows[0].robot
    sizes = ", ".join(f"{default_size('target', q):,} for `{q}`" for q in qualities
                      if default_size("target", q) != TARGET_SIZE)
    text = (
        f"{len(ids)} target env{'s' if len(ids) != 1 else ''}: Minari ids `tabb/{robot}-<shift>/<quality>-v0`, "
        f"{TARGET_SIZE:,} transitions each{' (' + sizes + ')' if sizes else ''}.\n\n"
        + _md_table(["env id", *qualities, "ODRL ref (rnd / exp)", "ours ref (rnd / best)"], lines)
    )
    notes = list(dict.fromkeys(f"`{r.env_id}`: {n}" for r in rows for n in r.notes))
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text


MARKDOWN_LEGEND = (
    "**ready**: can be generated now "
    "(`python -m tabb_torchrl.behavior.collect --env <env id> --quality <quality> --size <size>`); "
    "**train**: a behaviour policy is missing (`python recipes/train_behavior.py env=<env id>`, then "
    "`python -m tabb_torchrl.behavior.policies ship behavior_runs/<env id, / as __>_s0`); "
    "**run**: `medium-replay` needs that training run's `medium_replay.pt` (`--run-dir`). "
    "*policy*: evaluation return of the shipped behaviour policy; *data* / *measured return*: mean ± std "
    "of the complete episodes' returns in the generated dataset (`collect --record`). "
    "Reference returns: random / best, the `R_min` / `R_max` of the normalised score: "
    "ODRL's table (its expert) and ours (the best shipped behaviour policy in that env, "
    "medium where no expert ships yet); empty when unknown.\n"
)
"""The legend printed above the markdown tables."""


def format_markdown(rows: Sequence[CatalogueRow], *, legend: bool = True) -> str:
    """The markdown page of the docs: one section per robot, its source datasets first.

    Source datasets get one row per quality; target datasets one row per env id
    with one column per quality (``ready``, with the policy and measured data
    returns when known; ``train``: a behaviour policy is missing; ``run``: a SAC
    run directory is missing).

    Args:
        rows: Rows of :func:`build_catalogue`.
        legend: Start with :data:`MARKDOWN_LEGEND`.

    Examples:
        >>> md = format_markdown(build_catalogue(env="Hopper"), legend=False)
        >>> md.splitlines()[0]
        '### Hopper'
        >>> row = next(line for line in md.splitlines() if line.startswith("| `tabb/Hopper-morph-v0` "))
        >>> row.split("|")[3].strip().startswith("ready · policy")   # the medium column: a policy ships
        True
    """
    rows = list(rows)
    if not rows:
        return "No dataset matches.\n"
    parts = [MARKDOWN_LEGEND] if legend else []
    for robot in dict.fromkeys(r.robot for r in rows):
        mine = [r for r in rows if r.robot == robot]
        source = [r for r in mine if r.role == "source"]
        target = [r for r in mine if r.role == "target"]
        section = [f"### {robot}\n"]
        if mine[0].requires:
            extra = "adroit" if mine[0].requires == "gymnasium_robotics" else None
            how = f' (`pip install "tabb-torchrl[{extra}]"`)' if extra else ""
            section.append(f"These envs need the optional package `{mine[0].requires}`{how}.\n")
        if source:
            section.append(_source_section(source))
        if target:
            section.append(_target_section(target))
        parts.append("\n".join(section))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m tabb_torchrl.behavior.catalogue --help``).

    Examples:
        >>> main(["--env", "Hopper-v5", "--quality", "random"])  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
        env id     role    quality  dataset id             size       policy return ...
        ...
        Hopper-v5  source  random   tabb/Hopper/random-v0  1,000,000 ...ready
        0
        >>> main(["--quality", "nope"])  # the error goes to stderr, with the valid qualities
        2
    """
    p = argparse.ArgumentParser(prog="python -m tabb_torchrl.behavior.catalogue", description=__doc__.split("\n")[0])
    p.add_argument("--markdown", action="store_true", help="markdown (the docs page) instead of a text table")
    p.add_argument("--env", default=None, metavar="SUBSTRING", help="env ids containing this (case-insensitive)")
    p.add_argument("--quality", default=None, help=f"one of {', '.join(QUALITIES)}")
    p.add_argument("--role", default=None, choices=("source", "target"), help="source or target datasets only")
    p.add_argument("--available", action="store_true", help="only datasets that can be generated now")
    p.add_argument("--local-runs", action="store_true",
                   help="count medium-replay as available when this machine has the SAC run directory "
                        "(behavior_runs/<env>_s0/medium_replay.pt)")
    p.add_argument("--json", action="store_true", help="the rows as JSON")
    args = p.parse_args(argv)
    try:
        rows = build_catalogue(env=args.env, quality=args.quality, available=args.available, role=args.role,
                               check_runs=args.local_runs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    elif args.markdown:
        print(format_markdown(rows), end="")
    else:
        print(format_text(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
