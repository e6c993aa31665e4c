"""Dataset loaders: D4RL-style HDF5 and Minari, and validate_transitions."""

import os
import socket

import h5py
import numpy as np
import pytest
import torch

from tabb_torchrl.data import (
    DatasetError,
    load_d4rl_hdf5,
    load_minari_dataset,
    make_transitions,
    validate_transitions,
    write_d4rl_hdf5,
)


def _random_transitions(n=20, obs_dim=3, act_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    term = torch.zeros(n, dtype=torch.bool)
    term[min(7, n - 1)] = True
    trunc = torch.zeros(n, dtype=torch.bool)
    trunc[min(13, n - 2)] = True
    return make_transitions(
        torch.randn(n, obs_dim, generator=g),
        torch.rand(n, act_dim, generator=g) * 2 - 1,
        torch.randn(n, obs_dim, generator=g),
        torch.randn(n, generator=g),
        term,
        trunc,
    )


def _write_raw(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


# ---------------------------------------------------------------- HDF5
def test_hdf5_round_trip(tmp_path):
    td = _random_transitions()
    path = write_d4rl_hdf5(td, tmp_path / "sub" / "d.hdf5")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    back = load_d4rl_hdf5(path)
    assert set(back.keys(True, True)) == set(td.keys(True, True))
    for key in td.keys(True, True):
        assert back.get(key).dtype == td.get(key).dtype, key
        assert torch.equal(back.get(key), td.get(key)), key
    assert back["next", "terminated"].squeeze(-1).nonzero().tolist() == [[7]]
    assert back["next", "truncated"].squeeze(-1).nonzero().tolist() == [[13]]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = write_d4rl_hdf5(_random_transitions(n=5), tmp_path / "d.hdf5")
    bad = _random_transitions(n=5)
    del bad["action"]
    with pytest.raises(DatasetError):
        write_d4rl_hdf5(bad, path)
    assert load_d4rl_hdf5(path).shape == (5,)
    assert sorted(os.listdir(tmp_path)) == ["d.hdf5"]
    # a failure inside h5py, after the temporary file was created: old file intact, no temporary file left
    with pytest.raises(ValueError):
        write_d4rl_hdf5(_random_transitions(n=7), path, compression="no-such-filter")
    assert load_d4rl_hdf5(path).shape == (5,)
    assert sorted(os.listdir(tmp_path)) == ["d.hdf5"]


def test_hdf5_file_is_not_private(tmp_path):
    """The file gets the usual permissions (0666 minus the umask), not ``mkstemp``'s 0600."""
    umask = os.umask(0o022)
    try:
        path = write_d4rl_hdf5(_random_transitions(n=3), tmp_path / "d.hdf5")
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_next_observation_derivation_two_episodes(tmp_path):
    """Episode A: 4 steps ending in a terminal; episode B: 3 steps ending in a time-out."""
    obs = np.arange(7 * 2, dtype=np.float64).reshape(7, 2)  # float64 on purpose
    actions = np.arange(7, dtype=np.float64).reshape(7, 1) / 10
    rewards = np.arange(7, dtype=np.float64) + 0.5
    terminals = np.array([0, 0, 0, 1, 0, 0, 0], dtype=bool)
    timeouts = np.array([0, 0, 0, 0, 0, 0, 1], dtype=bool)
    path = _write_raw(
        tmp_path / "toy.hdf5", observations=obs, actions=actions, rewards=rewards,
        terminals=terminals, timeouts=timeouts,
    )
    td = load_d4rl_hdf5(path)
    # by hand: rows 0..5 kept (row 6 is a time-out, and the last row)
    keep = [0, 1, 2, 3, 4, 5]
    assert td.shape == (6,)
    assert td["observation"].dtype == torch.float32
    np.testing.assert_array_equal(td["observation"].numpy(), obs[keep])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), obs[[1, 2, 3, 4, 5, 6]])
    np.testing.assert_allclose(td["action"].numpy(), actions[keep])
    np.testing.assert_allclose(td["next", "reward"].squeeze(-1).numpy(), rewards[keep])
    assert td["next", "terminated"].squeeze(-1).tolist() == [False, False, False, True, False, False]
    assert not td["next", "truncated"].any()


