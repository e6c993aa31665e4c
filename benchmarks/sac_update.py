"""SAC updates/s of the behaviour-policy recipe: FusedSACUpdate vs TorchRL's SACLoss + SoftUpdate.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/sac_update.py                    # HalfCheetah shapes, 1 thread
    python benchmarks/sac_update.py --obs 105 --act 8 --threads 1        # Ant-v5 shapes

Both paths are built by ``recipes/train_behavior.py``'s own ``make_sac`` (2x256
ReLU MLPs, twin critics, learned temperature, batch 256) and step the same kind
of optimisers; each is timed ``--repeats`` times for ``--updates`` updates,
interleaved, after a warm-up, on one fixed random batch (sampling from the replay
buffer costs about 0.1 ms either way, not included). Prints the median ms per
update, updates/s, and the ratio fused / torchrl. The machine may be shared:
the ratio is the number to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))

import train_behavior as tb  # noqa: E402

from tabb_torchrl.behavior import FusedSACUpdate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--obs", type=int, default=17)
    p.add_argument("--act", type=int, default=6)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.load(REPO / "recipes" / "config" / "behavior" / "behavior.yaml")
    cfg.batch_size = args.batch
    g = torch.Generator().manual_seed(0)
    n = args.batch
    obs, nobs = torch.randn(n, args.obs, generator=g), torch.randn(n, args.obs, generator=g)
    act = torch.rand(n, args.act, generator=g) * 2 - 1
    rew, term = torch.randn(n, 1, generator=g), torch.rand(n, 1, generator=g) < 0.01
    from tensordict import TensorDict

    td = TensorDict({"observation": obs, "action": act, "next": {"observation": nobs, "reward": rew,
                     "terminated": term, "truncated": torch.zeros_like(term), "done": term}}, [n])

    paths = {}
    torch.manual_seed(0)
    _, loss_t, soft, opts_t = tb.make_sac(cfg, args.obs, args.act, torch.device("cpu"))

    def torchrl_step():
        out = loss_t(td)
        for o in opts_t.values():
            o.zero_grad(set_to_none=True)
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
        for o in opts_t.values():
            o.step()
        soft.step()

    paths["torchrl (SACLoss + SoftUpdate)"] = torchrl_step
    torch.manual_seed(0)
    actor_f, loss_f, _, opts_f = tb.make_sac(cfg, args.obs, args.act, torch.device("cpu"))
    fused = FusedSACUpdate(actor_f, loss_f, list(opts_f.values()), gamma=cfg.gamma, tau=cfg.tau)
    paths["fused (FusedSACUpdate)"] = lambda: fused(obs, act, rew, nobs, term)

    times: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        for _ in range(20):
            fn()
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            for _ in range(args.updates):
                fn()
            times[name].append((time.perf_counter() - t0) / args.updates)
    print(f"obs {args.obs}, act {args.act}, batch {args.batch}, threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.2f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, m in med.items():
        print(f"{name:32s} {1e3 * m:7.2f} ms/update  {1 / m:7.1f} updates/s")
    names = list(med)
    print(f"fused/torchrl = {med[names[0]] / med[names[1]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
