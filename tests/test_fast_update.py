"""The fast flat-tensor step against the composable path and a plain-PyTorch reference
(arXiv 2605.22376, Eqs. 5, 7-10), gradient isolation and the plug-in contract."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from tabb_torchrl import TABBLoss, TargetBellmanMismatch, make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.data import make_source_target_buffer
from tabb_torchrl.methods import TABB, PooledIQL
from tabb_torchrl.objectives import CrossDomainIQLLoss, FastCrossDomainUpdate
from tabb_torchrl.objectives.flat import optimizer_step
from tabb_torchrl.pipeline import ModularUpdate

OBS, ACT, LAT = 5, 3, 6
TOL = dict(atol=1e-5, rtol=1e-5)  # float32, a few hundred flops per value
ALGOS = {  # name: (method kind, source_actor, n_source)
    "tabb": ("tabb", False, 8),
    "src_actor": ("tabb", True, 8),
    "iql_mixed": ("iql", False, 8),
    "iql_target": ("iql", False, 0),
}


def _data(n: int, gen: torch.Generator) -> TensorDict:
    def r(*shape):
        return torch.randn(*shape, generator=gen)

    return TensorDict({
        "observation": r(n, OBS), "action": torch.rand(n, ACT, generator=gen) * 1.8 - 0.9,
        "z_s": r(n, LAT), "z_sa": r(n, LAT), "r_hat": r(n, 1), "z_next_hat": r(n, LAT),
        ("next", "z_s"): r(n, LAT), ("next", "reward"): r(n, 1),
        ("next", "terminated"): torch.rand(n, 1, generator=gen) < 0.2,
    }, [n])


def _setup(kind="tabb", source_actor=False, n_source=8, anchor=False, seed=0, beta=1.0, max_weight=100.0,
           weights="tbm", transform=False, num_q=2, **tabb_kw):
    gen = torch.Generator().manual_seed(123)
    source = _data(40, gen) if n_source else None
    target = _data(24, gen)
    torch.manual_seed(seed)
    value = make_latent_value(LAT, hidden_sizes=(16, 16))
    ema = copy.deepcopy(value).requires_grad_(False) if anchor else None
    if kind == "tabb":
        method = TABB(weights=weights, source_actor=source_actor, anchor=ema,
                      value_network=value if anchor else None, anchor_tau=0.1, **tabb_kw)
    else:
        method = PooledIQL()
    loss = TABBLoss(make_actor(OBS, ACT, hidden_sizes=(16, 16)), make_latent_qvalue(LAT, hidden_sizes=(16, 16)),
                    value, method=method, beta=beta, max_weight=max_weight, gamma=0.9, num_qvalue_nets=num_q)
    tbm = TargetBellmanMismatch(None, ema if anchor else value, gamma=0.9) if transform else None
    rb = make_source_target_buffer(source, target, n_source=n_source, n_target=8, seed=seed, transform=tbm)
    updater = SoftUpdate(loss, tau=0.05)
    opts = {k: torch.optim.Adam(list(getattr(loss, f"{k}_network_params").flatten_keys().values()), lr=1e-2)
            for k in ("qvalue", "value", "actor")}
    return rb, loss, updater, opts


def _params(loss):
    return {k: v.detach().clone() for k, v in loss.state_dict().items() if torch.is_tensor(v)}


@pytest.mark.parametrize("algo", list(ALGOS))
@pytest.mark.parametrize("anchor", [False, True])
def test_fast_matches_modular(algo, anchor):
    """Six steps of each path from the same state: same losses, weights, parameters, anchor and draws."""
    kind, source_actor, n_source = ALGOS[algo]
    if anchor and kind != "tabb":
        pytest.skip("the anchor only enters the TBM weights")
    rb_a, loss_a, upd_a, opts_a = _setup(kind, source_actor, n_source, anchor)
    rb_b, loss_b, upd_b, opts_b = _setup(kind, source_actor, n_source, anchor)
    modular = ModularUpdate(loss_a, rb_a, opts_a, upd_a)
    fast = FastCrossDomainUpdate(loss_b, rb_b, opts_b, polyak=1 - upd_b.eps)
    for _ in range(6):
        out_a, out_b = modular(), fast()
        for k in ("loss_qvalue", "loss_value", "loss_actor", "mean_q", "mean_target_value", "mean_weight", "ess"):
            torch.testing.assert_close(out_b[k], out_a[k], **TOL, msg=k)
        assert ("mean_tbm" in out_b) == ("mean_tbm" in out_a) == (kind == "tabb" and n_source > 0)
    a, b = _params(loss_a), _params(loss_b)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], **TOL, msg=k)
    assert rb_a.sampler.generator.get_state().equal(rb_b.sampler.generator.get_state())


@pytest.mark.parametrize("variant", [
    dict(source_target="realised"),
    dict(source_target="gated", gate_quantile=0.5),
    dict(source_target="gated", gate_quantile=0.5, anchor=True),
    dict(source_in_value=True),
    dict(source_in_value=True, source_actor=True),
    dict(num_q=5),
])
def test_variants_beyond_the_paper_match_on_both_paths(variant):
    """Each TABB option beyond the paper computes the same step on the fast and the composable path."""
    rb_a, loss_a, upd_a, opts_a = _setup(**variant)
    rb_b, loss_b, upd_b, opts_b = _setup(**variant)
    modular = ModularUpdate(loss_a, rb_a, opts_a, upd_a)
    fast = FastCrossDomainUpdate(loss_b, rb_b, opts_b, polyak=1 - upd_b.eps)
    keys = ["loss_qvalue", "loss_value", "loss_actor", "mean_q", "mean_target_value", "mean_weight", "ess"]
    if variant.get("source_target") == "gated":
        keys.append("gate_realised_fraction")
    for _ in range(6):
        out_a, out_b = modular(), fast()
        for k in keys:
            torch.testing.assert_close(out_b[k], out_a[k], **TOL, msg=k)
    a, b = _params(loss_a), _params(loss_b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], **TOL, msg=k)
    # and each differs from the paper's step on the same draws
    rb_p, loss_p, _, opts_p = _setup()
    fast_p = FastCrossDomainUpdate(loss_p, rb_p, opts_p, polyak=1 - upd_b.eps)
    rb_c, loss_c, _, opts_c = _setup(**variant)
    fast_c = FastCrossDomainUpdate(loss_c, rb_c, opts_c, polyak=1 - upd_b.eps)
    out_p, out_c = fast_p(), fast_c()
    assert any(not torch.allclose(out_p[k], out_c[k]) for k in ("loss_qvalue", "loss_value"))


def test_fast_matches_the_transform_path():
    """The pieces the docs teach -- TBM transform on the buffer, TABBLoss reading its weights -- train as the fast step."""
    rb_a, loss_a, upd_a, opts_a = _setup(weights="batch", transform=True)
    rb_b, loss_b, upd_b, opts_b = _setup()
    modular = ModularUpdate(loss_a, rb_a, opts_a, upd_a)
    fast = FastCrossDomainUpdate(loss_b, rb_b, opts_b, polyak=1 - upd_b.eps)
    for _ in range(4):
        out_a, out_b = modular(), fast()
        for k in ("loss_qvalue", "loss_value", "loss_actor", "ess", "mean_tbm"):
            torch.testing.assert_close(out_b[k], out_a[k], **TOL, msg=k)


def _mlp(x, params, prefix):
    """Plain ReLU MLP from a flat parameter mapping (``prefix0.weight`` ...)."""
    i = 0
    while f"{prefix}{i}.weight" in params:
        x = x @ params[f"{prefix}{i}.weight"].transpose(-1, -2) + params[f"{prefix}{i}.bias"].unsqueeze(-2)
        i += 2
        if f"{prefix}{i}.weight" in params:
            x = torch.relu(x)
    return x


def _reference_tabb(loss, rows, n_s, *, temperature=1.0, std_eps=1e-6):
    """TABB's step written out in plain PyTorch (Eqs. 5, 7-10), TBM weights computed here."""
    q_p = dict(loss.qvalue_network_params.flatten_keys(".").items())
    qt_p = {k: v.detach() for k, v in loss.target_qvalue_network_params.flatten_keys(".").items()}
    v_p = dict(loss.value_network_params.flatten_keys(".").items())
    pi_p = dict(loss.actor_network_params.flatten_keys(".").items())
    qpre, vpre = "module.net.", "module.net."
    g = loss.gamma
    r, d = rows["next", "reward"][:, 0], rows["next", "terminated"][:, 0].float()

    def V(x, p=v_p):
        return _mlp(x, p, vpre)[..., 0]

    with torch.no_grad():
        vd = {k: v.detach() for k, v in v_p.items()}
        y = r + g * (1 - d) * V(rows["next", "z_s"], vd)
        y_hat = rows["r_hat"][:, 0] + g * (1 - d) * V(rows["z_next_hat"], vd)
        tbm = (y - y_hat)[:n_s].abs()
        s_b = tbm.std() + std_eps
        w = n_s * torch.softmax(-tbm / (temperature * s_b), 0)
        target = torch.cat([y_hat[:n_s], y[n_s:]])
        min_qt = _mlp(rows["z_sa"], qt_p, qpre)[..., 0].amin(0)
    q = _mlp(rows["z_sa"], q_p, qpre)[..., 0]  # [2, N]
    hub = F.huber_loss(q, target.expand_as(q), reduction="none", delta=1.0)
    loss_q = (hub[:, n_s:].mean(-1) + (w * hub[:, :n_s]).mean(-1)).mean()
    v = V(rows["z_s"][n_s:])
    u = min_qt[n_s:] - v
    loss_v = (torch.where(u < 0, 0.3, 0.7) * u ** 2).mean()
    loc = torch.tanh(_mlp(rows["observation"][n_s:], pi_p, "module.0.module.net."))
    log_std = pi_p["module.0.module.log_std"].clamp(-5.0, 2.0)
    lp = torch.distributions.Normal(loc, log_std.exp()).log_prob(rows["action"][n_s:]).sum(-1)
    aw = torch.exp(loss.beta * (u.detach())).clamp_max(loss.max_weight)
    loss_pi = -(aw * lp).mean()
    return loss_q, loss_v, loss_pi, w


