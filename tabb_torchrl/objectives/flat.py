"""Flat-tensor building blocks of the fast update paths: MLPs read as ``[w1, b1, w2, b2, ...]``
lists of the (shared) parameter tensors of TorchRL modules, twin critics as batched
matmuls, and a direct call of Adam's fused kernel.

They carry no equation of a method (those live in :mod:`tabb_torchrl.objectives.functional`);
the fast cross-domain step (:class:`~tabb_torchrl.objectives.FastCrossDomainUpdate`) and
the behaviour-policy SAC step (:class:`~tabb_torchrl.behavior.sac.FusedSACUpdate`) use them.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from tabb_torchrl.objectives.flat import linear_params, mlp_forward
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> p = linear_params({f"net.{k}": v for k, v in net.named_parameters()}, "toy")
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(mlp_forward(x, p, torch.relu), net(x))
    True
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATION_FNS", "activation_of", "linear_params", "mlp_forward", "ensemble_forward",
           "optimizer_step"]

ACTIVATION_FNS: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu,
    nn.ELU: F.elu,
    nn.Tanh: torch.tanh,
    nn.Mish: F.mish,
    nn.SiLU: F.silu,
}
LINEAR_KEY = re.compile(r"^(?P<prefix>.*)net\.(?P<i>\d+)\.(?P<kind>weight|bias)$")


def activation_of(module: nn.Module, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function of the ``net`` MLP(s) of ``module`` (Linear layers and one activation type)."""
    nets = [m for name, m in module.named_modules() if name.split(".")[-1] == "net" and isinstance(m, nn.Sequential)]
    kinds = {type(c) for net in nets for c in net.children() if not isinstance(c, nn.Linear)}
    if not nets or len(kinds) > 1 or not kinds <= set(ACTIVATION_FNS):
        raise NotImplementedError(
            f"the {what} must be an MLP (``net``) of Linear layers and one activation "
            f"({sorted(c.__name__ for c in ACTIVATION_FNS)}); found {sorted(k.__name__ for k in kinds)}."
        )
    return ACTIVATION_FNS[kinds.pop()] if kinds else (lambda x: x)


def linear_params(params, what: str, extra: Sequence[str] = (), *, container: str = "net") -> list[torch.Tensor]:
    """``[w1, b1, w2, b2, ...]`` of an MLP from its flat parameter TensorDict (tensors shared).

    Args:
        params: the parameters, a TensorDict (nested or flat) or a ``{key: tensor}`` mapping.
        what (str): the network's name in the error message.
        extra (Sequence[str]): names of the other parameters to skip (e.g. ``"log_std"``).

    Keyword Args:
        container (str): the attribute holding the layers, keys ``<prefix><container>.<i>.weight``
            (default ``"net"``; ``"module"`` for the ``module.<i>.weight`` keys of a TorchRL
            ``MLP`` inside a ``ValueOperator``).

    Raises:
        NotImplementedError: another parameter than ``extra``, or no layer.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> p = linear_params({f"module.{k}": v for k, v in mlp.named_parameters()}, "critic", container="module")
        >>> [tuple(t.shape) for t in p]
        [(4, 3), (4,), (1, 4), (1,)]
    """
    flat = dict(params.flatten_keys().items()) if hasattr(params, "flatten_keys") else dict(params)
    pattern = LINEAR_KEY if container == "net" else re.compile(
        rf"^(?P<prefix>.*){re.escape(container)}\.(?P<i>\d+)\.(?P<kind>weight|bias)$")
    layers: dict[int, dict[str, torch.Tensor]] = {}
    unknown = []
    for key in flat.keys():
        m = pattern.match(key)
        if m is None:
            if key.rsplit(".", 1)[-1] not in extra:
                unknown.append(key)
            continue
        layers.setdefault(int(m["i"]), {})[m["kind"]] = flat[key]
    if unknown or not layers or any(set(v) != {"weight", "bias"} for v in layers.values()):
        raise NotImplementedError(
            f"cannot read the {what} as an MLP (parameters {sorted(flat.keys())})."
        )
    out = []
    for i in sorted(layers):
        out += [layers[i]["weight"], layers[i]["bias"]]
    return out


def mlp_forward(x: torch.Tensor, p: Sequence[torch.Tensor], act) -> torch.Tensor:
    """An MLP ``Linear, act, ..., Linear`` from its parameter list ``[w1, b1, w2, b2, ...]``."""
    n = len(p) // 2
    for i in range(n):
        x = F.linear(x, p[2 * i], p[2 * i + 1])
        if i < n - 1:
            x = act(x)
    return x


def ensemble_forward(x: torch.Tensor, p: Sequence[torch.Tensor], act) -> torch.Tensor:
    """Twin critic as batched matmuls: ``x [N, d]`` -> ``[K, N]`` (weights ``[K, out, in]``)."""
    n = len(p) // 2
    h = x.expand(p[0].shape[0], -1, -1)
    for i in range(n):
        h = torch.baddbmm(p[2 * i + 1].unsqueeze(1), h, p[2 * i].transpose(1, 2))
        if i < n - 1:
            h = act(h)
    return h.squeeze(-1)


def optimizer_step(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """``opt.step(); opt.zero_grad(set_to_none=True)`` for each optimiser.

    A ``fused=True`` Adam whose state exists is stepped by calling its kernel
    directly (one ``_foreach_add_`` of the step counters, one ``_fused_adam_``
    per parameter group): the same kernel and arguments as ``Adam.step``, hence
    bit-identical results and the same optimiser state, without its Python
    overhead. Anything else (first step, other optimisers or options) calls ``step()``.
    """
    direct = []
    for opt in optimizers:
        groups = _fused_adam_groups(opt)
        if groups is None:
            opt.step()
        else:
            direct += groups
    if direct:
        torch._foreach_add_([t for g in direct for t in g[5]], 1)
        for params, grads, exp_avgs, exp_avg_sqs, group, steps in direct:
            beta1, beta2 = group["betas"]
            torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                               lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
                               weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                               grad_scale=None, found_inf=None)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


def _fused_adam_groups(opt: torch.optim.Optimizer):
    """Per-group ``(params, grads, exp_avgs, exp_avg_sqs, group, steps)`` of a ``fused=True`` Adam whose
    state is initialised and whose options the direct kernel call covers, else ``None``."""
    if type(opt) is not torch.optim.Adam or opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks:
        return None
    out = []
    for group in opt.param_groups:
        if (not group.get("fused") or group.get("amsgrad") or group.get("maximize")
                or group.get("differentiable") or group.get("capturable")
                or group.get("decoupled_weight_decay") or isinstance(group["lr"], torch.Tensor)
                or any(isinstance(b, torch.Tensor) for b in group["betas"])):
            return None
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = opt.state.get(p)
            if not state or "exp_avg" not in state or p.grad.is_sparse:
                return None
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            continue
        if len({(t.device, t.dtype) for t in params}) > 1 or any(t.device != params[0].device for t in steps):
            return None
        out.append((params, grads, exp_avgs, exp_avg_sqs, group, steps))
    return out
