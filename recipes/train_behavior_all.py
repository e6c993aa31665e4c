"""Train every behaviour policy of a plan in parallel, report their state, ship the finished ones.

SAC behaviour policies are the long pole of building the datasets: one env and
one CPU thread per run, hundreds of thousands of env steps each. This driver
runs the jobs of a plan (``recipes/config/behavior/plan.yaml``: the four source
envs to an expert plateau, and a medium policy in each of the paper's twelve
target envs) as ``recipes/train_behavior.py`` processes, ``--workers`` at a time,
each resumable. With ``--max-minutes`` every run checkpoints and exits when its
time is up, so the same command continues on the next machine or session.

Usage::

    python recipes/train_behavior_all.py --workers 16 --max-minutes 9     # run (resumes)
    python recipes/train_behavior_all.py --status                         # where each run is
    python recipes/train_behavior_all.py --ship                           # ship what is ready
    python recipes/train_behavior_all.py --report docs/results/behaviour_training.md   # table + curves
    python recipes/train_behavior_all.py --only Hopper --workers 2 --dry-run

``--ship`` copies into the package assets (``tabb_torchrl/assets/policies``) the
``medium.pt`` of every run that reached its medium threshold and the
``expert.pt`` of every run that plateaued (``--ship-unplateaued`` ships the best
snapshot of a run still improving too; loading it warns).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "train_behavior.py"
DEFAULT_PLAN = REPO / "recipes" / "config" / "behavior" / "plan.yaml"


def load_plan(path: str | Path) -> list[dict]:
    """The jobs of a plan YAML: ``[{"env": id, "overrides": [...]}, ...]`` with ``common`` merged in."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plan {path} not found (default: {DEFAULT_PLAN})")
    plan = yaml.safe_load(path.read_text()) or {}
    if not isinstance(plan.get("jobs"), list) or not plan["jobs"]:
        raise ValueError(f"{path}: needs a non-empty `jobs:` list of {{env: <id>, overrides: [...]}}")
    common = list(plan.get("common") or [])
    jobs = []
    for i, job in enumerate(plan["jobs"]):
        if not isinstance(job, dict) or "env" not in job:
            raise ValueError(f"{path}: job {i} must be a mapping with an `env` key, got {job!r}")
        jobs.append({"env": str(job["env"]), "overrides": common + [str(o) for o in job.get("overrides", [])]})
    return jobs


def _override(overrides: list[str], key: str, default):
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+") == key:
            return o.split("=", 1)[1]
    return default


def run_dir_of(job: dict, runs_root: Path) -> Path:
    """``<runs_root>/<env with / -> __>_s<seed>`` (the recipe's default ``run_dir``), unless overridden."""
    explicit = _override(job["overrides"], "run_dir", None)
    if explicit is not None:
        return Path(explicit)
    seed = _override(job["overrides"], "seed", 0)
    return runs_root / f"{job['env'].replace('/', '__')}_s{seed}"


def job_status(job: dict, runs_root: Path) -> dict:
    """Step, best and last evaluation return, medium step, plateau and whether the run is finished."""
    rd = run_dir_of(job, runs_root)
    st = {"env": job["env"], "run_dir": str(rd), "step": 0, "best": None, "last": None, "medium_step": None,
          "plateaued": False, "done": False}
    hist_file = rd / "eval_history.json"
    if hist_file.is_file():
        hist = json.loads(hist_file.read_text())
        h = hist.get("history", [])
        if h:
            st["best"] = max(e["return_mean"] for e in h)
            st["last"] = h[-1]["return_mean"]
            st["step"] = h[-1]["step"]
        st["medium_step"] = hist.get("medium_step")
    if (rd / "checkpoint.pt").is_file():
        ck = torch.load(rd / "checkpoint.pt", map_location="cpu", weights_only=False)
        st["step"] = ck["step"]
        st["plateaued"] = ck.get("plateau_step") is not None
        st["hours"] = ck.get("elapsed", 0.0) / 3600.0
    stop_medium = _override(job["overrides"], "stop_after_medium", "false") == "true"
    stop_plateau = _override(job["overrides"], "stop_at_plateau", "false") == "true"
    total = int(float(_override(job["overrides"], "total_steps", 1_000_000)))
    st["done"] = (
        (rd / "final.pt").is_file() and st["step"] >= total
        or (stop_medium and st["medium_step"] is not None)
        or (stop_plateau and st["plateaued"])
    )
    return st


