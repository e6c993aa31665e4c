"""Behaviour policies: the SAC actors that generate the offline datasets.

The datasets of the TABB data protocol (``docs`` → *Data protocol*; D4RL /
ODRL / OTDF practice) are rollouts of SAC agents trained online in each
environment and stopped at a given *quality* (``"medium"``: first evaluation
reaching about one third of the expert return; ``"expert"``: best evaluation of
the run).  ``recipes/train_behavior.py`` trains them; the actor of each
snapshot ships with the package as a small checkpoint under
``tabb_torchrl/assets/policies/<env id with '/' → '__'>/<quality>.pt`` next to a
``returns.json`` with its evaluation returns.

This module holds

* :class:`SquashedGaussianActor` -- the actor network (an MLP giving the mean and
  standard deviation of a ``tanh``-squashed Gaussian), used by the SAC recipe
  through TorchRL's ``ProbabilisticActor`` / ``TanhNormal``;
* :class:`BehaviorPolicy` -- a batched numpy-in / numpy-out policy wrapping an
  actor, deterministic (``tanh(mean)``) or stochastic (seeded samples);
* :func:`save_behavior_policy`, :func:`load_behavior_policy`,
  :func:`list_behavior_policies` -- the shipped checkpoint format.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tabb_torchrl.io import atomic_path, atomic_write, write_text_atomic

__all__ = [
    "SquashedGaussianActor",
    "BehaviorPolicy",
    "PolicyNotFoundError",
    "save_behavior_policy",
    "load_behavior_policy",
    "list_behavior_policies",
    "policy_path",
    "env_id_to_dirname",
    "dirname_to_env_id",
    "QUALITIES",
    "ship_run_snapshots",
    "load_policy_returns",
    "policy_from_checkpoint",
    "checkpoint_hash",
    "canonical_env_id",
    "env_id_spellings",
]

#: Policy qualities a checkpoint can have (datasets ``medium-replay`` and
#: ``medium-expert`` are derived from these; ``random`` needs no checkpoint).
QUALITIES = ("medium", "expert")

#: Version of the shipped checkpoint format written by :func:`save_behavior_policy`.
FORMAT_VERSION = 1

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


class PolicyNotFoundError(FileNotFoundError):
    """No shipped behaviour policy for an ``(env_id, quality)`` pair.

    Raised by :func:`load_behavior_policy` (and the dataset collection that
    needs a policy); the message lists the shipped ``(env, quality)`` pairs and
    the commands that train and ship a missing one.  A subclass of
    :class:`FileNotFoundError`, so ``except FileNotFoundError`` catches it too.

    Examples:
        >>> try:
        ...     load_behavior_policy("tabb/Hopper-morph-v0", "expert", root="/no/such/folder")
        ... except PolicyNotFoundError as err:
        ...     print(isinstance(err, FileNotFoundError), str(err).splitlines()[0])
        True No shipped behaviour policy for env 'tabb/Hopper-morph-v0' with quality 'expert'.
    """


class SquashedGaussianActor(nn.Module):
    """MLP actor of a ``tanh``-squashed Gaussian policy (SAC's actor).

    ``forward(obs)`` returns ``(loc, scale)`` of the pre-``tanh`` Gaussian; the
    action is ``tanh(loc + scale * eps)`` (stochastic) or ``tanh(loc)``
    (deterministic), in ``[-1, 1]``.  The log standard deviation is bounded
    smoothly in ``[log_std_min, log_std_max]`` (CleanRL's SAC).

    Args:
        obs_dim: Observation size.
        action_dim: Action size.
        hidden_sizes: Widths of the hidden layers.
        activation: ``"relu"``, ``"tanh"`` or ``"elu"``.
        log_std_min: Lower bound of the log standard deviation.
        log_std_max: Upper bound of the log standard deviation.

    Examples:
        >>> import torch
        >>> actor = SquashedGaussianActor(11, 3, hidden_sizes=(32, 32))
        >>> loc, scale = actor(torch.zeros(5, 11))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([5, 3]), True)
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)
        layers: list[nn.Module] = []
        width = self.obs_dim
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * self.action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the pre-``tanh`` Gaussian."""
        loc, raw = self.head(self.trunk(obs)).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        return loc, log_std.exp()

    def architecture(self) -> dict[str, Any]:
        """Constructor arguments, as stored in a shipped checkpoint."""
        return {
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "hidden_sizes": list(self.hidden_sizes),
            "activation": self.activation,
            "log_std_min": self.log_std_min,
            "log_std_max": self.log_std_max,
        }


class BehaviorPolicy(nn.Module):
    """A batched behaviour policy: numpy observations in, numpy actions out.

    Actions are ``tanh`` squashed to ``[-1, 1]`` and mapped affinely to
    ``[action_low, action_high]`` (the identity for all our MuJoCo envs).
    Stochastic actions use the policy's own ``torch.Generator``, so a seeded
    policy gives the same actions for the same observations whatever else uses
    torch's global random state.

    Args:
        actor: The actor network.
        deterministic: ``True`` for ``tanh(mean)``, ``False`` for samples (the
            D4RL protocol collects ``medium`` / ``expert`` data with samples).
        seed: Seed of the sampling generator.
        action_low: Lower action bound(s) of the env.
        action_high: Upper action bound(s) of the env.
        metadata: Free-form information (env id, quality, return, ...).

    Examples:
        >>> import numpy as np
        >>> policy = BehaviorPolicy(SquashedGaussianActor(11, 3, (32, 32)), seed=0)
        >>> actions = policy(np.zeros((4, 11), dtype=np.float32))
        >>> actions.shape, actions.dtype, bool(np.abs(actions).max() <= 1)
        ((4, 3), dtype('float32'), True)
        >>> policy.reseed(0); a1 = policy(np.zeros((2, 11)))
        >>> policy.reseed(0); a2 = policy(np.zeros((2, 11)))
        >>> bool((a1 == a2).all())
        True
    """

    def __init__(
        self,
        actor: SquashedGaussianActor,
        *,
        deterministic: bool = False,
        seed: int | None = None,
        action_low: float | np.ndarray = -1.0,
        action_high: float | np.ndarray = 1.0,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.deterministic = deterministic
        self.metadata = dict(metadata or {})
        low = torch.as_tensor(np.broadcast_to(action_low, (actor.action_dim,)).copy(), dtype=torch.float32)
        high = torch.as_tensor(np.broadcast_to(action_high, (actor.action_dim,)).copy(), dtype=torch.float32)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        self.generator = torch.Generator()
        self.reseed(seed)

    @property
    def obs_dim(self) -> int:
        """Observation size."""
        return self.actor.obs_dim

    @property
    def action_dim(self) -> int:
        """Action size."""
        return self.actor.action_dim

    def reseed(self, seed: int | None) -> None:
        """Reset the sampling generator (``None``: a non-deterministic seed)."""
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool | None = None) -> torch.Tensor:
        """Actions for a batch of observations (torch in, torch out)."""
        deterministic = self.deterministic if deterministic is None else deterministic
        loc, scale = self.actor(obs.to(torch.float32))
        if deterministic:
            pre = loc
        else:
            eps = torch.randn(loc.shape, generator=self.generator, dtype=loc.dtype)
            pre = loc + scale * eps
        a = torch.tanh(pre)
        return self.action_low + 0.5 * (a + 1.0) * (self.action_high - self.action_low)

    def forward(self, obs: np.ndarray | torch.Tensor, deterministic: bool | None = None) -> np.ndarray:
        """Actions for a batch (or a single) observation, as a float32 numpy array."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = obs_t.ndim == 1
        if single:
            obs_t = obs_t.unsqueeze(0)
        out = self.act(obs_t, deterministic).numpy().astype(np.float32, copy=False)
        return out[0] if single else out


