"""Per-task tables of summary.json files (tabb_torchrl.results) against hand computations."""

import json
import math

import pytest

from tabb_torchrl.results import figures
from tabb_torchrl.results import (
    aggregate,
    collect_summaries,
    plot_learning_curves,
    task_name,
    to_csv,
    to_latex,
    to_markdown,
)


def _write(root, sub, **summary):
    d = root / sub
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def grid(tmp_path):
    """A fake hydra multirun: 2 tasks x 2 algos x seeds, one run without a score, one broken file."""
    scores = {
        ("tabb/Hopper-morph-v0", "tabb"): [10.0, 20.0, 60.0],
        ("tabb/Hopper-morph-v0", "iql_target"): [5.0, 7.0],
        ("tabb/Walker2d-kinematic-v0", "tabb"): [33.0],
    }
    i = 0
    for (env, algo), vals in scores.items():
        for seed, v in enumerate(vals):
            hist = [{"step": 100, "normalized_score": v / 2}, {"step": 200, "normalized_score": v}]
            _write(tmp_path, f"{i}_{algo}_seed{seed}", algo=algo, env=env, seed=seed,
                   normalized_score=v, best_normalized_score=v + 1, history=hist)
            i += 1
    _write(tmp_path, "99_unfinished", algo="iql_target", env="tabb/Walker2d-kinematic-v0", seed=0,
           normalized_score=None, history=[])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    return tmp_path


def test_task_name():
    assert task_name("tabb/Hopper-morph-v0") == "Hopper-morph"
    assert task_name("tabb/HalfCheetah-friction-0.5-v0") == "HalfCheetah-friction-0.5"
    assert task_name("Walker2d-v5") == "Walker2d"
    assert task_name("no-version") == "no-version"


def test_collect_skips_broken(grid):
    with pytest.warns(UserWarning, match="skipping"):
        runs = collect_summaries(grid)
    assert len(runs) == 7
    assert all(r["_path"].endswith("summary.json") for r in runs)


def test_aggregate_matches_hand_computation(grid):
    with pytest.warns(UserWarning):
        table = aggregate(collect_summaries(grid))
    assert table.tasks == ["Hopper-morph", "Walker2d-kinematic"]
    assert table.algos == ["iql_target", "tabb"]  # ALGO_ORDER
    c = table.cell("Hopper-morph", "tabb")
    assert c.n == 3 and c.seeds == [0, 1, 2]
    assert c.mean == pytest.approx(30.0)
    # population std of (10, 20, 60): sqrt(((-20)^2 + (-10)^2 + 30^2) / 3)
    assert c.std == pytest.approx(math.sqrt(1400 / 3))
    assert table.cell("Hopper-morph", "iql_target").mean == pytest.approx(6.0)
    assert table.cell("Hopper-morph", "iql_target").std == pytest.approx(1.0)
    assert table.cell("Walker2d-kinematic", "iql_target").n == 0  # no score: skipped


def test_other_metric_and_duplicates():
    runs = [
        {"algo": "tabb", "env": "E-v0", "seed": 0, "normalized_score": 1.0, "best_normalized_score": 4.0},
        {"algo": "tabb", "env": "E-v0", "seed": 0, "normalized_score": 3.0, "best_normalized_score": 6.0},
    ]
    t = aggregate(runs, metric="best_normalized_score")
    assert t.cell("E", "tabb").values == [6.0]  # the later duplicate wins


def test_markdown_output(grid):
    with pytest.warns(UserWarning):
        table = aggregate(collect_summaries(grid))
    md = to_markdown(table, bold_best=True)
    lines = md.splitlines()
    assert lines[0] == "| task | iql_target | tabb |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| Hopper-morph | 6.0 ± 1.0 (2) | **30.0 ± 21.6 (3)** |"
    assert lines[3] == "| Walker2d-kinematic | - | **33.0 (1)** |"


def test_latex_output(grid):
    with pytest.warns(UserWarning):
        table = aggregate(collect_summaries(grid))
    tex = to_latex(table, caption="Normalised score")
    assert tex.startswith("\\begin{table}[t]")
    assert "\\begin{tabular}{lcc}" in tex
    assert "task & iql\\_target & tabb \\\\" in tex
    assert "Hopper-morph & 6.0 $\\pm$ 1.0 & \\textbf{30.0} $\\pm$ 21.6 \\\\" in tex
    assert "Walker2d-kinematic & -- & \\textbf{33.0} $\\pm$ 0.0 \\\\" in tex
    assert tex.rstrip().endswith("\\end{table}")


def test_csv_output(grid):
    with pytest.warns(UserWarning):
        table = aggregate(collect_summaries(grid))
    rows = to_csv(table).splitlines()
    assert rows[0] == "task,algo,n,mean,std,values"
    assert "Hopper-morph,tabb,3,30.0000,21.6025,10.0000;20.0000;60.0000" in rows


def test_learning_curves(grid, tmp_path):
    with pytest.warns(UserWarning):
        runs = collect_summaries(grid)
    paths = plot_learning_curves(runs, tmp_path / "fig")
    assert sorted(p.name for p in paths) == ["curve_Hopper-morph.png", "curve_Walker2d-kinematic.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    steps, mean, std, n = figures._curves(runs, "Hopper-morph", "tabb")
    assert list(steps) == [100, 200] and n == 3
    assert mean[1] == pytest.approx(30.0) and mean[0] == pytest.approx(15.0)
