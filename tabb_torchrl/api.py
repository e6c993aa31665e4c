"""The Python API: train, use, save and load an agent in a few lines (for notebooks and scripts).

::

    import tabb_torchrl

    agent = tabb_torchrl.TABB(preset="smoke", env="hopper_morph")    # or make_agent("iql_target", ...)
    summary = agent.fit(steps=200)                                   # the whole pipeline of the recipe
    action = agent.predict(obs)                                      # numpy or torch, one or a batch
    agent.save("agent.pt"); agent = tabb_torchrl.TABB.load("agent.pt")
    policy = tabb_torchrl.load_policy("outputs/<date>/<time>_tabb_Hopper-morph_seed0")

An :class:`Agent` holds the recipe's configuration (``recipes/config``, shipped as
``tabb_torchrl._config``) and runs it with the recipe's own steps
(:mod:`tabb_torchrl.pipeline.experiment`): the same checks, datasets, networks, losses, trainer,
checkpoints and run directory as ``python recipes/tabb_offline.py <overrides>``. Every algorithm of
the recipe (:data:`~tabb_torchrl.pipeline.ALGOS`) works through :func:`make_agent`.

A :class:`Policy` is a trained actor that is both a TorchRL module (``"observation"`` ->
``"action"``) and a plain function of observation arrays; :func:`load_policy` gets one from a run
directory. ``python -m tabb_torchrl.rollout <run dir>`` evaluates one in its target env
(:mod:`tabb_torchrl.rollout`).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase

from tabb_torchrl.pipeline.config import ConfigError

__all__ = ["Agent", "Policy", "TABB", "load_policy", "make_agent"]

_LOG = logging.getLogger("tabb_torchrl.pipeline")


def _env_spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    """``(obs_dim, action_low, action_high)`` of an env id."""
    from tabb_torchrl.envs import env_spaces

    spaces = env_spaces(env_id)
    return spaces.obs_dim, spaces.action_low, spaces.action_high


class Policy(TensorDictModuleBase):
    """A trained actor: a TorchRL module and a plain function of observations.

    * ``policy(tensordict)`` reads ``"observation"`` and writes ``"action"`` (and the actor's other
      outputs), like any TorchRL policy (``env.rollout(n, policy)``);
    * ``policy(obs)`` / :meth:`act` take an observation array -- numpy or torch, one observation
      ``[obs_dim]`` or a batch ``[..., obs_dim]`` -- and return the actions in the same type and shape
      ``[..., action_dim]``.

    The action is the actor's deterministic one (its mean, ``ExplorationType.DETERMINISTIC``, as the
    evaluations of the pipeline use) unless ``deterministic=False``, then the ambient exploration
    type decides; it is clipped to the env's action bounds, as the evaluation clips it.

    Args:
        actor: a TensorDict module reading ``"observation"`` and writing ``"action"``.

    Keyword Args:
        obs_dim (int): observation size.
        action_low, action_high (array-like): the env's action bounds.
        env_id (str, optional): the env the policy acts in.
        config (optional): the configuration it was trained with.
        info (dict, optional): about the checkpoint (``phase``, ``rl_step``, ``path``).
        deterministic (bool): act with the mean. Defaults to ``True``.

    Examples:
        >>> import numpy as np, torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import make_actor
        >>> policy = Policy(make_actor(3, 2, hidden_sizes=(8,)), obs_dim=3, action_low=[-1, -1], action_high=[1, 1])
        >>> policy(np.zeros(3)).shape, policy(np.zeros((5, 3))).dtype
        ((2,), dtype('float32'))
        >>> type(policy(torch.zeros(4, 3))).__name__
        'Tensor'
        >>> policy(TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
        >>> policy(np.zeros(5))
        Traceback (most recent call last):
        ...
        ValueError: obs has shape (5,), but the policy takes observations of size 3. Fix: ...
    """

    def __init__(self, actor, *, obs_dim: int, action_low, action_high, env_id: str | None = None,
                 config: Any = None, info: dict | None = None, deterministic: bool = True):
        super().__init__()
        self.actor = actor
        self.in_keys = list(getattr(actor, "in_keys", ["observation"]))
        self.out_keys = list(getattr(actor, "out_keys", ["action"]))
        self.obs_dim = int(obs_dim)
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32))
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32))
        device = next((p.device for p in actor.parameters()), torch.device("cpu"))
        self.register_buffer("action_low", low.to(device))
        self.register_buffer("action_high", high.to(device))
        self.action_dim = int(low.numel())
        self.env_id = env_id
        self.config = config
        self.info = dict(info or {})
        self.deterministic = bool(deterministic)

    @property
    def device(self) -> torch.device:
        """Where the actor lives (observations are moved there)."""
        return self.action_low.device

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the (deterministic, clipped) ``"action"`` of ``tensordict["observation"]``."""
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        mode = set_exploration_type(ExplorationType.DETERMINISTIC) if self.deterministic else contextlib.nullcontext()
        dtype = self.action_low.dtype
        inputs = tensordict.select(*self.in_keys)  # float64 observations (TorchRL's GymEnv) read as float32
        inputs = inputs.apply(lambda t: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t)
        with mode:
            out = self.actor(inputs)
        action = out.get("action")
        out.set("action", torch.maximum(torch.minimum(action, self.action_high), self.action_low))
        tensordict.update(out.exclude(*self.in_keys))
        return tensordict

    def __call__(self, *args, **kwargs):
        obs = args[0] if args else None
        if len(args) == 1 and not kwargs and not isinstance(obs, TensorDictBase):
            return self.act(obs)
        return super().__call__(*args, **kwargs)

    @torch.no_grad()
    def act(self, obs):
        """The action(s) of ``obs``: numpy in, numpy out (float32); torch in, torch out (on ``obs``'s device).

        Args:
            obs: ``[obs_dim]`` or ``[..., obs_dim]`` (a list is read as a numpy array).

        Raises:
            ValueError: ``obs`` is not an array of numbers of the policy's observation size.
        """
        as_torch = isinstance(obs, torch.Tensor)
        if as_torch:
            x = obs
        else:
            try:
                x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
            except (TypeError, ValueError) as err:
                raise ValueError(f"obs must be an array of numbers ([obs_dim] or [batch, obs_dim]), got "
                                 f"{type(obs).__name__}: {err}") from err
        if x.ndim == 0 or x.shape[-1] != self.obs_dim:
            raise ValueError(
                f"obs has shape {tuple(x.shape)}, but the policy takes observations of size {self.obs_dim}"
                f"{f' ({self.env_id})' if self.env_id else ''}. Fix: pass one observation [{self.obs_dim}] or a "
                f"batch [batch, {self.obs_dim}]."
            )
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.obs_dim).to(self.device, torch.float32)
        action = self.forward(TensorDict({"observation": flat}, batch_size=[flat.shape[0]])).get("action")
        action = action.reshape(*lead, self.action_dim)
        return action.to(obs.device) if as_torch else action.cpu().numpy()

    def extra_repr(self) -> str:
        return f"env_id={self.env_id!r}, obs_dim={self.obs_dim}, action_dim={self.action_dim}"


