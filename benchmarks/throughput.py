"""Update throughput of TABB against plain-PyTorch IQL and TorchRL's IQLLoss, in one process.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/throughput.py                 # full benchmark (~10 min)
    python benchmarks/throughput.py --threads 1 --updates 200 --repeats 3
    python benchmarks/throughput.py --quick                           # smoke check (~2 min)
    python benchmarks/throughput.py --markdown docs/results/throughput.md

All configurations train on the **same data** (HalfCheetah shapes: obs 17,
action 6; ``--source`` source transitions + 5,000 target transitions, random
values), batch 256, MLPs of two hidden layers of 256, a twin critic:

* ``plain IQL`` -- ``benchmarks/plain_iql.py``: CORL-style single-file IQL,
  tensors only, indices drawn with ``torch.randint`` and gathered from flat
  tensors (a benchmark baseline, not library code);
* ``TorchRL IQLLoss`` -- ``torchrl.objectives.IQLLoss`` (expectile 0.7,
  temperature 3.0) with a ``TensorDictReplayBuffer`` (``LazyTensorStorage``,
  uniform sampler), the networks of the library (IQL Gaussian actor,
  critic on ``[s, a]``), ``SoftUpdate`` -- TorchRL's ``iql_offline.py`` update;
* ``TABB (library)`` -- **the recipe's own code path**: the hydra config of
  ``recipes/config`` (``env=halfcheetah_morph``), the pipeline factories, a
  :class:`~tabb_torchrl.pipeline.TABBTrainer` whose ``prepare_rl()`` freezes
  ``f, g, h``, caches the latents of every stored transition
  (``LatentModel.cache_latents``) and builds the 128 + 128 buffer
  (``make_source_target_buffer``); each step is ``rl_rb.sample()`` then the
  trainer's ``update(batch)`` (TBM transform, ``TABBLoss``, three Adam steps,
  ``SoftUpdate``), compiled by ``compile.enabled=true`` as the recipe does.

"compiled" wraps the whole update function (losses, backward, optimiser steps,
soft update) in ``torch.compile`` (``--compile-mode``). Each configuration is
timed ``--repeats`` times for ``--updates`` updates, interleaved (so slow
phases of the shared machine hit every configuration alike), after a warm-up
(compilation excluded, its time reported). The table shows the median and the
ratio to the uncompiled plain IQL measured in the same process. The last line is
``tabb/plain_iql = <ratio>``: the best TABB configuration over uncompiled
plain IQL.

With ``--pretrain`` it also times latent pre-training (stage 1 and 2 steps as
the trainer runs them, plus the latent caching) and reports its share of a
full default run (``pretrain.stage1_steps``, ``pretrain.stage2_steps``,
``optim.steps`` of the recipe's config).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_iql import FlatBuffer, IQLConfig, PlainIQL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OBS_DIM, ACT_DIM = 17, 6


# ----------------------------------------------------------------------------- data
def make_data(n_source: int, n_target: int, seed: int = 0):
    """Random transitions in the project schema (source and target TensorDicts)."""
    from tensordict import TensorDict

    def one(n, g):
        s = torch.randn(n, OBS_DIM, generator=g)
        return TensorDict(
            {
                "observation": s,
                "action": torch.rand(n, ACT_DIM, generator=g) * 2 - 1,
                ("next", "observation"): s + 0.1 * torch.randn(n, OBS_DIM, generator=g),
                ("next", "reward"): torch.randn(n, 1, generator=g),
                ("next", "terminated"): torch.rand(n, 1, generator=g) < 0.001,
                ("next", "truncated"): torch.zeros(n, 1, dtype=torch.bool),
                ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            },
            [n],
        )

    g = torch.Generator().manual_seed(seed)
    src, tgt = one(n_source, g), one(n_target, g)
    for td in (src, tgt):
        td["next", "done"] = td["next", "terminated"] | td["next", "truncated"]
    return src, tgt


# ----------------------------------------------------------------------------- configs
class Bench:
    """One configuration: ``step()`` does one sample + update."""

    name: str
    compile_s: float = 0.0
    note: str = ""

    def step(self):  # pragma: no cover - interface
        raise NotImplementedError


class PlainBench(Bench):
    def __init__(self, data, compiled: bool, mode: str | None):
        self.name = "plain IQL (CORL-style)" + (" compiled" if compiled else "")
        cfg = IQLConfig(obs_dim=OBS_DIM, act_dim=ACT_DIM)
        self.agent = PlainIQL(cfg)
        self.rb = FlatBuffer(*data, batch_size=cfg.batch_size)
        self.update = torch.compile(self.agent.update, mode=mode) if compiled else self.agent.update

    def step(self):
        return self.update(*self.rb.sample())


class TorchRLIQLBench(Bench):
    def __init__(self, td, compiled: bool, mode: str | None):
        from tensordict.nn import TensorDictModule
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        from torchrl.modules import MLP
        from torchrl.objectives import IQLLoss, SoftUpdate
        from torch import nn

        from tabb_torchrl.modules import make_actor

        self.name = "TorchRL IQLLoss + TensorDictReplayBuffer" + (" compiled" if compiled else "")

        class QNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = MLP(in_features=OBS_DIM + ACT_DIM, out_features=1, num_cells=[256, 256])

            def forward(self, obs, act):
                return self.net(torch.cat([obs, act], -1))

        actor = make_actor(OBS_DIM, ACT_DIM)
        qvalue = TensorDictModule(QNet(), in_keys=["observation", "action"], out_keys=["state_action_value"])
        value = TensorDictModule(MLP(in_features=OBS_DIM, out_features=1, num_cells=[256, 256]),
                                 in_keys=["observation"], out_keys=["state_value"])
        self.loss = IQLLoss(actor, qvalue, value, num_qvalue_nets=2, expectile=0.7, temperature=3.0)
        self.loss.make_value_estimator(gamma=0.99)
        self.updater = SoftUpdate(self.loss, tau=0.005)
        self.optims = [
            torch.optim.Adam(self.loss.actor_network_params.flatten_keys().values(), lr=3e-4),
            torch.optim.Adam(self.loss.qvalue_network_params.flatten_keys().values(), lr=3e-4),
            torch.optim.Adam(self.loss.value_network_params.flatten_keys().values(), lr=3e-4),
        ]
        self.rb = TensorDictReplayBuffer(storage=LazyTensorStorage(td.shape[0]), batch_size=256)
        self.rb.extend(td)
        loss, optims, updater = self.loss, self.optims, self.updater

        def update(batch):
            out = loss(batch)
            total = out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]
            total.backward()
            for opt in optims:
                opt.step()
                opt.zero_grad(set_to_none=True)
            updater.step()
            return total.detach()

        self.update = torch.compile(update, mode=mode) if compiled else update

    def step(self):
        return self.update(self.rb.sample())


def compose_cfg(overrides: list[str]):
    """The recipe's hydra config (``recipes/config``) with overrides, without running hydra's app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "recipes" / "config"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def build_trainer(source, target, overrides: list[str]):
    """A :class:`TABBTrainer` built exactly as ``recipes/tabb_offline.py`` builds it (no env, no logger)."""
    from tabb_torchrl.pipeline import (
        TABBTrainer, config_hash, make_actor_scheduler, make_anchor, make_latent_model,
        make_latent_model_loss, make_loss, make_optimizers, make_rl_networks, make_tbm_transform,
    )
    import tempfile

    cfg = compose_cfg(["env=halfcheetah_morph", "progress=false", "logger.backend=", *overrides])
    device = torch.device("cpu")
    latent_model = make_latent_model(cfg, OBS_DIM, ACT_DIM)
    model_loss = make_latent_model_loss(cfg, latent_model)
    actor, qvalue, value = make_rl_networks(cfg, OBS_DIM, ACT_DIM, latent_model)
    loss_module, target_updater = make_loss(cfg, actor, qvalue, value, latent_model)
    anchor = make_anchor(cfg, value)
    tbm = make_tbm_transform(cfg, latent_model, value if anchor is None else anchor[0])
    optimizers = make_optimizers(cfg, loss_module)
    scheduler = make_actor_scheduler(cfg, optimizers["actor"])
    trainer = TABBTrainer(
        cfg, run_dir=tempfile.mkdtemp(prefix="tabb_bench_"), device=device, source=source, target=target,
        latent_model=latent_model, model_loss=model_loss, actor=actor, loss_module=loss_module,
        target_updater=target_updater, optimizers=optimizers, scheduler=scheduler, tbm=tbm,
        anchor=anchor, evaluator=None, logger=None, env_id=cfg.env.id, config_hash=config_hash(cfg),
    )
    return cfg, trainer