# ---------------------------------------------------------------------------
# Shipped checkpoints
# ---------------------------------------------------------------------------


def _level_to_alias() -> dict[str, str]:
    """``{level id: alias id}`` of the catalogue's default levels (``{}`` without the catalogue)."""
    try:
        from tabb_torchrl.envs.spec import catalogue
    except ImportError:  # pragma: no cover - the envs package ships with us
        return {}
    return {s.alias_of: s.env_id for s in catalogue().values() if s.alias_of is not None}


def canonical_env_id(env_id: str) -> str:
    """The one spelling under which the assets of an env are stored and looked up.

    A shift with a ``default_level`` registers two ids for the same env: the
    level id (``tabb/Walker2d-friction-0.5-v0``) and the alias without the level
    (``tabb/Walker2d-friction-v0``, see ``ShiftSpec.alias_of``).  Behaviour
    policies, ``"ours"`` reference returns, recorded dataset returns and Minari
    dataset ids are keyed by the **alias**, the spelling the shipped assets
    use; a default-level id is mapped to its alias, every other id (plain
    gymnasium ids, ids without an alias, unknown ids) is returned unchanged.

    Examples:
        >>> canonical_env_id("tabb/Walker2d-friction-0.5-v0")
        'tabb/Walker2d-friction-v0'
        >>> canonical_env_id("tabb/Walker2d-friction-v0"), canonical_env_id("tabb/Walker2d-friction-2.0-v0")
        ('tabb/Walker2d-friction-v0', 'tabb/Walker2d-friction-2.0-v0')
        >>> canonical_env_id("Hopper-v5")
        'Hopper-v5'
    """
    if not env_id.startswith("tabb/"):
        return env_id
    return _level_to_alias().get(env_id, env_id)


