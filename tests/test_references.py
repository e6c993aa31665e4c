"""Reference returns and normalised scores."""

import json

import numpy as np
import pytest
import torch

from tabb_torchrl.data import (
    MissingReferenceError,
    medium_return_threshold,
    normalized_score,
    reference_returns,
)

HOPPER_MIN, HOPPER_MAX = -26.3360015397715, 3234.3


def test_hopper_morph_hand_values():
    assert reference_returns("tabb/Hopper-morph-v0") == (HOPPER_MIN, HOPPER_MAX)
    # by hand: R = min + 0.25 (max - min)  ->  25
    r = HOPPER_MIN + 0.25 * (HOPPER_MAX - HOPPER_MIN)
    assert normalized_score("tabb/Hopper-morph-v0", r) == pytest.approx(25.0)
    assert normalized_score("tabb/Hopper-morph-v0", 1000.0) == pytest.approx(
        100 * (1000.0 + 26.3360015397715) / (3234.3 + 26.3360015397715)
    )
    assert isinstance(normalized_score("tabb/Hopper-morph-v0", 3), float)


def test_array_inputs():
    returns = np.array([[HOPPER_MIN, HOPPER_MAX], [HOPPER_MIN * 2, HOPPER_MAX * 2]])
    out = normalized_score("Hopper-v5", returns)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    np.testing.assert_allclose(out[0], [0.0, 100.0])
    assert out[1, 0] < 0 and out[1, 1] > 100
    lst = normalized_score("Hopper-v5", [HOPPER_MAX, HOPPER_MAX])
    np.testing.assert_allclose(lst, [100.0, 100.0])
    t = normalized_score("Hopper-v5", torch.tensor([HOPPER_MAX], dtype=torch.float64))
    assert torch.is_tensor(t) and t.item() == pytest.approx(100.0)
    assert isinstance(normalized_score("Hopper-v5", np.float32(5.0)), float)


@pytest.mark.parametrize(
    "env_id,expected",
    [
        ("tabb/HalfCheetah-friction-0.5-v0", (-280.178953, 7357.07)),
        ("tabb/HalfCheetah-friction-2.0-v0", (-280.178953, 11255.97)),
        ("tabb/HalfCheetah-friction-5.0-v0", (-280.178953, 10199.33)),
        ("tabb/HalfCheetah-friction-v0", (-280.178953, 7357.07)),  # default level 0.5
        ("tabb/Walker2d-friction-0.1-v0", (10.079455055289959, 3360.181)),
        ("tabb/Walker2d-friction-0.5-v0", (10.079455055289959, 4229.348)),
        ("tabb/Ant-friction-5.0-v0", (-325.6, 4545.021)),
        ("tabb/Ant-friction-2.0-v0", (-325.6, 5167.376)),
        ("tabb/Hopper-friction-0.1-v0", (HOPPER_MIN, HOPPER_MAX)),
        ("tabb/Hopper-friction-floor-5.0-v0", (HOPPER_MIN, HOPPER_MAX)),
    ],
)
def test_friction_levels(env_id, expected):
    assert reference_returns(env_id) == expected


def test_anomalous_halfcheetah_friction_warns():
    with pytest.warns(UserWarning, match="anomalous"):
        assert reference_returns("tabb/HalfCheetah-friction-0.1-v0")[1] == 41696.55


@pytest.mark.parametrize(
    "env_id,expected_max",
    [
        ("tabb/Walker2d-kinematic-footjnt-medium-v0", 4592.3),
        ("tabb/Walker2d-morph-v0", 4592.3),
        ("tabb/HalfCheetah-morph-torso-hard-v0", 12135.0),
        ("tabb/Ant-morph-halflegs-easy-v0", 5139.832),
        ("tabb/Ant-gravity-2.0-v0", 5139.832),  # gravity: the kinematic/morph max
        ("tabb/AdroitHandPen-broken-joint-medium-v0", 6408.384),
        ("tabb/AdroitHandDoor-shrink-finger-hard-v0", 2880.569),
        ("AdroitHandDoor-v1", 2880.569),
        ("HalfCheetah-v5", 12135.0),
    ],
)
def test_other_shifts_use_env_max(env_id, expected_max):
    assert reference_returns(env_id)[1] == expected_max


def test_friction_level_without_odrl_entry():
    with pytest.raises(MissingReferenceError, match=r"no reference return for Walker2d friction level 3.0.*0.1, 0.5, 2.0, 5.0.*compute_references"):
        reference_returns("tabb/Walker2d-friction-3.0-v0")