def load_policy(path: str | os.PathLike, *, device: torch.device | str = "cpu", checkpoint: str | None = None
                ) -> Policy:
    """The trained actor of a run directory (``recipes/tabb_offline.py`` or :meth:`Agent.fit`) or of an
    :meth:`Agent.save` file, as a :class:`Policy`.

    The networks are rebuilt from the run's ``config.yaml`` by the pipeline's factories (any
    ``algo``, :func:`~tabb_torchrl.pipeline.experiment.load_run`) and get the checkpoint's parameters;
    no dataset is read. A checkpoint written before the end of training (the run stopped early)
    loads with a warning; ``policy.info`` says its phase and RL step.

    Args:
        path: the run directory (or the file).

    Keyword Args:
        device: where to put the actor. Defaults to the CPU.
        checkpoint: the checkpoint file name in a run directory (default: the run's ``checkpoint.filename``).

    Returns:
        Policy: with ``env_id``, ``config`` and ``info`` (``phase``, ``rl_step``, ``path``).

    Raises:
        FileNotFoundError: no such path, or a folder without ``config.yaml`` or checkpoint.
        ConfigError: a damaged checkpoint.

    Examples:
        >>> load_policy("no/such/run")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no/such/run does not exist. Fix: pass a run directory of recipes/tabb_offline.py ...
    """
    from tabb_torchrl.pipeline.experiment import load_run

    cfg, parts, state, env_id = load_run(path, device=device, checkpoint=checkpoint)
    progress = state.get("progress", {})
    info = {"phase": progress.get("phase"), "rl_step": progress.get("rl_step"), "path": str(path)}
    if info["phase"] != "done":
        _LOG.warning("%s: the checkpoint is from phase %s (RL step %s), before the end of training: the policy "
                     "is not the final one (resume the run to finish it)", path, info["phase"], info["rl_step"])
    obs_dim, low, high = _env_spaces(env_id)
    return Policy(parts.actor, obs_dim=obs_dim, action_low=low, action_high=high, env_id=env_id, config=cfg,
                  info=info)