def test_timeouts_are_not_terminals(tmp_path):
    td = _random_transitions(n=10)
    td["next", "truncated"][:] = False
    td["next", "truncated"][4] = True
    td["next", "terminated"][:] = False
    td["next", "done"] = td["next", "terminated"] | td["next", "truncated"]
    back = load_d4rl_hdf5(write_d4rl_hdf5(td, tmp_path / "t.hdf5"))
    assert not back["next", "terminated"].any()
    assert back["next", "truncated"].squeeze(-1).nonzero().tolist() == [[4]]
    assert back["next", "done"].squeeze(-1).nonzero().tolist() == [[4]]


def test_max_episode_steps_fallback(tmp_path):
    n = 10
    obs = np.arange(n, dtype=np.float32).reshape(n, 1)
    terminals = np.zeros(n, dtype=bool)
    terminals[2] = True  # episode 0..2; then 3..9 cut every 3 steps: timeouts at 5, 8
    path = _write_raw(
        tmp_path / "x.hdf5", observations=obs, actions=np.zeros((n, 1), np.float32),
        rewards=np.zeros(n, np.float32), terminals=terminals,
    )
    td = load_d4rl_hdf5(path, max_episode_steps=3)
    assert td["observation"].squeeze(-1).tolist() == [0, 1, 2, 3, 4, 6, 7]
    assert td["next", "observation"].squeeze(-1).tolist() == [1, 2, 3, 4, 5, 7, 8]
    # without timeouts information only the last row is dropped
    assert load_d4rl_hdf5(path).shape == (9,)


def test_nan_row_reported(tmp_path):
    td = _random_transitions()
    td["next", "observation"][11, 1] = float("nan")
    td["next", "reward"][15] = float("inf")
    path = write_d4rl_hdf5(td, tmp_path / "nan.hdf5")
    with pytest.raises(DatasetError) as err:
        load_d4rl_hdf5(path)
    assert str(err.value) == (
        f"{path}: key 'next_observations' holds NaN or inf in 1 row(s) of the file, first at row 11. "
        f"Regenerate or re-download the dataset, or load it with validate=False and drop those rows (td[mask])."
    )
    td["next", "observation"][11, 1] = 0.0
    with pytest.raises(DatasetError, match=r"dataset: 'next.reward' holds NaN or inf in 1 row\(s\), first at row 15\. "):
        validate_transitions(td)