def env_id_spellings(env_id: str) -> list[str]:
    """Every id of the same env: :func:`canonical_env_id` first, then the other spelling(s).

    Examples:
        >>> env_id_spellings("tabb/Walker2d-friction-0.5-v0")
        ['tabb/Walker2d-friction-v0', 'tabb/Walker2d-friction-0.5-v0']
        >>> env_id_spellings("tabb/Hopper-morph-v0")
        ['tabb/Hopper-morph-v0']
    """
    canonical = canonical_env_id(env_id)
    out = [canonical]
    if canonical.startswith("tabb/"):
        out += sorted(level for level, alias in _level_to_alias().items() if alias == canonical)
    if env_id not in out:
        out.append(env_id)
    return out


def env_id_to_dirname(env_id: str) -> str:
    """Folder name of an env's policies: ``'/'`` replaced by ``'__'``.

    Examples:
        >>> env_id_to_dirname("tabb/Hopper-morph-v0")
        'tabb__Hopper-morph-v0'
    """
    return env_id.replace("/", "__")


def dirname_to_env_id(dirname: str) -> str:
    """Inverse of :func:`env_id_to_dirname`.

    Examples:
        >>> dirname_to_env_id("tabb__Hopper-morph-v0")
        'tabb/Hopper-morph-v0'
    """
    return dirname.replace("__", "/")


def _policies_root(root: str | os.PathLike | None = None):
    if root is not None:
        return Path(root)
    return files("tabb_torchrl") / "assets" / "policies"


def _env_dir(env_id: str, root: str | os.PathLike | None = None):
    """Folder of an env's policies: that of :func:`canonical_env_id`, or an existing one of another spelling."""
    base = _policies_root(root)
    for spelling in env_id_spellings(env_id):
        d = base / env_id_to_dirname(spelling)
        if d.is_dir():
            return d
    return base / env_id_to_dirname(canonical_env_id(env_id))


