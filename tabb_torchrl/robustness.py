"""Test-time robustness of a trained policy (DROCO's evaluation, Qiao et al., ICLR 2026, arXiv 2512.02486).

A policy trained for a target env is deployed in that env with an *extra* dynamics shift -- a
kinematic or a morphology perturbation at level easy / medium / hard, the ODRL levels of the
shift catalogue -- and its score is compared with its score in the unperturbed target env::

    drop (%) = 100 * (S_target - S_perturbed) / S_target

with ``S`` the mean normalised score (the target env's reference returns) over the same
evaluation episodes (same seeds in every env). The perturbed envs are the target env's edits
followed by the perturbation's (:mod:`tabb_torchrl.envs.compose`); for each kind, the first
catalogue family of the target's robot whose edits compose with the target's is used
(:func:`perturbation_families`), or the one you name.

:func:`evaluate_robustness` runs the evaluation for any TorchRL actor; :func:`load_run_actor`
loads the actor of a run directory of ``recipes/tabb_offline.py`` (any ``algo``);
:func:`plot_robustness` draws score against level, one line per kind. The command line is
``python recipes/evaluate_robustness.py run_dir=<run>``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "KINDS",
    "LEVELS",
    "PerturbationResult",
    "RobustnessReport",
    "performance_drop",
    "perturbation_families",
    "perturbed_envs",
    "evaluate_robustness",
    "load_run_actor",
    "plot_robustness",
]

#: Perturbation kinds and the catalogue shifts that provide them (MuJoCo; Adroit).
KINDS: dict[str, tuple[str, ...]] = {"kinematic": ("kinematic", "broken-joint"), "morph": ("morph", "shrink-finger")}

#: The perturbation levels (the ODRL catalogue's: x0.8 / x0.5 / x0.2 of the MuJoCo ranges and sizes).
LEVELS: tuple[str, ...] = ("easy", "medium", "hard")


def performance_drop(nominal: float, perturbed: float) -> float:
    """The performance drop in percent, ``100 (S_nominal - S_perturbed) / S_nominal``.

    Negative when the perturbed score is higher; ``nan`` when the nominal score is not positive
    (a drop relative to it has no meaning).

    Examples:
        >>> performance_drop(80.0, 60.0)
        25.0
        >>> performance_drop(50.0, 55.0)
        -10.0
        >>> performance_drop(0.0, 10.0)
        nan
    """
    nominal, perturbed = float(nominal), float(perturbed)
    if not nominal > 0:
        return float("nan")
    return 100.0 * (nominal - perturbed) / nominal


def _candidates(target_id: str, kind: str, levels: Sequence[str]) -> list[str]:
    from tabb_torchrl.envs import get_shift, list_families

    if kind not in KINDS:
        raise ValueError(f"Unknown perturbation kind {kind!r}; valid: {sorted(KINDS)}.")
    target = get_shift(target_id)
    out = []
    for family, fam_levels in list_families().items():
        env, _, rest = family.partition("-")
        if env != target.env_name or not any(rest == s or rest.startswith(s + "-") for s in KINDS[kind]):
            continue
        if all(level in fam_levels for level in levels):
            out.append(family)
    return out


def _family_id(family: str, level: str) -> str:
    from tabb_torchrl.envs.spec import NAMESPACE, VERSION_SUFFIX

    return f"{NAMESPACE}{family}-{level}{VERSION_SUFFIX}"


def perturbation_families(target_id: str, kinds: Sequence[str] = ("kinematic", "morph"),
                          levels: Sequence[str] = LEVELS) -> dict[str, str]:
    """For each kind, the catalogue family used to perturb ``target_id``.

    Candidates are the families of the target's robot whose shift is of that kind and that have
    every level; the first (catalogue order) whose edits change nothing the target's shift
    changes is taken, else the first that composes with it (:func:`~tabb_torchrl.envs.compose.edit_conflicts`).

    Raises:
        ValueError: a kind with no family that composes with the target.

    Examples:
        >>> perturbation_families("tabb/Hopper-morph-v0")
        {'kinematic': 'Hopper-kinematic-legjnt', 'morph': 'Hopper-morph-foot'}
        >>> perturbation_families("tabb/Hopper-kinematic-legjnt-medium-v0", ["kinematic"])
        {'kinematic': 'Hopper-kinematic-footjnt'}
    """
    from tabb_torchrl.envs import get_shift
    from tabb_torchrl.envs.compose import _touched, edit_conflicts

    target = get_shift(target_id)
    out = {}
    for kind in kinds:
        fits, overlapping = [], []
        for family in _candidates(target_id, kind, levels):
            edits = [e for level in levels for e in get_shift(_family_id(family, level)).edits]
            if edit_conflicts(target.edits, edits):
                continue
            (overlapping if _touched(target.edits) & _touched(edits) else fits).append(family)
        chosen = (fits + overlapping)[:1]
        if not chosen:
            raise ValueError(f"No {kind} perturbation of the catalogue with levels {list(levels)} composes with "
                             f"{target_id}. Fix: name one with families={{'{kind}': '<Env>-<shift>-<variant>'}} "
                             "(`python -m tabb_torchrl.envs` lists them), or leave this kind out.")
        out[kind] = chosen[0]
    return out


def perturbed_envs(target_id: str, kinds: Sequence[str] = ("kinematic", "morph"), levels: Sequence[str] = LEVELS,
                   families: dict[str, str] | None = None, *, allow_override: bool = False) -> list[dict]:
    """The perturbed deployment envs: one ``{kind, family, level, perturbation_id, env_id}`` per kind and level.

    ``env_id`` is the registered composed env (:func:`~tabb_torchrl.envs.compose.register_composed_env`).

    Examples:
        >>> envs = perturbed_envs("tabb/Hopper-morph-v0", ["morph"], ["hard"])
        >>> envs[0]["perturbation_id"], envs[0]["env_id"]
        ('tabb/Hopper-morph-foot-hard-v0', 'tabb-composed/Hopper-morph__morph-foot-hard-v0')
    """
    from tabb_torchrl.envs.compose import register_composed_env

    chosen = dict(families or {})
    missing = [k for k in kinds if k not in chosen]
    if missing:
        chosen.update(perturbation_families(target_id, missing, levels))
    out = []
    for kind in kinds:
        for level in levels:
            pert = _family_id(chosen[kind], level)
            out.append({"kind": kind, "family": chosen[kind], "level": level, "perturbation_id": pert,
                        "env_id": register_composed_env(target_id, pert, allow_override=allow_override)})
    return out


@dataclass
class PerturbationResult:
    """The evaluation in one env (``kind`` ``"none"`` for the unperturbed target env).

    Attributes:
        kind, family, level: the perturbation (``None`` family / level for the target env).
        env_id: the env evaluated in.
        returns: the episodes' returns.
        return_mean, return_std: over the episodes.
        normalized_score, normalized_score_std: the target env's normalised score over the episodes.
        drop_percent: :func:`performance_drop` of ``normalized_score`` against the target env's (``0`` for it).
    """

    kind: str
    family: str | None
    level: str | None
    env_id: str
    returns: list[float]
    return_mean: float
    return_std: float
    normalized_score: float
    normalized_score_std: float
    drop_percent: float = 0.0


@dataclass
class RobustnessReport:
    """The robustness evaluation of one policy in one target env.

    Attributes:
        env_id (str): the target env.
        reference (str): reference returns of the normalised score (``odrl`` | ``ours``).
        episodes (int): episodes per env (seeds ``seed .. seed + episodes - 1`` in every env).
        seed (int): the first episode's seed.
        nominal (PerturbationResult): the unperturbed target env.
        results (list of PerturbationResult): one per kind and level.
        info (dict): anything else to record (run directory, checkpoint phase, ...).

    Examples:
        >>> r = PerturbationResult("none", None, None, "t", [1.0], 1.0, 0.0, 50.0, 0.0)
        >>> p = PerturbationResult("morph", "F", "hard", "c", [0.5], 0.5, 0.0, 40.0, 0.0, 20.0)
        >>> report = RobustnessReport("t", "odrl", 1, 0, r, [p])
        >>> report.drops()
        {'morph': {'hard': 20.0}}
        >>> sorted(report.to_dict())
        ['drops', 'env_id', 'episodes', 'info', 'levels', 'nominal', 'reference', 'results', 'seed']
    """

    env_id: str
    reference: str
    episodes: int
    seed: int
    nominal: PerturbationResult
    results: list[PerturbationResult]
    info: dict = field(default_factory=dict)

    def drops(self) -> dict[str, dict[str, float]]:
        """``{kind: {level: drop in percent}}``."""
        out: dict[str, dict[str, float]] = {}
        for r in self.results:
            out.setdefault(r.kind, {})[r.level] = r.drop_percent
        return out

    def levels(self) -> list[str]:
        """The levels evaluated, in order."""
        seen: list[str] = []
        for r in self.results:
            if r.level not in seen:
                seen.append(r.level)
        return seen

    def to_dict(self) -> dict:
        """JSON-ready (``nan`` drops become ``None``)."""
        def clean(x):
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        return clean({"env_id": self.env_id, "reference": self.reference, "episodes": self.episodes,
                      "seed": self.seed, "levels": self.levels(), "nominal": asdict(self.nominal),
                      "results": [asdict(r) for r in self.results], "drops": self.drops(), "info": dict(self.info)})

    def table(self) -> str:
        """A plain-text table: one row per env (score ± std, return, drop)."""
        rows = [("target (none)", self.nominal)] + [(f"{r.kind} {r.level} ({r.family})", r) for r in self.results]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'env':<{width}}  {'score':>15}  {'return':>10}  {'drop %':>8}"]
        for name, r in rows:
            drop = "" if r is self.nominal else ("n/a" if not math.isfinite(r.drop_percent) else f"{r.drop_percent:.1f}")
            lines.append(f"{name:<{width}}  {r.normalized_score:>7.2f} ± {r.normalized_score_std:<5.2f}  "
                         f"{r.return_mean:>10.1f}  {drop:>8}")
        return "\n".join(lines)


def _evaluate_in(env_id: str, actor, *, episodes: int, seed: int, device, max_episode_steps, score_env: str,
                 reference: str) -> tuple[list[float], np.ndarray]:
    from tabb_torchrl.pipeline.evaluation import PolicyEvaluator, normalized_scores

    evaluator = PolicyEvaluator(env_id, episodes, seed=seed, device=device, max_episode_steps=max_episode_steps)
    try:
        returns = evaluator.evaluate(actor)
    finally:
        evaluator.close()
    return [float(r) for r in returns], normalized_scores(score_env, returns, reference)


def evaluate_robustness(
    actor: Callable,
    target_id: str,
    *,
    kinds: Sequence[str] = ("kinematic", "morph"),
    levels: Sequence[str] = LEVELS,
    families: dict[str, str] | None = None,
    episodes: int = 10,
    seed: int = 0,
    device="cpu",
    max_episode_steps: int | None = None,
    reference: str = "odrl",
    allow_override: bool = False,
    progress: Callable[[str], Any] | None = None,
) -> RobustnessReport:
    """Evaluate ``actor`` in the target env and in each perturbed env; the drops against the target env.

    Args:
        actor: a TensorDict module reading ``"observation"`` and writing ``"action"`` (run under
            ``ExplorationType.DETERMINISTIC``, as the recipe's evaluation).
        target_id (str): the env the policy was trained for (a catalogue id).

    Keyword Args:
        kinds (sequence of str): perturbation kinds (:data:`KINDS`). Defaults to both.
        levels (sequence of str): levels. Defaults to :data:`LEVELS`.
        families (dict, optional): ``{kind: family}`` to choose a family (default: :func:`perturbation_families`).
        episodes (int): episodes per env. Defaults to ``10``.
        seed (int): episode ``i`` of every env is reset with ``seed + i``. Defaults to ``0``.
        device: where the actor lives.
        max_episode_steps (int, optional): a shorter time limit (``None``: the env's own).
        reference (str): reference returns of the normalised score (``odrl`` | ``ours``).
        allow_override (bool): see :func:`~tabb_torchrl.envs.compose.composed_spec`.
        progress (callable, optional): called with a line before each env.

    Returns:
        RobustnessReport: the scores, returns and drops.

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> zero = TensorDictModule(lambda obs: torch.zeros(obs.shape[0], 3), in_keys=["observation"], out_keys=["action"])
        >>> rep = evaluate_robustness(zero, "tabb/Hopper-morph-v0", kinds=["kinematic"], levels=["hard"],
        ...                           episodes=1, max_episode_steps=5)
        >>> [(r.kind, r.level, r.family) for r in rep.results], rep.nominal.kind
        ([('kinematic', 'hard', 'Hopper-kinematic-legjnt')], 'none')
    """
    envs = perturbed_envs(target_id, kinds, levels, families, allow_override=allow_override)
    common = dict(episodes=int(episodes), seed=int(seed), device=device, max_episode_steps=max_episode_steps,
                  score_env=target_id, reference=reference)

    def result(kind, family, level, env_id, base=None):
        if progress is not None:
            progress(f"evaluating in {env_id} ({episodes} episodes)")
        returns, scores = _evaluate_in(env_id, actor, **common)
        score = float(scores.mean())
        return PerturbationResult(kind, family, level, env_id, returns, float(np.mean(returns)),
                                  float(np.std(returns)), score, float(scores.std()),
                                  0.0 if base is None else performance_drop(base, score))

    nominal = result("none", None, None, target_id)
    results = [result(e["kind"], e["family"], e["level"], e["env_id"], nominal.normalized_score) for e in envs]
    return RobustnessReport(target_id, reference, int(episodes), int(seed), nominal, results)


def load_run_actor(run_dir, checkpoint: str = "checkpoint.pt", device="cpu"):
    """The actor of a run of ``recipes/tabb_offline.py`` (any ``algo``), with its checkpoint's parameters.

    Rebuilds the networks with the recipe's factories from the run's ``config.yaml`` (``algo=cql``,
    ``mobody``, ``bosa``: their :data:`~tabb_torchrl.pipeline.backbones.OWN_BACKBONES` entry; otherwise
    :func:`~tabb_torchrl.pipeline.make_rl_networks` and :func:`~tabb_torchrl.pipeline.make_loss`, the
    method's own networks included, ``algo.method_module`` imported first) and loads ``loss_module``
    from ``checkpoint``.

    Returns:
        ``(actor, cfg, checkpoint_info)``: the actor (in eval mode), the run's configuration and
        ``{"phase", "rl_step", "path"}`` of the checkpoint.

    Raises:
        FileNotFoundError: ``config.yaml`` or the checkpoint is missing.
    """
    import importlib

    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline import (
        env_dims, load_checkpoint, make_latent_model, make_loss, make_rl_networks, resolve_env_ids,
    )

    run_dir = Path(run_dir)
    cfg_path, ckpt_path = run_dir / "config.yaml", run_dir / checkpoint
    for path in (cfg_path, ckpt_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: a run directory of recipes/tabb_offline.py holds config.yaml "
                                    "and checkpoint.pt (keep checkpoint.save_final=true).")
    cfg = OmegaConf.load(cfg_path)
    state = load_checkpoint(ckpt_path)
    env_id, _ = resolve_env_ids(cfg)
    from tabb_torchrl.pipeline.backbones import own_backbone

    backbone = own_backbone(cfg.algo.name)
    if backbone is not None:  # cql, mobody, bosa (tabb_torchrl.pipeline.backbones)
        actor, loss, _, _ = backbone.make(cfg, env_id, device=device)
    else:
        module = cfg.algo.get("method_module", None)
        if module:
            importlib.import_module(str(module))
        obs_dim, act_dim = env_dims(env_id)
        latent_model = make_latent_model(cfg, obs_dim, act_dim)
        actor, qvalue, value = make_rl_networks(cfg, obs_dim, act_dim, latent_model)
        loss, _ = make_loss(cfg, actor, qvalue, value, latent_model)
    loss.load_state_dict(state["loss_module"])  # the actor shares its parameters with the loss module
    loss.to(device)
    actor.eval()
    progress = state.get("progress", {})
    return actor, cfg, {"phase": progress.get("phase"), "rl_step": progress.get("rl_step"), "path": str(ckpt_path)}


def plot_robustness(report: RobustnessReport, path, title: str | None = None) -> Path:
    """Normalised score against level (``none`` = the target env), one line per kind, ± std over episodes.

    Examples:
        >>> import tempfile, os
        >>> r = PerturbationResult("none", None, None, "t", [1.0], 1.0, 0.0, 50.0, 1.0)
        >>> ps = [PerturbationResult("morph", "F", lv, "c", [0.5], 0.5, 0.0, s, 1.0, 0.0)
        ...       for lv, s in (("easy", 45.0), ("hard", 30.0))]
        >>> out = plot_robustness(RobustnessReport("t", "odrl", 1, 0, r, ps), os.path.join(tempfile.mkdtemp(), "r.png"))
        >>> out.exists()
        True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    levels = ["none", *report.levels()]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for kind in dict.fromkeys(r.kind for r in report.results):
        rows = {r.level: r for r in report.results if r.kind == kind}
        xs = [0] + [i + 1 for i, lv in enumerate(levels[1:]) if lv in rows]
        pts = [report.nominal] + [rows[lv] for lv in levels[1:] if lv in rows]
        mean = np.array([p.normalized_score for p in pts])
        std = np.array([p.normalized_score_std for p in pts])
        family = next(iter(rows.values())).family
        ax.plot(xs, mean, marker="o", label=f"{kind} ({family})")
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_xlabel("perturbation level")
    ax.set_ylabel(f"normalised score ({report.reference})")
    ax.set_title(title or f"test-time robustness: {report.env_id}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
