"""Transitions/s of dataset collection vs a plain single-process random-action ``env.step`` loop.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/collect.py --env HalfCheetah-v5 --quality medium \\
        --size 1000000 --workers 2 --policy-root /tmp/polroot

Times the rollout collection of :mod:`tabb_torchrl.behavior.collect` (the
``n_envs`` lock-stepped envs per worker and the batched policy calls of
:mod:`tabb_torchrl.behavior.episodes`; nothing is written) for one quality, and
a plain random-action loop in one env before and after it. Both are measured in
the same call: the machine may be shared, so compare the ratio, and report the
load average printed with it. ``medium-replay`` rolls nothing out (it reads the
SAC replay buffer) and ``medium-expert`` is the ``medium`` then the ``expert``
collection: time those as ``medium`` and ``expert``. Results:
``docs/results/collection.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from tabb_torchrl.behavior.collect import _default_workers, _env_error, _policy_file, default_size
from tabb_torchrl.behavior.episodes import DEFAULT_N_ENVS, _collect_parallel, _make_env
from tabb_torchrl.behavior.policies import PolicyNotFoundError, canonical_env_id

#: Qualities :func:`benchmark` can time (``medium-replay`` reads a replay buffer, nothing is
#: rolled out; ``medium-expert`` is the ``medium`` then the ``expert`` collection).
BENCHMARK_QUALITIES = ("random", "medium", "expert")


def _random_step_rate(env_id: str, n_steps: int, seed: int = 0) -> float:
    env = _make_env(env_id)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        _, _, te, tr, _ = env.step(rng.uniform(low, high).astype(np.float32))
        if te or tr:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return n_steps / dt


def _quality_message(quality: str) -> str:
    return (
        f"the benchmark times rollout collection, with quality {', '.join(BENCHMARK_QUALITIES)}; not {quality!r} "
        "(medium-replay rolls nothing out: it reads the SAC replay buffer; medium-expert is the medium then the "
        "expert collection: benchmark those)"
    )


def benchmark(
    env_id: str,
    quality: str = "medium",
    size: int = 100_000,
    *,
    n_envs: int = DEFAULT_N_ENVS,
    n_workers: int = 1,
    policy_root: str | os.PathLike | None = None,
    baseline_steps: int = 50_000,
) -> dict[str, float]:
    """Transitions/s of collection vs a plain single-process random-action loop.

    Raises:
        ValueError: ``quality`` is not one of :data:`BENCHMARK_QUALITIES`.
        PolicyNotFoundError: no shipped policy of that quality.

    Examples:
        >>> r = benchmark("Hopper-v5", "random", 400, n_envs=4, baseline_steps=400)
        >>> sorted(r)
        ['baseline_steps_per_s', 'collect_transitions_per_s', 'load_average_1min', 'ratio']
    """
    if quality not in BENCHMARK_QUALITIES:
        raise ValueError(_quality_message(quality))
    env_id = canonical_env_id(env_id)
    policy = None if quality == "random" else str(_policy_file(env_id, quality, policy_root))
    base = _random_step_rate(env_id, baseline_steps)
    t0 = time.perf_counter()
    _collect_parallel(env_id, policy, size, n_envs=n_envs, n_workers=n_workers, seed=0, show_progress=False)
    rate = size / (time.perf_counter() - t0)
    base2 = _random_step_rate(env_id, baseline_steps)
    baseline = 0.5 * (base + base2)
    return {
        "collect_transitions_per_s": rate,
        "baseline_steps_per_s": baseline,
        "ratio": rate / baseline,
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python benchmarks/collect.py --help``)."""
    p = argparse.ArgumentParser(prog="python benchmarks/collect.py", description=__doc__.split("\n")[0])
    p.add_argument("--env", required=True, help="env id, e.g. Hopper-v5 or tabb/Hopper-morph-v0")
    p.add_argument("--quality", default="medium", choices=BENCHMARK_QUALITIES + ("medium-replay", "medium-expert"))
    p.add_argument("--size", type=int, default=None,
                   help="transitions (default: that of python -m tabb_torchrl.behavior.collect)")
    p.add_argument("--n-envs", type=int, default=DEFAULT_N_ENVS)
    p.add_argument("--workers", type=int, default=None, help="processes (default 2 if size >= 100k)")
    p.add_argument("--policy-root", default=None, help="behaviour-policy folder (default: shipped assets)")
    p.add_argument("--baseline-steps", type=int, default=50_000, help="steps of each random-action baseline loop")
    args = p.parse_args(argv)
    if args.quality not in BENCHMARK_QUALITIES:
        p.error(_quality_message(args.quality))
    torch.set_num_threads(1)
    error = _env_error(args.env)
    if error is not None:
        print(error, file=sys.stderr)
        return 2
    args.env = canonical_env_id(args.env)
    size = args.size if args.size is not None else default_size(args.env)
    workers = args.workers if args.workers is not None else _default_workers(size)
    try:
        r = benchmark(args.env, args.quality, size, n_envs=args.n_envs, n_workers=workers,
                      policy_root=args.policy_root, baseline_steps=args.baseline_steps)
    except PolicyNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{args.env} {args.quality}: collection {r['collect_transitions_per_s']:.0f} transitions/s "
        f"(n_envs={args.n_envs}, workers={workers}); plain random-action env.step "
        f"{r['baseline_steps_per_s']:.0f}/s; ratio {r['ratio']:.2f}; load average {r['load_average_1min']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