@pytest.mark.parametrize("max_weight", [100.0, 1.0])
def test_fast_step_and_loss_module_match_a_plain_reference_on_fixed_rows(max_weight):
    """Losses and gradients of the fast step, of TABBLoss(weights="tbm") and of a hand-written step agree
    (atol/rtol 1e-5). With ``max_weight=1.0`` the AWR clip binds on the rows of positive advantage: the
    unclipped loss differs, so removing the clip fails this test."""
    rb, loss, _, opts = _setup(beta=3.0, max_weight=max_weight)
    fast = FastCrossDomainUpdate(loss, rb, opts)
    idx_src, idx_tgt = fast.sample_indices()
    rows = rb.storage.get(torch.cat([idx_src, idx_tgt]))
    n_s = idx_src.shape[0]
    trained = [*loss.qvalue_network_params.flatten_keys().values(), *loss.value_network_params.flatten_keys().values(),
               *loss.actor_network_params.flatten_keys().values()]

    def grads(total):
        return torch.autograd.grad(total, trained, allow_unused=True)

    total_fast, metrics = fast.losses(idx_src, idx_tgt)
    out = loss(rows)
    total_module = out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]
    lq, lv, lpi, w = _reference_tabb(loss, rows, n_s)
    for got in (metrics, out):
        torch.testing.assert_close(got["loss_qvalue"], lq, **TOL)
        torch.testing.assert_close(got["loss_value"], lv, **TOL)
        torch.testing.assert_close(got["loss_actor"], lpi, **TOL)
        torch.testing.assert_close(got["mean_weight"], w.mean(), **TOL)
    for ga, gb, gc in zip(grads(total_fast), grads(total_module), grads(lq + lv + lpi)):
        torch.testing.assert_close(ga, gc, **TOL)
        torch.testing.assert_close(gb, gc, **TOL)
    if max_weight < 10:  # the clip binds: an unclipped actor loss is different
        loss.settings.__dict__["max_weight"] = math.inf  # (frozen dataclass) the same loss without the clip
        _, _, lpi_unclipped, _ = _reference_tabb(loss, rows, n_s)
        assert abs(float(lpi_unclipped) - float(metrics["loss_actor"])) > 1e-3