def _rows_file(path, n=12, timeout_rows=(), **overrides):
    """A D4RL file without next_observations: observations[i] = [i, -i], rewards[i] = i."""
    arrays = dict(
        observations=np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=np.arange(n, dtype=np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.isin(np.arange(n), timeout_rows),
    )
    arrays.update(overrides)
    return _write_raw(path, **arrays)


def test_nan_reported_at_its_file_row_after_dropped_rows(tmp_path):
    """The time-out at file row 2 is dropped: transition 6 is file row 7, yet the message names row 7."""
    obs = np.stack([np.arange(12), -np.arange(12)], axis=1).astype(np.float32)
    obs[7, 1] = np.nan
    path = _rows_file(tmp_path / "nan7.hdf5", timeout_rows=[2], observations=obs)
    with pytest.raises(DatasetError, match=r"nan7\.hdf5: key 'observations' holds NaN or inf in 1 row\(s\) of the "
                                           r"file, first at row 7\. Regenerate"):
        load_d4rl_hdf5(path)
    # a NaN observation on a dropped time-out row still reaches the data, as row 4's next observation
    obs = np.stack([np.arange(12), -np.arange(12)], axis=1).astype(np.float32)
    obs[5, 0] = np.inf
    path = _rows_file(tmp_path / "inf5.hdf5", timeout_rows=[2, 5], observations=obs)
    with pytest.raises(DatasetError, match=r"key 'observations' holds NaN or inf in 1 row\(s\) of the file, first at row 5\."):
        load_d4rl_hdf5(path)
    rewards = np.arange(12, dtype=np.float32)
    rewards[[9, 10]] = np.nan
    path = _rows_file(tmp_path / "rew.hdf5", timeout_rows=[2], rewards=rewards)
    with pytest.raises(DatasetError, match=r"key 'rewards' holds NaN or inf in 2 row\(s\) of the file, first at row 9\."):
        load_d4rl_hdf5(path)
    # validate=False returns the data, NaN included, row 7 at transition 6
    td = load_d4rl_hdf5(_rows_file(tmp_path / "again.hdf5", timeout_rows=[2], rewards=rewards), validate=False)
    assert td["next", "reward"].squeeze(-1).isnan().nonzero().squeeze(-1).tolist() == [8, 9]


@pytest.mark.parametrize(
    "overrides, message",
    [
        # rewards [N, 2] without next_observations used to load flattened and misaligned
        ({"rewards": np.zeros((12, 2), np.float32)},
         "key 'rewards' has shape [12, 2], expected [12] or [12, 1] ('observations' has shape [12, 2])."),
        # ... and with next_observations raised a raw RuntimeError
        ({"rewards": np.zeros((12, 2), np.float32), "next_observations": np.zeros((12, 2), np.float32)},
         "key 'rewards' has shape [12, 2], expected [12] or [12, 1] ('observations' has shape [12, 2])."),
        # narrower next_observations raised numpy's "cannot reshape"
        ({"next_observations": np.zeros((12, 1), np.float32)},
         "key 'next_observations' has shape [12, 1], expected [12, 2] ('observations' has shape [12, 2])."),
        ({"terminals": np.zeros(11, bool)},
         "key 'terminals' has shape [11], expected [12] or [12, 1] ('observations' has shape [12, 2])."),
        ({"timeouts": np.zeros((12, 3), bool)},
         "key 'timeouts' has shape [12, 3], expected [12] or [12, 1] ('observations' has shape [12, 2])."),
        ({"actions": np.zeros(12, np.float32)},
         "key 'actions' has shape [12], expected [12, act_dim] ('observations' has shape [12, 2])."),
        ({"actions": np.zeros((10, 1), np.float32)},
         "key 'actions' has shape [10, 1], expected [12, act_dim] ('observations' has shape [12, 2])."),
        ({"observations": np.zeros((12, 2, 2), np.float32)},
         "key 'observations' has shape [12, 2, 2], expected [N, obs_dim] (one flat observation per row)."),
        # non-numeric data used to raise a TypeError
        ({"rewards": np.array([b"x"] * 12)}, "key 'rewards' has dtype |S1, expected a numeric array (float, int or bool)."),
    ],
)
def test_hdf5_key_shapes_and_dtypes_checked(tmp_path, overrides, message):
    path = _rows_file(tmp_path / "bad.hdf5", **overrides)
    with pytest.raises(DatasetError) as err:
        load_d4rl_hdf5(path)
    assert str(err.value) == (
        f"{path}: {message} Fix: rewrite the file with that key in the expected shape (write_d4rl_hdf5 "
        f"writes valid files), or regenerate / re-download the dataset."
    )


def test_hdf5_group_instead_of_array(tmp_path):
    path = _rows_file(tmp_path / "g.hdf5")
    with h5py.File(path, "a") as f:
        del f["rewards"]
        f.create_group("rewards")
    with pytest.raises(DatasetError, match=r"g\.hdf5: key 'rewards' is an HDF5 Group, expected an array \(dataset\)\. Fix:"):
        load_d4rl_hdf5(path)


def test_wrong_obs_size_message():
    td = _random_transitions(obs_dim=11, act_dim=3)
    with pytest.raises(DatasetError) as err:
        validate_transitions(td, obs_dim=17, act_dim=3, name="hopper-medium", env_id="HalfCheetah-v5")
    assert str(err.value) == (
        "hopper-medium does not fit env HalfCheetah-v5: observation size 11 but the env has 17. The dataset was "
        "collected in another env: load the dataset collected in HalfCheetah-v5, or use the env it was collected in."
    )
    with pytest.raises(DatasetError) as err:
        validate_transitions(td, obs_dim=11, act_dim=6)
    assert str(err.value) == (
        "dataset does not fit the env: action size 3 but the env has 6. The dataset was collected in another env: "
        "load the dataset collected in this env, or pass the sizes of the env it was collected in "
        "(obs_dim= / act_dim=, or env_id=)."
    )
    # env_id alone: the sizes come from the env's spaces (Hopper-v5: 11, 3)
    assert validate_transitions(td, env_id="Hopper-v5") is td
    with pytest.raises(DatasetError, match="observation size 11 but the env has 17, action size 3 but the env has 6"):
        validate_transitions(td, env_id="HalfCheetah-v5")
    assert validate_transitions(td, obs_dim=11, act_dim=3) is td


def test_hdf5_loader_checks_env_sizes(tmp_path):
    path = write_d4rl_hdf5(_random_transitions(obs_dim=3, act_dim=2), tmp_path / "d.hdf5")
    # Pendulum-v1: observation 3, action 1
    with pytest.raises(DatasetError) as err:
        load_d4rl_hdf5(path, env_id="Pendulum-v1")
    assert str(err.value) == (
        f"{path} does not fit env Pendulum-v1: action size 2 but the env has 1. The dataset was collected in "
        f"another env: load the dataset collected in Pendulum-v1, or use the env it was collected in."
    )
    with pytest.raises(DatasetError, match=r"d\.hdf5 does not fit the env: observation size 3 but the env has 5\."):
        load_d4rl_hdf5(path, obs_dim=5, validate=False)  # the size check runs without validate too
    # given sizes win over the env's: no mismatch left
    assert load_d4rl_hdf5(path, env_id="Pendulum-v1", act_dim=2).shape == (20,)
    assert load_d4rl_hdf5(path, obs_dim=3, act_dim=2).shape == (20,)


def test_recipe_dataset_names_its_env(tmp_path):
    from tabb_torchrl.pipeline.factories import ConfigError, load_dataset

    path = write_d4rl_hdf5(_random_transitions(obs_dim=3, act_dim=2), tmp_path / "d.hdf5")
    with pytest.raises(ConfigError) as err:
        load_dataset({"path": str(path), "size": 0}, "Hopper-v5", root=None, seed=0, obs_dim=11, action_dim=3,
                     name="source")
    assert (
        "source dataset does not fit env Hopper-v5: observation size 3 but the env has 11, action size 2 but the "
        "env has 3. The dataset was collected in another env: load the dataset collected in Hopper-v5, or use the "
        "env it was collected in."
    ) in str(err.value)


def test_missing_key_message(tmp_path):
    td = _random_transitions()
    del td["next", "reward"]
    with pytest.raises(DatasetError, match=r"lacks the transition keys \['next.reward'\].*keys present: \[.*'action'"):
        validate_transitions(td)
    path = _write_raw(tmp_path / "m.hdf5", observations=np.zeros((3, 2)), actions=np.zeros((3, 1)))
    with pytest.raises(DatasetError, match=r"m.hdf5 lacks the D4RL keys \['rewards', 'terminals'\] \(keys present: \['actions', 'observations'\]\)"):
        load_d4rl_hdf5(path)


def test_bad_dtype_and_shape_messages():
    td = _random_transitions()
    td["observation"] = td["observation"].double()
    with pytest.raises(DatasetError, match="'observation' has dtype torch.float64, expected torch.float32"):
        validate_transitions(td)
    td = _random_transitions()
    td["next", "reward"] = td["next", "reward"].squeeze(-1)
    with pytest.raises(DatasetError, match=r"'next.reward' has shape \[20\], expected \[N, 1\]"):
        validate_transitions(td)
    td = _random_transitions()
    td["next", "done"][3] = True
    with pytest.raises(DatasetError, match="row 3 differs"):
        validate_transitions(td)


def test_corrupt_file_message(tmp_path):
    path = tmp_path / "garbage.hdf5"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(DatasetError, match=r"garbage.hdf5 is not a readable HDF5 dataset.*regenerate or re-download"):
        load_d4rl_hdf5(path)


def test_truncated_file_message(tmp_path):
    path = write_d4rl_hdf5(_random_transitions(n=2000), tmp_path / "full.hdf5")
    data = path.read_bytes()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="cut.hdf5.*(corrupt|truncated)"):
        load_d4rl_hdf5(cut)


