"""Train a SAC behaviour policy online; snapshots give the D4RL-style datasets.

See the *Data protocol* of the method card and
``tabb_torchrl/assets/policies/README.md``.  One gymnasium env is stepped in a
plain Python loop (much faster than ``GymEnv`` here) and the transitions go into
a TorchRL ``ReplayBuffer``; the update is TorchRL's :class:`SACLoss` (SAC v2,
twin critics, learned temperature) with a :class:`SoftUpdate` target.

Outputs in ``run_dir``:

* ``checkpoint.pt`` -- everything needed to resume bit-for-bit (networks,
  target, temperature, optimisers, replay contents, step, RNG states, the
  MuJoCo state of the env mid-episode, evaluation history), written atomically
  every ``checkpoint_every`` steps; re-running the same command resumes.
* ``medium.pt`` -- shipped-format actor of the first evaluation reaching
  ``medium_return``; ``medium_replay.pt`` -- the replay buffer up to that step
  (the ``medium-replay`` dataset).
* ``expert.pt`` -- shipped-format actor of the best evaluation so far; its
  metadata say whether the run has *plateaued* (the best return has not
  improved by more than ``plateau_tolerance`` for ``plateau_window`` steps);
  ``final.pt`` -- the last actor.
* ``eval_history.json`` -- evaluation returns; ``log.txt`` if you redirect to it.

Examples:
    python recipes/train_behavior.py env=Hopper-v5 seed=0
    python recipes/train_behavior.py env=tabb/Hopper-morph-v0 stop_after_medium=true
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import sys
import time
from pathlib import Path

import hydra
import mujoco
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.data import Bounded, LazyTensorStorage, ReplayBuffer
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate

from tabb_torchrl.behavior.policies import SquashedGaussianActor, save_behavior_policy
from tabb_torchrl.behavior.sac import FusedSACUpdate
from tabb_torchrl.data.references import medium_return_threshold
from tabb_torchrl.io import atomic_write, write_text_atomic

OmegaConf.register_new_resolver("slug", lambda s: str(s).replace("/", "__"), replace=True)

CHECKPOINT = "checkpoint.pt"


# --------------------------------------------------------------------------- env
def make_env(env_id: str):
    """A gymnasium env by id (``tabb/...`` ids are registered by ``tabb_torchrl.envs``)."""
    try:
        from tabb_torchrl.envs import make_env as _make
    except ImportError:
        import gymnasium as gym

        return gym.make(env_id)
    return _make(env_id)


def env_state(env, obs) -> dict:
    """The full mid-episode state of a MuJoCo gymnasium env (for exact resumption)."""
    u = env.unwrapped
    wrappers, w = {}, env
    while hasattr(w, "env"):
        if hasattr(w, "_elapsed_steps"):
            wrappers["elapsed_steps"] = w._elapsed_steps
        w = w.env
    return {
        "mjdata": pickle.dumps(u.data),
        "np_random": u.np_random.bit_generator.state,
        "obs": np.asarray(obs).copy(),
        **wrappers,
    }


def restore_env_state(env, state: dict) -> np.ndarray:
    u = env.unwrapped
    env.reset(seed=0)  # satisfies the order-enforcing wrapper; overwritten below
    mujoco.mj_copyData(u.data, u.model, pickle.loads(state["mjdata"]))
    u.np_random.bit_generator.state = state["np_random"]
    w = env
    while hasattr(w, "env"):
        if hasattr(w, "_elapsed_steps") and "elapsed_steps" in state:
            w._elapsed_steps = state["elapsed_steps"]
        w = w.env
    return state["obs"]


# ------------------------------------------------------------------------- model
def make_sac(cfg: DictConfig, obs_dim: int, act_dim: int, device: torch.device):
    actor_net = SquashedGaussianActor(obs_dim, act_dim, tuple(cfg.hidden_sizes), cfg.activation).to(device)
    action_spec = Bounded(-torch.ones(act_dim), torch.ones(act_dim), shape=(act_dim,), device=device)
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=False,
    )
    act_cls = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU}[cfg.activation]
    qvalue = ValueOperator(
        MLP(in_features=obs_dim + act_dim, out_features=1, num_cells=list(cfg.hidden_sizes), activation_class=act_cls),
        in_keys=["observation", "action"],
    ).to(device)
    loss = SACLoss(
        actor,
        qvalue,
        num_qvalue_nets=2,
        loss_function="l2",
        alpha_init=cfg.alpha_init,
        action_spec=action_spec,
        target_entropy="auto",
        delay_qvalue=True,
    )
    loss.make_value_estimator(gamma=cfg.gamma)
    target_updater = SoftUpdate(loss, tau=cfg.tau)
    optims = {
        "actor": torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=cfg.lr),
        "qvalue": torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=cfg.lr),
        "alpha": torch.optim.Adam([loss.log_alpha], lr=cfg.lr),
    }
    return actor_net, loss, target_updater, optims


# ----------------------------------------------------------------------- trainer
class SACTrainer:
    """Online SAC with atomic, exactly-resumable checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(int(cfg.threads))
        if cfg.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.device)
        self.env = make_env(cfg.env)
        self.eval_env = make_env(cfg.env)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.act_low = self.env.action_space.low.astype(np.float32)
        self.act_high = self.env.action_space.high.astype(np.float32)
        self.medium_return = (
            float(cfg.medium_return) if cfg.medium_return is not None
            else medium_return_threshold(cfg.env, dict(cfg.medium_returns))
        )
        # seeding (before the networks are built so their init is seeded)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.actor_net, self.loss, self.target_updater, self.optims = make_sac(
            cfg, self.obs_dim, self.act_dim, self.device
        )
        if cfg.sac_update not in ("fused", "torchrl"):
            raise ValueError(f"sac_update must be 'fused' or 'torchrl', got {cfg.sac_update!r}")
        self.fused = (
            FusedSACUpdate(self.actor_net, self.loss, list(self.optims.values()), gamma=cfg.gamma, tau=cfg.tau)
            if cfg.sac_update == "fused" else None
        )
        self.rb = ReplayBuffer(storage=LazyTensorStorage(int(cfg.buffer_size)), batch_size=int(cfg.batch_size))
        self.step = 0
        self.updates = 0
        self.episodes = 0
        self.ep_return = 0.0
        self.ep_len = 0
        self.train_returns: list[tuple[int, float, int]] = []
        self.eval_history: list[dict] = []
        self.medium_step: int | None = None
        self.best_return = -math.inf
        self.plateau_ref = (0, -math.inf)  # (step, return) of the last significant improvement
        self.plateau_step: int | None = None  # step at which the plateau was detected
        self.elapsed = 0.0
        self.obs, _ = self.env.reset(seed=int(cfg.seed))

    # -- acting
    def _scale(self, a: np.ndarray) -> np.ndarray:
        return self.act_low + 0.5 * (a + 1.0) * (self.act_high - self.act_low)

    @torch.no_grad()
    def _policy(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        loc, scale = self.actor_net(torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0))
        pre = loc if deterministic else loc + scale * torch.randn_like(loc)
        return torch.tanh(pre)[0].cpu().numpy()

    def evaluate(self) -> tuple[float, float]:
        returns = []
        for i in range(int(self.cfg.eval_episodes)):
            obs, _ = self.eval_env.reset(seed=int(self.cfg.seed) + int(self.cfg.eval_seed_offset) + i)
            done, ret = False, 0.0
            while not done:
                obs, r, term, trunc, _ = self.eval_env.step(self._scale(self._policy(obs, True)))
                ret += float(r)
                done = term or trunc
            returns.append(ret)
        return float(np.mean(returns)), float(np.std(returns))

    # -- learning
    def update(self) -> dict:
        batch = self.rb.sample().to(self.device)
        if self.fused is not None:
            metrics = self.fused(batch["observation"], batch["action"], batch["next", "reward"],
                                 batch["next", "observation"], batch["next", "terminated"])
            self.updates += 1
            return dict(zip(self.fused.METRICS, metrics))
        out = self.loss(batch)
        total = out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]
        for opt in self.optims.values():
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in self.optims.values():
            opt.step()
        self.target_updater.step()
        self.updates += 1
        return out.detach()

    # -- snapshots / checkpoints
    def _save_actor(self, name: str, quality: str, ret: float, std: float, **extra) -> None:
        save_behavior_policy(
            self.run_dir / name,
            self.actor_net,
            env_id=self.cfg.env,
            quality=quality,
            eval_return=ret,
            eval_return_std=std,
            env_steps=self.step,
            action_low=self.act_low,
            action_high=self.act_high,
            extra={
                "algorithm": "SAC (torchrl SACLoss)",
                "seed": int(self.cfg.seed),
                "eval_episodes": int(self.cfg.eval_episodes),
                "medium_return_threshold": self.medium_return,
                "config": OmegaConf.to_container(self.cfg, resolve=True),
                **extra,
            },
        )

    def _replay_rows(self, n: int) -> TensorDict:
        return self.rb.storage[:n].clone() if n > 0 else TensorDict({}, batch_size=[0])

    def save_checkpoint(self) -> None:
        n = len(self.rb)
        ckpt = {
            "env_id": self.cfg.env,
            "step": self.step,
            "updates": self.updates,
            "episodes": self.episodes,
            "ep_return": self.ep_return,
            "ep_len": self.ep_len,
            "train_returns": self.train_returns,
            "eval_history": self.eval_history,
            "medium_step": self.medium_step,
            "best_return": self.best_return,
            "plateau_ref": self.plateau_ref,
            "plateau_step": self.plateau_step,
            "elapsed": self.elapsed,
            "loss": self.loss.state_dict(),
            "optims": {k: o.state_dict() for k, o in self.optims.items()},
            "replay": {"data": self._replay_rows(n), "cursor": self.rb._writer._cursor, "len": n},
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy_global": np.random.get_state(),
                "python": random.getstate(),
                "np_rng": self.np_rng.bit_generator.state,
            },
            "env": env_state(self.env, self.obs),
        }
        with atomic_write(self.run_dir / CHECKPOINT) as fh:
            torch.save(ckpt, fh)

    def load_checkpoint(self) -> bool:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return False
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        if ckpt["env_id"] != self.cfg.env:
            raise ValueError(f"{path} was trained on {ckpt['env_id']!r}, not {self.cfg.env!r}")
        for k in ("step", "updates", "episodes", "ep_return", "ep_len", "train_returns", "eval_history",
                  "medium_step", "best_return", "elapsed"):
            setattr(self, k, ckpt[k])
        # checkpoints written before plateau tracking: start the window at the best evaluation so far
        best = max(self.eval_history, key=lambda e: e["return_mean"], default=None)
        self.plateau_ref = tuple(ckpt.get("plateau_ref", (best["step"], best["return_mean"]) if best else (0, -math.inf)))
        self.plateau_step = ckpt.get("plateau_step")
        self.loss.load_state_dict(ckpt["loss"])
        for k, o in self.optims.items():
            o.load_state_dict(ckpt["optims"][k])
        rep = ckpt["replay"]
        if rep["len"] > 0:
            self.rb.extend(rep["data"])
        self.rb._writer._cursor = rep["cursor"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy_global"])
        random.setstate(ckpt["rng"]["python"])
        self.np_rng.bit_generator.state = ckpt["rng"]["np_rng"]
        self.obs = restore_env_state(self.env, ckpt["env"])
        return True

    def _log(self, msg: str) -> None:
        print(msg, flush=True)

    # -- main loop
    def run(self) -> None:
        cfg = self.cfg
        if self.load_checkpoint():
            self._log(f"[resume] {cfg.env} from step {self.step} (buffer {len(self.rb)}, updates {self.updates})")
        else:
            self._log(f"[start] {cfg.env} obs_dim={self.obs_dim} act_dim={self.act_dim} "
                      f"medium_return={self.medium_return} total_steps={cfg.total_steps}")
        if cfg.stop_after_medium and self.medium_step is not None:
            self._log(f"[stop] medium snapshot already taken at step {self.medium_step} (stop_after_medium)")
            return
        if cfg.stop_at_plateau and self.plateau_step is not None:
            self._log(f"[stop] expert snapshot plateaued at step {self.plateau_step} (stop_at_plateau)")
            return
        total = int(cfg.total_steps)
        t_last, upd_last, step_last = time.perf_counter(), self.updates, self.step
        t_start = time.perf_counter()
        elapsed0 = self.elapsed
        last_losses = None
        deadline = None if cfg.max_minutes is None else t_start + 60.0 * float(cfg.max_minutes)
        paused = False
        while self.step < total:
            if self.step < cfg.init_random_steps:
                a = self.np_rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
            else:
                a = self._policy(self.obs, False)
            next_obs, r, term, trunc, _ = self.env.step(self._scale(a))
            self.rb.add(
                TensorDict(
                    {
                        "observation": torch.as_tensor(self.obs, dtype=torch.float32),
                        "action": torch.as_tensor(a, dtype=torch.float32),
                        "next": {
                            "observation": torch.as_tensor(next_obs, dtype=torch.float32),
                            "reward": torch.tensor([r], dtype=torch.float32),
                            "terminated": torch.tensor([term]),
                            "truncated": torch.tensor([trunc]),
                            "done": torch.tensor([term or trunc]),
                        },
                    },
                    batch_size=[],
                )
            )
            self.step += 1
            self.ep_return += float(r)
            self.ep_len += 1
            if term or trunc:
                self.train_returns.append((self.step, self.ep_return, self.ep_len))
                self.episodes += 1
                self.ep_return, self.ep_len = 0.0, 0
                self.obs, _ = self.env.reset()
            else:
                self.obs = next_obs
            if self.step >= cfg.init_random_steps:
                for _ in range(int(cfg.utd)):
                    last_losses = self.update()

            stop = ""
            if self.step % int(cfg.eval_every) == 0 or self.step == total:
                stop = self._evaluate_and_snapshot()
            if self.step % int(cfg.log_every) == 0:
                now = time.perf_counter()
                ups = (self.updates - upd_last) / max(now - t_last, 1e-9)
                sps = (self.step - step_last) / max(now - t_last, 1e-9)
                t_last, upd_last, step_last = now, self.updates, self.step
                recent = [x[1] for x in self.train_returns[-10:]]
                msg = (f"step {self.step} ep {self.episodes} train_ret(last10) "
                       f"{np.mean(recent) if recent else float('nan'):.1f} updates/s {ups:.1f} steps/s {sps:.1f}")
                if last_losses is not None:
                    msg += (f" loss_q {last_losses['loss_qvalue'].item():.3f} loss_pi "
                            f"{last_losses['loss_actor'].item():.3f} alpha {last_losses['alpha'].item():.4f}")
                self._log(msg)
            if not stop and deadline is not None and time.perf_counter() >= deadline:
                paused = True
            if self.step % int(cfg.checkpoint_every) == 0 or self.step == total or stop or paused:
                self.elapsed = elapsed0 + time.perf_counter() - t_start
                self.save_checkpoint()
            if paused:
                self._log(f"[pause] step {self.step}: max_minutes={cfg.max_minutes} reached, checkpoint written; "
                          "re-run the same command to resume")
                return
            if stop:
                self._log(f"[stop] {stop}")
                break
        self._save_actor("final.pt", "final", *(self._last_eval()))
        self._log(f"[done] step {self.step} best eval {self.best_return:.1f} medium_step {self.medium_step}")

    def _last_eval(self) -> tuple[float, float]:
        if self.eval_history:
            e = self.eval_history[-1]
            return e["return_mean"], e["return_std"]
        return float("nan"), float("nan")

    def _plateau_info(self) -> dict:
        return {"plateaued": self.plateau_step is not None, "plateau_step": self.plateau_step,
                "plateau_window": int(self.cfg.plateau_window), "plateau_tolerance": float(self.cfg.plateau_tolerance)}

    def _evaluate_and_snapshot(self) -> str:
        """Evaluate, write the snapshots; a non-empty return value says why the run stops."""
        mean, std = self.evaluate()
        self.eval_history.append({"step": self.step, "return_mean": mean, "return_std": std,
                                  "updates": self.updates})
        tag = ""
        ref_step, ref_return = self.plateau_ref
        if math.isinf(ref_return) or mean > ref_return + float(self.cfg.plateau_tolerance) * abs(ref_return):
            self.plateau_ref = (self.step, mean)
            self.plateau_step = None
        elif self.plateau_step is None and self.step - ref_step >= int(self.cfg.plateau_window):
            self.plateau_step = self.step
            tag += f" [plateau: best within {self.cfg.plateau_tolerance:.0%} since step {ref_step}]"
        if mean > self.best_return:
            self.best_return = mean
            self._save_actor("expert.pt", "expert", mean, std, **self._plateau_info())
            tag += " [best -> expert.pt]"
        elif self.plateau_step == self.step and (self.run_dir / "expert.pt").is_file():
            ck = torch.load(self.run_dir / "expert.pt", map_location="cpu", weights_only=False)
            ck["extra"].update(self._plateau_info())
            with atomic_write(self.run_dir / "expert.pt") as fh:
                torch.save(ck, fh)
        if self.medium_step is None and mean >= self.medium_return:
            self.medium_step = self.step
            self._save_actor("medium.pt", "medium", mean, std)
            with atomic_write(self.run_dir / "medium_replay.pt") as fh:
                torch.save({"env_id": self.cfg.env, "step": self.step, "data": self._replay_rows(len(self.rb))}, fh)
            tag += " [medium -> medium.pt, medium_replay.pt]"
        write_text_atomic(self.run_dir / "eval_history.json", json.dumps(
            {"env_id": self.cfg.env, "medium_return": self.medium_return, "medium_step": self.medium_step,
             "history": self.eval_history}, indent=1))
        self._log(f"[eval] step {self.step} return {mean:.1f} +- {std:.1f}{tag}")
        if self.cfg.stop_after_medium and self.medium_step is not None:
            return f"medium snapshot taken at step {self.medium_step} (stop_after_medium)"
        if self.cfg.stop_at_plateau and self.plateau_step is not None:
            return f"expert snapshot plateaued at step {self.plateau_step} (stop_at_plateau)"
        return ""


@hydra.main(config_path="config/behavior", config_name="behavior", version_base="1.3")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))
    run_dir = Path(hydra.utils.to_absolute_path(cfg.run_dir))
    SACTrainer(cfg, run_dir).run()


if __name__ == "__main__":
    sys.exit(main())
