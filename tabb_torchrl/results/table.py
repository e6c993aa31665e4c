"""Per-task tables: the ``summary.json`` files of a sweep grouped by ``(task, algo)``, mean ± std over seeds.

:func:`collect_summaries` reads every ``summary.json`` under a folder,
:func:`aggregate` groups them by ``(task, algo)`` into a :class:`ResultTable`,
and :func:`to_markdown`, :func:`to_latex` and :func:`to_csv` write it as a
table with one row per task and one column per algorithm.

The standard deviation is over seeds (``numpy.std``, ``ddof=0``, as CORL
reports it); a cell with one seed shows ``± 0.0``.

A cell never mixes settings silently: the runs of one ``(task, algo)`` cell must
share every setting but the seed and the runtime-only ones (read from the
``config.yaml`` next to each ``summary.json``). Otherwise :func:`aggregate`
raises :class:`ResultsError` naming the differing keys; ``split_by=["loss.tau"]``
gives each value its own column (``tabb (loss.tau=0.5)``).

Examples:
    >>> from tabb_torchrl.results import aggregate, to_markdown
    >>> runs = [{"algo": "tabb", "env": "tabb/Hopper-morph-v0", "seed": s, "normalized_score": x}
    ...         for s, x in enumerate([10.0, 20.0])]
    >>> print(to_markdown(aggregate(runs)))
    | task | tabb |
    |---|---|
    | Hopper-morph | 15.0 ± 5.0 (2) |
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ALGO_ORDER",
    "ResultsError",
    "CellStats",
    "ResultTable",
    "task_name",
    "collect_summaries",
    "aggregate",
    "to_markdown",
    "to_latex",
    "to_csv",
]

#: Column order of the tables (other algorithms follow, sorted).
ALGO_ORDER = ("iql_target", "iql_mixed", "src_actor", "tabb")


class ResultsError(ValueError):
    """Runs that cannot be aggregated as asked: the message names the differing settings and the fix.

    Examples:
        >>> issubclass(ResultsError, ValueError)
        True
    """


def task_name(env_id: str) -> str:
    """Short task name of a target env id (``tabb/Hopper-morph-v0`` -> ``Hopper-morph``).

    Args:
        env_id (str): a target env id (``tabb/<Env>-<shift>[-<level>]-v0``) or a
            plain gymnasium id.

    Returns:
        str: the id without the ``tabb/`` namespace and the ``-vN`` suffix.

    Examples:
        >>> task_name("tabb/Walker2d-kinematic-v0")
        'Walker2d-kinematic'
        >>> task_name("Hopper-v5")
        'Hopper'
    """
    name = env_id.split("/", 1)[-1]
    head, sep, tail = name.rpartition("-v")
    if sep and tail.isdigit():
        name = head
    return name


@dataclass
class CellStats:
    """Mean ± std over seeds of one ``(task, algo)`` cell.

    Attributes:
        values (list of float): one value per seed (runs without a score are skipped).
        seeds (list of int): the seeds, in the order of ``values``.

    Examples:
        >>> c = CellStats([1.0, 3.0], [0, 1])
        >>> c.mean, c.std, c.n
        (2.0, 1.0, 2)
    """

    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of seeds."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seeds (``nan`` when empty)."""
        return sum(self.values) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Standard deviation over seeds (``ddof=0``; ``nan`` when empty)."""
        if not self.n:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / self.n)

    def format(self, digits: int = 1, show_n: bool = True, pm: str = "±") -> str:
        """``"mean ± std (n)"``; ``"mean (1)"`` for one seed (no spread to show); ``"-"`` for an empty cell.

        Examples:
            >>> CellStats([1.0, 2.0], [0, 1]).format()
            '1.5 ± 0.5 (2)'
            >>> CellStats([3.0], [0]).format()
            '3.0 (1)'
            >>> CellStats().format()
            '-'
        """
        if not self.n:
            return "-"
        text = f"{self.mean:.{digits}f}"
        if self.n > 1:
            text += f" {pm} {self.std:.{digits}f}"
        return f"{text} ({self.n})" if show_n else text


@dataclass
class ResultTable:
    """Cells ``(task, algo) -> CellStats`` with ordered task and algorithm lists.

    Examples:
        >>> t = aggregate([{"algo": "tabb", "env": "tabb/Hopper-morph-v0", "seed": 0,
        ...                 "normalized_score": 5.0}])
        >>> t.tasks, t.algos, t.cell("Hopper-morph", "tabb").mean
        (['Hopper-morph'], ['tabb'], 5.0)
    """

    cells: dict[tuple[str, str], CellStats]
    tasks: list[str]
    algos: list[str]
    metric: str = "normalized_score"

    def cell(self, task: str, algo: str) -> CellStats:
        """The cell of ``(task, algo)`` (empty when there is no run)."""
        return self.cells.get((task, algo), CellStats())


def collect_summaries(roots: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read every ``summary.json`` under ``roots`` (folders searched recursively, or files).

    Each returned dictionary gets a ``"_path"`` entry with the file it came from
    and, when the run directory holds the recipe's ``config.yaml``, a
    ``"_config"`` entry with that configuration (used to keep runs of different
    settings apart). Files that are not valid JSON are skipped with a warning.

    Args:
        roots: one or several folders (e.g. a hydra ``multirun/<date>/<time>``
            folder) or ``summary.json`` files.

    Returns:
        list of dict: the summaries, sorted by path (empty when no run has finished).

    Raises:
        FileNotFoundError: a root does not exist.

    Examples:
        >>> import json, os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(d, "0_tabb"))
        >>> with open(os.path.join(d, "0_tabb", "summary.json"), "w") as f:
        ...     json.dump({"algo": "tabb", "env": "Hopper-v5", "seed": 0, "normalized_score": 1.0}, f)
        >>> [s["algo"] for s in collect_summaries(d)]
        ['tabb']
    """
    import warnings

    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(sorted(root.rglob("summary.json")))
        else:
            raise FileNotFoundError(f"{root}: no such file or folder. Fix: pass the sweep folder (hydra.sweep.dir) "
                                    "or the run folders whose summary.json to read.")
    out = []
    for path in sorted(set(files)):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping {path}: {err}", stacklevel=2)
            continue
        if not isinstance(data, dict):
            warnings.warn(f"skipping {path}: not a JSON object", stacklevel=2)
            continue
        data["_path"] = str(path)
        config = _read_config(path.parent / "config.yaml")
        if config is not None:
            data["_config"] = config
        out.append(data)
    return out