def _rl_trainer(source, target, compiled: bool, mode: str | None, update: str):
    """The recipe's trainer with ``optim.update=<update>``, set to its RL phase."""
    overrides = [f"compile.enabled={str(compiled).lower()}", f"optim.update={update}"]
    if mode:
        overrides.append(f"compile.mode={mode}")
    cfg, trainer = build_trainer(source, target, overrides)
    trainer.progress.phase = "rl"
    return cfg, trainer


class TABBLibraryBench(Bench):
    def __init__(self, source, target, compiled: bool, mode: str | None):
        self.name = "TABB library modular update (optim.update=modular)" + (" compiled" if compiled else "")
        self.recipe = True
        self.cfg, self.trainer = _rl_trainer(source, target, compiled, mode, "modular")
        t0 = time.perf_counter()
        self.trainer.prepare_rl()  # freeze, cache latents, buffer, (compile wrapper)
        self.cache_s = time.perf_counter() - t0
        self.cache_mib = self.trainer.latent_cache_mb
        self.rb, self.update = self.trainer.rl_rb, self.trainer._update_fn
        self.note = f"latent cache {self.cache_mib:.0f} MiB, built in {self.cache_s:.1f} s"

    def step(self):
        return self.update(self.rb.sample())


class TABBLibraryFusedBench(Bench):
    """The recipe's default RL step since ``optim.update=fused``: ``TABBTrainer.rl_step()``
    (:class:`~tabb_torchrl.objectives.FusedTABBUpdate` on the trainer's latent cache)."""

    def __init__(self, source, target, compiled: bool, mode: str | None):
        self.name = "TABB library fused update (recipe default, optim.update=fused)" + (" compiled" if compiled else "")
        self.recipe = True
        self.cfg, self.trainer = _rl_trainer(source, target, compiled, mode, "fused")
        self.trainer.prepare_rl()
        if self.trainer.fused_update is None:
            raise RuntimeError("optim.update=fused fell back to the modular update")
        self.note = "TABBTrainer.rl_step()"

    def step(self):
        out, _ = self.trainer.rl_step()
        return out


