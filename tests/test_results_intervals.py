"""IQM, bootstrap intervals, performance profiles, the report folder and the CLI of tabb_torchrl.results.

The estimators are checked against hand computations and rliable's own IQM; the
stratified-bootstrap intervals against the exact bootstrap distribution, enumerated
over every resample of a small sweep.
"""

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tabb_torchrl.results import (
    ResultsError,
    aggregate,
    aggregate_scores,
    collect_summaries,
    performance_profile,
    write_report,
)
from tabb_torchrl.results.__main__ import main

# three tasks x four seeds of one algorithm; task means 30, 55, 100
SCORES = {"A": [0.0, 10.0, 20.0, 90.0], "B": [40.0, 50.0, 60.0, 70.0], "C": [100.0, 100.0, 100.0, 100.0]}


def _runs(scores, algo="tabb", **extra):
    return [{"algo": algo, "env": f"tabb/{task}-v0", "seed": s, "normalized_score": x, **extra}
            for task, xs in scores.items() for s, x in enumerate(xs)]


def _write_sweep(root, runs):
    for i, r in enumerate(runs):
        d = root / f"{i}_{r['algo']}_seed{r['seed']}"
        d.mkdir(parents=True)
        config = r.pop("_config", None)
        (d / "summary.json").write_text(json.dumps(r))
        if config is not None:
            import yaml

            (d / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_iqm_median_mean_by_hand():
    est = aggregate_scores(aggregate(_runs(SCORES)), reps=200).estimates["tabb"]
    # pooled and sorted: 0 10 20 | 40 50 60 70 90 100 | 100 100 100 -> the middle six
    assert est["IQM"].point == pytest.approx((40 + 50 + 60 + 70 + 90 + 100) / 6)
    assert est["Median"].point == pytest.approx(55.0)
    assert est["Mean"].point == pytest.approx((30 + 55 + 100) / 3)


def test_iqm_is_rliables():
    from rliable import metrics

    matrix = np.array([SCORES[t] for t in "ABC"]).T  # rliable's (runs x tasks)
    est = aggregate_scores(aggregate(_runs(SCORES)), reps=200).estimates["tabb"]
    assert est["IQM"].point == pytest.approx(metrics.aggregate_iqm(matrix))
    assert est["Median"].point == pytest.approx(metrics.aggregate_median(matrix))
    assert est["Mean"].point == pytest.approx(metrics.aggregate_mean(matrix))


def _exact_distribution(scores, statistic):
    """The statistic on every stratified resample (runs drawn with replacement within each task)."""
    per_task = [list(itertools.product(xs, repeat=len(xs))) for xs in scores.values()]
    return np.array([statistic([np.array(r) for r in combo]) for combo in itertools.product(*per_task)])


@pytest.mark.parametrize("name", ["IQM", "Mean"])
def test_interval_is_the_exact_bootstrap_percentile_interval(name):
    scores = {"A": [0.0, 3.0, 9.0], "B": [1.0, 4.0, 16.0]}  # 27 x 27 equally likely resamples
    from scipy.stats import trim_mean

    stat = {"IQM": lambda xs: trim_mean(np.concatenate(xs), 0.25),
            "Mean": lambda xs: np.mean([x.mean() for x in xs])}[name]
    exact = _exact_distribution(scores, stat)
    est = aggregate_scores(aggregate(_runs(scores)), reps=20000, seed=1).estimates["tabb"][name]
    # the 2.5 % / 97.5 % percentiles of the exact distribution, up to Monte Carlo error (~0.1 %)
    assert np.mean(exact < est.low) <= 0.025 + 0.006 and np.mean(exact <= est.low) >= 0.025 - 0.006
    assert np.mean(exact < est.high) <= 0.975 + 0.006 and np.mean(exact <= est.high) >= 0.975 - 0.006
    assert est.low <= est.point <= est.high


def test_interval_is_reproducible_and_collapses_without_spread():
    table = aggregate(_runs(SCORES))
    a, b = aggregate_scores(table, reps=300, seed=3), aggregate_scores(table, reps=300, seed=3)
    assert a.estimates == b.estimates
    flat = aggregate_scores(aggregate(_runs({"A": [5.0, 5.0], "B": [7.0, 7.0]})), reps=300).estimates["tabb"]
    for e in flat.values():
        assert e.low == pytest.approx(e.point) and e.high == pytest.approx(e.point)


def test_one_seed_gives_points_and_a_note():
    agg = aggregate_scores(aggregate(_runs({"A": [10.0], "B": [30.0]})))
    est = agg.estimates["tabb"]
    assert est["Mean"].point == 20.0 and math.isnan(est["Mean"].low) and math.isnan(est["IQM"].high)
    assert any("single seed" in n and "no bootstrap confidence interval" in n for n in agg.notes)
    assert "20.0 [n/a]" in agg.to_markdown()
    prof = performance_profile(aggregate(_runs({"A": [10.0], "B": [30.0]})), [0.0, 20.0])
    assert prof.fractions["tabb"].tolist() == [1.0, 0.5] and np.isnan(prof.low["tabb"]).all()


def test_tasks_not_run_by_every_algorithm_are_left_out():
    runs = _runs(SCORES) + _runs({"A": [1.0, 2.0], "B": [3.0, 4.0]}, algo="iql_target")
    agg = aggregate_scores(aggregate(runs), reps=200)
    assert agg.tasks == ["A", "B"] and agg.runs == {"iql_target": 4, "tabb": 8}
    assert agg.estimates["iql_target"]["Mean"].point == pytest.approx(2.5)
    assert agg.estimates["tabb"]["Mean"].point == pytest.approx((30 + 55) / 2)
    assert any("Left out" in n and "C" in n for n in agg.notes)
    disjoint = _runs({"A": [1.0, 2.0]}) + _runs({"B": [1.0, 2.0]}, algo="iql_target")
    with pytest.raises(ResultsError, match="No task has runs of every algorithm.*Fix"):
        aggregate_scores(aggregate(disjoint))


def test_unequal_seed_counts_are_named():
    agg = aggregate_scores(aggregate(_runs({"A": [1.0, 2.0, 3.0], "B": [4.0, 5.0]})), reps=200)
    assert any("unequal numbers of seeds per task (2, 3)" in n for n in agg.notes)
    assert agg.estimates["tabb"]["IQM"].point == pytest.approx(3.0)  # pooled 1..5, trimmed 25 %: 2, 3, 4


def test_performance_profile_by_hand():
    prof = performance_profile(aggregate(_runs(SCORES)), [-1.0, 15.0, 55.0, 95.0, 100.0], reps=500)
    # 12 runs: all > -1; 10 > 15; 7 > 55 (60 70 90 100 x4); 4 > 95; none > 100
    assert prof.fractions["tabb"] == pytest.approx([1.0, 10 / 12, 7 / 12, 4 / 12, 0.0])
    assert np.all(prof.low["tabb"] <= prof.fractions["tabb"] + 1e-12)
    assert np.all(prof.fractions["tabb"] <= prof.high["tabb"] + 1e-12)
    assert prof.high["tabb"][-1] == 0.0  # no resample has a run above the largest score
    default = performance_profile(aggregate(_runs(SCORES)), reps=50)
    assert default.taus[0] == 0.0 and default.taus[-1] == 100.0 and len(default.taus) == 101


def test_aggregate_scores_bad_arguments():
    with pytest.raises(ValueError, match="reps >= 1"):
        aggregate_scores(aggregate(_runs(SCORES)), reps=0)


def test_report_tables(tmp_path):
    runs = _runs(SCORES, best_normalized_score=100.0) + _runs({t: [v - 10 for v in xs] for t, xs in SCORES.items()},
                                                              algo="iql_target", best_normalized_score=90.0)
    md = write_report(runs, tmp_path, reps=300, title="Test sweep")
    lines = md.splitlines()
    assert lines[0] == "# Test sweep"
    assert "| task | iql_target | tabb |" in lines
    assert "| B | 45.0 ± 11.2 (4) | **55.0 ± 11.2 (4)** |" in lines
    assert lines.count("| C | 90.0 ± 0.0 (4) | **100.0 ± 0.0 (4)** |") == 2  # final and best
    row = next(line for line in lines if line.startswith("| tabb |"))
    assert row.startswith("| tabb | 68.3 [") and row.endswith("| 12 |")
    assert (tmp_path / "table.md").read_text() == md + "\n"
    agg = (tmp_path / "aggregate.csv").read_text().splitlines()
    assert agg[0] == "algo,statistic,point,low,high,runs,tasks"
    assert agg[1].startswith("iql_target,IQM,58.3333,") and agg[1].endswith(",12,3")
    assert "\\begin{tabular}{lccc}" in (tmp_path / "aggregate.tex").read_text()
    assert "C,tabb,4,100.0000,0.0000" in (tmp_path / "table.csv").read_text()
    for name in ("aggregate.png", "profile.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_report_without_the_metric_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="None of the 2 runs has a value for 'return'.*--metric"):
        write_report(_runs({"A": [1.0, 2.0]}), tmp_path, metric="return")


# ---- the command line ---------------------------------------------------------------------------


def test_cli_in_a_subprocess(tmp_path):
    sweep = _write_sweep(tmp_path / "sweep", _runs(SCORES) + _runs({"A": [5.0], "B": [6.0]}, algo="iql_target"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "tabb_torchrl.results", str(sweep), "--reps", "200"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = sweep / "report"  # the default output folder
    assert sorted(p.name for p in out.iterdir()) == [
        "aggregate.csv", "aggregate.png", "aggregate.tex", "profile.png", "table.csv", "table.md", "table.tex"]
    assert "| A | 5.0 (1) | **30.0 ± 35.4 (4)** |" in proc.stdout
    assert "Left out of the aggregate (not run by every algorithm): C." in proc.stdout
    assert "iql_target: a task with a single seed, so no bootstrap confidence interval" in proc.stdout
    assert "14 runs; tables and figures in" in proc.stdout


def test_cli_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no summary.json under" in capsys.readouterr().err
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such file or folder. Fix:" in capsys.readouterr().err
    assert main([str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    assert "--out DIR" in capsys.readouterr().err

    mixed = [{**r, "_config": {"seed": r["seed"], "loss": {"tau": tau}}}
             for tau in (0.5, 2.0) for r in _runs({"A": [1.0 + tau, 2.0 + tau]})]
    for i, r in enumerate(mixed):
        r["seed"] = i  # different seeds, so only the setting clashes
    sweep = _write_sweep(tmp_path / "mixed", mixed)
    assert main([str(sweep), "--out", str(tmp_path / "r1"), "--reps", "50"]) == 2
    err = capsys.readouterr().err
    assert "differ in 1 setting(s) besides the seed -- loss.tau: 0.5, 2.0" in err and "--split-by loss.tau" in err
    assert not (tmp_path / "r1" / "table.md").exists()
    assert main([str(sweep), "--out", str(tmp_path / "r2"), "--reps", "50", "--split-by", "loss.tau"]) == 0
    assert "| A | 2.0 ± 0.5 (2) | **3.5 ± 0.5 (2)** |" in capsys.readouterr().out
    assert main([str(sweep), "--out", str(tmp_path / "r3"), "--metric", "nope", "--split-by", "loss.tau"]) == 2
    assert "has a value for 'nope'" in capsys.readouterr().err


def test_collect_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        collect_summaries(tmp_path / "nope")


def test_an_option_added_later_at_its_default_does_not_split_a_cell(tmp_path, capsys):
    """Runs written before an option existed (absent from their config) and after (at its default) agree."""
    runs = _runs({"A": [1.0, 2.0]})
    runs[0]["_config"] = {"seed": 0, "loss": {"tau": 1.0}}
    runs[1]["_config"] = {"seed": 1, "loss": {"tau": 1.0, "source_target": "aligned"}}  # the default
    assert main([str(_write_sweep(tmp_path / "old_new", runs)), "--out", str(tmp_path / "r"), "--reps", "50"]) == 0
    runs = _runs({"A": [1.0, 2.0]})
    runs[0]["_config"] = {"seed": 0, "loss": {"tau": 1.0}}
    runs[1]["_config"] = {"seed": 1, "loss": {"tau": 1.0, "source_target": "gated"}}  # a real difference stops it
    assert main([str(_write_sweep(tmp_path / "other", runs)), "--out", str(tmp_path / "r2"), "--reps", "50"]) == 2
    assert "loss.source_target" in capsys.readouterr().err
