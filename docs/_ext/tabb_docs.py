"""Sphinx extension that writes the generated parts of the tabb-torchrl docs.

At ``builder-inited`` it writes, into ``docs/_generated/`` (git-ignored):

``env_catalogue.md``
    The catalogue of shifted environments, generated from the registry
    (:mod:`tabb_torchrl.envs`, the same text as
    ``python -m tabb_torchrl.envs --markdown``). Included by ``envs.md``.
``dataset_catalogue.md``
    Every dataset a user can ask for (source env and every target id x
    quality) with its availability and returns, grouped by robot, source
    datasets first: :mod:`tabb_torchrl.behavior.catalogue` (the same text as
    ``python -m tabb_torchrl.behavior.catalogue --markdown``). Included by
    ``datasets.md``.
``policies_readme.md``
    ``tabb_torchrl/assets/policies/README.md`` when it exists. Included by
    ``behaviour_policies.md``.
``envs_readme.md``
    ``envs/README.md`` (the shift-spec format) when it exists. Included by
    ``envs.md``.

The generated files are rewritten only when their content changes, so an
unchanged build stays incremental.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

GENERATED = "_generated"


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- #
# Environment catalogue
# --------------------------------------------------------------------------- #

def _cli_markdown(argv: list[str]) -> str:
    """Output of ``python -m tabb_torchrl.envs <argv>``, run in-process."""
    import contextlib
    import io

    cli = importlib.import_module("tabb_torchrl.envs.__main__")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(argv)
    if rc not in (0, None):
        raise RuntimeError(f"python -m tabb_torchrl.envs {' '.join(argv)} exited with {rc}")
    return buf.getvalue()


def build_env_catalogue(root: Path) -> str:
    """One section per robot: its source env, base XML and the CLI's markdown table."""
    try:
        envs = importlib.import_module("tabb_torchrl.envs")
        ids = envs.list_env_ids()
        by_env: dict[str, list[str]] = {}
        for env_id in ids:
            by_env.setdefault(envs.get_shift(env_id).env_name, []).append(env_id)
        parts = [f"{len(ids)} target environments, registered on `import tabb_torchrl.envs`.\n"]
        for env_name, env_ids in by_env.items():
            spec = envs.get_shift(env_ids[0])
            table = _cli_markdown(["--markdown", env_name]).strip()
            parts.append(
                f"### {env_name}\n\n"
                f"Source env `{spec.source_id}`; base XML `{spec.base_xml}`; "
                f"{len(env_ids)} shifted ids.\n\n{table}\n"
            )
        return copy_markdown("\n".join(parts), ".", top_level=3)
    except Exception as err:
        # A broken registry must fail the (warnings-as-errors) docs build.
        logger.warning("tabb_docs: cannot generate the env catalogue from tabb_torchrl.envs: %r", err)
        return _catalogue_note(f"generating it failed ({err!r}).")


def build_dataset_catalogue(root: Path) -> str:
    """The markdown of ``python -m tabb_torchrl.behavior.catalogue --markdown``, headings from level 3."""
    try:
        cat = importlib.import_module("tabb_torchrl.behavior.catalogue")
        rows = cat.build_catalogue()
        ready = sum(r.available for r in rows)
        head = (f"{len(rows)} datasets ({sum(r.role == 'source' for r in rows)} source, "
                f"{sum(r.role == 'target' for r in rows)} target), {ready} of them ready to generate.\n")
        return copy_markdown(head + "\n" + cat.format_markdown(rows), ".", top_level=3)
    except Exception as err:
        # A broken catalogue must fail the (warnings-as-errors) docs build.
        logger.warning("tabb_docs: cannot generate the dataset catalogue from tabb_torchrl.behavior.catalogue: %r", err)
        return (
            "```{note}\n"
            f"The generated dataset table is not available: generating it failed ({err!r}). Run "
            "`python -m tabb_torchrl.behavior.catalogue --markdown` to print it.\n"
            "```\n"
        )


def _catalogue_note(why: str) -> str:
    return (
        "```{note}\n"
        f"The generated catalogue is not available: {why} Run "
        "`python -m tabb_torchrl.envs --markdown` to print it.\n"
        "```\n"
    )


# --------------------------------------------------------------------------- #
# Markdown helpers: copy a markdown file into a generated page
# --------------------------------------------------------------------------- #

_FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})")
_HEADING = re.compile(r"^(#{1,6})(\s)")
_MD_IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)")
_HTML_IMAGE = re.compile(r"(<img\b[^>]*\bsrc=[\"'])([^\"']+)")
_DIRECTIVE_IMAGE = re.compile(r"^(\s*(?:`{3,}|:{3,})\{(?:figure|image)\}\s+)(\S+)")