def test_empty_files(tmp_path):
    zero = tmp_path / "zero.hdf5"
    zero.write_bytes(b"")
    with pytest.raises(DatasetError, match="zero.hdf5 is not a readable HDF5 dataset"):
        load_d4rl_hdf5(zero)
    path = _write_raw(
        tmp_path / "norows.hdf5", observations=np.zeros((0, 3)), actions=np.zeros((0, 2)),
        rewards=np.zeros(0), terminals=np.zeros(0, bool), next_observations=np.zeros((0, 3)),
    )
    with pytest.raises(DatasetError, match=r"norows.hdf5 is empty \(0 transitions\)"):
        load_d4rl_hdf5(path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_d4rl_hdf5(tmp_path / "nope.hdf5")


# ---------------------------------------------------------------- Minari
def _make_local_minari(dataset_id, seed=0, bad=None):
    """Three episodes of 6, 4 and 5 steps; ``bad=(episode, key, step)`` puts a NaN there."""
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(seed)
    episodes = []
    for ep_id, (steps, terminal) in enumerate([(6, True), (4, False), (5, False)]):
        observations = rng.normal(size=(steps + 1, 3)).astype(np.float32) + 5.0
        if bad is not None and bad[0] == ep_id and bad[1] == "observations":
            observations[bad[2], 0] = np.nan
        episodes.append(
            EpisodeBuffer(
                id=ep_id,
                observations=observations,
                actions=rng.uniform(-2, 2, size=(steps, 1)).astype(np.float32),
                rewards=list(rng.normal(size=steps) - 3.0),
                terminations=[False] * (steps - 1) + [terminal],
                truncations=[False] * (steps - 1) + [not terminal],
                infos={},
            )
        )
    with pytest.warns(UserWarning):  # minari warns that eval_env is not given
        minari.create_dataset_from_buffers(
            dataset_id, episodes, env="Pendulum-v1", algorithm_name="test", data_format="hdf5"
        )
    return episodes


def test_minari_local_values_arrive(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = _make_local_minari("tabbtest/pendulum/toy-v0")
    td = load_minari_dataset("tabbtest/pendulum/toy-v0")
    assert td.shape == (15,)
    for key in ("observation", "action", ("next", "observation"), ("next", "reward")):
        assert td.get(key).dtype == torch.float32, key
        assert (td.get(key) != 0).any(), key  # not the all-zero TorchRL bug
    obs = np.concatenate([np.asarray(e.observations)[:-1] for e in episodes])
    nxt = np.concatenate([np.asarray(e.observations)[1:] for e in episodes])
    act = np.concatenate([np.asarray(e.actions) for e in episodes])
    rew = np.concatenate([e.rewards for e in episodes]).astype(np.float32)
    np.testing.assert_array_equal(td["observation"].numpy(), obs)
    np.testing.assert_array_equal(td["next", "observation"].numpy(), nxt)
    np.testing.assert_array_equal(td["action"].numpy(), act)
    np.testing.assert_array_equal(td["next", "reward"].squeeze(-1).numpy(), rew)
    # episode ends: 6 (terminal), 4 (truncated), 5 (truncated)
    assert td["next", "terminated"].squeeze(-1).nonzero().squeeze(-1).tolist() == [5]
    assert td["next", "truncated"].squeeze(-1).nonzero().squeeze(-1).tolist() == [9, 14]
    assert td["next", "done"].sum().item() == 3
    # data_path gives the same
    from minari.storage.datasets_root_dir import get_dataset_path

    by_path = load_minari_dataset(None, data_path=get_dataset_path("tabbtest/pendulum/toy-v0"))
    assert (by_path == td).all()
    validate_transitions(td, obs_dim=3, act_dim=1)


@pytest.mark.parametrize("step, obs_rows, next_obs_rows", [(2, [8], [7]), (4, [], [9])])
def test_minari_nan_reports_episode_and_step(tmp_path, monkeypatch, step, obs_rows, next_obs_rows):
    """Episode 1 (4 steps, 5 observations) starts at transition 6; its observation 4 is only a next observation."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    _make_local_minari("tabbtest/pendulum/nan-v0", bad=(1, "observations", step))
    with pytest.raises(DatasetError) as err:
        load_minari_dataset("tabbtest/pendulum/nan-v0")
    assert str(err.value) == (
        f"Minari dataset 'tabbtest/pendulum/nan-v0': 'observations' holds NaN or inf in 1 step(s), first at "
        f"episode 1, step {step}. Regenerate or re-download the dataset, or load it with validate=False and drop "
        f"those rows (td[mask])."
    )
    td = load_minari_dataset("tabbtest/pendulum/nan-v0", validate=False)
    assert td["observation"].isnan().any(-1).nonzero().squeeze(-1).tolist() == obs_rows
    assert td["next", "observation"].isnan().any(-1).nonzero().squeeze(-1).tolist() == next_obs_rows


def test_minari_loader_checks_env_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    _make_local_minari("tabbtest/pendulum/toy-v0")  # observation 3, action 1: Pendulum-v1's sizes
    assert load_minari_dataset("tabbtest/pendulum/toy-v0", env_id="Pendulum-v1").shape == (15,)
    with pytest.raises(DatasetError) as err:
        load_minari_dataset("tabbtest/pendulum/toy-v0", env_id="Hopper-v5")
    assert str(err.value) == (
        "Minari dataset 'tabbtest/pendulum/toy-v0' does not fit env Hopper-v5: observation size 3 but the env "
        "has 11, action size 1 but the env has 3. The dataset was collected in another env: load the dataset "
        "collected in Hopper-v5, or use the env it was collected in."
    )
    with pytest.raises(DatasetError, match="does not fit the env: action size 1 but the env has 2"):
        load_minari_dataset("tabbtest/pendulum/toy-v0", obs_dim=3, act_dim=2, validate=False)


def test_minari_not_local_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="not available locally.*download=True.*huggingface_hub"):
        load_minari_dataset("mujoco/hopper/medium-v0")
    with pytest.raises(DatasetError, match="python -m tabb_torchrl.behavior.collect"):
        load_minari_dataset("tabb/Hopper-morph/medium-v0")


def test_minari_corrupt_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    _make_local_minari("tabbtest/pendulum/bad-v0")
    from minari.storage.datasets_root_dir import get_dataset_path

    data_dir = get_dataset_path("tabbtest/pendulum/bad-v0") / "data"
    for f in data_dir.iterdir():
        if f.suffix == ".hdf5":
            f.write_bytes(b"not an hdf5 file")
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_minari_dataset("tabbtest/pendulum/bad-v0")


def _online(host="huggingface.co", port=443, timeout=2.0) -> bool:
    if os.environ.get("TABB_OFFLINE"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.mark.network
def test_minari_remote_download(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    if not _online():
        pytest.skip("offline (no connection to huggingface.co)")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    td = load_minari_dataset("mujoco/inverteddoublependulum/medium-v0", download=True)
    assert td["observation"].shape[-1] == 9 and td["observation"].abs().sum() > 0