class Agent:
    """An offline RL agent of the recipe (TABB or a baseline): configure, :meth:`fit`, :meth:`predict`,
    :meth:`save` / :meth:`load`.

    The configuration is the recipe's (``recipes/config``) with overrides, exactly as
    ``python recipes/tabb_offline.py <overrides>`` composes it; :meth:`fit` runs the recipe's
    pipeline (:func:`~tabb_torchrl.pipeline.experiment.run_experiment`) and writes the same run
    directory (``summary.json``, ``checkpoint.pt``, logs).

    Args:
        algo (str, optional): one of :data:`~tabb_torchrl.pipeline.ALGOS` (``None``: the config's, tabb).
        overrides (list of str): hydra override strings (``["+preset=smoke", "optim.steps=500"]``).
        **settings: more overrides as keyword arguments: ``preset="smoke"``, ``env="walker2d_friction"``
            (a file of ``recipes/config/env`` or an env id), ``seed=1``, ``run_dir="runs/a"``, a dotted key
            through ``**{"optim.steps": 500}`` or with ``__`` for the dots (``optim__steps=500``).

    Raises:
        ConfigError: an unknown algorithm, group option or key.

    Examples:
        >>> agent = Agent("iql_target", preset="smoke", seed=1)
        >>> agent
        Agent(algo='iql_target', env='tabb/Hopper-morph-v0', trained=False)
        >>> agent.config.seed, agent.config.optim.steps
        (1, 200)
        >>> agent.predict([0.0] * 11)
        Traceback (most recent call last):
        ...
        RuntimeError: the agent has no policy yet. Fix: call agent.fit(...) first, or load a trained one with Agent.load(path).
    """

    #: The algorithm of a subclass (``TABB.algo_name == "tabb"``); ``None`` for :class:`Agent` itself.
    algo_name: str | None = None

    def __init__(self, algo: str | None = None, overrides: Sequence[str] = (), **settings: Any):
        from tabb_torchrl.pipeline.compose import compose_config, config_overrides

        algo = algo or self.algo_name
        if self.algo_name is not None and algo != self.algo_name:
            raise ConfigError(f"{type(self).__name__} runs algo={self.algo_name}, not {algo}. "
                              f"Fix: tabb_torchrl.make_agent({algo!r}, ...).")
        self._overrides = config_overrides(algo, overrides, **settings)
        self._config = compose_config(algo, overrides, **settings)
        self._policy: Policy | None = None
        self._state: dict | None = None
        self._history: list[dict] = []
        #: The summary of the last :meth:`fit` (``summary.json``; ``None`` before, or after a stopped session).
        self.summary: dict | None = None
        #: The run directory of the last :meth:`fit` (or the one loaded).
        self.run_dir: Path | None = None

    # ------------------------------------------------------------------ properties
    @property
    def config(self):
        """The configuration (an omegaconf ``DictConfig``); after :meth:`fit`, the one the run used."""
        return self._config

    @property
    def algo(self) -> str:
        """The algorithm (``algo.name``)."""
        return str(self._config.algo.name)

    @property
    def env_id(self) -> str:
        """The target env id (training data and evaluation)."""
        return str(self._config.env.id)

    @property
    def policy(self) -> Policy:
        """The trained actor as a :class:`Policy` (a TorchRL module and a function of observations)."""
        if self._policy is None:
            raise RuntimeError("the agent has no policy yet. Fix: call agent.fit(...) first, or load a trained one "
                               "with Agent.load(path).")
        return self._policy

    @property
    def actor(self):
        """The trained TorchRL actor (``"observation"`` -> ``"action"``; stochastic unless run deterministically)."""
        return self.policy.actor

    @property
    def history(self) -> list[dict]:
        """The evaluations of the trained policy's run (``step``, ``normalized_score``, ...)."""
        return list(self._history)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(algo={self.algo!r}, env={self.env_id!r}, trained={self._policy is not None})"

    # ------------------------------------------------------------------ training
    def fit(
        self,
        source: TensorDictBase | str | os.PathLike | None = None,
        target: TensorDictBase | str | os.PathLike | None = None,
        steps: int | None = None,
        *,
        eval_every: int | None = None,
        callback: Callable[[Agent, dict], Any] | None = None,
        progress: bool = True,
    ) -> dict | None:
        """Run the whole pipeline once: datasets, latent pre-training, RL, evaluations, summary.

        Each call is a new run (new networks, a new run directory; ``run_dir`` / ``resume`` settings
        behave as in the recipe). The thread count of ``threads`` is used during the run and restored after.

        Args:
            source: the source dataset -- a TensorDict of transitions (the keys of
                :data:`~tabb_torchrl.data.TRANSITION_KEYS`), a Minari id or ``.hdf5`` path (``data.source.path``;
                ``data.source.size`` caps the rows used), or ``None`` (generated / cached as configured).
            target: the target dataset, likewise.
            steps (int, optional): RL gradient steps (``optim.steps``; ``None``: the config's).

        Keyword Args:
            eval_every (int, optional): RL steps between evaluations (``eval.every``); the last step is
                always evaluated.
            callback (callable, optional): ``callback(agent, entry)`` after each evaluation, with
                ``entry = {"step", "normalized_score", "normalized_score_std", "return_mean", ...}``;
                :meth:`predict` works inside it (the policy being trained).
            progress (bool): progress bars. Defaults to ``True``.

        Returns:
            dict or None: the summary (as ``summary.json``), ``None`` when the run stopped at
            ``max_steps_this_session``.

        Raises:
            ConfigError: a bad argument, setting or dataset (nothing written when found before the start).
            tabb_torchrl.pipeline.trainer.NonFiniteLossError: a loss became NaN or inf.

        Examples:
            >>> import tempfile
            >>> work = tempfile.mkdtemp()
            >>> agent = make_agent("iql_target", preset="smoke", data__root=work, run_dir=f"{work}/run",
            ...                    pretrain__stage1_steps=10, pretrain__stage2_steps=10)
            >>> summary = agent.fit(steps=10, progress=False)
            >>> summary["steps"], [e["step"] for e in agent.history], agent.predict([0.0] * 11).shape
            (10, [10], (3,))
        """
        from omegaconf import OmegaConf

        from tabb_torchrl.pipeline.experiment import run_experiment

        cfg = copy.deepcopy(self._config)
        for name, value, key in (("steps", steps, "optim.steps"), ("eval_every", eval_every, "eval.every")):
            if value is None:
                continue
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < (name == "eval_every"):
                bound = "> 0" if name == "eval_every" else ">= 0"
                raise ConfigError(f"{name}={value!r} must be an integer {bound} ({key}). Fix: e.g. fit({name}=1000).")
            OmegaConf.update(cfg, key, int(value))
        cfg.progress = bool(progress)
        given = {}
        for which, data in (("source", source), ("target", target)):
            if data is None:
                continue
            if which == "source" and not cfg.algo.use_source:
                raise ConfigError(f"algo={cfg.algo.name} uses no source data, but source= was given. "
                                  "Fix: drop source=, or use an algorithm that reads source data (e.g. tabb).")
            if isinstance(data, TensorDictBase):
                if data.batch_dims != 1 or data.shape[0] == 0:
                    raise ConfigError(f"{which}= must be a flat, non-empty TensorDict of transitions (batch size "
                                      f"[N]); got batch size {list(data.shape)}. Fix: e.g. {which}=td.reshape(-1).")
                given[which] = data
                cfg.data[which].size = int(data.shape[0])  # what the config records of it
            elif isinstance(data, (str, os.PathLike)):
                cfg.data[which].path = os.fspath(data)
            else:
                raise ConfigError(
                    f"{which}= must be a TensorDict of transitions, a Minari dataset id or .hdf5 path, or None; got "
                    f"{type(data).__name__}. Fix: e.g. tabb_torchrl.data.make_transitions(...) builds a TensorDict "
                    "from arrays."
                )
        info = {"data_given_to_fit": sorted(given)} if given else None

        def on_evaluate(trainer, entry):
            if self._policy is None or self._policy.actor is not trainer.actor:
                self._set_policy(trainer.actor, trainer.cfg)
            if callback is not None:
                callback(self, entry)

        threads = torch.get_num_threads()
        try:
            result = run_experiment(cfg, overridden=self._overrides, source=given.get("source"),
                                    target=given.get("target"), on_evaluate=on_evaluate, run_state=info)
        finally:
            torch.set_num_threads(threads)
        trainer = result.trainer
        self._config = result.plan.cfg
        self.run_dir = result.plan.run_dir
        self._set_policy(trainer.actor, result.plan.cfg)
        self._state = trainer.state_dict()
        self._history = list(trainer.history)
        self.summary = result.summary
        return result.summary

    def _set_policy(self, actor, cfg, info: dict | None = None) -> None:
        obs_dim, low, high = _env_spaces(str(cfg.env.id))
        self._policy = Policy(actor, obs_dim=obs_dim, action_low=low, action_high=high, env_id=str(cfg.env.id),
                              config=cfg, info=info)

    # ------------------------------------------------------------------ use
    def predict(self, obs):
        """The deterministic action(s) of ``obs`` (see :meth:`Policy.act`): numpy in, numpy out; torch in, torch out.

        Args:
            obs: one observation ``[obs_dim]`` or a batch ``[..., obs_dim]``.

        Raises:
            RuntimeError: the agent has not been trained or loaded.
            ValueError: ``obs`` has the wrong size.
        """
        return self.policy.act(obs)

    def evaluate(self, episodes: int | None = None, *, seed: int | None = None,
                 max_episode_steps: int | None = None) -> dict:
        """Evaluate the policy in the target env (:func:`tabb_torchrl.rollout.evaluate_policy`).

        Defaults are the run's evaluation settings (``eval.episodes``, seeds ``seed + eval.seed_offset``,
        ``eval.max_episode_steps``), so the numbers match the run's last evaluation.

        Returns:
            dict: ``returns``, ``return_mean``, ``return_std``, ``normalized_score``, ``normalized_score_std``, ...
        """
        from tabb_torchrl.rollout import evaluate_policy

        cfg = self._config
        return evaluate_policy(
            self.policy, self.env_id, episodes=int(episodes or cfg.eval.episodes),
            seed=int(cfg.seed) + int(cfg.eval.seed_offset) if seed is None else int(seed),
            max_episode_steps=cfg.eval.max_episode_steps if max_episode_steps is None else max_episode_steps,
            reference=str(cfg.eval.reference),
        )

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the trained agent to one file: the run's checkpoint (the format of ``checkpoint.pt``:
        networks, optimisers, counters, history) with its configuration.

        :meth:`load` and :func:`load_policy` read it; the loaded agent predicts exactly as this one.

        Args:
            path: the file (``"agent.pt"``); written atomically.

        Keyword Args:
            overwrite (bool): replace an existing file. Defaults to ``False``.

        Returns:
            Path: the file written.

        Raises:
            RuntimeError: nothing to save (not trained or loaded).
            FileExistsError: ``path`` exists and ``overwrite`` is false.
            IsADirectoryError: ``path`` is a folder.
        """
        from omegaconf import OmegaConf

        from tabb_torchrl.pipeline.runs import save_checkpoint_atomic

        if self._state is None:
            raise RuntimeError("nothing to save: the agent has not been trained. Fix: call agent.fit(...) first.")
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder; Agent.save writes one file. Fix: e.g. {path / 'agent.pt'}.")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists. Fix: pass overwrite=True, or another path.")
        save_checkpoint_atomic({**self._state, "config": OmegaConf.to_container(self._config, resolve=True)}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str = "cpu") -> Agent:
        """An agent from a file of :meth:`save` or a run directory (``recipes/tabb_offline.py`` or :meth:`fit`).

        The networks are rebuilt from the saved configuration (no dataset is read) and get the saved
        parameters; :meth:`predict`, :meth:`evaluate` and :meth:`save` work at once.

        Args:
            path: the file or run directory.

        Keyword Args:
            device: where to put the networks. Defaults to the CPU.

        Raises:
            FileNotFoundError: no such file, or a folder that is not a run directory.
            ConfigError: the saved agent is of another algorithm than ``cls`` (``TABB.load`` of an IQL agent),
                or the file is damaged.
        """
        from tabb_torchrl.pipeline.experiment import load_run

        cfg, parts, state, env_id = load_run(path, device=device)
        algo = str(cfg.algo.name)
        if cls.algo_name is not None and algo != cls.algo_name:
            raise ConfigError(f"{path} holds a {algo} agent; {cls.__name__}.load loads {cls.algo_name} agents. "
                              "Fix: tabb_torchrl.Agent.load(path) loads any algorithm.")
        agent = cls.__new__(cls)
        agent._overrides = []
        agent._config = cfg
        agent._state = {k: v for k, v in state.items() if k != "config"}
        progress = state.get("progress", {})
        agent._set_policy(parts.actor, cfg, {"phase": progress.get("phase"), "rl_step": progress.get("rl_step"),
                                             "path": str(path)})
        agent._history = list(state.get("history") or [])
        agent.run_dir = Path(path) if Path(path).is_dir() else None
        agent.summary = None
        if agent.run_dir is not None and (agent.run_dir / "summary.json").is_file():
            import json

            agent.summary = json.loads((agent.run_dir / "summary.json").read_text())
        return agent


class TABB(Agent):
    """A TABB agent (``algo=tabb``): :class:`Agent` with TABB's algorithm fixed.

    Examples:
        >>> TABB(preset="smoke", env="walker2d_friction")
        TABB(algo='tabb', env='tabb/Walker2d-friction-v0', trained=False)
    """

    algo_name = "tabb"

    def __init__(self, overrides: Sequence[str] = (), **settings: Any):
        if "algo" in settings:
            raise ConfigError("TABB runs algo=tabb. Fix: tabb_torchrl.make_agent(<algo>, ...) for another algorithm.")
        super().__init__("tabb", overrides, **settings)


def make_agent(algo: str, overrides: Sequence[str] = (), **settings: Any) -> Agent:
    """An :class:`Agent` of any algorithm of the recipe (``tabb`` gives a :class:`TABB`).

    Args:
        algo: one of :data:`~tabb_torchrl.pipeline.ALGOS` (``tabb``, ``iql_target``, ``cql``, ...) or a named
            variant (:func:`~tabb_torchrl.pipeline.algo_variants`: ``tabb_plus``, ...).
        overrides: hydra override strings.
        **settings: keyword overrides (see :class:`Agent`).

    Examples:
        >>> make_agent("cql", preset="smoke").config.algo.cql.with_lagrange
        True
        >>> make_agent("sac")
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo='sac' is unknown; valid: tabb, iql_mixed, ... Fix: pass one of them.
    """
    if algo == "tabb":
        return TABB(overrides, **settings)
    return Agent(algo, overrides, **settings)