def _is_relative(path: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", path, flags=re.I)


def copy_markdown(text: str, src_rel_dir: str, top_level: int) -> str:
    """Return ``text`` ready to be pasted into a page of ``docs/``.

    Headings are shifted so that the file's highest heading becomes level
    ``top_level``, and relative image paths are rewritten to be relative to
    the Sphinx source directory (``/<src_rel_dir>/<path>``), so that they
    resolve whichever page includes the generated file.
    """
    lines = text.splitlines()
    in_fence = False
    levels = []
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and _HEADING.match(line):
            levels.append(len(_HEADING.match(line).group(1)))
    shift = (top_level - min(levels)) if levels else 0

    def fix(m: re.Match) -> str:
        path = m.group(2)
        return m.group(1) + (f"/{src_rel_dir}/{path}" if _is_relative(path) else path)

    out = []
    in_fence = False
    for line in lines:
        if _DIRECTIVE_IMAGE.match(line):
            line = _DIRECTIVE_IMAGE.sub(fix, line)
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
            continue
        if not in_fence:
            m = _HEADING.match(line)
            if m:
                level = min(6, max(1, len(m.group(1)) + shift))
                line = "#" * level + line[len(m.group(1)):]
            line = _MD_IMAGE.sub(fix, line)
            line = _HTML_IMAGE.sub(fix, line)
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- #
# Behaviour-policy README (tabb_torchrl/assets/policies/README.md)
# --------------------------------------------------------------------------- #


def build_readme(root: Path, rel: str, what: str) -> str:
    """``<root>/<rel>`` pasted as markdown (headings from level 3), or a note."""
    readme = root / rel
    if readme.is_file():
        return copy_markdown(readme.read_text(encoding="utf-8", errors="replace"),
                             "../" + str(Path(rel).parent), top_level=3)
    return (
        "```{note}\n"
        f"`{rel}` is not part of this checkout; {what} appears here once it is.\n"
        "```\n"
    )


# --------------------------------------------------------------------------- #


def _generate(app: Sphinx) -> None:
    docs_dir = Path(app.srcdir)
    root = docs_dir.parent
    out = docs_dir / GENERATED
    _write_if_changed(out / "env_catalogue.md", build_env_catalogue(root))
    _write_if_changed(out / "dataset_catalogue.md", build_dataset_catalogue(root))
    _write_if_changed(
        out / "policies_readme.md",
        build_readme(root, "tabb_torchrl/assets/policies/README.md", "the list of shipped checkpoints"),
    )
    _write_if_changed(
        out / "envs_readme.md", build_readme(root, "envs/README.md", "the description of the spec format")
    )


# --------------------------------------------------------------------------- #
# Cross-references to re-exported names
# --------------------------------------------------------------------------- #


def _import_object(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_reexport(app: Sphinx, env, node, contnode):
    """Resolve ``tabb_torchrl.X`` (a re-export) to where ``X`` is documented.

    The API pages document each object once, under the module that defines
    it; docstrings and pages may still name it by a shorter public path
    (``tabb_torchrl.TABBLoss``, ``tabb_torchrl.objectives.tbm_weights``) or,
    inside the package, by its bare name.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    short = target.rsplit(".", 1)[-1]
    if "." in target and not target.startswith("tabb_torchrl"):
        return None
    candidates = [
        name for name in domain.objects
        if name.startswith("tabb_torchrl.") and name.rsplit(".", 1)[-1] == short
    ]
    if "." in target:
        obj = _import_object(target)
        if obj is None:
            return None
        candidates = [c for c in candidates if _import_object(c) is obj]
    if len(candidates) != 1:
        return None
    new = node.deepcopy()
    new["reftarget"] = candidates[0]
    return domain.resolve_xref(
        env, node.get("refdoc"), app.builder, node.get("reftype"), candidates[0], new, contnode
    )


# --------------------------------------------------------------------------- #
# Class signatures hidden behind a generic __new__
# --------------------------------------------------------------------------- #


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """Show ``__init__``'s signature for classes whose ``__new__`` takes ``(*args, **kwargs)``.

    TorchRL's ``LossModule`` and ``Transform`` define such a ``__new__``, so
    autodoc would document ``TABBLoss(*args, **kwargs)``.
    """
    if what != "class" or signature not in ("(*args, **kwargs)", "(*args: Any, **kwargs: Any)"):
        return None
    import inspect

    try:
        sig = inspect.signature(obj.__init__)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())[1:]  # drop self
    sig = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    text = str(sig)
    if app.config.autodoc_typehints in ("description", "none"):
        text = str(sig.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in params]
        ))
    return text, None


def setup(app: Sphinx) -> dict:
    app.connect("autodoc-process-signature", _init_signature)
    app.connect("builder-inited", _generate)
    app.connect("missing-reference", _resolve_reexport)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