def test_source_rows_change_the_critic_only():
    """algo=tabb: the same target rows with and without source rows give different critic gradients and
    identical value and actor gradients."""
    rb, loss, _, _ = _setup()
    gen = torch.Generator().manual_seed(5)
    src_idx = torch.randint(0, 40, (8,), generator=gen)
    tgt_idx = torch.randint(40, 64, (8,), generator=gen)
    with_src = rb.storage.get(torch.cat([src_idx, tgt_idx]))
    without = rb.storage.get(tgt_idx)
    params = {"qvalue": loss.qvalue_network_params, "value": loss.value_network_params,
              "actor": loss.actor_network_params}

    def grads(td, key):
        out = loss(td)
        flat = list(params[key].flatten_keys().values())
        return torch.autograd.grad(out[f"loss_{key}"], flat)

    for key, same in (("qvalue", False), ("value", True), ("actor", True)):
        a, b = grads(with_src, key), grads(without, key)
        equal = all(torch.allclose(x, y, atol=1e-7, rtol=0) for x, y in zip(a, b))
        assert equal == same, key


def test_gradients_reach_the_intended_parameters_only():
    rb, loss, _, opts = _setup()
    fast = FastCrossDomainUpdate(loss, rb, opts)
    lq, lv, lpi, metrics = __import__("tabb_torchrl.objectives", fromlist=["x"]).cross_domain_losses(
        fast.rows(*fast.sample_indices()), 8, fast.networks(), loss.method, loss.settings)
    assert all(not m.requires_grad for m in metrics.values())
    groups = {"qvalue": loss.qvalue_network_params, "value": loss.value_network_params,
              "actor": loss.actor_network_params}
    for name, part in (("qvalue", lq), ("value", lv), ("actor", lpi)):
        for other, params in groups.items():
            flat = list(params.flatten_keys().values())
            g = torch.autograd.grad(part, flat, allow_unused=True, retain_graph=True)
            reached = any(x is not None and x.abs().sum() > 0 for x in g)
            assert reached == (other == name), (name, other)
    target = list(loss.target_qvalue_network_params.flatten_keys().values())
    assert all(not t.requires_grad for t in target)


