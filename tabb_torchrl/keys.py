"""Domain flags and the names of the batch entries that cross-domain pieces share.

Losses, transforms and cross-domain methods import this small module (never the
``data`` package), so that the objectives do not depend on data loading.

* :data:`SOURCE` (``0``) / :data:`TARGET` (``1``): values of the ``"domain"`` column.
* The ``*_KEY`` names: the entries a cross-domain method writes into a batch
  (:mod:`tabb_torchrl.methods`) and the core loss reads.

Examples:
    >>> from tabb_torchrl.keys import SOURCE, TARGET, WEIGHT_KEY
    >>> SOURCE, TARGET, WEIGHT_KEY
    (0, 1, 'weight')
"""

from __future__ import annotations

__all__ = [
    "SOURCE",
    "TARGET",
    "DOMAIN_KEY",
    "WEIGHT_KEY",
    "KEEP_KEY",
    "TBM_KEY",
    "SOURCE_TARGET_KEY",
]

SOURCE: int = 0
"""Value of the ``"domain"`` column for source-domain transitions."""

TARGET: int = 1
"""Value of the ``"domain"`` column for target-domain transitions."""

DOMAIN_KEY: str = "domain"
"""The column holding :data:`SOURCE` / :data:`TARGET`."""

WEIGHT_KEY: str = "weight"
"""Per-row weight of a source row in the critic loss (``1`` on target rows)."""

KEEP_KEY: str = "keep"
"""Boolean row filter: ``False`` drops a source row from the critic loss."""

TBM_KEY: str = "tbm"
"""TABB's Target Bellman Mismatch per row (logged)."""

SOURCE_TARGET_KEY: str = "source_target"
"""A method's replacement for the Bellman target of source rows (``None`` = realised)."""
