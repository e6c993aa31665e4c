"""Dataset collection: exact sizes, episode bookkeeping, atomic writes, caching."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl.behavior import collect as C
from tabb_torchrl.behavior import episodes as E
from tabb_torchrl.behavior import minari_writer as W
from tabb_torchrl.behavior import stats as S
from tabb_torchrl.behavior.policies import PolicyNotFoundError, SquashedGaussianActor, save_behavior_policy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return root


def _episodes(td: TensorDict) -> list[slice]:
    done = td["next", "done"].reshape(-1).numpy()
    ends = np.flatnonzero(done) + 1
    starts = np.r_[0, ends[:-1]]
    return [slice(s, e) for s, e in zip(starts, ends)]


def test_exact_size_and_episode_continuity_hopper(minari_root):
    td = C.get_or_create_dataset("Hopper-v5", "random", 2000, 0, n_envs=4, show_progress=False)
    assert td.batch_size == torch.Size([2000])
    # every episode ends with done (the cut ones are truncated), none is empty
    assert bool(td["next", "done"][-1])
    for sl in _episodes(td):
        obs, nobs = td["observation"][sl], td["next", "observation"][sl]
        # obs[t + 1] == next_obs[t] inside an episode: no reset observation recorded as a transition
        assert torch.equal(obs[1:], nobs[:-1])
        # a done flag only on the last transition of an episode
        assert not td["next", "done"][sl][:-1].any()
    # random Hopper falls: real terminations; a truncation only where collection cut an episode (<= 4 envs)
    assert td["next", "terminated"].sum() > 50
    assert td["next", "truncated"].sum() <= 4
    assert not (td["next", "terminated"] & td["next", "truncated"]).any()
    assert torch.equal(td["next", "done"], td["next", "terminated"] | td["next", "truncated"])


def test_timeouts_are_truncations_not_terminations(minari_root):
    # Pendulum never terminates and is cut at 200 steps by its TimeLimit
    eps = E.collect_episodes("Pendulum-v1", None, 1000, n_envs=2, seed=0)
    assert sum(len(e) for e in eps) == 1000
    assert not any(e.terminations.any() for e in eps)
    complete = [e for e in eps if e.complete]
    assert complete and all(len(e) == 200 and e.truncations[-1] for e in complete)
    assert all(not e.truncations[:-1].any() for e in eps)
    for e in eps:  # observations chain
        assert len(e.observations) == len(e) + 1


def test_same_seed_same_data(minari_root, tmp_path):
    a = E.collect_episodes("Hopper-v5", None, 500, n_envs=4, seed=7)
    b = E.collect_episodes("Hopper-v5", None, 500, n_envs=4, seed=7)
    c = E.collect_episodes("Hopper-v5", None, 500, n_envs=4, seed=8)
    cat = lambda eps: np.concatenate([e.observations for e in eps])  # noqa: E731
    np.testing.assert_array_equal(cat(a), cat(b))
    assert cat(a).shape != cat(c).shape or not np.array_equal(cat(a), cat(c))


def test_policy_collection_seeded(minari_root, tmp_path):
    actor = SquashedGaussianActor(3, 1, (16,))
    save_behavior_policy(tmp_path / "pol" / "Pendulum-v1" / "medium.pt", actor, env_id="Pendulum-v1",
                         quality="medium", eval_return=-500.0, action_low=-2.0, action_high=2.0)
    kw = dict(n_envs=2, policy_root=tmp_path / "pol", show_progress=False)
    td1 = C.get_or_create_dataset("Pendulum-v1", "medium", 600, 3, tmp_path / "r1", **kw)
    td2 = C.get_or_create_dataset("Pendulum-v1", "medium", 600, 3, tmp_path / "r2", **kw)
    assert torch.equal(td1["action"], td2["action"]) and td1["action"].abs().max() <= 2
    meta = W._read_metadata(W.dataset_path("Pendulum-v1", "medium", tmp_path / "r1", size=600, seed=3))
    assert meta["tabb_policy_sha256"] and meta["tabb_seed"] == 3 and len(meta["tabb_episode_returns"]) >= 3
    assert meta["dataset_id"] == "tabb/Pendulum/medium-600-s3-v0"  # size and seed in the id (not the defaults)


def test_failed_write_leaves_nothing_loadable_then_regenerates(minari_root, monkeypatch):
    with pytest.raises(RuntimeError, match="simulated"):
        C.create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False, _fail_after_episodes=0)
    path = W.dataset_path("Hopper-v5", "random", size=300)
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir() if p.is_dir()] == []  # no temporary folder left
    import minari

    assert "tabb/Hopper/random-300-s0-v0" not in minari.list_local_datasets()
    # a process killed mid-write leaves only a hidden temporary directory: invisible to Minari
    (path.parent / ".random-300-s0-v0.tmp-1-dead" / "data").mkdir(parents=True)
    assert "tabb/Hopper/random-300-s0-v0" not in minari.list_local_datasets()
    td = C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert td.batch_size[0] == 300 and path.is_dir()


def test_failed_swap_keeps_the_old_dataset(minari_root, monkeypatch):
    """Replacing a dataset: a failed rename of the new folder puts the old one back, no temporary folder left."""
    C.create_dataset("Hopper-v5", "random", 200, 0, n_envs=2, show_progress=False)
    path = W.dataset_path("Hopper-v5", "random", size=200)
    before = W._read_metadata(path)
    real = W.os.replace

    def fail_on_new(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        return real(src, dst)

    monkeypatch.setattr(W.os, "replace", fail_on_new)
    marked = {**C._plan("Hopper-v5", "random", 200, 0, 2, None, None, None), "note": "the new one"}
    with pytest.raises(OSError, match="rename failed"):  # the same id again
        C.create_dataset("Hopper-v5", "random", 200, 0, n_envs=2, show_progress=False, _plan_override=marked)
    monkeypatch.undo()
    assert W._read_metadata(path) == before and "tabb_note" not in before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".") and p.is_dir()] == []
    assert not (path / W.LOCK_FILE).exists()


def test_cache_reuse_and_invalidation(minari_root, monkeypatch):
    calls = []
    real = C.create_dataset
    monkeypatch.setattr(C, "create_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    td1 = C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    meta_file = W.dataset_path("Hopper-v5", "random", size=300) / "data" / "metadata.json"
    mtime = meta_file.stat().st_mtime_ns
    td2 = C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert len(calls) == 1
    assert meta_file.stat().st_mtime_ns == mtime
    assert torch.equal(td1["observation"], td2["observation"])
    td3 = C.get_or_create_dataset("Hopper-v5", "random", 400, 0, n_envs=2, show_progress=False)
    assert len(calls) == 2 and td3.batch_size[0] == 400
    assert meta_file.stat().st_mtime_ns == mtime  # another id: the 300-transition dataset is untouched


def test_medium_replay_from_run_dir(minari_root, tmp_path):
    eps = E.collect_episodes("Pendulum-v1", None, 700, n_envs=1, seed=0)
    rows = TensorDict(
        {
            "observation": torch.as_tensor(np.concatenate([e.observations[:-1] for e in eps])),
            "action": torch.as_tensor(np.concatenate([e.actions for e in eps])),
            "next": {
                "observation": torch.as_tensor(np.concatenate([e.observations[1:] for e in eps])),
                "reward": torch.as_tensor(np.concatenate([e.rewards for e in eps]))[:, None],
                "terminated": torch.as_tensor(np.concatenate([e.terminations for e in eps]))[:, None],
                "truncated": torch.as_tensor(np.concatenate([e.truncations for e in eps]))[:, None],
            },
        },
        batch_size=[700],
    )
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"env_id": "Pendulum-v1", "step": 700, "data": rows}, run / "medium_replay.pt")
    td = C.get_or_create_dataset("Pendulum-v1", "medium-replay", 10**6, 0, run_dir=run, show_progress=False)
    assert td.batch_size[0] == 700
    assert torch.equal(td["observation"], rows["observation"].float())
    sub = C.get_or_create_dataset("Pendulum-v1", "medium-replay", 300, 0, run_dir=run, show_progress=False)
    assert sub.batch_size[0] == 300


def test_missing_policy_and_replay_errors(minari_root, tmp_path):
    with pytest.raises(PolicyNotFoundError, match="Available"):
        C.get_or_create_dataset("Pendulum-v1", "expert", 100, 0, policy_root=tmp_path, show_progress=False)
    with pytest.raises(FileNotFoundError, match="medium_replay.pt"):
        C.get_or_create_dataset("Pendulum-v1", "medium-replay", 100, 0, run_dir=tmp_path, show_progress=False)
    with pytest.raises(ValueError, match="quality"):
        W.dataset_id_for("Hopper-v5", "mediocre")


def test_cli_writes_and_reports_cache(minari_root, capsys):
    assert C.main(["--env", "Hopper-v5", "--quality", "random", "--size", "200", "--n-envs", "2"]) == 0
    assert C.main(["--env", "Hopper-v5", "--quality", "random", "--size", "200", "--n-envs", "2"]) == 0
    out = capsys.readouterr().out
    assert "wrote 200 transitions" in out and "cached" in out


def test_cli_default_size_is_5000_in_a_target_env(minari_root, capsys):
    # no --size: a tabb/ target env gets the ODRL / OTDF target-set size, a source env 1M
    assert C.default_size("Walker2d-v5") == C.SOURCE_SIZE == 1_000_000
    assert C.main(["--env", "tabb/Hopper-morph-v0", "--quality", "random"]) == 0
    assert "wrote 5000 transitions" in capsys.readouterr().out
    meta = W._read_metadata(W.dataset_path("tabb/Hopper-morph-v0", "random"))
    assert meta["total_steps"] == C.TARGET_SIZE == 5000


def test_target_dataset_recovers_its_shifted_env(minari_root):
    # the Minari metadata keep the tabb/ env spec, so minari can rebuild the *shifted* env
    import minari

    C.get_or_create_dataset("tabb/Hopper-morph-v0", "random", 300, 0, n_envs=2, show_progress=False)
    ds = minari.load_dataset("tabb/Hopper-morph/random-300-s0-v0")
    assert ds.spec.env_spec is not None and ds.spec.env_spec.id == "tabb/Hopper-morph-v0"
    env = ds.recover_environment()
    try:
        torso = env.unwrapped.model.geom("torso_geom")
        assert torso.size[0] == pytest.approx(0.125)  # SHIFTS.md A: torso radius 0.05 -> 0.125
    finally:
        env.close()


@pytest.mark.parametrize("env_id, expect", [
    ("tabb/Hopper-friction-0.3-v0", "valid levels: 0.1, 0.5, 2.0, 5.0"),
    ("Foo-v5", "python -m tabb_torchrl.envs"),
])
def test_cli_unknown_env_is_a_clear_error(minari_root, capsys, env_id, expect):
    assert C.main(["--env", env_id, "--quality", "random", "--size", "100"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and "Traceback" not in err
    assert not minari_root.exists() or not any(minari_root.rglob("*.hdf5"))


def test_compute_references(tmp_path):
    from tabb_torchrl.behavior import compute_references as R

    save_behavior_policy(tmp_path / "pol" / "Pendulum-v1" / "medium.pt", SquashedGaussianActor(3, 1, (8,)),
                         env_id="Pendulum-v1", quality="medium", eval_return=-1.0, action_low=-2.0,
                         action_high=2.0)
    out = tmp_path / "refs.json"
    assert R.main(["--random-episodes", "2", "--policy-episodes", "2", "--policy-root", str(tmp_path / "pol"),
                   "--output", str(out)]) == 0
    import json

    refs = json.loads(out.read_text())
    e = refs["Pendulum-v1"]
    assert e["min_source"] == "random policy, 2 episodes" and e["max_source"].startswith("medium policy")
    assert np.isfinite(e["min"]) and np.isfinite(e["max"])
    r1 = R.evaluate_returns("Pendulum-v1", None, 3, seed=1)
    np.testing.assert_array_equal(r1, R.evaluate_returns("Pendulum-v1", None, 3, seed=1))


def test_two_workers_exact_and_reproducible(minari_root):
    a = E._collect_parallel("Pendulum-v1", None, 1001, n_envs=2, n_workers=2, seed=0, show_progress=False)
    b = E._collect_parallel("Pendulum-v1", None, 1001, n_envs=2, n_workers=2, seed=0, show_progress=False)
    assert sum(len(e) for e in a) == 1001
    np.testing.assert_array_equal(np.concatenate([e.actions for e in a]), np.concatenate([e.actions for e in b]))


def test_small_sets_use_one_env_per_full_episode():
    # a 5,000-transition target set of 1,000-step episodes: ~5 full episodes, not 16 truncated starts
    assert C._plan("Hopper-v5", "random", 5000, 0, 16, None, None, None)["n_envs"] == 5
    assert C._plan("Hopper-v5", "random", 1_000_000, 0, 16, None, None, None)["n_envs"] == 16
    assert C._plan("Hopper-v5", "random", 1_000_000, 0, 16, None, None, None)["n_workers"] == 2


def test_relative_dataset_root_is_resolved(tmp_path, monkeypatch):
    """A relative ``dataset_root`` works (it used to be joined twice onto minari's paths)."""
    from tabb_torchrl.behavior.collect import get_or_create_dataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "unused"))
    td = get_or_create_dataset("Hopper-v5", "random", 300, seed=0, dataset_root="rel/minari")
    assert td.shape[0] == 300
    assert (tmp_path / "rel" / "minari").is_dir()


