"""Does the source data count? The diagnostic of a finished run of ``recipes/tabb_offline.py``: TBM
(TABB, Liu & Long, arXiv 2605.22376, Sec. 5.5, Fig. 3) and why a run does or does not gain from its
source data. The method is in the docs (method page, "Diagnostic"); the functions are in
:mod:`tabb_torchrl.diagnostic`.

Usage (``key=value`` or ``--key value``, the same options)::

    python recipes/tbm_diagnostic.py run_dir=<run> [compare_run_dirs=[<run>,<run>]] [rows=4000]
    python recipes/tbm_diagnostic.py --run-dir <run> --compare-run-dirs <seed 1 run> <iql_target run> \\
        --rows 4000 --out-dir docs/results/source_study

What it does, on ``rows`` source transitions of the run's data (rows whose observed velocities hit
Hopper's / Walker2d's ``[-10, 10]`` clip are left out: their simulator state is unknown):

1. replays each ``(s, a)`` once in the target env from the state ``s`` describes (root x = 0), which
   gives the true target outcome; the true target is ``y* = r_T + g (1 - d_T) V(f(s'_T))`` with the
   run's ``f`` and ``V`` (and its reward scale);
2. the error against ``y*`` of each kind of source-row target: aligned (Eq. 5, the paper's),
   realised, gated, the run's own, and their means weighted by the Eq. 7 weights of batches of the
   run's size;
3. TBM's Spearman rho with the realised target's true error (the domain gap in value units), per
   row and over deciles (figure 3), and with the aligned target's error; optionally OTDF's score;
4. the predictor ``h``'s latent and reward errors on held-out target rows and on source rows
   (against the true target outcome, next to the source's own outcome);
5. the advantages ``min Q - V`` on the target data, their spread, and their rank correlation with
   those of ``compare_run_dirs`` (other seeds, a run without source rows);
6. behaviour cloning of the target data (the run's actor class) against the run's actor: returns in
   the target env and mean action distances.

Writes ``<name>.json`` (every number), ``<name>.md`` (the tables) and ``<name>.png`` (the errors of
each target kind and the decile curves) into the run directory, or ``--out-dir``. ``--out X.png``
(the older option) writes ``X.png``, ``X.json`` and ``X.md``.

Exit status 0; 2 for a run directory without ``config.yaml`` / checkpoint, a run without source
data, or a target env whose state an observation does not set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BOOLEAN_FLAGS = ("keep_clipped", "no_ot", "no_awr_vs_bc")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Source / TBM diagnostic of a tabb_offline run directory.")
    p.add_argument("--run-dir", required=True, help="run directory with config.yaml and the checkpoint")
    p.add_argument("--compare-run-dirs", nargs="*", default=[],
                   help="runs whose advantages on the target data are rank-correlated with the run's")
    p.add_argument("--checkpoint", default="checkpoint.pt", help="checkpoint file name in each run directory")
    p.add_argument("--rows", "--n", dest="rows", type=int, default=4000, help="source transitions replayed")
    p.add_argument("--groups", type=int, default=10, help="percentile groups (paper: 10)")
    p.add_argument("--seed", type=int, default=0, help="sample, batch and BC draws")
    p.add_argument("--bc-steps", type=int, default=3000, help="behaviour-cloning steps on the target data")
    p.add_argument("--episodes", type=int, default=5, help="evaluation episodes of the run's and the BC actor")
    p.add_argument("--no-awr-vs-bc", action="store_true", help="skip the AWR-vs-BC comparison")
    p.add_argument("--no-ot", action="store_true", help="skip OTDF's transport-cost score")
    p.add_argument("--ot-method", default="emd", choices=["emd", "sinkhorn"])
    p.add_argument("--ot-reg", type=float, default=0.05, help="entropic regularisation (sinkhorn)")
    p.add_argument("--ot-chunk", type=int, default=2000, help="source rows per OT problem")
    p.add_argument("--ot-max-target", type=int, default=None, help="target rows per OT problem (default: all)")
    p.add_argument("--keep-clipped", action="store_true", help="keep rows with clipped observed velocities")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=None, help="folder of the outputs (default: the run directory)")
    p.add_argument("--name", default="tbm_diagnostic", help="file stem of the outputs")
    p.add_argument("--out", default=None, help="PNG path (older option): the JSON and markdown go next to it")
    return p


def key_value_args(argv: list[str], p: argparse.ArgumentParser) -> list[str]:
    """``run_dir=X compare_run_dirs=[a,b] keep_clipped=true`` -> ``--run-dir X --compare-run-dirs a b --keep-clipped``.

    Tokens that name no option are passed through (argparse then reports them).
    """
    known = {a.dest for a in p._actions} | {o.lstrip("-").replace("-", "_") for a in p._actions for o in a.option_strings}
    out = []
    for token in argv:
        key, sep, value = token.partition("=")
        key = key.lstrip("+")
        if token.startswith("-") or not sep or key not in known:
            out.append(token)
            continue
        flag = "--" + key.replace("_", "-")
        if key in BOOLEAN_FLAGS:
            if value.lower() in ("true", "1", "yes"):
                out.append(flag)
            continue
        if value.startswith("[") and value.endswith("]"):
            out += [flag, *[v.strip() for v in value[1:-1].split(",") if v.strip()]]
        else:
            out += [flag, value]
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from tabb_torchrl.diagnostic import (
        DiagnosticError, GroupCurve, ReplayError, plot_source_report, report_markdown, source_diagnostic,
    )
    from tabb_torchrl.io import write_json_atomic, write_text_atomic

    p = parser()
    args = p.parse_args(key_value_args(list(sys.argv[1:] if argv is None else argv), p))
    torch.set_num_threads(args.threads)
    if args.out:
        out_dir, name = Path(args.out).parent, Path(args.out).stem
    else:
        out_dir, name = Path(args.out_dir or args.run_dir), args.name
    ot = None if args.no_ot else {"method": args.ot_method, "reg": args.ot_reg, "chunk_size": args.ot_chunk,
                                  "max_target": args.ot_max_target}
    try:
        report = source_diagnostic(
            args.run_dir, compare_run_dirs=args.compare_run_dirs, rows=args.rows, seed=args.seed, groups=args.groups,
            keep_clipped=args.keep_clipped, checkpoint=args.checkpoint, bc_steps=args.bc_steps, episodes=args.episodes,
            awr_vs_bc_check=not args.no_awr_vs_bc, ot=ot,
        )
    except (DiagnosticError, ReplayError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    files = {ext: str(out_dir / f"{name}.{ext}") for ext in ("json", "md", "png")}
    report["files"] = files
    st = report["source_targets"]
    plot_source_report(
        [GroupCurve.from_dict(k, c) for k, c in report["curves"].items()],
        {**{k: st[k]["mean_error"] for k in ("aligned", "realised", "gated")},
         **{f"{k} (weighted)": st[k]["weighted_mean_error"] for k in ("aligned", "realised")}},
        files["png"],
        title=f"{report['algo']} seed {report['seed']} on {report['env']} (source {report['source_env']}), "
              f"{report['n']} source transitions, RL step {report['rl_step']}",
    )
    write_json_atomic(files["json"], report)
    write_text_atomic(files["md"], report_markdown(report) + "\n")

    print(f"{report['env']}: {report['n']} source transitions replayed ({report['algo']} seed {report['seed']}, "
          f"{report['checkpoint_phase']}, RL step {report['rl_step']})")
    for k in ("aligned", "realised", "gated", "run"):
        print(f"  {k:9s} target: mean error {st[k]['mean_error']:.4g}, TBM-weighted {st[k]['weighted_mean_error']:.4g}"
              + (f"  (the run's: {st['run_kind']})" if k == "run" else ""))
    for cname, c in report["curves"].items():
        print(f"  {cname:22s} Spearman rho: groups {c['spearman_groups']:+.3f}, rows {c['spearman_items']:+.3f}")
    pr = report["predictor"]["latent_mse"]
    print(f"  h latent MSE: target hold-out {pr['target_holdout']:.4g}, source prediction {pr['source_prediction_vs_true']:.4g}"
          f", source's own next state {pr['source_own_vs_true']:.4g}")
    adv = report["advantages"]
    print(f"  advantages: mean Q {adv['mean_q']:.4g}, std A {adv['std_advantage']:.3g}")
    for c in adv["compare"]:
        print(f"    vs {c['label']}: Spearman rho advantage {c['spearman_advantage']:+.3f}, Q {c['spearman_q']:+.3f}")
    if "awr_vs_bc" in report:
        b = report["awr_vs_bc"]
        print(f"  AWR (run) {b['run']['normalized_score']:.1f} vs BC {b['bc']['normalized_score']:.1f} (normalised, "
              f"{b['episodes']} episodes); action distance run-BC {b['action_distance']['run_vs_bc']:.3g}")
    print(f"report: {files['md']}  numbers: {files['json']}  figure: {files['png']}")
    return report


if __name__ == "__main__":
    main()
