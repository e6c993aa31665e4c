"""Cross-domain methods as plug-ins of one IQL-style core.

A method is a :class:`CrossDomainMethod`: what it does to the source rows of a
batch (weights, a row filter, corrected rewards, replaced Bellman targets), with
optional pre-training and actor-regulariser hooks. Everything else (networks,
losses of Eqs. 8-10, optimisation, the fast path, checkpoints) is shared; see
the architecture page of the docs.

* :class:`TABB` -- target-aligned targets and TBM weights (Liu & Long, arXiv 2605.22376).
* :class:`PooledIQL` -- IQL on source ∪ target (``iql_mixed``; ``iql_target`` without source rows).
* :class:`DARA` -- dynamics-aware reward augmentation of source rows by two domain classifiers
  (Liu, Zhang & Wang, ICLR 2022).
* :class:`SRPO` -- a state-discriminator reward on source rows, real = high-value states
  (Xue et al., NeurIPS 2023).
* :class:`IGDF` -- contrastive dynamics scores filter (top xi) and weight source rows
  (Wen et al., ICML 2024, arXiv 2405.06192).
* :class:`OTDF` -- optimal-transport deviations filter (top 80 %) and weight source rows; a VAE of
  the target data constrains the actor (Lyu et al., ICLR 2025).
* :class:`V2A` -- IGDF's score mixed with a modality-aware advantage filters source rows
  (Qiao et al., ICML 2026, arXiv 2605.24862).
* :class:`DROCO` -- a robust Bellman target for source rows from a target-dynamics ensemble
  (Qiao et al., ICLR 2026, arXiv 2512.02486).

Two baselines run on their own TD3-style backbone (:mod:`tabb_torchrl.pipeline.td3`, selected by
``algo.name`` through :mod:`tabb_torchrl.pipeline.backbones`), not on the IQL core, so they are not in
:data:`METHODS`:

* :class:`MOBODY` -- rows of a target dynamics model learned through a representation shared by both
  domains, Q-weighted behaviour cloning (Guo et al. 2025, arXiv 2506.08460);
* :class:`BOSA` -- TD errors masked outside the support of a dynamics-VAE ensemble, a conservative
  term on source rows, a behaviour-support actor term (Liu et al., AAAI 2024).

:func:`make_method` builds one by registry name; :func:`register_method` adds yours. A method whose
pre-training can be checkpointed mid-way and resumed exactly is also a
:class:`~tabb_torchrl.methods.base.ResumablePrepare`
(BOSA, MOBODY, DROCO, OTDF).
"""
from __future__ import annotations

from typing import Callable

from tabb_torchrl.objectives.method import CrossDomainMethod, PooledIQL, SourceEdit, SourceRows
from tabb_torchrl.objectives.tabb import TABB
from tabb_torchrl.methods.base import PrepareProgress, ResumablePrepare

# baselines: one import line each (keep alphabetical)
from tabb_torchrl.methods.dara import DARA
from tabb_torchrl.methods.droco import DROCO
from tabb_torchrl.methods.igdf import IGDF
from tabb_torchrl.methods.otdf import OTDF
from tabb_torchrl.methods.srpo import SRPO
from tabb_torchrl.methods.v2a import V2A
# end of baseline imports
# own-backbone baselines (TD3-style; not in METHODS)
from tabb_torchrl.methods.bosa import BOSA
from tabb_torchrl.methods.mobody import MOBODY

__all__ = [
    "CrossDomainMethod",
    "SourceEdit",
    "SourceRows",
    "ResumablePrepare",
    "PrepareProgress",
    "METHODS",
    "make_method",
    "register_method",
    # methods
    "TABB",
    "PooledIQL",
    "DARA",
    "DROCO",
    "IGDF",
    "OTDF",
    "SRPO",
    "V2A",
    # own-backbone baselines
    "BOSA",
    "MOBODY",
]

METHODS: dict[str, Callable[..., CrossDomainMethod]] = {
    "tabb": TABB,
    "iql": PooledIQL,
    # baselines: one line each (keep alphabetical)
    "dara": DARA,
    "droco": DROCO,
    "igdf": IGDF,
    "otdf": OTDF,
    "srpo": SRPO,
    "v2a": V2A,
    # end of baselines
}
"""Registry name -> constructor of every cross-domain method (``algo.method`` of the recipe)."""


def register_method(name: str, constructor: Callable[..., CrossDomainMethod]) -> None:
    """Add a method to :data:`METHODS` (a name may be registered once).

    Examples:
        >>> from tabb_torchrl.methods import CrossDomainMethod, register_method, make_method
        >>> class Mine(CrossDomainMethod):
        ...     name = "mine_doctest"
        >>> register_method("mine_doctest", Mine)
        >>> type(make_method("mine_doctest")).__name__
        'Mine'
    """
    if name in METHODS:
        raise ValueError(f"A cross-domain method named {name!r} is already registered.")
    METHODS[name] = constructor


def make_method(name: str, **kwargs) -> CrossDomainMethod:
    """Build the method registered as ``name`` with ``kwargs``.

    Raises:
        ValueError: unknown name (the message lists the known ones).

    Examples:
        >>> from tabb_torchrl.methods import make_method
        >>> make_method("tabb", temperature=2.0).temperature
        2.0
    """
    if name not in METHODS:
        raise ValueError(f"Unknown cross-domain method {name!r}; known: {sorted(METHODS)}. "
                         "Fix: choose one of them (algo.method), or register yours with register_method().")
    return METHODS[name](**kwargs)
