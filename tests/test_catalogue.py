"""The dataset catalogue: every env id x quality, availability, returns, CLI."""

from __future__ import annotations

import itertools
import json

import pytest

from tabb_torchrl.behavior import catalogue as K
from tabb_torchrl.behavior import minari_writer as W
from tabb_torchrl.behavior import stats as S
from tabb_torchrl.behavior.policies import (
    SquashedGaussianActor,
    env_id_spellings,
    list_behavior_policies,
    load_policy_returns,
    save_behavior_policy,
    ship_run_snapshots,
)
from tabb_torchrl.envs import get_shift, list_env_ids


@pytest.fixture(autouse=True)
def no_shipped_returns(tmp_path, monkeypatch):
    """Never read the shipped dataset_returns.json (it may be written at any time)."""
    monkeypatch.setattr(K, "DATASET_RETURNS_PATH", tmp_path / "absent.json")
    monkeypatch.setenv("TABB_BEHAVIOR_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="module")
def rows():
    return K.build_catalogue(returns_path="/nonexistent/dataset_returns.json")


def test_rows_cover_every_env_id_and_quality(rows):
    targets = {(r.env_id, r.quality) for r in rows if r.role == "target"}
    assert targets == set(itertools.product(list_env_ids(), W.DATASET_QUALITIES))
    assert len(list_env_ids()) == 108
    sources = K.source_env_ids()
    assert {"Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5", "AdroitHandPen-v1",
            "AdroitHandDoor-v1"} <= set(sources)
    assert {(r.env_id, r.quality) for r in rows if r.role == "source"} == set(
        itertools.product(sources, W.DATASET_QUALITIES))
    assert len(rows) == (108 + len(sources)) * 5
    # a default level's id and its alias are one env: one dataset id for both rows
    aliases = [e for e in list_env_ids() if get_shift(e).alias_of is not None]
    assert len({r.dataset_id for r in rows}) == len(rows) - 5 * len(aliases) and aliases
    for r in rows:
        assert r.dataset_id == W.dataset_id_for(r.env_id, r.quality)
        base = 1_000_000 if r.role == "source" else 5_000
        assert r.default_size == (2 * base if r.quality == "medium-expert" else base)
        assert r.available or (r.missing and r.commands)
    # source rows of a robot come before its target rows
    first_target = next(i for i, r in enumerate(rows) if r.role == "target")
    assert rows[0].role == "source" and rows[first_target - 1].env_id == K.source_env_ids()[0]


def test_random_is_ready_and_references(rows):
    by = {(r.env_id, r.quality): r for r in rows}
    assert all(r.available for r in rows if r.quality == "random")
    assert by["tabb/Hopper-morph-v0", "random"].reference_odrl == (-26.3360015397715, 3234.3)
    assert by["tabb/Walker2d-friction-2.0-v0", "expert"].reference_odrl == (10.079455055289959, 5180.044)
    # 'ours' where measured, an empty cell (None) otherwise (gravity: outside the paper grid, never trained)
    assert by["tabb/Hopper-gravity-2.0-v0", "random"].reference_ours is None
    assert by["Hopper-v5", "random"].reference_ours is not None
    assert any("anomalous" in n for n in by["tabb/HalfCheetah-friction-0.1-v0", "medium"].notes)


def test_shipped_policy_is_ready_with_its_return(rows):
    assert ("Hopper-v5", "medium") in list_behavior_policies()
    row = next(r for r in rows if r.env_id == "Hopper-v5" and r.quality == "medium")
    assert row.available and row.status == "ready" and not row.commands
    assert row.policy_return == load_policy_returns("Hopper-v5")["medium"]["eval_return"]
    assert f"{row.policy_return:.1f}" in K.format_text([row])


def test_missing_policy_shows_the_train_command(tmp_path):
    rows = K.build_catalogue(env="Hopper-v5", policy_root=tmp_path / "none")
    by = {r.quality: r for r in rows}
    assert by["random"].available
    for q in ("medium", "expert", "medium-expert"):
        assert not by[q].available and by[q].policy_return is None
        assert by[q].commands[0] == "python recipes/train_behavior.py env=Hopper-v5"
        assert "python recipes/train_behavior.py env=Hopper-v5" in by[q].status
        assert "ship behavior_runs/Hopper-v5_s0" in by[q].status
    assert by["medium-expert"].missing == "medium and expert behaviour policies"
    replay = by["medium-replay"]
    assert not replay.available and "medium_replay.pt" in replay.missing
    assert "--quality medium-replay --run-dir" in replay.status
    # a target id: the slug of the run directory
    row = K.build_catalogue(env="tabb/Hopper-morph-v0", quality="expert", policy_root=tmp_path / "none")[0]
    assert "env=tabb/Hopper-morph-v0" in row.status and "behavior_runs/tabb__Hopper-morph-v0_s0" in row.status


def test_policy_root_and_local_runs(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_behavior_policy(run / "medium.pt", SquashedGaussianActor(11, 3, (8,)), env_id="Hopper-v5",
                         quality="medium", eval_return=321.5)
    save_behavior_policy(run / "expert.pt", SquashedGaussianActor(11, 3, (8,)), env_id="Hopper-v5",
                         quality="expert", eval_return=2345.0)
    ship_run_snapshots(run, root=tmp_path / "pol")
    by = {r.quality: r for r in K.build_catalogue(env="Hopper-v5", policy_root=tmp_path / "pol")}
    assert by["medium"].policy_return == 321.5 and by["expert"].policy_return == 2345.0
    assert by["medium-expert"].available and by["medium-expert"].policy_return is None
    assert not by["medium-replay"].available
    runs = tmp_path / "runs" / "Hopper-v5_s0"
    runs.mkdir(parents=True)
    (runs / "medium_replay.pt").write_bytes(b"")
    assert not K.build_catalogue(env="Hopper-v5", quality="medium-replay")[0].available  # not by default
    assert K.build_catalogue(env="Hopper-v5", quality="medium-replay", check_runs=True)[0].available


def test_cli_filters(capsys):
    assert K.main(["--env", "hopper-MORPH", "--quality", "medium"]) == 0
    lines = capsys.readouterr().out.splitlines()
    body = lines[2:]
    assert lines[0].startswith("env id") and len(body) == len(list_env_ids("Hopper-morph"))
    assert all(" medium " in line and "Hopper-morph" in line for line in body)
    assert K.main(["--quality", "medium", "--available"]) == 0
    body = capsys.readouterr().out.splitlines()[2:]
    shipped = {e for e, q in list_behavior_policies() if q == "medium"}
    # a policy shipped under an alias also makes its default level's id ready
    assert {line.split()[0] for line in body} == {s for e in shipped for s in env_id_spellings(e)}
    assert all(line.endswith("ready") for line in body)
    assert K.main(["--env", "Walker2d", "--role", "source", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["quality"] for d in data] == list(W.DATASET_QUALITIES)
    assert {d["env_id"] for d in data} == {"Walker2d-v5"}


def test_cli_markdown_groups_by_robot(capsys):
    assert K.main(["--markdown", "--quality", "random"]) == 0
    md = capsys.readouterr().out
    headings = [line[4:] for line in md.splitlines() if line.startswith("### ")]
    assert headings == ["HalfCheetah", "Hopper", "Walker2d", "Ant", "AdroitHandPen", "AdroitHandDoor"]
    hopper = md.split("### Hopper\n")[1].split("### ")[0]
    assert hopper.index("Source env `Hopper-v5`") < hopper.index("| `tabb/Hopper-morph-v0` ")
    # one row per target env id, one column per quality
    assert sum(line.startswith("| `tabb/") for line in md.splitlines()) == 108
    header = [[c.strip() for c in line.strip("|").split("|")]
              for line in md.splitlines() if line.startswith("| env id ")]
    assert header[0] == ["env id", "random", "ODRL ref (rnd / exp)", "ours ref (rnd / best)"]
    assert len(header) == 6  # one target table per robot (tabulate's "github" markdown)
    assert "gymnasium_robotics" in md.split("### AdroitHandPen")[1]


def test_unknown_quality_errors_with_the_valid_list(capsys):
    assert K.main(["--quality", "mediocre"]) == 2
    err = capsys.readouterr().err
    assert "mediocre" in err and "random, medium, medium-replay, expert, medium-expert" in err
    with pytest.raises(ValueError, match="valid qualities: random, medium"):
        K.build_catalogue(quality="mediocre")


def test_measured_returns_from_the_returns_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "dataset_returns.json"
    monkeypatch.setattr(K, "DATASET_RETURNS_PATH", path)
    assert K.load_dataset_returns() == {}
    assert K.build_catalogue(env="Hopper-v5", quality="medium")[0].measured is None
    S.record_dataset_stats(path, {"dataset_id": "tabb/Hopper/medium-v0", "env_id": "Hopper-v5",
                                  "quality": "medium", "size": 1_000_000, "seed": 0, "episodes": 812,
                                  "return_mean": 1234.56, "return_std": 78.9})
    S.record_dataset_stats(path, {"dataset_id": "tabb/Hopper-morph/random-v0", "size": 300, "episodes": 14,
                                  "return_mean": 20.0, "return_std": 3.0})
    row = K.build_catalogue(env="Hopper-v5", quality="medium")[0]
    assert row.measured_return == 1234.56 and row.measured["episodes"] == 812
    assert K.main(["--env", "Hopper-v5", "--quality", "medium"]) == 0
    assert "1234.6 ± 78.9 (812 ep)" in capsys.readouterr().out
    md = K.format_markdown(K.build_catalogue(env="Hopper-morph-v0", quality="random"))
    assert "ready · data 20.0 ± 3.0 (14 ep, size 300)" in md
    path.write_text("{not json")
    with pytest.raises(ValueError, match="dataset-returns"):
        K.build_catalogue(env="Hopper-v5")


def test_level_id_and_alias_rows_agree(tmp_path, monkeypatch):
    """``tabb/Walker2d-friction-0.5-v0`` is ``tabb/Walker2d-friction-v0`` (its alias): same status, policy,
    references, dataset id and recorded returns, whichever spelling the policy and the record use."""
    level, alias = "tabb/Walker2d-friction-0.5-v0", "tabb/Walker2d-friction-v0"
    assert get_shift(alias).alias_of == level
    rows = {r.env_id: r for r in K.build_catalogue(env="Walker2d-friction", quality="medium")}
    assert (alias, "medium") in list_behavior_policies()  # shipped under the alias
    a, lv = rows[alias], rows[level]
    assert a.status == lv.status == "ready"
    assert a.policy_return == lv.policy_return is not None
    assert a.reference_ours == lv.reference_ours is not None
    assert a.dataset_id == lv.dataset_id == "tabb/Walker2d-friction/medium-v0"
    # a policy shipped from a run of the level id is stored (and found) under the alias
    run = tmp_path / "run"
    save_behavior_policy(run / "expert.pt", SquashedGaussianActor(17, 6, (8,)), env_id=level, quality="expert",
                         eval_return=4321.0)
    ship_run_snapshots(run, root=tmp_path / "pol")
    assert list_behavior_policies(tmp_path / "pol") == [(alias, "expert")]
    path = tmp_path / "returns.json"
    S.record_dataset_stats(path, {"dataset_id": W.dataset_id_for(level, "expert"), "return_mean": 4000.0})
    by = {r.env_id: r for r in K.build_catalogue(env="Walker2d-friction", quality="expert",
                                                 policy_root=tmp_path / "pol", returns_path=path)}
    for env_id in (level, alias):
        assert by[env_id].available and by[env_id].policy_return == 4321.0
        assert by[env_id].measured_return == 4000.0


def test_shipped_recorded_returns_are_found(tmp_path):
    """Every record of the shipped dataset_returns.json is shown by the catalogue row of its dataset."""
    shipped_file = K.Path(K.__file__).resolve().parent.parent / "assets" / "dataset_returns.json"
    copy = tmp_path / "dataset_returns.json"  # one snapshot (a background job may rewrite the shipped file)
    copy.write_text(shipped_file.read_text())
    shipped = K.load_dataset_returns(copy)
    rows = K.build_catalogue(returns_path=copy)
    assert set(shipped) <= {r.dataset_id for r in rows if r.measured is not None}
    for r in rows:
        if r.measured is not None:
            assert r.measured == shipped[r.dataset_id]