def test_unknown_env_lists_known():
    with pytest.raises(MissingReferenceError, match=r"'tabb/Humanoid-morph-v0'.*HalfCheetah.*Hopper.*Walker2d.*Ant.*AdroitHandPen"):
        normalized_score("tabb/Humanoid-morph-v0", 100.0)
    with pytest.raises(ValueError, match="'odrl' or 'ours'"):
        reference_returns("Hopper-v5", reference="d4rl")


def test_ours_table(tmp_path):
    table = {
        "tabb/Hopper-morph-v0": {"min": 10.0, "max": 110.0, "min_source": "random", "max_source": "expert"},
        "tabb/Hopper-friction-0.5-v0": {"min": 0.0, "max": 50.0, "min_source": "random", "max_source": "expert"},
    }
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(table))
    assert reference_returns("tabb/Hopper-morph-v0", "ours", path=path) == (10.0, 110.0)
    assert normalized_score("tabb/Hopper-morph-v0", 60.0, "ours", path=path) == pytest.approx(50.0)
    # the default-level alias resolves to the explicit level's entry
    assert reference_returns("tabb/Hopper-friction-v0", "ours", path=path) == (0.0, 50.0)
    with pytest.raises(MissingReferenceError, match=r"No 'ours' reference returns for env 'tabb/Ant-morph-v0'.*compute_references.*Entries present: tabb/Hopper-friction-0.5-v0, tabb/Hopper-morph-v0"):
        reference_returns("tabb/Ant-morph-v0", "ours", path=path)


def test_ours_level_id_and_alias_share_the_entry(tmp_path):
    """A default level's id and its alias are one env: the table is keyed by the alias (canonical id)."""
    from tabb_torchrl.behavior.policies import canonical_env_id

    level, alias = "tabb/Walker2d-friction-0.5-v0", "tabb/Walker2d-friction-v0"
    assert canonical_env_id(level) == canonical_env_id(alias) == alias
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({alias: {"min": 1.0, "max": 9.0}}))
    assert reference_returns(level, "ours", path=path) == reference_returns(alias, "ours", path=path) == (1.0, 9.0)
    # the shipped table has the alias (a policy ships for it): the level id finds the same entry
    assert reference_returns(level, "ours") == reference_returns(alias, "ours")
    with pytest.raises(MissingReferenceError):  # another level is another env
        reference_returns("tabb/Walker2d-friction-2.0-v0", "ours", path=path)


def test_ours_missing_file(tmp_path):
    with pytest.raises(MissingReferenceError, match=r"No 'ours' reference table at .*nope.json\. Compute it with python -m tabb_torchrl.behavior.compute_references"):
        reference_returns("tabb/Hopper-morph-v0", "ours", path=tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MissingReferenceError, match="unreadable"):
        reference_returns("tabb/Hopper-morph-v0", "ours", path=bad)


def test_every_catalogue_env_has_an_odrl_reference():
    envs = pytest.importorskip("tabb_torchrl.envs")
    list_env_ids = getattr(envs, "list_env_ids", None)
    if list_env_ids is None:
        pytest.skip("env catalogue not available")
    import warnings

    ids = list_env_ids()
    assert ids
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the anomalous HalfCheetah friction 0.1 entry
        for env_id in ids:
            low, high = reference_returns(env_id)
            assert high > low, env_id


SOURCE_MEDIUM = {"Hopper": 1050.0, "HalfCheetah": 4000.0, "Walker2d": 1500.0, "Ant": 1700.0}


@pytest.mark.parametrize(
    "env_id, expected",
    [
        ("Hopper-v5", 1050.0),
        ("tabb/Ant-morph-v0", 1700.0),
        ("tabb/Walker2d-kinematic-footjnt-hard-v0", 1500.0),
        ("tabb/HalfCheetah-gravity-0.5-v0", 4000.0),
        # friction: source threshold x R_max(level) / R_max(source), by hand from SHIFTS.md
        ("tabb/HalfCheetah-friction-v0", 4000.0 * 7357.07 / 12135.0),
        ("tabb/Walker2d-friction-2.0-v0", 1500.0 * 5180.044 / 4592.3),
        ("tabb/Ant-friction-floor-5.0-v0", 1700.0 * 4545.021 / 5139.832),
        ("tabb/Hopper-friction-0.1-v0", 1050.0),  # Hopper has one R_max for every level
        ("tabb/HalfCheetah-friction-0.1-v0", 4000.0),  # anomalous ODRL entry: not scaled
    ],
)
def test_medium_return_threshold(env_id, expected):
    assert medium_return_threshold(env_id, SOURCE_MEDIUM) == pytest.approx(expected, rel=1e-12)


def test_medium_return_threshold_unknown_task():
    with pytest.raises(KeyError, match="medium_return="):
        medium_return_threshold("tabb/AdroitHandPen-broken-joint-hard-v0", SOURCE_MEDIUM)
