"""Helpers shared by the tests that run ``recipes/tabb_offline.py`` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "tabb_offline.py"


def run_recipe(args, cwd, timeout: float = 300):
    """Run the recipe with ``args`` (one thread); assert exit 0, showing the output tails otherwise."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    return proc


def flatten_state(obj, prefix: str = "") -> dict:
    """``{"a/b/0/": leaf}`` of a nested state dict (dicts, lists and tuples), to compare two checkpoints."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten_state(v, f"{prefix}{k}/"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten_state(v, f"{prefix}{i}/"))
        return out
    return {prefix: obj}