def policy_path(env_id: str, quality: str, root: str | os.PathLike | None = None):
    """Path of the checkpoint of ``(env_id, quality)`` (it may not exist).

    Both spellings of a default-level env (``tabb/Walker2d-friction-0.5-v0`` and
    its alias ``tabb/Walker2d-friction-v0``) give the folder of the canonical
    one (:func:`canonical_env_id`).

    Examples:
        >>> str(policy_path("Hopper-v5", "medium", root="/x"))
        '/x/Hopper-v5/medium.pt'
        >>> str(policy_path("tabb/Walker2d-friction-0.5-v0", "medium", root="/x"))
        '/x/tabb__Walker2d-friction-v0/medium.pt'
    """
    return _env_dir(env_id, root) / f"{quality}.pt"


def list_behavior_policies(root: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The ``(env_id, quality)`` pairs that have a shipped checkpoint.

    Env ids are canonical (:func:`canonical_env_id`): a policy stored under a
    default-level id is listed under its alias.

    Args:
        root: Folder to look in (default: the package's ``assets/policies``).

    Examples:
        >>> pairs = list_behavior_policies()
        >>> all(isinstance(e, str) and isinstance(q, str) for e, q in pairs)
        True
    """
    base = _policies_root(root)
    if not base.is_dir():
        return []
    pairs = []
    for env_dir in sorted(base.iterdir(), key=lambda p: p.name):
        if not env_dir.is_dir():
            continue
        env_id = canonical_env_id(dirname_to_env_id(env_dir.name))
        for f in sorted(env_dir.iterdir(), key=lambda p: p.name):
            if f.name.endswith(".pt") and (env_id, f.name[: -len(".pt")]) not in pairs:
                pairs.append((env_id, f.name[: -len(".pt")]))
    return pairs


def save_behavior_policy(
    path: str | os.PathLike,
    actor: SquashedGaussianActor,
    *,
    env_id: str,
    quality: str,
    eval_return: float,
    eval_return_std: float = float("nan"),
    env_steps: int = 0,
    action_low: float | Sequence[float] = -1.0,
    action_high: float | Sequence[float] = 1.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a small shipped checkpoint (actor weights + metadata), atomically.

    Args:
        path: Target ``.pt`` file.
        actor: The actor to save.
        env_id: Env the policy was trained in.
        quality: ``"medium"``, ``"expert"``, ...
        eval_return: Mean deterministic evaluation return at the snapshot.
        eval_return_std: Its standard deviation over the evaluation episodes.
        env_steps: Environment steps of training at the snapshot.
        action_low: Env action lower bound(s).
        action_high: Env action upper bound(s).
        extra: More metadata (training seed, config, ...).

    Returns:
        The saved dictionary.

    Examples:
        >>> import tempfile, os
        >>> actor = SquashedGaussianActor(11, 3, (32, 32))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ck = save_behavior_policy(os.path.join(d, "medium.pt"), actor,
        ...                               env_id="Hopper-v5", quality="medium", eval_return=1000.0)
        ...     sorted(ck)[:4]
        ['action_high', 'action_low', 'architecture', 'env_id']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "quality": quality,
        "architecture": actor.architecture(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()},
        "eval_return": float(eval_return),
        "eval_return_std": float(eval_return_std),
        "env_steps": int(env_steps),
        "action_low": np.broadcast_to(np.asarray(action_low, dtype=np.float32), (actor.action_dim,)).tolist(),
        "action_high": np.broadcast_to(np.asarray(action_high, dtype=np.float32), (actor.action_dim,)).tolist(),
        "extra": dict(extra or {}),
    }
    # to a file object: the archive's inner folder is then always "archive", never the temporary name
    with atomic_write(path) as fh:
        torch.save(ckpt, fh)
    return ckpt


def checkpoint_hash(path: str | os.PathLike) -> str:
    """SHA-256 (first 16 hex digits) of a checkpoint file's bytes.

    Examples:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "f.pt"); _ = open(p, "wb").write(b"abc")
        ...     checkpoint_hash(p)
        'ba7816bf8f01cfea'
    """
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def policy_from_checkpoint(
    path: str | os.PathLike, *, deterministic: bool = False, seed: int | None = None
) -> BehaviorPolicy:
    """Build a :class:`BehaviorPolicy` from a checkpoint written by :func:`save_behavior_policy`.

    Examples:
        >>> import tempfile, os
        >>> actor = SquashedGaussianActor(11, 3, (32, 32))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = os.path.join(d, "medium.pt")
        ...     _ = save_behavior_policy(p, actor, env_id="Hopper-v5", quality="medium", eval_return=1.0)
        ...     policy = policy_from_checkpoint(p, seed=0)
        >>> policy.metadata["env_id"], policy.action_dim
        ('Hopper-v5', 3)
    """
    with open(path, "rb") as fh:
        ckpt = torch.load(fh, map_location="cpu", weights_only=False)
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported behaviour-policy format {ckpt.get('format_version')!r}")
    arch = ckpt["architecture"]
    actor = SquashedGaussianActor(
        arch["obs_dim"],
        arch["action_dim"],
        arch["hidden_sizes"],
        arch["activation"],
        arch["log_std_min"],
        arch["log_std_max"],
    )
    actor.load_state_dict(ckpt["state_dict"])
    actor.eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict",)}
    meta["path"] = str(path)
    meta["sha256"] = checkpoint_hash(path)
    return BehaviorPolicy(
        actor,
        deterministic=deterministic,
        seed=seed,
        action_low=np.asarray(ckpt["action_low"], dtype=np.float32),
        action_high=np.asarray(ckpt["action_high"], dtype=np.float32),
        metadata=meta,
    )


def load_behavior_policy(
    env_id: str,
    quality: str = "medium",
    *,
    deterministic: bool = False,
    seed: int | None = None,
    root: str | os.PathLike | None = None,
) -> BehaviorPolicy:
    """Load the shipped behaviour policy of ``env_id`` at a given quality.

    Args:
        env_id: Gymnasium id (``"Hopper-v5"``, ``"tabb/Hopper-morph-v0"``, ...); a
            default-level id and its alias give the same policy (:func:`canonical_env_id`).
        quality: ``"medium"`` or ``"expert"``.
        deterministic: Act with ``tanh(mean)`` instead of samples.
        seed: Seed of the policy's sampling generator.
        root: Folder holding ``<env dir>/<quality>.pt`` (default: the package assets).

    Raises:
        PolicyNotFoundError: No such checkpoint; the message lists the available pairs.

    Warns:
        UserWarning: for an ``"expert"`` snapshot whose training run had not reached a
            plateau (its metadata say ``plateaued: false``): data collected with it
            are weaker than D4RL's expert data.

    Examples:
        >>> try:
        ...     load_behavior_policy("NoSuchEnv-v0", "medium")
        ... except PolicyNotFoundError as err:
        ...     print(str(err).splitlines()[0])
        No shipped behaviour policy for env 'NoSuchEnv-v0' with quality 'medium'.
    """
    path = policy_path(env_id, quality, root)
    if not path.is_file():
        available = list_behavior_policies(root)
        listing = "\n".join(f"  {e} / {q}" for e, q in available) or "  (none)"
        canonical = canonical_env_id(env_id)
        alias = f" (looked up as {canonical!r})" if canonical != env_id else ""
        raise PolicyNotFoundError(
            f"No shipped behaviour policy for env {env_id!r} with quality {quality!r}.{alias}\n"
            f"Available (env, quality) pairs:\n{listing}\n"
            "Train one with `python recipes/train_behavior.py env=<env id>`, then ship its snapshots "
            "with `python -m tabb_torchrl.behavior.policies ship behavior_runs/<run>` "
            "(see tabb_torchrl/assets/policies/README.md)."
        )
    policy = policy_from_checkpoint(path, deterministic=deterministic, seed=seed)
    extra = policy.metadata.get("extra", {})
    if quality == "expert" and extra.get("plateaued") is False:
        import warnings

        warnings.warn(
            f"The expert policy of {env_id!r} is the best snapshot of a run that had not plateaued "
            f"(return {policy.metadata['eval_return']:.1f} after {policy.metadata['env_steps']} env steps): "
            "expert datasets collected with it are weaker than D4RL's. Train longer with "
            f"`python recipes/train_behavior.py env={env_id}` and ship the run again.",
            UserWarning,
            stacklevel=2,
        )
    return policy


def load_policy_returns(env_id: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``returns.json`` shipped next to an env's policies (``{}`` if none).

    Examples:
        >>> load_policy_returns("NoSuchEnv-v0")
        {}
    """
    p = _env_dir(env_id, root) / "returns.json"
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def ship_run_snapshots(
    run_dir: str | os.PathLike,
    qualities: Sequence[str] = QUALITIES,
    root: str | os.PathLike | None = None,
) -> list[Path]:
    """Copy the snapshots of a SAC run (``<run_dir>/<quality>.pt``) into the policy assets.

    Also updates ``returns.json`` next to them with each snapshot's evaluation
    return, its standard deviation and the env steps of training.  A run of a
    default-level id is shipped under its alias (:func:`canonical_env_id`).

    Args:
        run_dir: A ``recipes/train_behavior.py`` run directory.
        qualities: Snapshots to ship (missing ones are skipped).
        root: Destination folder (default: the package's ``assets/policies``).

    Returns:
        The written checkpoint paths.

    Examples:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as run, tempfile.TemporaryDirectory() as dst:
        ...     _ = save_behavior_policy(os.path.join(run, "medium.pt"), SquashedGaussianActor(3, 1, (8,)),
        ...                              env_id="tabb/X-y-v0", quality="medium", eval_return=5.0)
        ...     [p.name for p in ship_run_snapshots(run, root=dst)], list_behavior_policies(dst)
        (['medium.pt'], [('tabb/X-y-v0', 'medium')])
    """
    import shutil

    written = []
    base = Path(str(_policies_root(root)))
    for q in qualities:
        src = Path(run_dir) / f"{q}.pt"
        if not src.is_file():
            continue
        with open(src, "rb") as fh:
            ck = torch.load(fh, map_location="cpu", weights_only=False)
        env_dir = base / env_id_to_dirname(canonical_env_id(ck["env_id"]))
        env_dir.mkdir(parents=True, exist_ok=True)
        dst = env_dir / f"{q}.pt"
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        returns_file = env_dir / "returns.json"
        returns = json.loads(returns_file.read_text()) if returns_file.is_file() else {}
        returns[q] = {
            "eval_return": ck["eval_return"],
            "eval_return_std": ck["eval_return_std"],
            "eval_episodes": ck["extra"].get("eval_episodes"),
            "env_steps": ck["env_steps"],
            "seed": ck["extra"].get("seed"),
            "sha256": checkpoint_hash(dst),
        }
        if "plateaued" in ck["extra"]:
            returns[q]["plateaued"] = bool(ck["extra"]["plateaued"])
        write_text_atomic(returns_file, json.dumps(returns, indent=2, sort_keys=True) + "\n")
        written.append(dst)
    return written


def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tabb_torchrl.behavior.policies")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list shipped (env, quality) pairs with their returns")
    sh = sub.add_parser("ship", help="copy a run's snapshots into the package assets")
    sh.add_argument("run_dir")
    sh.add_argument("--qualities", nargs="+", default=list(QUALITIES))
    args = p.parse_args(argv)
    if args.cmd == "list":
        for env_id, q in list_behavior_policies():
            r = load_policy_returns(env_id).get(q, {})
            note = "" if r.get("plateaued", True) else "  (run not plateaued)"
            print(f"{env_id:32s} {q:8s} return {r.get('eval_return', float('nan')):8.1f} "
                  f"steps {r.get('env_steps', '?')}{note}")
    else:
        for path in ship_run_snapshots(args.run_dir, args.qualities):
            print(f"shipped {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main())