def test_unsupported_and_missing_inputs_raise():
    gen = torch.Generator().manual_seed(0)
    src, tgt = _data(10, gen), _data(6, gen)
    del src["z_sa"], tgt["z_sa"]
    no_latents = make_source_target_buffer(src, tgt, n_source=2, n_target=2, seed=0)
    _, loss, _, opts = _setup()
    with pytest.raises(ValueError, match="latents"):
        FastCrossDomainUpdate(loss, no_latents, opts)
    rb_t, *_ = _setup(transform=True, weights="batch")
    with pytest.raises(NotImplementedError, match="transforms"):
        FastCrossDomainUpdate(loss, rb_t, opts)
    with pytest.raises(ValueError, match="optimisers"):
        rb, *_ = _setup()
        FastCrossDomainUpdate(loss, rb, [])


def test_direct_fused_adam_step_is_bit_identical_to_adam_step():
    """optimizer_step calls the fused Adam kernel directly once the state exists: same bits as ``step()``."""
    def run(direct: bool):
        rb, loss, _, _ = _setup()
        opts = [torch.optim.Adam(list(getattr(loss, f"{k}_network_params").flatten_keys().values()), lr=1e-2,
                                 fused=True) for k in ("qvalue", "value", "actor")]
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opts[2], T_max=10)
        fast = FastCrossDomainUpdate(loss, rb, opts, polyak=0.05)
        for _ in range(5):
            total, _ = fast.losses(*fast.sample_indices())
            total.backward()
            if direct:
                optimizer_step(opts)
            else:
                for o in opts:
                    o.step()
                    o.zero_grad(set_to_none=True)
            sched.step()
        return loss.state_dict(), [o.state_dict() for o in opts]

    (pa, oa), (pb, ob) = run(True), run(False)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    for a, b in zip(oa, ob):
        for i, st in a["state"].items():
            for name, t in st.items():
                assert torch.equal(t, b["state"][i][name]), (i, name)
        assert a["param_groups"] == b["param_groups"]


