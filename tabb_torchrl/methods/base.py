"""The plug-in interface of cross-domain methods (defined in the core, :mod:`tabb_torchrl.objectives.method`).

Examples:
    >>> from tabb_torchrl.methods.base import CrossDomainMethod
    >>> CrossDomainMethod.__module__
    'tabb_torchrl.objectives.method'
"""
from tabb_torchrl.objectives.method import CrossDomainMethod, SourceEdit, SourceRows

__all__ = ["CrossDomainMethod", "SourceEdit", "SourceRows"]