# ---------------------------------------------------------------------------
# dataset statistics and --record
# ---------------------------------------------------------------------------


def _made_up_episodes() -> list[E.Episode]:
    """A: terminated, return 6; B: time-limit truncation (2 steps), return 1; C: cut by the end, return 4."""

    def ep(rewards, terminal, complete=True):
        n = len(rewards)
        last = np.arange(n) == n - 1
        return E.Episode(np.zeros((n + 1, 2), np.float32), np.zeros((n, 1), np.float32),
                         np.asarray(rewards, np.float32), last & terminal, last & (not terminal), complete)

    return [ep([1.0, 2.0, 3.0], True), ep([0.5, 0.5], False), ep([4.0], False, complete=False)]


HAND = {  # complete episodes: returns 6 and 1, lengths 3 and 2
    "transitions": 6, "episodes": 2, "cut_episodes": 1, "cut_transitions": 1,
    "return_mean": 3.5, "return_std": 2.5, "return_min": 1.0, "return_max": 6.0, "length_mean": 2.5,
}


def test_dataset_stats_by_hand():
    assert S.dataset_stats(_made_up_episodes()) == HAND
    # the same data as transitions: truncations shorter than the time limit were cuts
    eps = _made_up_episodes()
    td = TensorDict({"next": {
        "reward": torch.tensor(np.concatenate([e.rewards for e in eps]))[:, None],
        "terminated": torch.tensor(np.concatenate([e.terminations for e in eps]))[:, None],
        "truncated": torch.tensor(np.concatenate([e.truncations for e in eps]))[:, None],
    }}, batch_size=[6])
    assert S.dataset_stats(td, max_episode_steps=2) == HAND
    no_limit = S.dataset_stats(td)  # every truncation counts as an episode end
    assert no_limit["episodes"] == 3 and no_limit["cut_episodes"] == 0 and no_limit["return_max"] == 6.0
    # a last episode without a done flag is a cut
    td["next", "truncated"][-1] = False
    assert S.dataset_stats(td)["cut_episodes"] == 1
    empty = S.dataset_stats([_made_up_episodes()[2]])
    assert empty["episodes"] == 0 and empty["return_mean"] is None and empty["transitions"] == 1
    with pytest.raises(TypeError, match="Episode"):
        S.dataset_stats([1, 2])


