"""Does the source data count? The analyses of ``recipes/tbm_diagnostic.py`` on a finished run.

For a sample of source transitions ``(s, a, r, s', d)`` replayed in the target env
(:func:`~tabb_torchrl.diagnostic.replay_transitions`, which gives ``r_T, s'_T, d_T``), with the run's
``f, g, h`` and value network ``V``:

* :func:`source_target_errors` -- the error of each kind of source-row critic target against the true
  target-env target ``y* = r_T + gamma (1 - d_T) V(f(s'_T))``: the target-aligned one of Eq. 5
  (``r_hat + gamma (1 - d) V(z_hat')``, the paper's), the realised one (``r + gamma (1 - d) V(f(s'))``),
  the gated one (:func:`~tabb_torchrl.objectives.functional.source_bellman_target`), the run's own,
  each also weighted by the Eq. 7 weights of batches of the run's size; and TBM's rank correlation
  with the realised target's true error (which is the domain gap in value units), per row and over
  deciles.
* :func:`predictor_errors` -- ``h``'s latent and reward errors: on held-out target rows (the run's own
  stage-2 hold-out), and on source rows against the true target outcome, next to the error of the
  source's own outcome.
* :func:`target_advantages` -- ``A = min_j Q_targ_j(z_sa) - V(z_s)`` on the target data (the actor's
  AWR weights, Eq. 10); :func:`source_diagnostic` compares the advantages of several runs by rank.
* :func:`fit_bc_actor` / :func:`awr_vs_bc` -- behaviour cloning of the target data with the run's
  actor class, against the run's actor: returns in the target env and action distances.

:func:`source_diagnostic` runs them all and returns a JSON-ready report; :func:`report_markdown`
renders it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from tensordict import TensorDictBase

from tabb_torchrl.diagnostic.replay import check_replayable, clipped_rows, replay_transitions
from tabb_torchrl.diagnostic.run import DiagnosticError, LoadedRun, load_run, load_run_data
from tabb_torchrl.diagnostic.stats import score_curve, spearman

__all__ = [
    "SourceTargets",
    "sample_source_rows",
    "source_target_errors",
    "predictor_errors",
    "target_advantages",
    "fit_bc_actor",
    "awr_vs_bc",
    "source_diagnostic",
    "report_markdown",
]


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().reshape(-1).double().cpu().numpy()


def _with_domain(td: TensorDictBase, domain: int) -> TensorDictBase:
    from tabb_torchrl.keys import DOMAIN_KEY

    td = td.copy()
    td.set(DOMAIN_KEY, torch.full((td.shape[0],), domain, dtype=torch.int64))
    return td


@torch.no_grad()
def _latents(run: LoadedRun, td: TensorDictBase, domain: int, chunk: int = 8192):
    """The run's latents of ``td``'s rows as source (``0``) or target (``1``) rows, computed in chunks."""
    from tabb_torchrl.modules import Latents

    td = _with_domain(td, domain)
    parts = [run.latent_model.compute(td[i : i + chunk]) for i in range(0, td.shape[0], chunk)]
    return Latents(*(None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in range(6)))


def sample_source_rows(source: TensorDictBase, source_id: str, rows: int, *, seed: int = 0,
                       keep_clipped: bool = False) -> tuple[np.ndarray, int]:
    """Indices of ``rows`` source transitions drawn without replacement, and how many rows were left out.

    Rows whose observed velocities (of ``s`` or ``s'``) sit on Hopper's / Walker2d's ``[-10, 10]``
    clip are left out unless ``keep_clipped`` (their simulator state is not recoverable).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> obs = torch.zeros(6, 11); obs[0, 7] = 10.0
        >>> td = TensorDict({"observation": obs, ("next", "observation"): torch.zeros(6, 11)}, [6])
        >>> idx, n_clipped = sample_source_rows(td, "Hopper-v5", 10)
        >>> sorted(idx.tolist()), n_clipped
        ([1, 2, 3, 4, 5], 1)
    """
    bad = clipped_rows(source["observation"].numpy(), source_id) | clipped_rows(
        source["next", "observation"].numpy(), source_id)
    candidates = np.arange(source.shape[0]) if keep_clipped else np.flatnonzero(~bad)
    rng = np.random.default_rng(seed)
    idx = rng.choice(candidates, size=min(int(rows), candidates.size), replace=False)
    return np.sort(idx), 0 if keep_clipped else int(bad.sum())


class SourceTargets(NamedTuple):
    """Per-row results of :func:`source_target_errors` (numpy ``[n]`` arrays; ``kind`` names the run's own)."""

    true: np.ndarray
    """``y* = r_T + gamma (1 - d_T) V(f(s'_T))`` (target-env reward scaled as the run's rewards)."""
    realised: np.ndarray
    aligned: np.ndarray
    gated: np.ndarray
    run: np.ndarray
    """The run's own source target (its ``loss.source_target``; realised for pooled IQL)."""
    tbm: np.ndarray
    weight: np.ndarray
    """Eq. 7 weights, computed in batches of the run's ``data.n_source`` rows."""
    kind: str

    def errors(self) -> dict[str, np.ndarray]:
        """``|target - y*|`` of each kind."""
        return {k: np.abs(getattr(self, k) - self.true) for k in ("aligned", "realised", "gated", "run")}


@torch.no_grad()
def source_target_errors(run: LoadedRun, source_rows: TensorDictBase, replay: dict, target: TensorDictBase, *,
                         reward_scale: float = 1.0, seed: int = 0, gate_quantile: float | None = None) -> SourceTargets:
    """Each kind of source-row critic target against the true target-env target (see the module docstring).

    The run's own target and the Eq. 7 weights come from the run's cross-domain method on batches of
    ``data.n_source`` source rows (with ``data.n_target`` target rows drawn from ``target`` for a gated
    target), exactly as in training; for a pooled-IQL run (``iql_mixed``) the run's target is the
    realised one and the weights are those Eq. 7 would give with the run's ``loss`` settings.

    Args:
        run (LoadedRun): the run.
        source_rows (TensorDictBase): the sampled source transitions (scaled rewards).
        replay (dict): :func:`~tabb_torchrl.diagnostic.replay_transitions` of their ``(s, a)`` in the target env.
        target (TensorDictBase): the run's target dataset (scaled rewards).

    Keyword Args:
        reward_scale (float): the run's reward factor, applied to the replayed rewards.
        seed (int): draws of the batches.
        gate_quantile (float, optional): quantile of the ``"gated"`` kind. Defaults to the run's
            ``loss.gate_quantile`` (``0.9``).

    Returns:
        SourceTargets: per-row targets, TBM and weights.
    """
    from tabb_torchrl.methods import TABB, SourceRows
    from tabb_torchrl.objectives.functional import (
        gate_threshold, source_bellman_target, target_aligned_backup, tbm_weights,
    )

    cfg = run.cfg
    gamma = run.gamma
    method = run.loss.method
    is_tabb = isinstance(method, TABB)
    use_pred_term = is_tabb and method.use_predicted_termination
    q = float(gate_quantile if gate_quantile is not None else cfg.loss.get("gate_quantile", 0.9))
    anchor = None
    if is_tabb and method.anchor is not None:
        from tabb_torchrl.modules import evaluate_value

        anchor = lambda z: evaluate_value(method.anchor, z).reshape(z.shape[0])  # noqa: E731

    def backup(td, lat, value):
        r = td["next", "reward"].reshape(-1).float()
        d = td["next", "terminated"].reshape(-1).float()
        d_hat = lat.terminated_hat.reshape(-1) if use_pred_term else None
        return target_aligned_backup(r, value(lat.next_z_s), lat.r_hat.reshape(-1), value(lat.z_next_hat), d,
                                     gamma, terminated_hat=d_hat)

    lat = _latents(run, source_rows, 0)
    b = backup(source_rows, lat, run.value)
    tbm = b.tbm if anchor is None else backup(source_rows, lat, anchor).tbm
    b = b._replace(tbm=tbm)
    lat_t = _latents(run, target, 1)
    tbm_t = backup(target, lat_t, run.value if anchor is None else anchor).tbm

    # the true target: the replayed outcome, valued by the run's V at f(s'_T)
    next_obs_t = torch.as_tensor(replay["next_observation"], dtype=torch.float32)
    v_true = run.value(run.latent_model.encode_state(next_obs_t))
    r_true = torch.as_tensor(replay["reward"], dtype=torch.float32) * reward_scale
    d_true = torch.as_tensor(replay["terminated"], dtype=torch.float32)
    y_true = r_true + gamma * (1.0 - d_true) * v_true

    n = source_rows.shape[0]
    n_src, n_tgt = int(cfg.data.n_source), int(cfg.data.n_target)
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=gen)
    weight, gated, own = torch.ones(n), b.aligned.clone(), b.realised.clone()
    def as_rows(td, idx, lt, target_rows=None):
        """The method's view of rows ``idx`` (``SourceRows``), as the training step builds it."""
        cols = {"r_hat": lt.r_hat[idx].reshape(-1), "z_next_hat": lt.z_next_hat[idx]}
        if use_pred_term:
            cols["terminated_hat"] = lt.terminated_hat[idx].reshape(-1)
        return SourceRows(td["next", "reward"][idx].reshape(-1).float(), td["next", "terminated"][idx].reshape(-1).float(),
                          run.value(lt.next_z_s[idx]), lt.next_z_s[idx], cols, run.value, gamma, target_rows=target_rows)

    for start in range(0, n, max(n_src, 1)):  # batches of the run's size (Eq. 7 normalises per batch)
        rows = order[start : start + n_src]
        tgt = torch.randint(0, target.shape[0], (min(n_tgt, target.shape[0]),), generator=gen)
        threshold = gate_threshold(tbm_t[tgt], q)
        gated[rows] = source_bellman_target(
            type(b)(b.realised[rows], b.aligned[rows], b.tbm[rows]), "gated", threshold=threshold)
        if is_tabb:
            edit = method.edit_source(as_rows(source_rows, rows, lat, as_rows(target, tgt, lat_t)))
            own[rows] = edit.target.reshape(-1) if edit.target is not None else b.realised[rows]
            if edit.weight is not None:
                weight[rows] = edit.weight.reshape(-1)
        else:
            weight[rows] = tbm_weights(b.tbm[rows], temperature=float(cfg.loss.tau), scaling=str(cfg.loss.scaling),
                                       std_eps=float(cfg.loss.std_eps))
    kind = str(method.source_target) if is_tabb else "realised"
    return SourceTargets(_np(y_true), _np(b.realised), _np(b.aligned), _np(gated), _np(own), _np(b.tbm),
                         _np(weight), kind)


def _mse(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    err = (a - b) ** 2
    if scale is not None:
        err = err / scale
    return float(err.mean())


@torch.no_grad()
def predictor_errors(run: LoadedRun, target: TensorDictBase, source_rows: TensorDictBase, replay: dict, *,
                     reward_scale: float = 1.0) -> dict:
    """``h``'s errors on target rows and on source rows against the true target outcome.

    Latent errors are mean squared errors per latent dimension (``latent_mse``) and the same divided by
    ``Sigma``, the per-dimension variance of ``f(s)`` on the target data plus ``pretrain.epsilon``
    (``latent_mse_sigma``, the dynamics term of Eq. 6); reward errors are mean absolute errors in the
    run's (scaled) reward units. Target rows are split as the run's stage 2 split them (its held-out rows
    were never trained on in stage 2). On source rows the prediction ``z_hat'`` and the source's own
    ``f(s')`` are both compared with ``f(s'_T)`` of the replay.

    Returns:
        dict: ``latent_mse``, ``latent_mse_sigma``, ``reward_abs_error``, each
        ``{target_holdout, target_train, source_prediction_vs_true, source_own_vs_true}``, and ``holdout_rows``.
    """
    from tabb_torchrl.pipeline import split_holdout
    from tabb_torchrl.pipeline.runs import spawn_seeds

    cfg = run.cfg
    _, _, s_holdout, _ = spawn_seeds(int(cfg.seed), 4)
    train_idx, hold_idx = split_holdout(target.shape[0], float(cfg.pretrain.holdout_fraction), s_holdout)
    lat_t = _latents(run, target, 1)
    sigma = lat_t.z_s.var(0) + float(cfg.pretrain.epsilon)
    lat_s = _latents(run, source_rows, 0)
    z_true = run.latent_model.encode_state(torch.as_tensor(replay["next_observation"], dtype=torch.float32))
    r_true = torch.as_tensor(replay["reward"], dtype=torch.float32) * reward_scale
    r_t = target["next", "reward"].reshape(-1)
    out: dict[str, Any] = {"latent_mse": {}, "latent_mse_sigma": {}, "reward_abs_error": {},
                           "holdout_rows": int(hold_idx.numel())}
    pairs = {
        "target_holdout": (lat_t.z_next_hat[hold_idx], lat_t.next_z_s[hold_idx],
                           lat_t.r_hat[hold_idx].reshape(-1), r_t[hold_idx]),
        "target_train": (lat_t.z_next_hat[train_idx], lat_t.next_z_s[train_idx],
                         lat_t.r_hat[train_idx].reshape(-1), r_t[train_idx]),
        "source_prediction_vs_true": (lat_s.z_next_hat, z_true, lat_s.r_hat.reshape(-1), r_true),
        "source_own_vs_true": (lat_s.next_z_s, z_true, source_rows["next", "reward"].reshape(-1), r_true),
    }
    for name, (z_hat, z, r_hat, r) in pairs.items():
        out["latent_mse"][name] = _mse(z_hat, z)
        out["latent_mse_sigma"][name] = _mse(z_hat, z, sigma)
        out["reward_abs_error"][name] = float((r_hat.float() - r.float()).abs().mean())
    return out


@torch.no_grad()
def target_advantages(run: LoadedRun, target: TensorDictBase, chunk: int = 4096) -> dict[str, np.ndarray]:
    """``min_j Q_targ_j``, ``V`` and the advantage ``A = min_j Q_targ_j - V`` of each target row (Eq. 10's weights).

    Computed with the run's own latent model and the loss's conventions (target critics, min over the
    ensemble, ``V`` at the current parameters) through :meth:`CrossDomainIQLLoss.rows
    <tabb_torchrl.objectives.CrossDomainIQLLoss.rows>` and its networks.

    Returns:
        dict: ``q``, ``v``, ``advantage``, each ``[N]``.
    """
    nets = run.loss.networks()
    qs, vs = [], []
    base = _with_domain(target, 1)
    for i in range(0, base.shape[0], chunk):
        rows, _ = run.loss.rows(base[i : i + chunk])
        qs.append(nets.q_target(rows.feature_sa).amin(0))
        vs.append(nets.value_detached(rows.feature_s))
    q, v = torch.cat(qs), torch.cat(vs)
    return {"q": _np(q), "v": _np(v), "advantage": _np(q - v)}


def fit_bc_actor(run: LoadedRun, target: TensorDictBase, *, steps: int = 3000, batch_size: int = 256,
                 lr: float | None = None, seed: int = 0):
    """Behaviour cloning of the target data with the run's actor class and sizes (``-log pi(a|s)``, Adam).

    Keyword Args:
        steps (int): gradient steps. Defaults to ``3000``.
        batch_size (int): rows per step. Defaults to ``256``.
        lr (float, optional): Adam's learning rate; defaults to the run's ``optim.lr_actor``.
        seed (int): initialisation and batch draws.

    Returns:
        the trained actor (a TorchRL ``ProbabilisticActor``, deterministic mode = its mean).
    """
    from tabb_torchrl.modules import make_actor

    m = run.cfg.model
    with torch.random.fork_rng():  # the initialisation draws from a seeded generator, not the caller's stream
        torch.manual_seed(int(seed))
        actor = make_actor(run.obs_dim, run.action_dim, hidden_sizes=tuple(m.actor_hidden), activation=m.activation,
                           log_std_init=float(m.actor_log_std_init), log_std_min=float(m.actor_log_std_min),
                           log_std_max=float(m.actor_log_std_max))
    opt = torch.optim.Adam(actor.parameters(), lr=float(lr if lr is not None else run.cfg.optim.lr_actor))
    gen = torch.Generator().manual_seed(int(seed))
    obs, act = target["observation"].float(), target["action"].float()
    from tensordict import TensorDict

    for _ in range(int(steps)):
        idx = torch.randint(0, obs.shape[0], (min(batch_size, obs.shape[0]),), generator=gen)
        td = TensorDict({"observation": obs[idx]}, [idx.numel()])
        loss = -actor.get_dist(td).log_prob(act[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return actor.eval()


@torch.no_grad()
def _mean_action(actor, obs: torch.Tensor) -> torch.Tensor:
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    with set_exploration_type(ExplorationType.DETERMINISTIC):
        return actor(TensorDict({"observation": obs}, [obs.shape[0]]))["action"]


def awr_vs_bc(run: LoadedRun, target: TensorDictBase, *, bc_steps: int = 3000, episodes: int = 5,
              seed: int = 0) -> dict:
    """The run's actor (AWR, Eq. 10) against behaviour cloning of the target data.

    Both actors are evaluated deterministically for ``episodes`` episodes in the target env (the
    run's ``eval.seed_offset`` seeds, its ``eval.reference`` for the normalised score). Action
    distances are mean Euclidean distances between mean actions on the target states, and to the
    dataset's actions.

    Returns:
        dict: ``bc_steps``, ``episodes``, ``run`` / ``bc`` (``return_mean``, ``return_std``,
        ``normalized_score``), ``action_distance`` (``run_vs_bc``, ``run_vs_data``, ``bc_vs_data``).
    """
    from tabb_torchrl.pipeline.evaluation import PolicyEvaluator, normalized_scores

    cfg = run.cfg
    bc = fit_bc_actor(run, target, steps=bc_steps, seed=seed)
    ev = PolicyEvaluator(run.env_id, episodes=int(episodes), seed=int(cfg.seed) + int(cfg.eval.seed_offset),
                         max_episode_steps=cfg.eval.get("max_episode_steps"))
    out: dict[str, Any] = {"bc_steps": int(bc_steps), "episodes": int(episodes)}
    try:
        for name, actor in (("run", run.actor), ("bc", bc)):
            returns = ev.evaluate(actor)
            scores = normalized_scores(run.env_id, returns, str(cfg.eval.reference))
            out[name] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                         "normalized_score": float(scores.mean())}
    finally:
        ev.close()
    obs, act = target["observation"].float(), target["action"].float()
    a_run, a_bc = _mean_action(run.actor, obs), _mean_action(bc, obs)
    dist = lambda a, b: float((a - b).norm(dim=-1).mean())  # noqa: E731
    out["action_distance"] = {"run_vs_bc": dist(a_run, a_bc), "run_vs_data": dist(a_run, act),
                              "bc_vs_data": dist(a_bc, act)}
    return out


def _plain(node: Any) -> Any:
    from tabb_torchrl.pipeline.config import to_container

    return to_container(node)


def _summary(x: np.ndarray, w: np.ndarray | None = None) -> dict:
    out = {"mean_error": float(x.mean()), "median_error": float(np.median(x))}
    if w is not None:
        out["weighted_mean_error"] = float((w * x).sum() / max(w.sum(), 1e-12))
    return out


def _config_changes(main: LoadedRun, other: LoadedRun) -> dict:
    """``{dotted key: [main's, other's]}`` of the settings that differ (besides seed and runtime-only keys);
    a key one run predates counts at its default (:data:`~tabb_torchrl.pipeline.config.ADDED_DEFAULTS`)."""
    from tabb_torchrl.pipeline.config_hash import ADDED_DEFAULTS, HASH_EXCLUDED_KEYS, flatten_config, to_container

    def flat(cfg):
        return {**ADDED_DEFAULTS, **flatten_config(to_container(cfg))}

    a, b = flat(main.cfg), flat(other.cfg)
    ignored = (*HASH_EXCLUDED_KEYS, "seed")
    keys = sorted(k for k in set(a) | set(b) if not any(k == i or k.startswith(i + ".") for i in ignored))
    return {k: [a.get(k), b.get(k)] for k in keys if a.get(k) != b.get(k)}


def source_diagnostic(
    run_dir: Any,
    *,
    compare_run_dirs: Sequence[Any] = (),
    rows: int = 4000,
    seed: int = 0,
    groups: int = 10,
    keep_clipped: bool = False,
    checkpoint: str = "checkpoint.pt",
    bc_steps: int = 3000,
    episodes: int = 5,
    awr_vs_bc_check: bool = True,
    ot: dict | None = None,
) -> dict:
    """Every analysis of the module on one run; returns the JSON-ready report.

    Args:
        run_dir: a run of ``recipes/tabb_offline.py`` with source data (``tabb``, ``src_actor``,
            ``iql_mixed``; not ``iql_target``).

    Keyword Args:
        compare_run_dirs: runs whose advantages on the same target data are compared by rank with the
            run's (other seeds of the same configuration; a run without source rows).
        rows (int): source transitions replayed. Defaults to ``4000``.
        seed (int): the sample and batch draws. Defaults to ``0``.
        groups (int): percentile groups of the decile curves. Defaults to ``10``.
        keep_clipped (bool): keep rows whose state the observation does not give. Defaults to ``False``.
        checkpoint (str): checkpoint file name of every run. Defaults to ``"checkpoint.pt"``.
        bc_steps (int): behaviour-cloning steps. Defaults to ``3000``.
        episodes (int): evaluation episodes of each actor. Defaults to ``5``.
        awr_vs_bc_check (bool): run the AWR-vs-BC comparison. Defaults to ``True``.
        ot (dict, optional): also score the rows with OTDF's transport cost
            (:func:`~tabb_torchrl.diagnostic.ot_transition_scores` keyword arguments).

    Returns:
        dict: the report (keys listed in the docs: ``source_targets``, ``tbm``, ``predictor``,
        ``advantages``, ``awr_vs_bc``, and the run's description).

    Raises:
        DiagnosticError: a run without checkpoint or without source data.
        ReplayError: a target env whose state an observation does not set.
    """
    t0 = time.time()
    run = load_run(run_dir, checkpoint=checkpoint)
    if run.source_id is None:
        raise DiagnosticError(
            f"{run.run_dir} is a run without source data (algo={run.cfg.algo.name}, algo.use_source=false): there are "
            "no source transitions to replay. Fix: pass a tabb / src_actor / iql_mixed run (and this one as "
            "compare_run_dirs=[...] to compare advantages)."
        )
    check_replayable(run.env_id)
    source, target, factor = load_run_data(run)
    idx, n_clipped = sample_source_rows(source, run.source_id, rows, seed=seed, keep_clipped=keep_clipped)
    if idx.size < groups:
        raise DiagnosticError(f"only {idx.size} source rows can be replayed (fewer than groups={groups}). "
                              "Fix: a run with more source data, or keep_clipped=True.")
    td = source[torch.as_tensor(idx)]
    seconds: dict[str, float] = {}
    t1 = time.time()
    rep = replay_transitions(run.env_id, td["observation"].numpy(), td["action"].numpy())
    seconds["replay"] = time.time() - t1

    st = source_target_errors(run, td, rep, target, reward_scale=factor, seed=seed)
    err = st.errors()
    curves = {"TBM": score_curve("TBM", st.tbm, err["realised"], groups),
              "TBM vs aligned error": score_curve("TBM vs aligned error", st.tbm, err["aligned"], groups)}
    if ot is not None:
        from tabb_torchrl.diagnostic.ot import ot_transition_scores

        t1 = time.time()
        sas = np.concatenate([td["observation"].numpy(), td["action"].numpy(), td["next", "observation"].numpy()], 1)
        tgt_sas = np.concatenate([target["observation"].numpy(), target["action"].numpy(),
                                  target["next", "observation"].numpy()], 1)
        curves["OT cost"] = score_curve("OT cost", ot_transition_scores(sas, tgt_sas, seed=seed, **ot),
                                        err["realised"], groups)
        seconds["ot"] = time.time() - t1

    adv = target_advantages(run, target)
    compare = []
    for other_dir in compare_run_dirs:
        other = load_run(other_dir, checkpoint=checkpoint)
        if other.env_id != run.env_id:
            raise DiagnosticError(f"compare run {other.run_dir} is on {other.env_id}, the run on {run.env_id}. "
                                  "Fix: compare runs of the same task.")
        o = target_advantages(other, target)
        compare.append({"run_dir": str(other.run_dir), "label": other.label, "config_changes": _config_changes(run, other),
                        "spearman_advantage": spearman(adv["advantage"], o["advantage"]),
                        "spearman_q": spearman(adv["q"], o["q"]), "spearman_v": spearman(adv["v"], o["v"]),
                        "std_advantage": float(o["advantage"].std()), "mean_q": float(o["q"].mean())})
    a = adv["advantage"]
    report = {
        "env": run.env_id,
        "source_env": run.source_id,
        "run_dir": str(run.run_dir),
        "algo": str(run.cfg.algo.name),
        "seed": int(run.cfg.seed),
        "checkpoint_phase": run.progress["phase"],
        "rl_step": int(run.progress["rl_step"]),
        "pretrain_steps": [int(run.progress["stage1_step"]), int(run.progress["stage2_step"])],
        "data": {"source": _plain(run.cfg.data.source), "target": _plain(run.cfg.data.target),
                 "source_rows": int(source.shape[0]), "target_rows": int(target.shape[0])},
        "reward_scale": float(factor),
        "gamma": run.gamma,
        "n": int(idx.size),
        "clipped_rows_excluded": n_clipped,
        "groups": int(groups),
        "mean_oracle_error": float(err["realised"].mean()),
        "source_targets": {
            "run_kind": st.kind,
            **{k: _summary(err[k], st.weight) for k in ("aligned", "realised", "gated", "run")},
        },
        "tbm": {"mean": float(st.tbm.mean()), "mean_weight": float(st.weight.mean()),
                "min_weight": float(st.weight.min()), "max_weight": float(st.weight.max())},
        "curves": {name: c.to_dict() for name, c in curves.items()},
        "predictor": predictor_errors(run, target, td, rep, reward_scale=factor),
        "advantages": {
            "target_rows": int(a.size), "mean_q": float(adv["q"].mean()), "std_q": float(adv["q"].std()),
            "mean_v": float(adv["v"].mean()), "mean_advantage": float(a.mean()), "std_advantage": float(a.std()),
            "iqr_advantage": float(np.subtract(*np.percentile(a, [75, 25]))),
            "compare": compare,
        },
    }
    if awr_vs_bc_check:
        t1 = time.time()
        report["awr_vs_bc"] = awr_vs_bc(run, target, bc_steps=bc_steps, episodes=episodes, seed=seed)
        seconds["awr_vs_bc"] = time.time() - t1
    seconds["total"] = time.time() - t0
    report["seconds"] = seconds
    return report


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def report_markdown(report: dict) -> str:
    """The report as a markdown page (tables of every number of :func:`source_diagnostic`).

    Examples:
        >>> text = report_markdown({"env": "E", "source_env": "S", "run_dir": "r", "algo": "tabb", "seed": 0,
        ...     "checkpoint_phase": "done", "rl_step": 10, "pretrain_steps": [1, 1], "n": 4, "reward_scale": 1.0,
        ...     "clipped_rows_excluded": 0, "source_targets": {"run_kind": "aligned"}, "tbm": {}, "curves": {},
        ...     "predictor": {}, "advantages": {"compare": []}})
        >>> text.splitlines()[0]
        '# Source diagnostic: tabb seed 0 on E'
    """
    r = report
    lines = [f"# Source diagnostic: {r['algo']} seed {r['seed']} on {r['env']}", "",
             f"Run `{r['run_dir']}` (checkpoint phase {r['checkpoint_phase']}, RL step {r['rl_step']}, pre-training "
             f"{r['pretrain_steps'][0]} + {r['pretrain_steps'][1]} steps); source env {r['source_env']}; "
             f"{r['n']} source transitions replayed in the target env ({r['clipped_rows_excluded']} rows with clipped "
             f"velocities left out); reward scale {_f(r['reward_scale'], 4)}.", ""]
    st = r["source_targets"]
    if "aligned" in st:
        lines += ["## Source targets against the true target-env target", "",
                  "`|y - y*|`, `y* = r_T + gamma (1 - d_T) V(f(s'_T))`; weighted: by the Eq. 7 weights of batches of "
                  f"the run's size. The run's own target is `{st['run_kind']}`.", "",
                  "| target | mean error | median | TBM-weighted mean |", "|---|---:|---:|---:|"]
        for k in ("aligned", "realised", "gated", "run"):
            lines.append(f"| {k} | {_f(st[k]['mean_error'])} | {_f(st[k]['median_error'])} | "
                         f"{_f(st[k]['weighted_mean_error'])} |")
        lines.append("")
    if r["curves"]:
        lines += ["## TBM against the true errors", "",
                  "Spearman's rho of TBM vs the error, over the group means (deciles) and per row.", "",
                  "| score vs error | rho (groups) | rho (rows) | group means |", "|---|---:|---:|---|"]
        for name, c in r["curves"].items():
            lines.append(f"| {name} | {_f(c['spearman_groups'])} | {_f(c['spearman_items'])} | "
                         + ", ".join(_f(x) for x in c["group_means"]) + " |")
        lines.append("")
    p = r["predictor"]
    if p:
        lines += ["## The predictor h", "",
                  "Latent error: mean squared error per dimension (and divided by Sigma, Eq. 6); reward: mean "
                  "absolute error (run's reward units).", "",
                  "| rows | latent MSE | latent MSE / Sigma | reward error |", "|---|---:|---:|---:|"]
        for k in ("target_holdout", "target_train", "source_prediction_vs_true", "source_own_vs_true"):
            lines.append(f"| {k} | {_f(p['latent_mse'][k])} | {_f(p['latent_mse_sigma'][k])} | "
                         f"{_f(p['reward_abs_error'][k])} |")
        lines.append("")
    a = r["advantages"]
    if "mean_q" in a:
        lines += ["## Advantages on the target data", "",
                  f"{a['target_rows']} target rows: mean min-Q {_f(a['mean_q'])} (std {_f(a['std_q'])}), mean V "
                  f"{_f(a['mean_v'])}, advantage mean {_f(a['mean_advantage'])}, std {_f(a['std_advantage'])}, IQR "
                  f"{_f(a['iqr_advantage'])}.", ""]
    if a["compare"]:
        lines += ["| compared with | rho advantage | rho Q | rho V | settings that differ |", "|---|---:|---:|---:|---|"]
        for c in a["compare"]:
            diff = "; ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in c["config_changes"].items()) or "none"
            lines.append(f"| {c['label']} | {_f(c['spearman_advantage'])} | {_f(c['spearman_q'])} | "
                         f"{_f(c['spearman_v'])} | {diff} |")
        lines.append("")
    if "awr_vs_bc" in r:
        b = r["awr_vs_bc"]
        lines += ["## AWR against behaviour cloning", "",
                  f"BC: the run's actor class, {b['bc_steps']} steps on the target data; {b['episodes']} "
                  "deterministic episodes each in the target env.", "",
                  "| actor | return | normalised score |", "|---|---:|---:|"]
        for k in ("run", "bc"):
            lines.append(f"| {k} | {_f(b[k]['return_mean'], 4)} ± {_f(b[k]['return_std'], 3)} | "
                         f"{_f(b[k]['normalized_score'])} |")
        d = b["action_distance"]
        lines += ["", f"Mean action distance on the target states: run vs BC {_f(d['run_vs_bc'])}, run vs data "
                      f"{_f(d['run_vs_data'])}, BC vs data {_f(d['bc_vs_data'])}.", ""]
    return "\n".join(lines)
