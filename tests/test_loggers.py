"""Metric loggers: TorchRL's loggers through make_logger / log_metrics, resume, missing backends."""
from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tabb_torchrl.pipeline import loggers as L
from tabb_torchrl.pipeline.config import ConfigError

from recipe_helpers import SCRIPT, run_recipe


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of every TensorBoard event file in ``folder`` (files in name order): tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
                out.setdefault(v.tag, []).append((event.step, value))
    return out


def test_log_metrics_uses_torchrl_and_writes_the_values_of_the_old_helper(tmp_path):
    logger = L.make_logger("csv", tmp_path, "exp")
    metrics = {"train/a": torch.tensor(0.1), "train/b": 3, "time/c": 0.25, "train/d": torch.tensor(1.5e-7)}
    out = L.log_metrics(logger, metrics, step=7)
    assert out == {"train/a": float(torch.tensor(0.1)), "train/b": 3.0, "time/c": 0.25,
                   "train/d": float(torch.tensor(1.5e-7))}
    assert all(type(v) is float for v in out.values())
    scalars = tmp_path / "logs" / "exp" / "scalars"
    # float32 tensors: the float32 value, as str(float) (what the hand-written helper wrote)
    assert (scalars / "train" / "a.csv").read_text() == f"7,{float(torch.tensor(0.1))}\n" == "7,0.10000000149011612\n"
    assert (scalars / "train" / "b.csv").read_text() == "7,3.0\n"
    assert (scalars / "time" / "c.csv").read_text() == "7,0.25\n"
    assert L.log_metrics(None, {"x": torch.tensor(2.0)}, step=1) == {"x": 2.0}


def test_csv_resume_drops_rows_after_the_checkpoint_and_writes_into_this_run_dir(tmp_path):
    first = tmp_path / "first"
    logger = L.make_logger("csv", first, "exp", config={"seed": 0})
    for step in (1, 2):
        L.log_metrics(logger, {"train/a": float(step)}, step)
    state = copy.deepcopy(logger.state_dict())  # a checkpoint holds a copy (torch.save)
    L.log_metrics(logger, {"train/a": 3.0, "train/b": 3.0}, 3)  # written by the "killed" session
    resumed = L.make_logger("csv", first, "exp", config={"seed": 0}, state_dict=state)
    L.log_metrics(resumed, {"train/a": 30.0}, 3)
    scalars = first / "logs" / "exp" / "scalars"
    assert (scalars / "train" / "a.csv").read_text() == "1,1.0\n2,2.0\n3,30.0\n"
    assert not (scalars / "train" / "b.csv").exists()
    assert (first / "logs" / "exp" / "texts" / "hparams0.txt").read_text() == "seed: 0"  # once, not per session
    assert not (first / "logs" / "exp" / "texts" / "hparams1.txt").exists()
    # a run directory moved between sessions: the logs follow the run (not the path saved in the checkpoint)
    moved = tmp_path / "moved"
    again = L.make_logger("csv", moved, "exp", state_dict=state)
    L.log_metrics(again, {"train/a": 4.0}, 4)
    assert (moved / "logs" / "exp" / "scalars" / "train" / "a.csv").read_text() == "1,1.0\n2,2.0\n4,4.0\n"


def test_tensorboard_resume_appends_in_the_same_folder(tmp_path):
    pytest.importorskip("tensorboard")
    logger = L.make_logger("tensorboard", tmp_path, "exp")
    L.log_metrics(logger, {"train/a": torch.tensor(1.0)}, 1)
    state = copy.deepcopy(logger.state_dict())
    logger.close()
    resumed = L.make_logger("tensorboard", tmp_path, "exp", state_dict=state)
    L.log_metrics(resumed, {"train/a": 2.0}, 2)
    resumed.close()
    folder = tmp_path / "logs" / "exp"
    assert not (folder / "exp").exists()  # TorchRL's own state_dict resume nests it one level deeper
    assert _events(folder)["train/a"] == [(1, 1.0), (2, 2.0)]


def test_a_state_of_another_backend_is_not_restored(tmp_path):
    pytest.importorskip("tensorboard")
    csv = L.make_logger("csv", tmp_path, "exp")
    L.log_metrics(csv, {"a": 1.0}, 1)
    tb = L.make_logger("tensorboard", tmp_path, "exp", state_dict=csv.state_dict())  # logger changed on resume
    L.log_metrics(tb, {"a": 2.0}, 2)
    tb.close()
    assert _events(tmp_path / "logs" / "exp")["a"] == [(2, 2.0)]
    assert (tmp_path / "logs" / "exp" / "scalars" / "a.csv").read_text() == "1,1.0\n"  # left as it was


@pytest.mark.parametrize("backend", ["tensorboard", "wandb"])
def test_missing_backend_package_is_a_clear_error(tmp_path, monkeypatch, backend):
    real = importlib.util.find_spec
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name, *a: None if name == backend else real(name, *a))
    with pytest.raises(L.MissingLoggerBackendError) as err:
        L.make_logger(backend, tmp_path, "exp")
    assert str(err.value).startswith(f"logger={backend} needs the {backend} package: pip install -e '.[{backend}]'")
    assert isinstance(err.value, ImportError) and isinstance(err.value, ConfigError)
    assert not (tmp_path / "logs").exists()
    with pytest.raises(ConfigError, match="logger=mlflow is not a logger backend"):
        L.make_logger("mlflow", tmp_path, "exp")
    assert L.make_logger("", tmp_path, "exp") is None and L.make_logger(None, tmp_path, "exp") is None


def _smoke(tmp_path) -> list[str]:
    return ["+preset=smoke", f"data.root={tmp_path / 'data'}", "progress=false", "logger.log_every=50",
            "pretrain.stage1_steps=50", "pretrain.stage2_steps=25", "optim.steps=100", "eval.every=100",
            "eval.episodes=1", "eval.max_episode_steps=20", "data.source.size=500", "data.target.size=300"]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_recipe_with_logger_wandb_and_no_wandb_says_what_to_install(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SCRIPT), *_smoke(tmp_path), f"run_dir={tmp_path / 'run'}",
                           "logger=wandb"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "logger=wandb needs the wandb package: pip install -e '.[wandb]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_recipe_with_logger_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    run_recipe([*_smoke(tmp_path), f"run_dir={run_dir}", "logger=tensorboard"], cwd=tmp_path)
    folders = [p.parent for p in (run_dir / "logs").rglob("events.out.tfevents.*")]
    assert folders and set(folders) == {run_dir / "logs" / folders[0].name}  # one experiment folder, not nested
    scalars = _events(folders[0])
    assert [s for s, _ in scalars["eval/normalized_score"]] == [100]
    assert [s for s, _ in scalars["train/loss_qvalue"]] == [50, 100]
    assert [s for s, _ in scalars["pretrain_stage1/loss_model"]] == [50]
    assert not (run_dir / "logs" / folders[0].name / "scalars").exists()  # no CSV files with this backend


def test_missing_backend_is_refused_by_the_config_check():
    """``logger=wandb`` without wandb installed stops at the config check, before any dataset is made."""
    import importlib.util

    from tabb_torchrl.pipeline import MissingLoggerBackendError, compose_config, validate_config

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(MissingLoggerBackendError, match=r"pip install -e '\.\[wandb\]'"):
        validate_config(compose_config("tabb", ["+preset=smoke", "logger=wandb"]))
