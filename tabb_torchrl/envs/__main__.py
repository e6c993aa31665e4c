"""List the registered target env ids: ``python -m tabb_torchrl.envs [--markdown] [FAMILY]``."""

from __future__ import annotations

import argparse
import sys

import os

from tabb_torchrl.envs.spec import get_shift, list_env_ids, list_families


def main(argv: list[str] | None = None) -> int:
    """Print every id with a one-line description (or a Markdown table).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 for a filter that matches no id (the valid
        envs, shifts and families are printed to stderr).

    Example:
        >>> main(["Hopper-kinematic-legjnt"])  # doctest: +NORMALIZE_WHITESPACE
        tabb/Hopper-kinematic-legjnt-easy-v0    leg_joint range [-150, 0] x0.8
        tabb/Hopper-kinematic-legjnt-medium-v0  leg_joint range [-150, 0] x0.5
        tabb/Hopper-kinematic-legjnt-hard-v0    leg_joint range [-150, 0] x0.2
        0
    """
    parser = argparse.ArgumentParser(prog="python -m tabb_torchrl.envs", description=__doc__)
    parser.add_argument("family", nargs="?", default=None,
                        help="only this env (Hopper), shift (friction) or family (Hopper-kinematic-legjnt)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (id, source env, change)")
    args = parser.parse_args(argv)
    ids = list_env_ids(args.family)
    if not ids:
        specs = [get_shift(i) for i in list_env_ids()]
        families = list(list_families())
        envs = sorted({s.env_name for s in specs})
        shifts = sorted({s.shift for s in specs})
        parser.error(
            f"no env id matches {args.family!r}. Pass an env ({', '.join(envs)}), a shift "
            f"({', '.join(shifts)}) or a family ({', '.join(families)}), or nothing to list all ids."
        )
    try:
        _print(ids, args.markdown)
    except BrokenPipeError:  # `python -m tabb_torchrl.envs | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _print(ids: list[str], markdown: bool) -> None:
    """The table (:func:`tabulate.tabulate`: ``github`` markdown, or ``plain`` columns)."""
    from tabulate import tabulate

    if markdown:
        rows = []
        for env_id in ids:
            spec = get_shift(env_id)
            text = spec.description + (f" Note: {spec.caveat}" if spec.caveat else "")
            rows.append([f"`{env_id}`", f"`{spec.source_id}`", text.replace("|", "\\|")])
        print(tabulate(rows, headers=["id", "source env", "what it changes"], tablefmt="github",
                       disable_numparse=True))
    else:
        table = tabulate([[i, get_shift(i).description] for i in ids], tablefmt="plain", disable_numparse=True)
        print("\n".join(line.rstrip() for line in table.splitlines()))
    sys.stdout.flush()

if __name__ == "__main__":
    sys.exit(main())
