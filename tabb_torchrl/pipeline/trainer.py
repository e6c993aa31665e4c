"""The TABB training loop: latent pre-training (stages 1 and 2), latent caching, the
RL phase, periodic evaluation and exact checkpoint / resume.

:class:`TABBTrainer` owns every stateful object of a run and goes through four
phases, counting one *global step* per gradient step over all of them:

1. ``stage1`` -- ``f, g, h`` on batches of ``pretrain.n_source`` source rows and
   ``pretrain.n_target`` target rows (paper Eq. 6);
2. ``stage2`` -- ``h`` alone on the target training split; every
   ``pretrain.holdout_every`` steps the loss on the held-out target rows is
   measured and the best ``h`` is kept (the stage-1 ``h`` included);
3. latent caching -- ``f, g, h`` are frozen and the latents of every stored
   transition are computed once (``pretrain.cache_latents``);
4. ``rl`` -- batches of ``data.n_source`` + ``data.n_target`` rows; each step is
   ``update()`` of :func:`~tabb_torchrl.pipeline.make_rl_update` (``optim.update``:
   the fast flat-tensor step or the composable TorchRL path, both through
   :func:`~tabb_torchrl.objectives.cross_domain_losses` with the loss module's
   cross-domain method), so checkpoints have one format.

A checkpoint is written every ``checkpoint.every`` global steps and at each
phase end (atomically, :func:`~tabb_torchrl.pipeline.save_checkpoint_atomic`). It holds every
network, target network, optimiser and scheduler, the sampler generators, the
torch / numpy / python RNG states, the step counters, the evaluation history and
the logger position, so that a resumed run ends with the same parameters and the
same summary numbers as an uninterrupted run (on CPU, same thread count).

A cross-domain method's own pre-training before RL (``prepare``: BOSA's VAEs, MOBODY's and
DROCO's dynamics models, OTDF's optimal transport and VAE) is checkpointed too when the method
is a :class:`~tabb_torchrl.methods.base.ResumablePrepare`: at its safe points, once
``checkpoint.prepare_every_s`` seconds have passed since the last checkpoint, the checkpoint
gets the partial state (``method_prepare_state``) and a resumed run continues ``prepare`` where
it stopped, to the same result.

Every step's losses (the entries named ``loss*``) are watched: a NaN or inf stops
the run with :class:`NonFiniteLossError`, naming the loss and the step, before the
next log line, evaluation or checkpoint (so the last checkpoint keeps finite
parameters). The check stacks the step's losses into one small tensor (no host
synchronisation) and looks at them at each log interval, evaluation and
checkpoint, and every 1,000 steps.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl._utils import timeit

from tabb_torchrl.pipeline.config import ConfigError, _get
from tabb_torchrl.pipeline.evaluation import normalized_scores
from tabb_torchrl.pipeline.factories import make_pretrain_buffer, make_rl_buffer, split_holdout
from tabb_torchrl.pipeline.loggers import get_console_logger, log_metrics
from tabb_torchrl.pipeline.runs import save_checkpoint_atomic, spawn_seeds
from tabb_torchrl.pipeline.update import make_rl_update

__all__ = ["NonFiniteLossError", "Progress", "TABBTrainer"]

_LOG = get_console_logger()
CHECKPOINT_VERSION = 2  # 2: the EMA anchor lives in the loss module (its method)


@dataclass
class Progress:
    """Step counters of a run (saved in checkpoints).

    Examples:
        >>> p = Progress(stage1_step=10, stage2_step=5, rl_step=7)
        >>> p.global_step
        22
    """

    phase: str = "stage1"  # stage1 | stage2 | rl | done
    stage1_step: int = 0
    stage2_step: int = 0
    rl_step: int = 0

    @property
    def global_step(self) -> int:
        """Gradient steps done over all phases."""
        return self.stage1_step + self.stage2_step + self.rl_step


class _StopSession(Exception):
    """Raised internally when ``max_steps_this_session`` is reached."""


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or inf; the message names the loss, the step and the fix.

    Raised by :class:`TABBTrainer` before anything more is written: the last
    checkpoint, from before the loss went bad, is kept.

    Examples:
        >>> issubclass(NonFiniteLossError, RuntimeError)
        True
    """


