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
* ``TABB recipe`` -- **the recipe's own code path**: the hydra config of
  ``recipes/config`` (``env=halfcheetah_morph``, ``algo=...``), the pipeline
  factories, a :class:`~tabb_torchrl.pipeline.TABBTrainer` whose ``prepare_rl()``
  freezes ``f, g, h``, caches the latents of every stored transition and builds
  the 128 + 128 buffer and the update of ``optim.update``
  (:func:`~tabb_torchrl.pipeline.make_rl_update`); each step is the public
  ``TABBTrainer.rl_step()``: ``fused`` (the default fast flat-tensor step) or
  ``modular`` (``rb.sample()`` + the TorchRL loss module), compiled by
  ``compile.enabled=true`` as the recipe does. ``--algos`` times other
  cross-domain methods (plug-ins) on the same path, for their extra cost per update,
  and the algos with their own backbone (``cql``, ``mobody``, ``bosa``:
  :mod:`tabb_torchrl.pipeline.backbones`), built as the recipe builds them; their
  pre-training is cut short unless ``--full-pretrain`` (it does not change the cost
  of an update), and MOBODY's model-row refresh, which runs once every
  ``algo.mobody.rollout_every`` updates, is timed on its own and reported per update.

Own-backbone baselines against TABB (smallest setting, a check that it runs)::

    python benchmarks/throughput.py --only tabb --no-compile --algos cql,mobody,bosa --updates 20 --repeats 1 --warmup 3 --source 20000

"compiled" wraps the update (plain IQL, TorchRL: the whole update function;
the recipe: what ``compile.enabled`` compiles) in ``torch.compile`` (``--compile-mode``). Each configuration is
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
        TABBTrainer, config_hash, make_actor_scheduler, make_latent_model, make_latent_model_loss, make_loss,
        make_optimizers, make_rl_networks,
    )
    import tempfile

    from tabb_torchrl.pipeline.backbones import own_backbone

    cfg = compose_cfg(["env=halfcheetah_morph", "progress=false", "logger.backend=", *overrides])
    device = torch.device("cpu")
    latent_model = make_latent_model(cfg, OBS_DIM, ACT_DIM)
    model_loss = make_latent_model_loss(cfg, latent_model)
    backbone = own_backbone(cfg.algo.name)
    if backbone is not None:  # cql, mobody, bosa: their own networks and update, as the recipe builds them
        actor, loss_module, target_updater, optimizers = backbone.make(cfg, cfg.env.id, device=device)
        scheduler = None
    else:
        actor, qvalue, value = make_rl_networks(cfg, OBS_DIM, ACT_DIM, latent_model)
        loss_module, target_updater = make_loss(cfg, actor, qvalue, value, latent_model)
        optimizers = make_optimizers(cfg, loss_module)
        scheduler = make_actor_scheduler(cfg, optimizers["actor"])
    trainer = TABBTrainer(
        cfg, run_dir=tempfile.mkdtemp(prefix="tabb_bench_"), device=device, source=source, target=target,
        latent_model=latent_model, model_loss=model_loss, actor=actor, loss_module=loss_module,
        target_updater=target_updater, optimizers=optimizers, scheduler=scheduler,
        evaluator=None, logger=None, env_id=cfg.env.id, config_hash=config_hash(cfg),
    )
    return cfg, trainer


class TABBRecipeBench(Bench):
    """The recipe's RL step, ``TABBTrainer.rl_step()``, with ``optim.update=<update>`` and ``algo=<algo>``."""

    def __init__(self, source, target, compiled: bool, mode: str | None, update: str, algo: str = "tabb",
                 extra: list[str] = ()):
        self.name = (f"{algo} recipe, optim.update={update}" + (" (default)" if update == "fused" else "")
                     + (" compiled" if compiled else ""))
        self.recipe = algo == "tabb"
        overrides = [f"compile.enabled={str(compiled).lower()}", f"optim.update={update}", f"algo={algo}", *extra]
        if mode:
            overrides.append(f"compile.mode={mode}")
        self.cfg, self.trainer = build_trainer(source, target, overrides)
        self.trainer.progress.phase = "rl"
        t0 = time.perf_counter()
        self.trainer.prepare_rl()  # freeze, cache latents (or the method's pre-training), buffer, update
        self.cache_s = time.perf_counter() - t0
        self.note = f"TABBTrainer.rl_step(); latent cache {self.trainer.latent_cache_mb:.0f} MiB in {self.cache_s:.1f} s"
        self.refresh_per_update_s = 0.0
        if algo in OWN_BACKBONE_ALGOS:
            self.note = f"TABBTrainer.rl_step(); prepare_rl (pre-training, buffer) {self.cache_s:.1f} s"
        if algo == "mobody":  # the model-row refresh runs once every rollout_every updates: timed on its own
            lm = self.trainer.loss_module
            t0 = time.perf_counter()
            lm.method.refresh_model_rows(lm.policy)
            refresh_s = time.perf_counter() - t0
            self.refresh_per_update_s = refresh_s / lm.method.rollout_every
            self.note += (f"; model-row refresh {refresh_s:.1f} s every {lm.method.rollout_every} updates "
                          f"(+{1e3 * self.refresh_per_update_s:.2f} ms per update, not in the rate)")

    def step(self):
        return self.trainer.rl_step()