def test_raw_feature_methods_run_on_both_paths():
    """features="raw": Q reads [s, a], V reads s, s' -- the fast and composable paths agree."""
    gen = torch.Generator().manual_seed(1)

    def build():
        torch.manual_seed(0)
        loss = CrossDomainIQLLoss(make_actor(OBS, ACT, hidden_sizes=(16,)), make_latent_qvalue(OBS + ACT, hidden_sizes=(16,)),
                                  make_latent_value(OBS, hidden_sizes=(16,)), method=PooledIQL(), features="raw")
        opts = [torch.optim.Adam(list(getattr(loss, f"{k}_network_params").flatten_keys().values()), lr=1e-2)
                for k in ("qvalue", "value", "actor")]
        return loss, opts

    src, tgt = _data(30, gen), _data(12, gen)
    for td in (src, tgt):
        td["next", "observation"] = torch.randn(td.shape[0], OBS, generator=gen)
    (la, oa), (lb, ob) = build(), build()
    rb_a = make_source_target_buffer(src, tgt, n_source=4, n_target=4, seed=3)
    rb_b = make_source_target_buffer(src, tgt, n_source=4, n_target=4, seed=3)
    modular = ModularUpdate(la, rb_a, oa, SoftUpdate(la, tau=0.05))
    fast = FastCrossDomainUpdate(lb, rb_b, ob, polyak=1 - 0.95)
    for _ in range(3):
        a, b = modular(), fast()
        torch.testing.assert_close(b["loss_qvalue"], a["loss_qvalue"], **TOL)
        torch.testing.assert_close(b["loss_actor"], a["loss_actor"], **TOL)
    assert math.isfinite(float(b["loss_value"]))


def test_learn_hook_sees_each_steps_rows_on_both_paths():
    """A method that trains its own networks during RL gets the step's rows (source first) on either path."""
    class Counting(PooledIQL):
        def __init__(self):
            super().__init__()
            self.seen = []

        def learn(self, rows, n_source, value):
            self.seen.append((n_source, rows.reward.shape[0], float(value(rows.next_feature).mean())))
            return {"learned": torch.tensor(float(len(self.seen)))}

    def build():
        gen = torch.Generator().manual_seed(123)
        torch.manual_seed(0)
        method = Counting()
        loss = TABBLoss(make_actor(OBS, ACT, hidden_sizes=(16,)), make_latent_qvalue(LAT, hidden_sizes=(16,)),
                        make_latent_value(LAT, hidden_sizes=(16,)), method=method)
        rb = make_source_target_buffer(_data(40, gen), _data(24, gen), n_source=8, n_target=8, seed=0)
        opts = [torch.optim.Adam(list(getattr(loss, f"{k}_network_params").flatten_keys().values()), lr=1e-2)
                for k in ("qvalue", "value", "actor")]
        return method, loss, rb, opts

    m_a, loss_a, rb_a, opts_a = build()
    m_b, loss_b, rb_b, opts_b = build()
    modular = ModularUpdate(loss_a, rb_a, opts_a, SoftUpdate(loss_a, tau=0.05))
    fast = FastCrossDomainUpdate(loss_b, rb_b, opts_b, polyak=1 - 0.95)
    for step in range(3):
        assert float(modular()["learned"]) == float(fast()["learned"]) == step + 1
    assert [s[:2] for s in m_a.seen] == [s[:2] for s in m_b.seen] == [(8, 16)] * 3
    for a, b in zip(m_a.seen, m_b.seen):  # the same rows and the same V after the update
        assert a[2] == pytest.approx(b[2], abs=1e-5)