class TABBLibraryLossCompiledBench(Bench):
    """The library's TBM transform + ``TABBLoss`` compiled; backward, the three Adams and
    ``SoftUpdate`` eager (what ``compile.enabled`` could do instead of compiling the whole update)."""

    def __init__(self, source, target, mode: str | None):
        self.name = "TABB library path, TBM + TABBLoss compiled, optimiser steps eager"
        self.cfg, self.trainer = build_trainer(source, target, [])
        self.trainer.progress.phase = "rl"
        self.trainer.prepare_rl()
        tr = self.trainer
        tbm, loss_module = tr.tbm, tr.loss_module

        def losses(batch):
            with torch.no_grad():
                batch = tbm(batch)
            out = loss_module(batch)
            return out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]

        self.losses = torch.compile(losses, mode=mode)
        self.optimizers = list(tr.optimizers.values())
        self.rb = tr.rl_rb
        self.note = "library modules, benchmark-side wiring"

    def step(self):
        loss = self.losses(self.rb.sample())
        loss.backward()
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.trainer.target_updater.step()
        return loss.detach()


class TABBFastBench(Bench):
    """``benchmarks/fast_tabb.py`` on the same prepared trainer state (benchmark-only path)."""

    def __init__(self, source, target, compiled: bool, mode: str | None, fused: bool = True):
        from fast_tabb import FastTABBUpdate

        self.name = ("TABB fast path (benchmark-only)" + ("" if fused else " foreach Adam")
                     + (" compiled" if compiled else ""))
        self.cfg, self.trainer = build_trainer(source, target, [])
        self.trainer.progress.phase = "rl"
        self.trainer.prepare_rl()
        self.fast = FastTABBUpdate(self.trainer, compile=compiled, mode=mode, fused=fused)
        self.note = "same math, same parameters; see fast_tabb.py"

    def step(self):
        return self.fast()