def test_record_end_to_end_and_atomic_merge(minari_root, tmp_path, capsys, monkeypatch):
    from tabb_torchrl.data.datasets import load_minari_dataset

    root, out = tmp_path / "data", tmp_path / "assets" / "dataset_returns.json"
    argv = ["--env", "Hopper-v5", "--quality", "random", "--size", "300", "--dataset-root", str(root),
            "--record", str(out)]
    assert C.main(argv) == 0
    rec = json.loads(out.read_text())["datasets"]["tabb/Hopper/random-300-s0-v0"]
    assert {k: rec[k] for k in ("dataset_id", "env_id", "quality", "size", "seed", "policy_sha256")} == {
        "dataset_id": "tabb/Hopper/random-300-s0-v0", "env_id": "Hopper-v5", "quality": "random", "size": 300,
        "seed": 0, "policy_sha256": "uniform-random"}
    assert rec["date"].count("-") == 2 and rec["transitions"] == 300
    assert str(tmp_path) not in out.read_text() and "collect_seconds" not in rec  # machine-independent only
    # the statistics by hand from the written dataset (Hopper random episodes end by termination)
    td = load_minari_dataset(None, data_path=W.dataset_path("Hopper-v5", "random", root, size=300))
    rets, lens, ends_done = [], [], []
    for sl in _episodes(td):
        rets.append(float(td["next", "reward"][sl].double().sum()))
        lens.append(sl.stop - sl.start)
        ends_done.append(bool(td["next", "terminated"][sl.stop - 1]) or lens[-1] == 1000)
    full = [r for r, ok in zip(rets, ends_done) if ok]
    assert rec["episodes"] == len(full) and rec["cut_episodes"] == len(rets) - len(full) >= 1
    assert rec["return_mean"] == pytest.approx(np.mean(full)) and rec["return_std"] == pytest.approx(np.std(full))
    assert rec["return_min"] == pytest.approx(min(full)) and rec["return_max"] == pytest.approx(max(full))
    assert "recorded in" in capsys.readouterr().out
    # a second dataset merges into the same file; the first record is kept
    assert C.main(["--env", "tabb/Hopper-morph-v0", "--quality", "random", "--size", "300", "--seed", "1",
                   "--dataset-root", str(root), "--record", str(out)]) == 0
    both = json.loads(out.read_text())
    assert both["format_version"] == S.RETURNS_FILE_FORMAT
    assert sorted(both["datasets"]) == ["tabb/Hopper-morph/random-300-s1-v0", "tabb/Hopper/random-300-s0-v0"]
    assert both["datasets"]["tabb/Hopper/random-300-s0-v0"] == rec
    assert both["datasets"]["tabb/Hopper-morph/random-300-s1-v0"]["seed"] == 1
    # recording a cached dataset again replaces its record (same numbers)
    assert C.main(argv) == 0
    assert "cached" in capsys.readouterr().out
    assert json.loads(out.read_text())["datasets"]["tabb/Hopper/random-300-s0-v0"] == rec
    # atomic: a failure before the rename leaves the old file intact and no temporary file behind
    before = out.read_text()

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(S.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        S.record_dataset_stats(out, {"dataset_id": "tabb/X/random-v0", "return_mean": 0.0})
    monkeypatch.undo()
    assert out.read_text() == before and [p.name for p in out.parent.iterdir()] == ["dataset_returns.json"]
    # a corrupt file is reported, never overwritten
    out.write_text("{oops")
    with pytest.raises(ValueError, match="dataset-returns"):
        S.record_dataset_stats(out, {"dataset_id": "tabb/X/random-v0"})
    assert out.read_text() == "{oops"


# ---------------------------------------------------------------------------
# a default level's id and its alias; the dynamics in the cache key; --benchmark qualities
# ---------------------------------------------------------------------------

LEVEL, ALIAS = "tabb/Walker2d-friction-0.5-v0", "tabb/Walker2d-friction-v0"


def test_level_id_and_alias_are_one_env(minari_root, monkeypatch):
    from tabb_torchrl.behavior.policies import canonical_env_id, load_behavior_policy, load_policy_returns, policy_path
    from tabb_torchrl.envs import get_shift

    assert get_shift(ALIAS).alias_of == LEVEL
    assert canonical_env_id(LEVEL) == canonical_env_id(ALIAS) == ALIAS
    # the policy shipped under the alias loads through the level id
    assert policy_path(LEVEL, "medium") == policy_path(ALIAS, "medium")
    by_level, by_alias = load_behavior_policy(LEVEL, "medium"), load_behavior_policy(ALIAS, "medium")
    assert by_level.metadata["sha256"] == by_alias.metadata["sha256"]
    assert load_policy_returns(LEVEL) == load_policy_returns(ALIAS) != {}
    # one Minari id, one cache key, one dataset
    assert W.dataset_id_for(LEVEL, "medium") == W.dataset_id_for(ALIAS, "medium") == "tabb/Walker2d-friction/medium-v0"
    assert W.dataset_path(LEVEL, "random") == W.dataset_path(ALIAS, "random")
    assert C._plan(LEVEL, "medium", 5000, 0, 16, None, None, None) == C._plan(ALIAS, "medium", 5000, 0, 16, None,
                                                                               None, None)
    calls = []
    real = C.create_dataset
    monkeypatch.setattr(C, "create_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    td1 = C.get_or_create_dataset(ALIAS, "random", 200, 0, n_envs=2, show_progress=False)
    td2 = C.get_or_create_dataset(LEVEL, "random", 200, 0, n_envs=2, show_progress=False)
    assert len(calls) == 1 and torch.equal(td1["observation"], td2["observation"])
    assert W._read_metadata(W.dataset_path(LEVEL, "random", size=200))["tabb_env_id"] == ALIAS


def test_cache_key_pins_the_dynamics(minari_root, monkeypatch, capsys):
    plan = C._plan("Hopper-v5", "random", 300, 0, 2, None, None, None)
    assert {"xml_sha256", "mujoco_version", "gymnasium_version"} <= set(plan)
    # the digest is of the model: a shifted env's differs from its source's and from another level's
    assert plan["xml_sha256"] == C._xml_digest("Hopper-v5") != C._xml_digest("tabb/Hopper-morph-v0")
    assert C._xml_digest(LEVEL) == C._xml_digest(ALIAS) != C._xml_digest("tabb/Walker2d-friction-2.0-v0")
    calls = []
    real = C.create_dataset
    monkeypatch.setattr(C, "create_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert len(calls) == 1
    meta = W._read_metadata(W.dataset_path("Hopper-v5", "random", size=300))
    assert meta["tabb_xml_sha256"] == plan["xml_sha256"]
    # a changed MJCF (a fixed shift spec, a new gymnasium asset) is a cache miss
    monkeypatch.setattr(C, "_xml_digest", lambda env_id: "0123456789abcdef")
    C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert len(calls) == 2
    C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert len(calls) == 2
    # so is another mujoco version
    real_version = C._package_version
    monkeypatch.setattr(C, "_package_version", lambda n: "0.0.1" if n == "mujoco" else real_version(n))
    C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert len(calls) == 3
    # and the CLI regenerates (no "cached") when the stored digest differs
    monkeypatch.setattr(C, "_xml_digest", lambda env_id: "fedcba9876543210")
    assert C.main(["--env", "Hopper-v5", "--quality", "random", "--size", "300", "--n-envs", "2"]) == 0
    out = capsys.readouterr().out
    assert len(calls) == 4 and "wrote 300 transitions" in out
    assert "replacing the cached dataset" in out and "xml_sha256 '0123456789abcdef' -> 'fedcba9876543210'" in out
    assert W._read_metadata(W.dataset_path("Hopper-v5", "random", size=300))["tabb_xml_sha256"] == "fedcba9876543210"


def test_record_fields_unchanged_by_the_dynamics_keys(minari_root):
    # the --record format (dataset_returns.json) keeps its fields: no versions, no digest
    p = C.create_dataset("Hopper-v5", "random", 100, 0, n_envs=2, show_progress=False)
    rec = S.dataset_record(p)
    assert not {"xml_sha256", "mujoco_version", "gymnasium_version"} & set(rec)


def _benchmark_script():
    """``benchmarks/collect.py`` (a script, not part of the library), imported as a module."""
    spec = importlib.util.spec_from_file_location("benchmark_collect", REPO / "benchmarks" / "collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("quality", ["medium-expert", "medium-replay"])
def test_benchmark_rejects_qualities_it_cannot_time(minari_root, capsys, quality):
    B = _benchmark_script()
    with pytest.raises(SystemExit) as exc:
        B.main(["--env", "Hopper-v5", "--quality", quality, "--size", "100"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "benchmark" in err and quality in err and "random, medium, expert" in err
    assert "Traceback" not in err and "PolicyNotFoundError" not in err
    with pytest.raises(ValueError, match="random, medium, expert"):
        B.benchmark("Hopper-v5", quality, 100)


def test_benchmark_missing_policy_is_a_clear_error(minari_root, tmp_path, capsys):
    B = _benchmark_script()
    assert B.main(["--env", "Hopper-v5", "--quality", "expert", "--size", "100",
                   "--policy-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No shipped behaviour policy") and "Traceback" not in err


def test_benchmark_runs_and_collect_has_no_benchmark_flag(minari_root, capsys):
    B = _benchmark_script()
    assert B.main(["--env", "Hopper-v5", "--quality", "random", "--size", "200", "--n-envs", "2",
                   "--baseline-steps", "200"]) == 0
    assert "ratio" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        C.main(["--env", "Hopper-v5", "--quality", "random", "--benchmark"])


# ---------------------------------------------------------------------------
# ids with the size and seed; datasets an earlier version stored under the plain id; Minari's reference scores;
# the collection lock
# ---------------------------------------------------------------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _legacy_dataset(size: int, seed: int = 0) -> Path:
    """What an earlier version wrote for (Hopper-v5, random, size, seed): the plain id, whatever the size."""
    plan = C._plan("Hopper-v5", "random", size, seed, 2, None, None, None)
    eps = E._collect_parallel("Hopper-v5", None, size, n_envs=plan["n_envs"], n_workers=plan["n_workers"],
                              seed=seed, show_progress=False)
    return W.write_minari_dataset("tabb/Hopper/random-v0", eps, env_id="Hopper-v5", metadata=plan)


def test_ids_hold_size_and_seed_unless_default():
    assert W.dataset_id_for("Hopper-v5", "medium", C.SOURCE_SIZE, 0) == "tabb/Hopper/medium-v0"
    assert W.dataset_id_for("Hopper-v5", "medium", 200_000, 0) == "tabb/Hopper/medium-200k-s0-v0"
    assert W.dataset_id_for("Hopper-v5", "medium", C.SOURCE_SIZE, 1) == "tabb/Hopper/medium-1m-s1-v0"
    assert W.dataset_id_for("tabb/Hopper-morph-v0", "medium", C.TARGET_SIZE, 0) == "tabb/Hopper-morph/medium-v0"
    assert W.dataset_id_for("tabb/Hopper-morph-v0", "medium-replay", 1500, 2) == (
        "tabb/Hopper-morph/medium-replay-1500-s2-v0")
    assert W.dataset_id_for(LEVEL, "random", 600) == W.dataset_id_for(ALIAS, "random", 600)
    ids = {W.dataset_id_for("Hopper-v5", "random", n, s) for n in (999, 1000, 1001, 10**6 + 1000) for s in (0, 1)}
    assert len(ids) == 8  # no two requests share an id


def test_a_different_size_or_seed_is_never_regenerated_in_place(minari_root, monkeypatch, capsys):
    import minari

    calls = []
    real = C.create_dataset
    monkeypatch.setattr(C, "create_dataset", lambda *a, **k: calls.append(a[2:4]) or real(*a, **k))
    legacy = _legacy_dataset(300)  # tabb/Hopper/random-v0 holding 300 transitions
    before = _tree(legacy)
    # the request it matches still finds it (nothing collected, nothing moved)
    td = C.get_or_create_dataset("Hopper-v5", "random", 300, 0, n_envs=2, show_progress=False)
    assert calls == [] and td.shape[0] == 300
    assert not W.dataset_path("Hopper-v5", "random", size=300).exists()
    # another size or seed gets its own id; the legacy dataset is untouched
    assert C.get_or_create_dataset("Hopper-v5", "random", 400, 0, n_envs=2, show_progress=False).shape[0] == 400
    assert C.get_or_create_dataset("Hopper-v5", "random", 300, 1, n_envs=2, show_progress=False).shape[0] == 300
    assert calls == [(400, 0), (300, 1)]
    assert sorted(minari.list_local_datasets(prefix="tabb/Hopper")) == [
        "tabb/Hopper/random-300-s1-v0", "tabb/Hopper/random-400-s0-v0", "tabb/Hopper/random-v0"]
    # the default request, whose id the legacy dataset holds: refused with the fix, before anything is collected
    with pytest.raises(C.DatasetIdConflictError) as err:
        C.get_or_create_dataset("Hopper-v5", "random", C.SOURCE_SIZE, 0, show_progress=False)
    msg = str(err.value)
    assert "holds a dataset of size 300, seed 0" in msg and "size 1,000,000, seed 0" in msg
    assert "not regenerated in place" in msg and "--size 1000000 --seed 0 --force" in msg
    assert "data.<source|target>.path=tabb/Hopper/random-v0" in msg
    assert C.main(["--env", "Hopper-v5", "--quality", "random"]) == 2
    assert "error: tabb/Hopper/random-v0" in capsys.readouterr().err
    assert calls == [(400, 0), (300, 1)] and _tree(legacy) == before
    # the recipe's loader reports it as a data error naming the setting
    from tabb_torchrl.pipeline.config import ConfigError
    from tabb_torchrl.pipeline.factories import load_dataset

    with pytest.raises(ConfigError, match=r"data\.source\.quality=random.*not regenerated in place"):
        load_dataset({"quality": "random", "size": C.SOURCE_SIZE, "path": None}, "Hopper-v5", root=None, seed=0,
                     obs_dim=11, action_dim=3, name="source", progress=False, collect_envs=2, collect_workers=1)
    assert _tree(legacy) == before


def test_minari_normalized_score_uses_the_odrl_references(minari_root):
    import minari

    from tabb_torchrl.data import normalized_score, reference_returns

    C.get_or_create_dataset("tabb/Hopper-morph-v0", "random", 200, 0, n_envs=2, show_progress=False)
    ds = minari.load_dataset("tabb/Hopper-morph/random-200-s0-v0")
    # ODRL's Hopper: R_min -26.3360015397715, R_max 3234.3; (1603.98 - R_min) / (R_max - R_min) = 0.5
    assert reference_returns("tabb/Hopper-morph-v0", "odrl") == (-26.3360015397715, 3234.3)
    returns = np.array([-26.3360015397715, 1603.98, 3234.3, 0.0])
    got = minari.get_normalized_score(ds, returns)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 26.3360015397715 / 3260.6360015397715], atol=1e-6)
    np.testing.assert_allclose(100 * got, normalized_score("tabb/Hopper-morph-v0", returns))
    meta = W._read_metadata(W.dataset_path("tabb/Hopper-morph-v0", "random", size=200))
    assert meta["tabb_reference_scores"] == "odrl"
    # an env without ODRL references (Pendulum) gets none: Minari says so
    C.get_or_create_dataset("Pendulum-v1", "random", 200, 0, n_envs=2, show_progress=False)
    pendulum = minari.load_dataset("tabb/Pendulum/random-200-s0-v0")
    assert "ref_min_score" not in pendulum.storage.metadata
    with pytest.raises(ValueError, match="Reference score not provided"):
        minari.get_normalized_score(pendulum, returns)
    with pytest.raises(ValueError, match="both ref_min_score and ref_max_score"):
        W.write_minari_dataset("tabb/X/random-v0", E.collect_episodes("Pendulum-v1", None, 5, seed=0),
                               env_id="Pendulum-v1", metadata={}, ref_min_score=0.0)


def test_a_second_collector_waits_for_the_first_and_reads_its_dataset(minari_root):
    """Two processes asking for one missing dataset collect it once (the collection lock is a FileLock)."""
    import threading

    plan = C._plan("Hopper-v5", "random", 200, 0, 2, None, None, None)
    path = W.dataset_path("Hopper-v5", "random", size=200)
    path.parent.mkdir(parents=True)
    first = W.collection_lock(path)
    first.acquire()  # "the other process", collecting
    waiting, result, messages = threading.Event(), {}, []

    def second():
        def report(text):
            messages.append(text)
            waiting.set()

        result["out"] = C._obtain("Hopper-v5", "random", plan, None, report=report, n_envs=2, show_progress=False)

    worker = threading.Thread(target=second)
    worker.start()
    try:
        assert waiting.wait(120), "the second collector did not report the lock"
        C.create_dataset("Hopper-v5", "random", 200, 0, n_envs=2, show_progress=False, _plan_override=plan)
    finally:
        first.release()
        worker.join(120)
    assert result["out"] == (path, False)  # it found the first one's dataset: collected once
    assert "another process is collecting it" in messages[0] and first.lock_file in messages[0]
