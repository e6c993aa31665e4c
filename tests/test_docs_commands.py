"""The shell commands of the quickstart page run as written; the docs' offline check finds CDN pages.

Every ``python ...`` command of a ```` ```bash ```` block of ``docs/quickstart.md`` is
run in a subprocess, in a scratch folder with its own Minari cache:

* ``python recipes/tabb_offline.py <args>`` runs with ``<args>`` followed by the smoke
  preset's sizes (``+preset=smoke``: tiny datasets, 200 RL steps), so a command's own
  overrides (another env, data quality, loss setting, dataset path) are what is
  tested; a multirun (``-m``) is marked ``slow``. A ``resume=true`` command first
  runs the same configuration for part of the way, then resumes it as written.
* ``python -m tabb_torchrl...`` runs exactly as written.

A command of any other form fails the test until this file knows how to run it.
The page's ``{testcode}`` blocks are run by the Sphinx doctest builder instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"
RECIPE = "recipes/tabb_offline.py"
SMOKE = ["+preset=smoke", "progress=false"]

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(?:\{(?:code-block|code|sourcecode)\}\s*)?\{?([\w-]*)\}?\s*$")


def bash_blocks(text: str) -> list[list[str]]:
    """The ``python`` commands of each ```` ```bash ```` block of a markdown page.

    Comments are dropped and ``\\`` continuations joined; blocks without a
    ``python`` command are left out.

    >>> bash_blocks("x\\n```bash\\npython a.py b=1  # note\\n```\\n```text\\npython no.py\\n```\\n")
    [['python a.py b=1']]
    """
    blocks, block, lang, fence = [], None, "", ""
    for line in text.splitlines():
        m = _FENCE.match(line.strip())
        if block is None and m:
            block, lang, fence = [], m.group(2), m.group(1)
            continue
        if block is not None and line.strip() == fence:
            if lang in ("bash", "shell", "sh", "console"):
                joined = "\n".join(block).replace("\\\n", " ")
                commands = [" ".join(shlex.split(c, comments=True)) for c in joined.splitlines()]
                commands = [c for c in commands if c.startswith("python ")]
                if commands:
                    blocks.append(commands)
            block = None
            continue
        if block is not None:
            block.append(line)
    return blocks


def _env(workdir: Path) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
                MINARI_DATASETS_PATH=str(workdir / "minari"), PYTHONPATH=str(ROOT))


def _run(argv: list[str], workdir: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(argv)}\nexit {proc.returncode}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    )
    return proc


def _recipe_argv(cmd: str) -> list[str]:
    args = shlex.split(cmd)[2:]
    return [sys.executable, str(ROOT / RECIPE), *args, *[s for s in SMOKE if s not in args]]


def _summaries(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "outputs").rglob("summary.json"))]


BLOCKS = bash_blocks(QUICKSTART.read_text(encoding="utf-8"))
COMMANDS = [cmd for block in BLOCKS for cmd in block]


def _params():
    params, seen = [], []
    for i, block in enumerate(BLOCKS):
        if block in seen:  # the same commands run once
            continue
        seen.append(block)
        marks = [pytest.mark.slow] if any(f"{RECIPE} -m " in cmd for cmd in block) else []
        params.append(pytest.param(block, id=f"block{i}-" + block[0][len("python "):][:60], marks=marks))
    return params


def test_the_quickstart_has_runnable_commands():
    assert f"python {RECIPE}" in COMMANDS
    assert any(c.startswith("python -m tabb_torchrl.") for c in COMMANDS)
    assert any("resume=true" in c for c in COMMANDS)


def _run_recipe_command(cmd: str, workdir: Path) -> None:
    argv = _recipe_argv(cmd)
    before = {s["run_dir"] for s in _summaries(workdir)}
    if "resume=true" in argv:
        # an interrupted run of the same configuration first (150 pre-training + 50 RL steps)
        _run([a for a in argv if a != "resume=true"] + ["max_steps_this_session=200"], workdir)
    _run(argv, workdir)
    new = [s for s in _summaries(workdir) if s["run_dir"] not in before]
    assert new, f"{cmd} wrote no summary.json"
    assert all(s["steps"] == 200 for s in new), [s["steps"] for s in new]
    if "resume=true" in argv:
        runs = [p.parent for p in (workdir / "outputs").rglob("run_state.json")]
        assert len(runs) == len(new) == 1, f"resume=true did not continue the interrupted run: {runs}"
    expected = 1
    if " -m " in cmd:  # hydra's multirun: one run per combination of the swept values
        for values in re.findall(r"\S+=(\S*,\S*)", cmd):
            expected *= len(values.split(","))
    assert len(new) == expected, (cmd, len(new))


@pytest.mark.parametrize("block", _params())
def test_quickstart_block_runs(block, tmp_path):
    """The commands of one block, in order, in one scratch folder (a later one may read what an earlier wrote)."""
    for cmd in block:
        if cmd.startswith(f"python {RECIPE}"):
            _run_recipe_command(cmd, tmp_path)
        elif cmd.startswith("python -m tabb_torchrl."):
            _run(shlex.split(cmd.replace("python", sys.executable, 1)), tmp_path)
        else:
            pytest.fail(f"tests/test_docs_commands.py does not know how to run {cmd!r}: teach it, or change the page")


def test_bash_blocks_parses_blocks_continuations_and_comments():
    text = (
        "```bash\npython a.py x=1   # comment\npython b.py \\\n    y=2\n```\n\n"
        "```text\npython printed.py\n```\n"
        "```{code-block} bash\npython c.py\n```\n"
        "```bash\npip install x\n```\n"
    )
    assert bash_blocks(text) == [["python a.py x=1", "python b.py y=2"], ["python c.py"]]


# --------------------------------------------------------------------------- #
# docs/check_offline.py
# --------------------------------------------------------------------------- #


def _check_offline():
    spec = importlib.util.spec_from_file_location("check_offline", ROOT / "docs" / "check_offline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _site(tmp_path: Path, pages: dict[str, str], files=("_static/mathjax/tex-chtml.js", "_static/furo.css")) -> Path:
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("/* asset */")
    for rel, body in pages.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"<html><head>{body}</head><body></body></html>")
    return tmp_path


MATH = '<div class="math notranslate nohighlight">\\[x\\]</div>'


def test_check_offline_accepts_a_site_with_shipped_assets(tmp_path):
    check = _check_offline()
    site = _site(tmp_path, {
        "index.html": '<link rel="stylesheet" href="_static/furo.css"><a href="https://pytorch.org">out</a>',
        "sub/method.html": '<script defer src="../_static/mathjax/tex-chtml.js"></script>' + MATH,
    })
    assert check.check_dir(site) == (2, [])
    assert check.main([str(site)]) == 0


@pytest.mark.parametrize("body, problem", [
    ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>' + MATH,
     "loads https://cdn.jsdelivr.net"),
    ('<script src="//example.org/x.js"></script>', "loads //example.org/x.js from the network"),
    ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">', "fonts.googleapis.com"),
    ('<script>window.MathJax = {loader: {source: "https://cdnjs.cloudflare.com/x"}}</script>',
     "names the CDN host cdnjs.cloudflare.com"),
    ('<script src="_static/missing.js"></script>', "_static/missing.js, which is not in the build"),
    (MATH, "shows math but loads no local MathJax script"),
], ids=["mathjax-cdn", "protocol-relative", "google-fonts", "cdn-in-inline-script", "missing-local", "math-no-mathjax"])
def test_check_offline_reports_what_needs_the_network(tmp_path, body, problem, capsys):
    check = _check_offline()
    site = _site(tmp_path, {"index.html": '<link rel="stylesheet" href="_static/furo.css">', "page.html": body})
    n_pages, problems = check.check_dir(site)
    assert n_pages == 2
    assert len(problems) >= 1 and all(p.startswith("page.html: ") for p in problems), problems
    assert any(problem in p for p in problems), problems
    assert check.main([str(site)]) == 1
    assert problem in capsys.readouterr().err


def test_check_offline_without_pages_says_to_build_first(tmp_path, capsys):
    assert _check_offline().main([str(tmp_path)]) == 2
    assert "build the docs first" in capsys.readouterr().err