def equivalence() -> tuple[float, float]:
    """Library update vs fast update: max |diff| of parameters and losses after 5 steps."""
    from fast_tabb import check_equivalence

    source, target = make_data(5_000, 1_000, seed=1)

    def factory():
        out = []
        for _ in range(2):
            torch.manual_seed(0)
            _, tr = build_trainer(source, target, ["optim.update=modular"])
            tr.progress.phase = "rl"
            tr.prepare_rl()
            out.append(tr)
        return out

    return check_equivalence(factory, steps=5)


# ----------------------------------------------------------------------------- timing
def time_steps(bench: Bench, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        out = bench.step()
    float((out if isinstance(out, torch.Tensor) else out["loss_qvalue"]).reshape(-1)[0])  # drain
    return n / (time.perf_counter() - t0)


def warmup(bench: Bench, n: int) -> None:
    t0 = time.perf_counter()
    for _ in range(n):
        bench.step()
    bench.compile_s = time.perf_counter() - t0


def time_pretraining(source, target, n_steps: int) -> dict:
    """Stage-1 / stage-2 steps per second as the trainer runs them, and the caching time."""
    cfg, trainer = build_trainer(source, target, [])
    lm = trainer.latent_model
    trainer.model_loss.stage = 1
    lm.unfreeze()
    for _ in range(5):
        trainer._stage1_update(trainer.pretrain_rb.sample())
    t0 = time.perf_counter()
    for _ in range(n_steps):
        trainer._stage1_update(trainer.pretrain_rb.sample())
    s1 = n_steps / (time.perf_counter() - t0)
    trainer.model_loss.stage = 2
    n_train = trainer.target_train.shape[0]
    bs = int(cfg.pretrain.stage2_batch_size)

    def stage2_step():
        idx = torch.randint(0, n_train, (bs,), generator=trainer.stage2_gen)
        out = trainer.model_loss(trainer.target_train[idx])
        trainer.stage2_optimizer.zero_grad(set_to_none=True)
        out["loss_model"].backward()
        trainer.stage2_optimizer.step()

    for _ in range(5):
        stage2_step()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        stage2_step()
    s2 = n_steps / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    trainer.holdout_loss()
    holdout_s = time.perf_counter() - t0
    paper = compose_cfg(["env=halfcheetah_morph", "+preset=paper"])
    return {
        "stage1_steps_per_s": s1,
        "stage2_steps_per_s": s2,
        "holdout_eval_s": holdout_s,
        "configs": {
            "recipe default": {k: int(v) for k, v in (
                ("stage1", cfg.pretrain.stage1_steps), ("stage2", cfg.pretrain.stage2_steps),
                ("holdout_every", cfg.pretrain.holdout_every), ("rl", cfg.optim.steps))},
            "+preset=paper": {k: int(v) for k, v in (
                ("stage1", paper.pretrain.stage1_steps), ("stage2", paper.pretrain.stage2_steps),
                ("holdout_every", paper.pretrain.holdout_every), ("rl", paper.optim.steps))},
        },
    }


def pretraining_table(pt: dict, cache_s: float, rl_rates: dict[str, float]) -> str:
    """Markdown: time of each phase and the pre-training share of a full run, per config and RL path."""
    lines = [
        f"Measured: stage 1 {pt['stage1_steps_per_s']:.1f} steps/s, stage 2 {pt['stage2_steps_per_s']:.1f} "
        f"steps/s (uncompiled, as the trainer runs them), a hold-out check {pt['holdout_eval_s']:.2f} s, "
        f"latent caching of 1M + 5k transitions {cache_s / 60:.1f} min (extrapolated from the benchmark's "
        "cache build).",
        "",
        "| config | stage 1 + 2 steps | pre-training + caching | RL steps | RL path | RL time | pre-training share |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for cname, c in pt["configs"].items():
        pre_s = (c["stage1"] / pt["stage1_steps_per_s"] + c["stage2"] / pt["stage2_steps_per_s"]
                 + c["stage2"] / c["holdout_every"] * pt["holdout_eval_s"] + cache_s)
        for rname, rate in rl_rates.items():
            rl_s = c["rl"] / rate
            lines.append(f"| {cname} | {c['stage1']:,} + {c['stage2']:,} | {pre_s / 60:.1f} min | {c['rl']:,} | "
                         f"{rname} ({rate:.0f}/s) | {rl_s / 3600:.2f} h | {100 * pre_s / (pre_s + rl_s):.1f} % |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description="Update throughput: TABB vs plain IQL vs TorchRL IQLLoss")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--updates", type=int, default=300, help="updates per timed repeat")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per configuration (median)")
    p.add_argument("--warmup", type=int, default=30, help="warm-up updates (compilation included)")
    p.add_argument("--source", type=int, default=200_000, help="source transitions (target: 5,000)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (None = default)")
    p.add_argument("--only", default=None, help="comma-separated subset: plain,torchrl,tabb,fast")
    p.add_argument("--fused", action="store_true", help="also time the fast path with foreach (not fused) Adam")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    p.add_argument("--pretrain", action="store_true", help="also time latent pre-training")
    p.add_argument("--pretrain-steps", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="smoke check: few updates, 2 repeats")
    p.add_argument("--markdown", default=None, help="write the table as MyST markdown to this path")
    args = p.parse_args()
    if args.quick:
        args.updates, args.repeats, args.warmup, args.source = 50, 2, 10, 20_000
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3

    source, target = make_data(args.source, 5_000)
    full = torch.cat([source, target])
    flat = (full["observation"], full["action"], full["next", "reward"].squeeze(-1),
            full["next", "observation"], full["next", "terminated"].squeeze(-1).float())
    only = set(args.only.split(",")) if args.only else {"plain", "torchrl", "tabb", "fast"}
    eq = equivalence() if "fast" in only else None
    if eq is not None:
        print(f"fast path vs library update, 5 steps from the same state: max |param diff| {eq[0]:.1e}, "
              f"max |loss diff| {eq[1]:.1e}", flush=True)
    variants = [False] if args.no_compile else [False, True]
    benches: list[Bench] = []
    for compiled in variants:
        if "plain" in only or not benches:
            benches.append(PlainBench(flat, compiled, args.compile_mode))
        if "torchrl" in only:
            benches.append(TorchRLIQLBench(full, compiled, args.compile_mode))
        if "tabb" in only:
            benches.append(TABBLibraryBench(source, target, compiled, args.compile_mode))
            benches.append(TABBLibraryFusedBench(source, target, compiled, args.compile_mode))
        if "libloss" in only and compiled:
            benches.append(TABBLibraryLossCompiledBench(source, target, args.compile_mode))
        if "fast" in only:
            benches.append(TABBFastBench(source, target, compiled, args.compile_mode))
            if compiled and args.fused:  # foreach instead of fused Adam, for comparison
                benches.append(TABBFastBench(source, target, compiled, args.compile_mode, fused=False))
    # the reference (uncompiled plain IQL) always first
    for b in benches:
        warmup(b, args.warmup)
        print(f"warm-up {b.name}: {b.compile_s:.1f} s", flush=True)
    rates: dict[str, list[float]] = {b.name: [] for b in benches}
    for rep in range(args.repeats):
        for b in benches:
            rates[b.name].append(time_steps(b, args.updates))
        print(f"repeat {rep + 1}/{args.repeats}: " + ", ".join(f"{v[-1]:.0f}" for v in rates.values()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ref = med[benches[0].name]
    load_after = os.getloadavg()
    threads = torch.get_num_threads()
    header = (f"torch {torch.__version__}, {threads} threads (torch.get_num_threads()), "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"load average {load[0]:.1f} before / {load_after[0]:.1f} after, "
              f"batch 256, {args.source:,} source + 5,000 target transitions, "
              f"{args.repeats} repeats x {args.updates} updates (median), compile mode {args.compile_mode or 'default'}")
    rows = []
    for b in benches:
        v = rates[b.name]
        rows.append((b.name, med[b.name], min(v), max(v), med[b.name] / ref, b.compile_s, b.note))
    lines = ["| configuration | updates/s (median) | min-max | x plain IQL | warm-up s | note |",
             "|---|---:|---:|---:|---:|---|"]
    for name, m, lo, hi, ratio, cs, note in rows:
        lines.append(f"| {name} | {m:.1f} | {lo:.0f}-{hi:.0f} | {ratio:.2f} | {cs:.1f} | {note} |")
    table = "\n".join(lines)
    print()
    print(header)
    print(table)

    pre_md = ""
    if args.pretrain:
        pt = time_pretraining(source, target, args.pretrain_steps)
        tabb_lib = max((b for b in benches if getattr(b, "recipe", False)), key=lambda b: med[b.name])
        tabb_best = max((b for b in benches if b.name.startswith("TABB")), key=lambda b: med[b.name])
        cache_s = getattr(tabb_lib, "cache_s", 0.0) * (1_000_000 + 5_000) / (args.source + 5_000)
        pre_md = pretraining_table(pt, cache_s, {tabb_lib.name: med[tabb_lib.name],
                                                 tabb_best.name: med[tabb_best.name]})
        print()
        print(pre_md)

    best = max((b for b in benches if b.name.startswith("TABB")), key=lambda b: med[b.name], default=None)
    lib_best = max((b for b in benches if getattr(b, "recipe", False)), key=lambda b: med[b.name],
                   default=None)
    summary_lines = []
    if eq is not None:
        summary_lines.append(f"Fast path vs library update, 5 steps from the same state and rows: max |parameter "
                             f"difference| {eq[0]:.1e}, max |loss difference| {eq[1]:.1e}.")
    if lib_best is not None:
        summary_lines.append(f"Best recipe path: {lib_best.name}, {med[lib_best.name] / ref:.2f}x plain IQL.")
    if best is not None:
        summary_lines.append(f"Best TABB configuration: {best.name}, **{med[best.name] / ref:.2f}x** plain IQL "
                             f"(`tabb/plain_iql = {med[best.name] / ref:.2f}`).")
    for line in summary_lines:
        print(line)
    if args.markdown:
        md = [
            "# Update throughput",
            "",
            "Measured by `python benchmarks/throughput.py " + " ".join(sys.argv[1:]) + "` "
            f"on {time.strftime('%Y-%m-%d %H:%M')}.",
            "",
            header + ".",
            "",
            table,
            "",
            *summary_lines,
            "",
        ]
        if pre_md:
            md += ["## Cost of pre-training", "", pre_md, ""]
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text("\n".join(md))
    if best is not None:
        print(f"tabb/plain_iql = {med[best.name] / ref:.2f}")


if __name__ == "__main__":
    main()