#: Steps whose losses are held before a check forces one host synchronisation.
_WATCH_FLUSH = 1000


def _as_scalar(value) -> torch.Tensor:
    """A loss as a 0-d float tensor (summed when it is not a scalar; a Python number is wrapped)."""
    if not isinstance(value, torch.Tensor):
        return torch.tensor(float(value))
    value = value.detach().float()
    return value if value.ndim == 0 else value.sum()


class TABBTrainer:
    """Runs pre-training, latent caching, the RL phase and evaluation, with exact resume.

    Args:
        cfg: the run configuration (``recipes/config``).
        run_dir: the run directory (checkpoint, summary, logs).
        device: torch device of the networks and batches.
        source: source transitions (``None`` for target-only runs).
        target: target transitions.
        latent_model: the latent model ``(f, g, h)``.
        model_loss: its Eq. 6 loss (:class:`~tabb_torchrl.objectives.LatentModelLoss`).
        actor: the actor module (evaluated deterministically).
        loss_module: :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` (its ``method``
            edits the source rows; TABB's holds the EMA anchor when ``loss.anchor=ema``).
        target_updater: the ``SoftUpdate`` of the target critics.
        optimizers: ``{"qvalue", "value", "actor"}`` Adam optimisers.
        scheduler: the actor learning-rate scheduler or ``None``.
        evaluator: a :class:`~tabb_torchrl.pipeline.PolicyEvaluator` in the target env.
        logger: a TorchRL logger or ``None``.
        env_id: the target env id (normalised score).
        config_hash: :func:`~tabb_torchrl.pipeline.config_hash` of ``cfg``.

    Examples:
        See ``recipes/tabb_offline.py``, which builds every argument with the
        factories of :mod:`tabb_torchrl.pipeline.factories`:

        >>> from tabb_torchrl.pipeline import TABBTrainer
        >>> TABBTrainer.PHASES
        ('stage1', 'stage2', 'rl', 'done')
    """

    PHASES = ("stage1", "stage2", "rl", "done")

    def __init__(
        self,
        cfg: Any,
        *,
        run_dir: str | os.PathLike,
        device: torch.device,
        source: TensorDictBase | None,
        target: TensorDictBase,
        latent_model,
        model_loss,
        actor,
        loss_module,
        target_updater,
        optimizers: dict[str, torch.optim.Optimizer],
        scheduler=None,
        evaluator=None,
        logger=None,
        env_id: str,
        config_hash: str,
    ):
        from tabb_torchrl.keys import TARGET

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.source = source
        self.target = target
        self.latent_model = latent_model
        self.model_loss = model_loss
        self.actor = actor
        self.loss_module = loss_module
        self.target_updater = target_updater
        self.optimizers = optimizers
        self.scheduler = scheduler
        self.evaluator = evaluator
        self.logger = logger
        self.env_id = env_id
        self.config_hash = config_hash
        self.progress = Progress()
        self.history: list[dict] = []
        self.stage2_best: dict[str, Any] = {"loss": math.inf, "state": None, "bad_evals": 0, "step": 0}
        self.latent_cache_mb = 0.0
        self._wall_before = 0.0
        self._session_start = time.time()
        self._session_start_step = 0
        self.show_progress = bool(_get(cfg, "progress", True))
        self.log_every = int(_get(cfg, "logger.log_every"))
        self.ckpt_every = int(_get(cfg, "checkpoint.every"))
        self.ckpt_path = self.run_dir / _get(cfg, "checkpoint.filename")
        self.max_steps_this_session = _get(cfg, "max_steps_this_session")
        every_s = _get(cfg, "checkpoint.prepare_every_s", 300)
        try:
            self.prepare_every_s = None if every_s is None else float(every_s)
        except (TypeError, ValueError):
            self.prepare_every_s = -1.0
        if self.prepare_every_s is not None and not self.prepare_every_s >= 0:
            raise ConfigError(
                f"checkpoint.prepare_every_s={every_s!r} is not a number of seconds >= 0. Fix: e.g. "
                "checkpoint.prepare_every_s=300 (0: at every safe point of a method's pre-training, null: never).")
        seed = int(_get(cfg, "seed"))
        s_pre, s_stage2, s_holdout, s_rl = spawn_seeds(seed, 4)
        self._rl_seed = s_rl

        # pre-training data: the target training split (hold-out kept for stage 2)
        train_idx, hold_idx = split_holdout(target.shape[0], float(_get(cfg, "pretrain.holdout_fraction")), s_holdout)
        tgt = target.copy()
        tgt.set("domain", torch.full((target.shape[0],), TARGET, dtype=torch.int64))
        self.target_train = tgt[train_idx].to(device)
        self.target_holdout = tgt[hold_idx].to(device)
        self.pretrain_rb = make_pretrain_buffer(cfg, source, self.target_train, seed=s_pre, device=device)
        self.stage2_gen = torch.Generator().manual_seed(s_stage2)
        lr = float(_get(cfg, "pretrain.lr"))
        self.stage1_optimizer = torch.optim.Adam(self.latent_model.parameters(), lr=lr)
        self.stage2_optimizer = torch.optim.Adam(self.latent_model.predictor.parameters(), lr=lr)
        self.rl_rb = None
        self.rl_update = None  # make_rl_update(...), set by prepare_rl
        self.method_prepared = False  # the cross-domain method's prepare() ran (saved in checkpoints)
        self._last_prepare_ckpt = 0.0  # time.monotonic() of the last checkpoint during prepare()
        self._update_intervals: list[float] = []  # seconds per RL update, per log interval
        self._loss_window: list[tuple[str, int, int, torch.Tensor]] = []  # (phase, step, global step, losses)
        self._loss_keys: dict[str, tuple[str, ...]] = {}
        self._last_ckpt_step: int | None = None

    # ------------------------------------------------------------------ helpers
    def wall_time(self) -> float:
        """Wall-clock seconds of the run over all its sessions."""
        return self._wall_before + (time.time() - self._session_start)

    def _pbar(self, total: int, initial: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=not self.show_progress,
                    dynamic_ncols=True, mininterval=1.0)

    def _after_step(self, phase_end: bool = False) -> None:
        """Checkpoint / session-stop logic shared by all phases (after a step is counted)."""
        step = self.progress.global_step
        if step % self.ckpt_every == 0 or phase_end:
            self.save_checkpoint()
        if self.max_steps_this_session is not None and step >= int(self.max_steps_this_session):
            if _get(self.cfg, "checkpoint.save_on_stop", True):
                self.save_checkpoint()
            raise _StopSession

    def prepare_checkpoint(self) -> None:
        """The ``checkpoint`` callback given to a resumable method's ``prepare`` (called at its safe points):
        writes a checkpoint, partial pre-training state included, once ``checkpoint.prepare_every_s``
        seconds have passed since the last one (``0``: at every safe point; ``null``: never)."""
        if self.prepare_every_s is None:
            return
        if time.monotonic() - self._last_prepare_ckpt >= self.prepare_every_s:
            self.save_checkpoint()
            self._last_prepare_ckpt = time.monotonic()

    def _method(self):
        """The loss module's cross-domain method (``None`` for a backbone without one, e.g. CQL)."""
        return getattr(self.loss_module, "method", None)

    def _prepare_kwargs(self) -> dict:
        """``{"checkpoint": self.prepare_checkpoint}`` for a resumable method
        (:class:`~tabb_torchrl.methods.base.ResumablePrepare`), ``{}`` otherwise; starts the clock of
        ``checkpoint.prepare_every_s``."""
        from tabb_torchrl.methods.base import ResumablePrepare

        if not isinstance(self._method(), ResumablePrepare):
            return {}
        self._last_prepare_ckpt = time.monotonic()
        return {"checkpoint": self.prepare_checkpoint}

    # ------------------------------------------------------------------ non-finite guard
    def _watch(self, phase: str, step: int, out) -> None:
        """Hold this step's losses for :meth:`check_finite` (one ``torch.stack``, no host sync)."""
        keys = self._loss_keys.get(phase)
        if keys is None:
            keys = self._loss_keys[phase] = tuple(k for k in out.keys() if isinstance(k, str) and k.startswith("loss"))
        if not keys:
            return
        values = torch.stack([_as_scalar(out[k]) for k in keys])
        self._loss_window.append((phase, step, self.progress.global_step + 1, values))
        if len(self._loss_window) >= _WATCH_FLUSH:
            self.check_finite()

    @contextlib.contextmanager
    def _reported_as_non_finite(self):
        """A step that crashes on values an earlier non-finite loss left (an SVD of NaN latents...)
        is reported as that loss (:class:`NonFiniteLossError`), not as the crash."""
        try:
            yield
        except NonFiniteLossError:
            raise
        except Exception:
            self.check_finite()
            raise

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` for the first NaN / inf loss held since the last check."""
        window, self._loss_window = self._loss_window, []
        start = 0
        while start < len(window):
            phase = window[start][0]
            end = start
            while end < len(window) and window[end][0] == phase:
                end += 1
            values = torch.stack([w[3] for w in window[start:end]])  # [steps, losses]
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                row = int((~finite.all(1)).nonzero()[0])
                col = int((~finite[row]).nonzero()[0])
                _, step, global_step, _ = window[start + row]
                self._raise_non_finite(phase, step, global_step, self._loss_keys[phase][col],
                                       float(values[row, col]))
            start = end

    def _raise_non_finite(self, phase: str, step: int, global_step: int, key: str, value: float) -> None:
        where = {"stage1": "pre-training stage-1", "stage2": "pre-training stage-2", "rl": "RL"}.get(phase, phase)
        if self._last_ckpt_step is not None and self.ckpt_path.exists():
            kept = f"the last checkpoint, {self.ckpt_path} (global step {self._last_ckpt_step}), is kept unchanged"
        else:
            kept = "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"{key} became {value} at {where} step {step} (global step {global_step}); nothing was written after "
            f"it: {kept}. Fix: remove the cause, then start a new run -- usually a learning rate too high "
            "(optim.lr_*, pretrain.lr), huge values in the data (rewards, observations), or degenerate sizes "
            f"(model.*, loss.std_eps); the run's logs ({self.run_dir / 'logs'}) show how the losses grew."
        )

    def _log(self, metrics: dict, step: int, prefix: str) -> dict:
        """Log metrics and the timers of the last interval (seconds per call), then reset the timers."""
        self.check_finite()
        named = {f"{prefix}/{k}": v for k, v in metrics.items()}
        named.update(timeit.todict(percall=True, prefix="time"))
        reg = timeit._REG.get("rl/update")
        if prefix == "train" and reg and reg[0]:
            self._update_intervals.append(float(reg[0]))
        timeit.erase()
        return log_metrics(self.logger, named, step)

    # ------------------------------------------------------------------ stage 1
    def stage1_step(self) -> TensorDictBase:
        """One stage-1 step: a source + target batch, Eq. 6 on ``f, g, h``; returns the detached loss entries."""
        with timeit("pretrain/sample"):
            batch = self.pretrain_rb.sample()
        with timeit("pretrain/update"), self._reported_as_non_finite():
            out = self.model_loss(batch)
            self.stage1_optimizer.zero_grad(set_to_none=True)
            out["loss_model"].backward()
            self.stage1_optimizer.step()
            self.model_loss.update_target()
        out = out.detach()
        self._watch("stage1", self.progress.stage1_step + 1, out)
        return out

    def stage2_step(self) -> TensorDictBase:
        """One stage-2 step: a batch of the target training split, Eq. 6 on ``h`` alone."""
        n_train = self.target_train.shape[0]
        batch_size = int(_get(self.cfg, "pretrain.stage2_batch_size"))
        with timeit("pretrain/sample"):
            idx = torch.randint(0, n_train, (batch_size,), generator=self.stage2_gen)
            batch = self.target_train[idx.to(self.target_train.device)]
        with timeit("pretrain/update"), self._reported_as_non_finite():
            out = self.model_loss(batch)
            self.stage2_optimizer.zero_grad(set_to_none=True)
            out["loss_model"].backward()
            self.stage2_optimizer.step()
        out = out.detach()
        self._watch("stage2", self.progress.stage2_step + 1, out)
        return out

    def pretrain_stage1(self) -> None:
        """Stage 1 of the latent pre-training (``f, g, h`` on source + target batches)."""
        total = int(_get(self.cfg, "pretrain.stage1_steps"))
        self.model_loss.stage = 1
        self.latent_model.unfreeze()
        with self._pbar(total, self.progress.stage1_step, "pretrain stage 1") as pbar:
            while self.progress.stage1_step < total:
                out = self.stage1_step()
                self.progress.stage1_step += 1
                pbar.update(1)
                if self.progress.stage1_step % self.log_every == 0 or self.progress.stage1_step == total:
                    vals = self._log(dict(out.items()), self.progress.stage1_step, "pretrain_stage1")
                    pbar.set_postfix(loss=f"{vals['pretrain_stage1/loss_model']:.3g}")
                if self.progress.stage1_step == total:
                    self.progress.phase = "stage2"
                self._after_step(phase_end=self.progress.stage1_step == total)
        self.progress.phase = "stage2"

    # ------------------------------------------------------------------ stage 2
    @torch.no_grad()
    def holdout_loss(self) -> float:
        """Eq. 6 loss of ``h`` on the held-out target rows (stage-2 model selection)."""
        stage = self.model_loss.stage
        self.model_loss.stage = 2
        try:
            return float(self.model_loss(self.target_holdout)["loss_model"])
        finally:
            self.model_loss.stage = stage

    def _stage2_eval(self) -> None:
        loss = self.holdout_loss()
        best = self.stage2_best
        if loss < best["loss"]:
            best.update(loss=loss, state=copy.deepcopy(self.latent_model.predictor.state_dict()),
                        bad_evals=0, step=self.progress.stage2_step)
        else:
            best["bad_evals"] += 1
        log_metrics(self.logger, {"pretrain_stage2/holdout_loss": loss,
                                  "pretrain_stage2/best_holdout_loss": best["loss"]}, self.progress.stage2_step)

    def pretrain_stage2(self) -> None:
        """Stage 2: ``h`` alone on the target training split; the best held-out ``h`` is kept."""
        total = int(_get(self.cfg, "pretrain.stage2_steps"))
        every = int(_get(self.cfg, "pretrain.holdout_every"))
        patience = _get(self.cfg, "pretrain.stage2_patience")
        self.model_loss.stage = 2
        if self.progress.stage2_step == 0 and self.stage2_best["state"] is None:
            self._stage2_eval()  # the stage-1 h is a candidate too
        with self._pbar(total, self.progress.stage2_step, "pretrain stage 2") as pbar:
            while self.progress.stage2_step < total:
                if patience is not None and self.stage2_best["bad_evals"] >= int(patience):
                    _LOG.info("stage 2: no held-out improvement in %s evaluations; stopping at step %d",
                              patience, self.progress.stage2_step)
                    break
                out = self.stage2_step()
                self.progress.stage2_step += 1
                pbar.update(1)
                step = self.progress.stage2_step
                if step % every == 0 or step == total:
                    self._stage2_eval()
                    pbar.set_postfix(holdout=f"{self.stage2_best['loss']:.3g}")
                if step % self.log_every == 0 or step == total:
                    self._log(dict(out.items()), step, "pretrain_stage2")
                if step == total:
                    self._finish_stage2()
                self._after_step(phase_end=step == total)
        if self.progress.phase == "stage2":
            self._finish_stage2()
            self.save_checkpoint()

    def _finish_stage2(self) -> None:
        if self.stage2_best["state"] is not None:
            self.latent_model.predictor.load_state_dict(self.stage2_best["state"])
            _LOG.info("stage 2: kept h from step %d (held-out loss %.4g)",
                      self.stage2_best["step"], self.stage2_best["loss"])
        self.progress.phase = "rl"

    # ------------------------------------------------------------------ RL phase
    def prepare_rl(self) -> None:
        """Freeze ``f, g, h``, build the RL buffer (caching the latents of every stored row) and the update."""
        self.latent_model.freeze()
        from tabb_torchrl.pipeline.backbones import own_backbone

        backbone = own_backbone(_get(self.cfg, "algo.name"))
        if backbone is not None:  # cql, mobody, bosa (tabb_torchrl.pipeline.backbones): their own update
            if backbone.prepare is not None and not self.method_prepared:  # once per run (checkpointed)
                t0 = time.time()
                backbone.prepare(self.loss_module, self.source, self.target, device=self.device,
                                 progress=self.show_progress, **self._prepare_kwargs())
                _LOG.info("%s prepared in %.1f s", _get(self.cfg, "algo.name"), time.time() - t0)
            self.method_prepared = True
            columns = None if backbone.columns is None else backbone.columns(self.loss_module)
            self.rl_rb, _ = make_rl_buffer(self.cfg, self.source, self.target, None, seed=self._rl_seed,
                                           device=self.device, method=columns)
            self.rl_update = backbone.make_update(self.cfg, self.loss_module, self.rl_rb, self.optimizers,
                                                  self.target_updater, step=self.progress.rl_step)
            return
        method = self.loss_module.method
        if not self.method_prepared:  # the method's own pre-training, once per run (checkpointed with the loss)
            t0 = time.time()
            method.prepare(self.source, self.target, device=self.device, progress=self.show_progress,
                           **self._prepare_kwargs())
            self.method_prepared = True
            from tabb_torchrl.methods import CrossDomainMethod

            if type(method).prepare is not CrossDomainMethod.prepare:  # logged only when it did something
                _LOG.info("method %s prepared in %.1f s", method.name, time.time() - t0)
        t0 = time.time()
        self.rl_rb, nbytes = make_rl_buffer(self.cfg, self.source, self.target, self.latent_model,
                                            seed=self._rl_seed, device=self.device, method=method)
        if nbytes:
            self.latent_cache_mb = nbytes / 2**20
            _LOG.info("cached latents of %d transitions in %.1f s: %.1f MiB",
                      len(self.rl_rb), time.time() - t0, self.latent_cache_mb)
            if self.logger is not None and self.progress.rl_step == 0:  # once per run (not on resume)
                self.logger.log_scalar("rl/latent_cache_mib", self.latent_cache_mb, step=0)
        self.rl_update = make_rl_update(
            self.update_mode, self.loss_module, self.rl_rb, self.optimizers, self.target_updater,
            compile=bool(_get(self.cfg, "compile.enabled")), compile_mode=_get(self.cfg, "compile.mode"),
        )

    @property
    def update_mode(self) -> str:
        """The configured RL update, ``optim.update``: ``"fused"`` (default) or ``"modular"``."""
        return str(_get(self.cfg, "optim.update", "fused"))

    def rl_step(self) -> dict[str, torch.Tensor]:
        """One RL update (``self.rl_update()``); returns its detached metrics (tensors)."""
        with timeit("rl/update"), self._reported_as_non_finite():
            out = self.rl_update()
        self._watch("rl", self.progress.rl_step + 1, out)
        return out

    def evaluate(self) -> dict:
        """Evaluate the actor in the target env and append to the history."""
        self.check_finite()
        reference = _get(self.cfg, "eval.reference")
        self.actor.eval()
        with timeit("eval"):
            returns = self.evaluator.evaluate(self.actor)
        self.actor.train()
        scores = normalized_scores(self.env_id, returns, reference)
        entry = {
            "step": int(self.progress.rl_step),
            "normalized_score": float(scores.mean()),
            "normalized_score_std": float(scores.std()),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "returns": [float(r) for r in returns],
        }
        self.history.append(entry)
        log_metrics(self.logger, {"eval/normalized_score": entry["normalized_score"],
                                  "eval/normalized_score_std": entry["normalized_score_std"],
                                  "eval/return": entry["return_mean"]}, self.progress.rl_step)
        return entry

    def train_rl(self) -> None:
        """The RL phase: sample, update, evaluate every ``eval.every`` steps, checkpoint."""
        total = int(_get(self.cfg, "optim.steps"))
        every = int(_get(self.cfg, "eval.every"))
        with self._pbar(total, self.progress.rl_step, "RL") as pbar:
            while self.progress.rl_step < total:
                out = self.rl_step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.progress.rl_step += 1
                step = self.progress.rl_step
                pbar.update(1)
                if step % self.log_every == 0 or step == total:
                    metrics = {k: float(v) for k, v in out.items()}
                    metrics["lr_actor"] = self.optimizers["actor"].param_groups[0]["lr"]
                    self._log(metrics, step, "train")
                if step % every == 0 or step == total:
                    entry = self.evaluate()
                    pbar.set_postfix(score=f"{entry['normalized_score']:.1f}")
                    ups = self.updates_per_second()
                    _LOG.info("RL step %d: normalised score %.2f ± %.2f (return %.1f)%s", step,
                              entry["normalized_score"], entry["normalized_score_std"], entry["return_mean"],
                              "" if ups is None else f", {ups:.0f} updates/s")
                if step == total:
                    self.progress.phase = "done"
                self._after_step(phase_end=step == total)
        if total == 0 and not self.history:
            self.evaluate()
        self.progress.phase = "done"

    # ------------------------------------------------------------------ run
    def run(self) -> bool:
        """Run (or continue) every remaining phase.

        Returns:
            ``True`` when the run is complete, ``False`` when it stopped at
            ``max_steps_this_session`` (continue with ``resume=true``).
        """
        self._session_start = time.time()
        self._session_start_step = self.progress.global_step
        if _get(self.cfg, "algo.features", "latent") == "raw" and self.progress.phase in ("stage1", "stage2"):
            self.progress.phase = "rl"  # methods on raw states: no latent model to pre-train
        try:
            if self.progress.phase == "stage1":
                self.pretrain_stage1()
            if self.progress.phase == "stage2":
                self.pretrain_stage2()
            if self.progress.phase == "rl" and self.rl_rb is None:
                self._prepare_rl_resumed()
            if self.progress.phase == "rl":
                self.train_rl()
        except _StopSession:
            _LOG.info("stopped at global step %d (max_steps_this_session); continue with resume=true",
                      self.progress.global_step)
            return False
        if not _get(self.cfg, "checkpoint.save_final", True) and self.ckpt_path.exists():
            self.ckpt_path.unlink()  # the final state was written at the phase end
        return True

    def _prepare_rl_resumed(self) -> None:
        rng_state = getattr(self, "_pending_rl_rng", None)
        self.prepare_rl()
        if rng_state is not None:
            self.rl_rb.sampler.generator.set_state(rng_state)
            self._pending_rl_rng = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue the run exactly."""
        state = {
            "version": CHECKPOINT_VERSION,
            "rl_update": self.update_mode,
            "config_hash": self.config_hash,
            "progress": asdict(self.progress),
            "latent_model": self.latent_model.state_dict(),
            "model_loss": self.model_loss.state_dict(),
            "stage1_optimizer": self.stage1_optimizer.state_dict(),
            "stage2_optimizer": self.stage2_optimizer.state_dict(),
            "stage2_best": self.stage2_best,
            "pretrain_rb_rng": self.pretrain_rb.sampler.generator.get_state(),
            "stage2_rng": self.stage2_gen.get_state(),
            "rl_rb_rng": None if self.rl_rb is None else self.rl_rb.sampler.generator.get_state(),
            "loss_module": self.loss_module.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "history": self.history,
            "logger": None if self.logger is None else self.logger.state_dict(),
            "wall_time_s": self.wall_time(),
            "latent_cache_mb": self.latent_cache_mb,
            "method_prepared": self.method_prepared,
            "method_prepare_state": self._prepare_state(),
        }
        return state

    def _prepare_state(self) -> dict | None:
        """The partial state of a resumable method's ``prepare`` in progress (``None`` otherwise)."""
        from tabb_torchrl.methods.base import ResumablePrepare

        method = self._method()
        if self.method_prepared or not isinstance(method, ResumablePrepare):
            return None
        return method.prepare_state()

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the logger is restored by the recipe)."""
        if state.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(
                f"The checkpoint has format version {state.get('version')}; this version of tabb-torchrl "
                f"reads version {CHECKPOINT_VERSION}. Fix: start a new run (or resume it with the "
                "tabb-torchrl version that wrote it)."
            )
        saved_mode = state.get("rl_update", "modular")
        if saved_mode != self.update_mode:
            raise ConfigError(
                f"The checkpoint was written with optim.update={saved_mode}, this run uses "
                f"optim.update={self.update_mode}; the two updates are not interchangeable mid-run. "
                f"Fix: resume with optim.update={saved_mode}, or start a new run."
            )
        if state.get("config_hash") != self.config_hash:
            raise ConfigError(
                f"The checkpoint was written by a different configuration (hash "
                f"{state.get('config_hash')} vs {self.config_hash} now). "
                "Fix: resume with the same overrides as the original run, or start a new run."
            )
        self.progress = Progress(**state["progress"])
        self.latent_model.load_state_dict(state["latent_model"])
        self.model_loss.load_state_dict(state["model_loss"])
        self.stage1_optimizer.load_state_dict(state["stage1_optimizer"])
        self.stage2_optimizer.load_state_dict(state["stage2_optimizer"])
        self.stage2_best = state["stage2_best"]
        self.pretrain_rb.sampler.generator.set_state(state["pretrain_rb_rng"])
        self.stage2_gen.set_state(state["stage2_rng"])
        self.loss_module.load_state_dict(state["loss_module"])
        for k, v in state["optimizers"].items():
            self.optimizers[k].load_state_dict(v)
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._pending_rl_rng = state["rl_rb_rng"]
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.history = list(state["history"])
        self._wall_before = float(state["wall_time_s"])
        self._session_start = time.time()
        self.latent_cache_mb = float(state.get("latent_cache_mb", 0.0))
        self.method_prepared = bool(state["method_prepared"])
        partial = state.get("method_prepare_state")  # absent in checkpoints written before it existed
        if partial is not None:
            from tabb_torchrl.methods.base import ResumablePrepare

            method = self._method()
            if not isinstance(method, ResumablePrepare):
                raise ConfigError(
                    f"The checkpoint holds a partial pre-training of method {partial.get('method')!r}, which this "
                    f"run's {type(method).__name__} cannot continue. Fix: resume with the configuration that "
                    "wrote it, or start a new run.")
            method.load_prepare_state(partial)
        self._last_ckpt_step = self.progress.global_step
        if self.progress.phase in ("rl", "done"):
            self.latent_model.freeze()

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (``<run_dir>/<checkpoint.filename>``), never one of non-finite losses."""
        self.check_finite()
        with timeit("checkpoint"):
            save_checkpoint_atomic(self.state_dict(), self.ckpt_path)
        self._last_ckpt_step = self.progress.global_step

    def updates_per_second(self) -> float | None:
        """RL updates per second of update time in this session: the median over the log
        intervals (robust to the first interval's compilation and warm-up); ``None`` before any."""
        if not self._update_intervals:
            return None
        return 1.0 / float(np.median(self._update_intervals))


