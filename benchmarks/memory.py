"""Peak memory (ru_maxrss) of a TABB run with 1M source transitions and the latent cache.

Usage::

    python benchmarks/memory.py                      # 1M source + 5k target (HalfCheetah shapes)
    python benchmarks/memory.py --source 200000 --updates 20

Builds random transitions in the project schema (obs 17, action 6), then a
:class:`~tabb_torchrl.pipeline.TABBTrainer` exactly as the recipe builds it
(default config: 128-dim latents, 2x256 MLPs), runs a few stage-1 steps,
``prepare_rl()`` (freeze, cache the latents of every stored transition, build the
128 + 128 replay buffer) and ``--updates`` RL updates, printing the peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after each phase, the
size of the latent cache, and the bytes per stored transition.
"""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import build_trainer, make_data  # noqa: E402


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description="Peak RSS of a 1M-source-transition TABB run")
    p.add_argument("--source", type=int, default=1_000_000)
    p.add_argument("--target", type=int, default=5_000)
    p.add_argument("--updates", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown", default=None, help="append the table to this markdown file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("start (python, torch, torchrl imported)", peak_mib(), current_mib())]
    source, target = make_data(args.source, args.target)
    per_row = sum(v.numel() * v.element_size() for v in source.values(True, True)) / args.source
    rows.append((f"datasets built ({per_row:.0f} B per transition)", peak_mib(), current_mib()))
    cfg, trainer = build_trainer(source, target, [])
    rows.append(("trainer built (pre-training buffer)", peak_mib(), current_mib()))
    for _ in range(20):
        trainer.stage1_step()
    rows.append(("20 stage-1 steps", peak_mib(), current_mib()))
    trainer.progress.phase = "rl"
    t0 = time.time()
    trainer.prepare_rl()  # the latents are cached in place into the buffer's one concatenated storage
    cache_s = time.time() - t0
    gc.collect()
    rows.append((f"prepare_rl: latent cache {trainer.latent_cache_mb:.0f} MiB "
                 f"({trainer.latent_cache_mb * 2**20 / (args.source + args.target):.0f} B per transition), "
                 f"{cache_s:.0f} s", peak_mib(), current_mib()))
    for _ in range(args.updates):
        trainer.rl_step()
    rows.append((f"{args.updates} RL updates", peak_mib(), current_mib()))
    header = (f"{args.source:,} source + {args.target:,} target transitions, default model config, "
              f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    lines = ["| phase | peak RSS (ru_maxrss) MiB | current RSS MiB |", "|---|---:|---:|"]
    lines += [f"| {name} | {peak:.0f} | {cur:.0f} |" for name, peak, cur in rows]
    table = "\n".join(lines)
    print(header)
    print(table)
    print(f"peak RSS = {rows[-1][1] / 1024:.2f} GiB")
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(f"\n{header}; `python benchmarks/memory.py " + " ".join(sys.argv[1:]) + "`\n\n" + table
                    + f"\n\nPeak RSS: **{rows[-1][1] / 1024:.2f} GiB**.\n")


if __name__ == "__main__":
    main()