def command(job: dict, runs_root: Path, max_minutes: float | None) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), f"env={job['env']}", *job["overrides"]]
    if _override(job["overrides"], "run_dir", None) is None:
        cmd.append(f"run_dir={run_dir_of(job, runs_root)}")
    if max_minutes is not None:
        cmd.append(f"max_minutes={max_minutes}")
    return cmd


def run_jobs(jobs: list[dict], runs_root: Path, workers: int, max_minutes: float | None) -> int:
    """Run the unfinished jobs, ``workers`` at a time; returns the number of failed runs."""
    pending = [j for j in jobs if not job_status(j, runs_root)["done"]]
    print(f"[plan] {len(jobs)} jobs, {len(jobs) - len(pending)} finished, {len(pending)} to run "
          f"with {workers} workers" + (f", {max_minutes} min each" if max_minutes is not None else ""), flush=True)
    running: list[tuple[dict, subprocess.Popen, object]] = []
    failed = 0
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            rd = run_dir_of(job, runs_root)
            rd.mkdir(parents=True, exist_ok=True)
            log = open(rd / "log.txt", "a")
            proc = subprocess.Popen(command(job, runs_root, max_minutes), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO)
            print(f"[start] {job['env']} -> {rd}/log.txt", flush=True)
            running.append((job, proc, log))
        time.sleep(1.0)
        for item in list(running):
            job, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            st = job_status(job, runs_root)
            failed += proc.returncode != 0
            print(f"[exit {proc.returncode}] {job['env']} step {st['step']} best {st['best']} "
                  f"medium_step {st['medium_step']} plateaued {st['plateaued']}", flush=True)
    return failed


def print_status(jobs: list[dict], runs_root: Path) -> None:
    print(f"{'env':34s} {'step':>8s} {'best':>8s} {'last':>8s} {'medium@':>8s} {'plateau':>7s} {'hours':>6s} done")
    for job in jobs:
        st = job_status(job, runs_root)
        f = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
        print(f"{st['env']:34s} {st['step']:8d} {f(st['best']):>8s} {f(st['last']):>8s} "
              f"{f(st['medium_step']):>8s} {str(st['plateaued']):>7s} {st.get('hours', 0.0):6.2f} {st['done']}")


def ship(jobs: list[dict], runs_root: Path, unplateaued: bool, root: str | None = None) -> list[Path]:
    """Ship the medium snapshots that exist and the expert snapshots of plateaued runs."""
    from tabb_torchrl.behavior.policies import ship_run_snapshots

    written = []
    for job in jobs:
        st = job_status(job, runs_root)
        rd = Path(st["run_dir"])
        qualities = []
        if st["medium_step"] is not None and (rd / "medium.pt").is_file():
            qualities.append("medium")
        if (rd / "expert.pt").is_file() and (st["plateaued"] or unplateaued) and \
                _override(job["overrides"], "stop_after_medium", "false") != "true":
            qualities.append("expert")
        if qualities:
            for p in ship_run_snapshots(rd, qualities, root=root):
                print(f"shipped {p}")
                written.append(p)
    return written


