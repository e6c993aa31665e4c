"""The methods that transfer nothing: IQL on the union of the data (the ``-TBM`` ablation) and
IQL on the target rows alone."""
from __future__ import annotations

from tabb_torchrl.methods.base import CrossDomainMethod

__all__ = ["PooledIQL"]


class PooledIQL(CrossDomainMethod):
    """IQL on source ∪ target: realised targets, weight 1, every loss one plain mean over all rows.

    The paper's ``-TBM`` ablation (``algo=iql_mixed``). With no source rows in the
    batches (``data.n_source=0``) it is IQL on the target data (``algo=iql_target``).

    Examples:
        >>> from tabb_torchrl.methods import PooledIQL
        >>> m = PooledIQL()
        >>> m.pooled, m.source_in_value, m.source_in_actor
        (True, True, True)
    """

    name = "iql"
    pooled = True
    source_in_value = True
    source_in_actor = True
