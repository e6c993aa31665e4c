"""Test-time robustness of a finished run (DROCO's evaluation, Qiao et al., ICLR 2026, arXiv 2512.02486):
the run's policy in its target env and in the target env with an extra kinematic or morphology shift
at easy / medium / hard, and the performance drop in percent. The method is in the docs (robustness
page); the functions are in :mod:`tabb_torchrl.robustness`.

Usage::

    python recipes/evaluate_robustness.py run_dir=outputs/<date>/<time>_droco_Hopper-morph_seed0
    python recipes/evaluate_robustness.py run_dir=<run> episodes=20 levels=easy,hard kinds=morph
    python recipes/evaluate_robustness.py run_dir=<run> families=kinematic:Hopper-kinematic-footjnt
    python recipes/evaluate_robustness.py --run-dir <run> --episodes 5      # the same, argparse style

Arguments (``key=value`` or ``--key value``):

* ``run_dir`` -- a run directory of ``recipes/tabb_offline.py`` (``config.yaml`` and ``checkpoint.pt``; any algo);
* ``checkpoint`` -- checkpoint file name in it (default ``checkpoint.pt``);
* ``kinds`` -- comma-separated perturbation kinds, ``kinematic,morph`` (default);
* ``levels`` -- comma-separated levels, ``easy,medium,hard`` (default);
* ``families`` -- ``kind:family`` pairs choosing the catalogue family of a kind (default: the first that
  composes with the target's shift, see ``tabb_torchrl.robustness.perturbation_families``);
* ``episodes`` -- episodes per env (default: the run's ``eval.episodes``); ``seed`` -- first episode seed
  (default: the run's ``seed + eval.seed_offset``, as its evaluations); ``max_episode_steps`` (default: the
  run's ``eval.max_episode_steps``); ``reference`` (default: the run's ``eval.reference``);
* ``device`` (default ``cpu``), ``threads`` (default ``1``), ``out`` (default: the run directory).

What it writes into ``out``: ``robustness.json`` (scores, returns, drops per kind and level, the
checkpoint's phase and step) and ``robustness.png`` (normalised score against level, one line per kind).
It prints a table. Exit status 0; 2 for a run directory without ``config.yaml`` / the checkpoint, or bad
arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEYS = ("run_dir", "checkpoint", "kinds", "levels", "families", "episodes", "seed", "max_episode_steps",
        "reference", "device", "threads", "out")


def _argv(argv: list[str]) -> list[str]:
    """``key=value`` tokens as ``--key value`` (``run_dir=x`` -> ``--run-dir x``)."""
    out = []
    for token in argv:
        key, eq, value = token.partition("=")
        if eq and not token.startswith("-") and key in KEYS:
            out += [f"--{key.replace('_', '-')}", value]
        else:
            out.append(token)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Test-time robustness (DROCO) of a tabb_offline run directory.")
    p.add_argument("--run-dir", required=True, help="run directory with config.yaml and checkpoint.pt")
    p.add_argument("--checkpoint", default="checkpoint.pt")
    p.add_argument("--kinds", default="kinematic,morph")
    p.add_argument("--levels", default="easy,medium,hard")
    p.add_argument("--families", default="", help="kind:family pairs, comma-separated")
    p.add_argument("--episodes", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--reference", default=None, choices=[None, "odrl", "ours"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    return p


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args: argparse.Namespace) -> dict:
    import torch

    from tabb_torchrl.robustness import evaluate_robustness, load_run_actor, plot_robustness

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    try:
        actor, cfg, ckpt = load_run_actor(run_dir, args.checkpoint, device=args.device)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    from tabb_torchrl.pipeline import resolve_env_ids

    env_id, _ = resolve_env_ids(cfg)
    pairs = [pair.split(":", 1) for pair in _split(args.families)]
    if any(len(p) != 2 for p in pairs):
        print(f"Argument error: families={args.families!r} must be kind:family pairs, e.g. "
              "families=kinematic:Hopper-kinematic-footjnt", file=sys.stderr)
        sys.exit(2)
    families = dict(pairs)
    episodes = int(args.episodes if args.episodes is not None else cfg.eval.episodes)
    seed = int(args.seed if args.seed is not None else int(cfg.seed) + int(cfg.eval.seed_offset))
    max_steps = args.max_episode_steps if args.max_episode_steps is not None else cfg.eval.get("max_episode_steps")
    reference = args.reference or str(cfg.eval.reference)
    try:
        report = evaluate_robustness(actor, env_id, kinds=_split(args.kinds), levels=_split(args.levels),
                                     families=families, episodes=episodes, seed=seed, device=args.device,
                                     max_episode_steps=max_steps, reference=reference,
                                     progress=lambda line: print(line, flush=True))
    except ValueError as err:
        print(f"Argument error: {err}", file=sys.stderr)
        sys.exit(2)
    report.info.update({"run_dir": str(run_dir), "algo": str(cfg.algo.name), "checkpoint": ckpt,
                        "max_episode_steps": max_steps})
    out = Path(args.out) if args.out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    from tabb_torchrl.io import write_text_atomic

    write_text_atomic(out / "robustness.json", json.dumps(data, indent=2))
    plot_robustness(report, out / "robustness.png",
                    title=f"{cfg.algo.name} on {env_id} (seed {cfg.seed})\ntest-time robustness")
    print(f"{cfg.algo.name} on {env_id}, checkpoint {ckpt['phase']} at RL step {ckpt['rl_step']}, "
          f"{episodes} episodes per env")
    print(report.table())
    print(f"numbers: {out / 'robustness.json'}  figure: {out / 'robustness.png'}")
    return data


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    run(_parser().parse_args(_argv(argv)))


if __name__ == "__main__":
    main()