def report(jobs: list[dict], runs_root: Path, out_md: Path, note: str = "") -> Path:
    """Write a markdown table of the runs and a PNG of their evaluation curves (``<out_md stem>.png``)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for job in jobs:
        st = job_status(job, runs_root)
        hist_file = Path(st["run_dir"]) / "eval_history.json"
        if not hist_file.is_file():
            continue
        hist = json.loads(hist_file.read_text())
        h = hist.get("history", [])
        if not h:
            continue
        seed = Path(st["run_dir"]).name.rsplit("_s", 1)[-1]
        label = job["env"] if seed == "0" else f"{job['env']} (seed {seed})"
        curves[label] = ([e["step"] for e in h], [e["return_mean"] for e in h], hist.get("medium_return"))
        best = max(h, key=lambda e: e["return_mean"])
        hours = st.get("hours", 0.0)
        rows.append(
            f"| `{job['env']}`{'' if seed == '0' else f' (seed {seed})'} | {st['step']:,} | {hours:.2f} | {st['step'] / max(hours * 3600, 1e-9):.0f} | "
            f"{best['return_mean']:.1f} ± {best['return_std']:.1f} @ {best['step']:,} | {h[-1]['return_mean']:.1f} | "
            f"{hist.get('medium_return', float('nan')):.0f} | "
            f"{'-' if st['medium_step'] is None else format(st['medium_step'], ',')} | "
            f"{'yes' if st['plateaued'] else 'no'} |"
        )
    png = out_md.with_suffix(".png")
    if curves:
        n = len(curves)
        cols = min(n, 3)
        nrows = (n + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
        for ax, (env, (x, y, med)) in zip(axes.flat, curves.items()):
            ax.plot(x, y, lw=1.2)
            if med is not None:
                ax.axhline(med, color="gray", ls="--", lw=0.8, label="medium threshold")
            ax.set_title(env, fontsize=9)
            ax.set_xlabel("env steps")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
            ax.set_ylabel("eval return")
            ax.legend(fontsize=7, loc="lower right")
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        plt.close(fig)
    text = (
        "| env | env steps | hours | steps/s | best eval return (10 ep.) @ step | last eval | "
        "medium threshold | medium at step | plateaued |\n|---|---:|---:|---:|---|---:|---:|---:|---|\n"
        + "\n".join(rows) + "\n"
    )
    out_md.write_text(note + text + (f"\n![evaluation curves]({png.name})\n" if curves else ""))
    return out_md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python recipes/train_behavior_all.py", description=__doc__.split("\n")[0])
    p.add_argument("--plan", default=str(DEFAULT_PLAN))
    p.add_argument("--runs-root", default=str(REPO / "behavior_runs"))
    p.add_argument("--workers", type=int, default=2, help="runs at a time (one CPU thread each)")
    p.add_argument("--max-minutes", type=float, default=None, help="each run checkpoints and exits after this")
    p.add_argument("--only", default=None, help="only jobs whose env id contains this")
    p.add_argument("--status", action="store_true", help="print where each run is and exit")
    p.add_argument("--ship", action="store_true", help="ship finished snapshots into the package assets")
    p.add_argument("--ship-unplateaued", action="store_true", help="with --ship: also experts still improving")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--report", default=None, metavar="MD",
                   help="write a markdown table of the runs to MD and their evaluation curves to MD's .png")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    jobs = load_plan(args.plan)
    if args.only:
        jobs = [j for j in jobs if args.only in j["env"]]
        if not jobs:
            p.error(f"--only {args.only!r} matches no job of {args.plan}")
    runs_root = Path(args.runs_root)
    if args.status:
        print_status(jobs, runs_root)
        return 0
    if args.report:
        print(f"wrote {report(jobs, runs_root, Path(args.report))}")
        return 0
    if args.ship:
        ship(jobs, runs_root, args.ship_unplateaued)
        return 0
    if args.dry_run:
        for job in jobs:
            print(" ".join(command(job, runs_root, args.max_minutes)))
        return 0
    return 1 if run_jobs(jobs, runs_root, args.workers, args.max_minutes) else 0


if __name__ == "__main__":
    sys.exit(main())