#: Algos with their own backbone (tabb_torchrl.pipeline.backbones) and the overrides that cut their
#: pre-training for the benchmark (``--full-pretrain`` keeps the configured one).
OWN_BACKBONE_ALGOS = ("cql", "mobody", "bosa")
SHORT_PRETRAIN = {
    "mobody": ["algo.mobody.dynamics_max_epochs=1", "algo.mobody.dara_classifier_steps=100"],
    "bosa": ["algo.bosa.pretrain_steps=100"],
}


def _applies(algo: str, override: str) -> bool:
    """Whether an ``--extra`` override reaches ``algo``: ``algo.method_kwargs.<k>`` when its method takes
    ``k``, ``algo.<section>.<k>`` when its config has that section, anything else always."""
    key = override.split("=")[0].lstrip("+")
    parts = key.split(".")
    if parts[0] != "algo" or len(parts) < 3:
        return True
    if parts[1] == "method_kwargs":
        return parts[-1] in _kwargs_of(algo)
    return parts[1] in compose_cfg([f"algo={algo}"]).algo


def _kwargs_of(algo: str) -> set[str]:
    """The constructor arguments of an algo's method (so --extra method kwargs reach only their method)."""
    import inspect

    from tabb_torchrl.methods import METHODS

    cfg = compose_cfg([f"algo={algo}"])
    return set(inspect.signature(METHODS[cfg.algo.method]).parameters)


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
    """Stage-1 / stage-2 steps per second as the trainer runs them (its public step methods)."""
    cfg, trainer = build_trainer(source, target, [])
    trainer.model_loss.stage = 1
    trainer.latent_model.unfreeze()
    for _ in range(5):
        trainer.stage1_step()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        trainer.stage1_step()
    s1 = n_steps / (time.perf_counter() - t0)
    trainer.model_loss.stage = 2
    for _ in range(5):
        trainer.stage2_step()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        trainer.stage2_step()
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
    p.add_argument("--only", default=None, help="comma-separated subset: plain,torchrl,tabb,modular")
    p.add_argument("--algos", default="", help="comma-separated other algos timed on the default update "
                   "(their cost per update against tabb's), e.g. iql_mixed")
    p.add_argument("--extra", action="append", default=[], help="a hydra override of the recipe for the --algos "
                   "runs (repeatable), e.g. algo.method_kwargs.repr_steps=50 to shorten a method's pre-training")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    p.add_argument("--full-pretrain", action="store_true", help="keep the configured pre-training of the own-"
                   "backbone algos (default: cut short, see SHORT_PRETRAIN; the cost of an update is the same)")
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
    only = set(args.only.split(",")) if args.only else {"plain", "torchrl", "tabb", "modular"}
    algos = [a for a in args.algos.split(",") if a]
    variants = [False] if args.no_compile else [False, True]
    benches: list[Bench] = []
    for compiled in variants:
        if "plain" in only or not benches:
            benches.append(PlainBench(flat, compiled, args.compile_mode))
        if "torchrl" in only and not compiled:
            benches.append(TorchRLIQLBench(full, compiled, args.compile_mode))
        if "modular" in only:
            benches.append(TABBRecipeBench(source, target, compiled, args.compile_mode, "modular"))
        if "tabb" in only:
            benches.append(TABBRecipeBench(source, target, compiled, args.compile_mode, "fused"))
        for algo in algos:
            short = [] if args.full_pretrain else SHORT_PRETRAIN.get(algo, [])
            extra = [e for e in [*short, *args.extra] if _applies(algo, e)]
            benches.append(TABBRecipeBench(source, target, compiled, args.compile_mode, "fused", algo, extra))
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
    recipe = [b for b in benches if getattr(b, "recipe", False) and "fused" in b.name]
    if args.pretrain:
        pt = time_pretraining(source, target, args.pretrain_steps)
        best = max(recipe, key=lambda b: med[b.name])
        cache_s = best.cache_s * (1_000_000 + 5_000) / (args.source + 5_000)
        pre_md = pretraining_table(pt, cache_s, {best.name: med[best.name]})
        print()
        print(pre_md)

    summary_lines = []
    for b in recipe:
        summary_lines.append(f"{b.name}: **{med[b.name] / ref:.2f}x** plain IQL (uncompiled).")
    tabb_rate = {("compiled" in b.name): med[b.name] for b in recipe}
    for b in benches:
        if not getattr(b, "recipe", False) and b.name.split(" ")[0] in algos:
            base = tabb_rate.get("compiled" in b.name)
            per_update = 1.0 / med[b.name] + getattr(b, "refresh_per_update_s", 0.0)
            if base is None:
                summary_lines.append(f"{b.name}: {1e3 * per_update:.2f} ms per update.")
            else:
                summary_lines.append(f"{b.name}: {base * per_update:.2f}x tabb's time per update"
                                     + (" (model-row refreshes included)" if getattr(b, "refresh_per_update_s", 0.0)
                                        else "") + ".")
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
    for b in recipe:  # the recipe's own update over uncompiled plain IQL, eager and compiled
        print(f"tabb/plain_iql{' (compiled)' if 'compiled' in b.name else ' (uncompiled)'} = {med[b.name] / ref:.2f}")
    if recipe:
        best = max(recipe, key=lambda b: med[b.name])
        print(f"tabb/plain_iql = {med[best.name] / ref:.2f}")


if __name__ == "__main__":
    main()
