"""Time of OTDF's optimal-transport pre-computation (:func:`tabb_torchrl.methods.otdf.transport_deviation`).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/otdf_precompute.py --rows 50000 --target 5000 --threads 1

Random transitions with HalfCheetah's shapes (``[s, a, s']``: 17 + 6 + 17 = 40 columns) stand in
for the data (the Sinkhorn time depends on the sizes only: 100 iterations run whatever the data).
The source set is solved chunk by chunk (10,000 rows each, as the authors) against the whole
target set, with the method's defaults (cosine cost, POT's log-domain Sinkhorn, float64). Each
chunk is timed; the time for 1M source rows is measured when the per-chunk time says it takes
under ``--full-limit`` seconds, else extrapolated linearly from the measured chunks (100 chunks),
and the output says which. Results: ``docs/methods/otdf.md``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch

from tabb_torchrl.methods.otdf import transport_deviation

#: HalfCheetah-v5: observation and action sizes.
OBS_DIM, ACT_DIM = 17, 6
FULL_ROWS = 1_000_000


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _transitions(n: int, gen: torch.Generator) -> torch.Tensor:
    s = torch.randn(n, OBS_DIM, generator=gen)
    a = torch.rand(n, ACT_DIM, generator=gen) * 2 - 1
    s2 = s + 0.1 * torch.randn(n, OBS_DIM, generator=gen)
    return torch.cat([s, a, s2], -1)


def time_chunks(source: torch.Tensor, target: torch.Tensor, chunk: int, dtype: torch.dtype) -> list[float]:
    """Seconds per chunk of :func:`transport_deviation` (each chunk one OT problem, as in the method)."""
    times = []
    for start in range(0, source.shape[0], chunk):
        t0 = time.perf_counter()
        transport_deviation(source[start:start + chunk], target, chunk=chunk, dtype=dtype)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50_000, help="source rows to time (default 50,000)")
    p.add_argument("--target", type=int, default=5_000, help="target rows (default 5,000)")
    p.add_argument("--chunk", type=int, default=10_000, help="source rows per OT problem (default 10,000)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (set OMP_NUM_THREADS to match)")
    p.add_argument("--dtype", default="float64", help="OT precision (default float64, the method's)")
    p.add_argument("--full-limit", type=float, default=600.0,
                   help="run the 1M-row pre-computation when its estimate is under this many seconds")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)
    target = _transitions(args.target, gen)
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"load average {os.getloadavg()[0]:.2f}, {datetime.date.today().isoformat()}")
    print(f"data: random [s, a, s'] with HalfCheetah shapes ({OBS_DIM}+{ACT_DIM}+{OBS_DIM} = "
          f"{2 * OBS_DIM + ACT_DIM} columns), {args.target} target rows, chunks of {args.chunk}, {args.dtype}")

    times = time_chunks(_transitions(args.rows, gen), target, args.chunk, dtype)
    per_chunk = sum(times) / len(times)
    print(f"{args.rows} source rows: {sum(times):.1f} s ({len(times)} chunks, "
          f"{per_chunk:.2f} s per chunk: {', '.join(f'{t:.2f}' for t in times)})")

    n_chunks = -(-FULL_ROWS // args.chunk)
    estimate = per_chunk * n_chunks
    if estimate <= args.full_limit:
        full = time_chunks(_transitions(FULL_ROWS, gen), target, args.chunk, dtype)
        print(f"{FULL_ROWS} source rows: {sum(full):.1f} s measured ({n_chunks} chunks)")
    else:
        print(f"{FULL_ROWS} source rows: {estimate:.0f} s = {estimate / 60:.1f} min EXTRAPOLATED linearly "
              f"from the {len(times)} measured chunks ({n_chunks} chunks x {per_chunk:.2f} s; not run: over "
              f"--full-limit {args.full_limit:.0f} s)")
    print(f"otdf_1M_seconds = {estimate if estimate > args.full_limit else sum(full):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