def _read_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception:
        try:
            import yaml

            data = yaml.safe_load(path.read_text())
        except Exception:
            return None
    return data if isinstance(data, dict) else None


def _settings(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The flat settings of a run that must agree within a cell (all but seed and runtime-only keys)."""
    from tabb_torchrl.pipeline.config_hash import HASH_EXCLUDED_KEYS, flatten_config, matches_key, without_added_defaults

    config = summary.get("_config")
    if not isinstance(config, Mapping):
        return None
    ignored = (*HASH_EXCLUDED_KEYS, "seed")
    # options added after a run was written are absent from its config: at their default they compare equal
    return without_added_defaults({k: v for k, v in flatten_config(config).items() if not matches_key(k, ignored)})


def _show(value: Any) -> str:
    return "null" if value is None else (json.dumps(value) if isinstance(value, (list, dict)) else str(value))


def _label(summary: Mapping[str, Any], split_by: Sequence[str]) -> str:
    """The column of a run: its algorithm, plus the values of ``split_by``."""
    algo = str(summary["algo"])
    if not split_by:
        return algo
    from tabb_torchrl.pipeline.config_hash import flatten_config

    flat = flatten_config(summary.get("_config") or {})
    parts = [f"{k}={_show(flat.get(k, summary.get(k)))}" for k in split_by]
    return f"{algo} ({', '.join(parts)})"


def _check_cells(summaries: Sequence[Mapping[str, Any]], split_by: Sequence[str]) -> None:
    """Raise :class:`ResultsError` when a cell would mix runs of different settings."""
    groups: dict[tuple[str, str], list] = {}
    for s in summaries:
        groups.setdefault((task_name(str(s["env"])), _label(s, split_by)), []).append(s)
    for (task, label), runs in groups.items():
        known = [(r, _settings(r)) for r in runs]
        known = [(r, st) for r, st in known if st is not None]
        keys = sorted({k for _, st in known for k in st})
        values = {k: {json.dumps(st.get(k, "<absent>"), sort_keys=True, default=str) for _, st in known}
                  for k in keys}
        differ = [k for k in keys if len(values[k]) > 1]
        if not differ:  # runs without config.yaml: re-runs of one seed must at least share their hash
            by_seed: dict[int, set] = {}
            for r in runs:
                if r.get("config_hash") and _settings(r) is None:
                    by_seed.setdefault(int(r.get("seed", 0)), set()).add(str(r["config_hash"]))
            clash = {seed: h for seed, h in by_seed.items() if len(h) > 1}
            if not clash:
                continue
            seed, hashes = next(iter(clash.items()))
            raise ResultsError(
                f"{task} / {label}, seed {seed}: runs with different configurations (config hashes "
                f"{', '.join(sorted(hashes))}) would collapse into one value (the last one would win); their "
                "config.yaml files are missing, so the differing settings cannot be named. Fix: aggregate the runs "
                "of each configuration on their own (one sweep folder per setting), or remove the stale runs."
            )
        shown = "; ".join(f"{k}: {', '.join(sorted(_show(json.loads(v)) for v in values[k]))}" for k in differ[:6])
        more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
        paths = ", ".join(str(r.get("_path", "?")) for r, _ in known[:3])
        raise ResultsError(
            f"{task} / {label}: the runs differ in {len(differ)} setting(s) besides the seed -- {shown}{more}; "
            f"one cell would mix them (e.g. {paths}). Fix: give each setting its own column with "
            f"split_by=[{', '.join(repr(k) for k in differ[:3])}] (--split-by {' '.join(differ[:3])} on the command "
            "line), or aggregate the runs of each setting on their own (one sweep folder per setting)."
        )


def _order_algos(algos: Iterable[str]) -> list[str]:
    algos = set(algos)
    known = [a for a in ALGO_ORDER if a in algos]
    return known + sorted(algos - set(ALGO_ORDER))


def aggregate(
    summaries: Sequence[Mapping[str, Any]],
    metric: str = "normalized_score",
    *,
    tasks: Sequence[str] | None = None,
    algos: Sequence[str] | None = None,
    split_by: Sequence[str] = (),
) -> ResultTable:
    """Group summaries by ``(task, algo)`` and collect ``metric`` over seeds.

    Runs whose ``metric`` is missing or ``None`` are skipped. If one
    ``(task, algo, seed)`` appears more than once with the same settings (a
    re-run), the last one in path order is kept. Runs of one cell whose
    settings differ (besides the seed and the runtime-only keys; read from the
    ``"_config"`` that :func:`collect_summaries` attaches, or else their
    ``config_hash`` for re-runs of one seed) raise :class:`ResultsError`
    naming the differing keys, unless ``split_by`` lists them.

    Args:
        summaries: dictionaries with ``"algo"``, ``"env"``, ``"seed"`` and ``metric``.
        metric (str): the summary key to aggregate, e.g. ``"normalized_score"``
            (final evaluation) or ``"best_normalized_score"``.

    Keyword Args:
        tasks (sequence of str, optional): task order (default: sorted).
        algos (sequence of str, optional): column order (default:
            :data:`ALGO_ORDER`, then the others sorted).
        split_by (sequence of str): dotted config keys (``"loss.tau"``) whose
            values split an algorithm's column (``"tabb (loss.tau=0.5)"``).

    Returns:
        ResultTable: the cells.

    Raises:
        ResultsError: a cell would mix runs of different settings.

    Examples:
        >>> runs = [
        ...     {"algo": "tabb", "env": "tabb/Hopper-morph-v0", "seed": 0, "normalized_score": 10.0},
        ...     {"algo": "tabb", "env": "tabb/Hopper-morph-v0", "seed": 1, "normalized_score": 30.0},
        ...     {"algo": "iql_target", "env": "tabb/Hopper-morph-v0", "seed": 0, "normalized_score": 5.0}]
        >>> t = aggregate(runs)
        >>> t.algos, t.cell("Hopper-morph", "tabb").format()
        (['iql_target', 'tabb'], '20.0 ± 10.0 (2)')

        Two settings of ``loss.tau`` are refused, or split into columns:

        >>> runs = [{"algo": "tabb", "env": "E-v0", "seed": 0, "normalized_score": x,
        ...          "_config": {"seed": 0, "loss": {"tau": tau}}} for x, tau in ((1.0, 0.5), (3.0, 2.0))]
        >>> aggregate(runs)
        Traceback (most recent call last):
        ...
        tabb_torchrl.results.table.ResultsError: E / tabb: the runs differ in 1 setting(s) besides the seed -- loss.tau: 0.5, 2.0; ... Fix: ...
        >>> aggregate(runs, split_by=["loss.tau"]).algos
        ['tabb (loss.tau=0.5)', 'tabb (loss.tau=2.0)']
    """
    _check_cells(summaries, split_by)
    by_key: dict[tuple[str, str, int], float] = {}
    for s in summaries:
        value = s.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        key = (task_name(str(s["env"])), _label(s, split_by), int(s.get("seed", 0)))
        by_key[key] = float(value)
    cells: dict[tuple[str, str], CellStats] = {}
    for (task, algo, seed), value in sorted(by_key.items()):
        cell = cells.setdefault((task, algo), CellStats())
        cell.values.append(value)
        cell.seeds.append(seed)
    task_list = list(tasks) if tasks is not None else sorted({t for t, _ in cells})
    algo_list = _columns(algos, {a for _, a in cells})
    return ResultTable(cells, task_list, algo_list, metric)


def _columns(algos: Sequence[str] | None, labels: set[str]) -> list[str]:
    """The columns: ``algos`` in their order (each followed by its split columns), or every label."""
    if algos is None:
        return _order_algos(labels)
    out = []
    for a in algos:
        split = sorted(label for label in labels if label.startswith(f"{a} ("))
        out.extend(split or [a])
    return out


def _best_algo(table: ResultTable, task: str) -> str | None:
    means = [(table.cell(task, a).mean, a) for a in table.algos if table.cell(task, a).n]
    return max(means)[1] if means else None


def to_markdown(table: ResultTable, *, digits: int = 1, show_n: bool = True, bold_best: bool = False) -> str:
    """A markdown table: one row per task, one column per algorithm, ``mean ± std (n seeds)``.

    Args:
        table (ResultTable): from :func:`aggregate`.

    Keyword Args:
        digits (int): decimals. Defaults to ``1``.
        show_n (bool): append the number of seeds. Defaults to ``True``.
        bold_best (bool): bold the highest mean of each row. Defaults to ``False``.

    Returns:
        str: the table (no trailing newline).

    Examples:
        >>> t = aggregate([{"algo": "a", "env": "E-v0", "seed": 0, "normalized_score": 1.0},
        ...                {"algo": "b", "env": "E-v0", "seed": 0, "normalized_score": 2.0}])
        >>> print(to_markdown(t, show_n=False, bold_best=True))
        | task | a | b |
        |---|---|---|
        | E | 1.0 | **2.0** |
    """
    lines = ["| task | " + " | ".join(table.algos) + " |", "|---|" + "---|" * len(table.algos)]
    for task in table.tasks:
        best = _best_algo(table, task) if bold_best else None
        cells = []
        for algo in table.algos:
            text = table.cell(task, algo).format(digits, show_n)
            cells.append(f"**{text}**" if algo == best else text)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def to_latex(table: ResultTable, *, digits: int = 1, caption: str | None = None, bold_best: bool = True) -> str:
    """A LaTeX ``tabular`` (booktabs) of the table, ``mean $\\pm$ std``, best mean in bold.

    Args:
        table (ResultTable): from :func:`aggregate`.

    Keyword Args:
        digits (int): decimals. Defaults to ``1``.
        caption (str, optional): wraps the tabular in a ``table`` environment with this caption.
        bold_best (bool): bold the highest mean of each row. Defaults to ``True``.

    Returns:
        str: LaTeX source (needs ``\\usepackage{booktabs}``).

    Examples:
        >>> t = aggregate([{"algo": "iql_target", "env": "E-v0", "seed": 0, "normalized_score": 1.0},
        ...                {"algo": "tabb", "env": "E-v0", "seed": 0, "normalized_score": 2.0}])
        >>> print(to_latex(t))
        \\begin{tabular}{lcc}
        \\toprule
        task & iql\\_target & tabb \\\\
        \\midrule
        E & 1.0 $\\pm$ 0.0 & \\textbf{2.0} $\\pm$ 0.0 \\\\
        \\bottomrule
        \\end{tabular}
    """
    header = "task & " + " & ".join(_latex_escape(a) for a in table.algos) + r" \\"
    rows = []
    for task in table.tasks:
        best = _best_algo(table, task) if bold_best else None
        cells = []
        for algo in table.algos:
            c = table.cell(task, algo)
            if not c.n:
                cells.append("--")
                continue
            mean = f"{c.mean:.{digits}f}"
            if algo == best:
                mean = rf"\textbf{{{mean}}}"
            cells.append(rf"{mean} $\pm$ {c.std:.{digits}f}")
        rows.append(f"{_latex_escape(task)} & " + " & ".join(cells) + r" \\")
    body = [
        r"\begin{tabular}{l" + "c" * len(table.algos) + "}",
        r"\toprule",
        header,
        r"\midrule",
        *rows,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if caption is not None:
        body = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", *body, r"\end{table}"]
    return "\n".join(body)


def to_csv(table: ResultTable) -> str:
    """One line per cell: ``task,algo,n,mean,std,values`` (values ``;``-separated).

    Examples:
        >>> t = aggregate([{"algo": "a", "env": "E-v0", "seed": 0, "normalized_score": 1.0}])
        >>> print(to_csv(t))
        task,algo,n,mean,std,values
        E,a,1,1.0000,0.0000,1.0000
    """
    lines = ["task,algo,n,mean,std,values"]
    for task in table.tasks:
        for algo in table.algos:
            c = table.cell(task, algo)
            if c.n:
                vals = ";".join(f"{v:.4f}" for v in c.values)
                lines.append(f"{task},{algo},{c.n},{c.mean:.4f},{c.std:.4f},{vals}")
    return "\n".join(lines)
