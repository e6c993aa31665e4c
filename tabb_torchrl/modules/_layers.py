"""MLP building blocks shared by the networks of :mod:`tabb_torchrl.modules` (private)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "silu": nn.SiLU,
}


def _activation_class(activation: str) -> type[nn.Module]:
    try:
        return _ACTIVATIONS[activation.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"Unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}."
        ) from None


def _mlp(
    in_features: int,
    out_features: int | None,
    hidden_sizes: Sequence[int],
    activation: str,
) -> nn.Sequential:
    """Linear/activation stack; ``out_features=None`` ends on the last hidden layer."""
    act = _activation_class(activation)
    layers: list[nn.Module] = []
    last = in_features
    for size in hidden_sizes:
        layers += [nn.Linear(last, int(size)), act()]
        last = int(size)
    if out_features is not None:
        layers.append(nn.Linear(last, out_features))
    return nn.Sequential(*layers)


def _check_last_dim(x: torch.Tensor, expected: int, what: str, owner: str, fix: str) -> None:
    if x.shape[-1] != expected:
        raise ValueError(
            f"{owner} expected {what} with last dimension {expected}, got a tensor of "
            f"shape {tuple(x.shape)}. {fix}"
        )
