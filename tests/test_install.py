"""A non-editable ``pip install .`` works: the catalogue, the XML building and the shipped assets.

The editable install of the development checkout hides packaging mistakes (a YAML
spec, a policy checkpoint or a JSON table missing from the wheel's package data).
This test builds and installs a copy of the project, without dependencies, into a
folder of its own (``pip install --target``), puts it first on ``PYTHONPATH`` and
exercises it from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tabb_torchrl
    from tabb_torchrl.envs import make_env
    from tabb_torchrl.envs.spec import catalogue
    from tabb_torchrl.behavior.policies import list_behavior_policies, load_behavior_policy
    from tabb_torchrl.data import reference_returns
    from tabb_torchrl.behavior.catalogue import build_catalogue, load_dataset_returns
    import importlib, pkgutil
    subpackages = sorted(m.name for m in pkgutil.walk_packages(tabb_torchrl.__path__, "tabb_torchrl.") if m.ispkg)
    for name in subpackages:
        importlib.import_module(name)
    import importlib.resources as resources
    config_groups = sorted(p.name for p in resources.files("tabb_torchrl._config").iterdir() if p.is_dir())
    env = make_env("tabb/Hopper-morph-v0")
    radius = float(env.unwrapped.model.geom("torso_geom").size[0])
    obs, _ = env.reset(seed=0)
    policy = load_behavior_policy("Hopper-v5", "medium", seed=0)
    action = policy(obs)
    env.close()
    print(json.dumps({
        "file": tabb_torchrl.__file__,
        "n_ids": len(catalogue()),
        "radius": radius,
        "policies": len(list_behavior_policies()),
        "action_shape": list(action.shape),
        "ours": list(reference_returns("Hopper-v5", "ours")),
        "n_rows": len(build_catalogue()),
        "n_recorded": len(load_dataset_returns()),
        "subpackages": subpackages,
        "config_groups": config_groups,
    }))
    """
)


def _copy_project(dst: Path) -> None:
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "tabb_torchrl", dst / "tabb_torchrl", ignore=ignore)
    shutil.copytree(REPO / "envs", dst / "envs", ignore=ignore)
    shutil.copytree(REPO / "recipes" / "config", dst / "recipes" / "config", ignore=ignore)


def test_non_editable_install_has_catalogue_policies_and_tables(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_project(src)
    site = tmp_path / "site"
    # a real wheel build and install into its own folder; no dependencies and no build isolation, so
    # nothing is downloaded and only our package is installed (the dependencies are this Python's)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--target", str(site), str(src)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (site / "tabb_torchrl" / "__editable__").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    # the installed copy comes first on sys.path, ahead of the development checkout's editable install
    env = {**os.environ, "TABB_TORCHRL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(site)}
    py = sys.executable
    out = subprocess.run([py, "-c", SCRIPT], cwd=work, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["file"] == str(site / "tabb_torchrl" / "__init__.py")  # the installed copy, not the checkout
    from tabb_torchrl.behavior.catalogue import build_catalogue, load_dataset_returns
    from tabb_torchrl.behavior.policies import list_behavior_policies
    from tabb_torchrl.envs.spec import catalogue

    assert info["n_ids"] == len(catalogue()) >= 100
    assert info["radius"] == pytest.approx(0.125)  # the morph shift was applied from the packaged YAML
    assert info["policies"] == len(list_behavior_policies()) >= 5
    assert info["action_shape"] == [3]
    assert info["n_rows"] == len(build_catalogue()) and info["n_recorded"] == len(load_dataset_returns()) > 0

    # every sub-package of the checkout is in the wheel (pyproject lists them by hand), and the recipe's config
    import pkgutil

    import tabb_torchrl

    here = sorted(m.name for m in pkgutil.walk_packages(tabb_torchrl.__path__, "tabb_torchrl.") if m.ispkg)
    missing = sorted(set(here) - set(info["subpackages"]))
    assert not missing, f"{missing}: add the missing sub-packages to [tool.setuptools] packages in pyproject.toml"
    assert {"tabb_torchrl._catalogue", "tabb_torchrl._config"} <= set(info["subpackages"])
    assert {"algo", "env", "data", "loss", "model", "optim"} <= set(info["config_groups"])

    cli = subprocess.run([py, "-m", "tabb_torchrl.envs"], cwd=work, env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "tabb/Hopper-morph-v0" in cli.stdout, cli.stderr[-2000:]
