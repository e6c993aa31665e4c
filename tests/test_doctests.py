"""Runs the ``>>>`` examples of every module of the package (so the documented examples stay true).

The single doctest runner of the suite: modules are discovered with ``pkgutil``, so a new
module's examples are tested without editing this file.
"""

import doctest
import importlib
import pkgutil

import pytest

import tabb_torchrl

SKIP = {"tabb_torchrl._catalogue"}  # YAML data, no code


def _modules():
    names = [tabb_torchrl.__name__]
    for info in pkgutil.walk_packages(tabb_torchrl.__path__, prefix=tabb_torchrl.__name__ + "."):
        if info.name not in SKIP and not info.name.startswith(tuple(s + "." for s in SKIP)):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_every_subpackage_is_discovered():
    for name in ("tabb_torchrl.objectives.fast", "tabb_torchrl.objectives.method", "tabb_torchrl.methods", "tabb_torchrl.data.sampler", "tabb_torchrl.envs.registry",
                 "tabb_torchrl.pipeline.trainer", "tabb_torchrl.diagnostic", "tabb_torchrl.results"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))  # never the user's ~/.minari
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"
