"""TABBLoss (arXiv 2605.22376, Eqs. 8-10) against a plain-PyTorch reference, gradient
isolation, ablation flags, key handling, state_dict and SoftUpdate."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from tabb_torchrl import (
    LatentModel,
    TABBLoss,
    TargetBellmanMismatch,
    make_actor,
    make_latent_qvalue,
    make_latent_value,
)

OBS, ACT, DS, DSA, HID = 3, 2, 4, 5, (8,)
GAMMA, KAPPA, BETA, DELTA, MAXW = 0.9, 0.7, 3.0, 1.0, 100.0

warnings.filterwarnings("ignore", message="No target network updater")


def _loss(latent_model=None, **kw):
    return TABBLoss(
        make_actor(OBS, ACT, hidden_sizes=HID),
        make_latent_qvalue(DSA, hidden_sizes=HID),
        make_latent_value(DS, hidden_sizes=HID),
        latent_model,
        gamma=GAMMA, expectile=KAPPA, beta=BETA, huber_delta=DELTA, max_weight=MAXW,
        **kw,
    )


def _batch(n_src=5, n_tar=4, latents=True):
    n = n_src + n_tar
    td = TensorDict(
        {
            "observation": torch.randn(n, OBS),
            "action": torch.rand(n, ACT) * 1.8 - 0.9,
            "domain": torch.cat([torch.zeros(n_src, dtype=torch.long), torch.ones(n_tar, dtype=torch.long)]),
            ("next", "observation"): torch.randn(n, OBS),
            ("next", "reward"): torch.randn(n, 1),
            ("next", "terminated"): torch.tensor([[i % 3 == 1] for i in range(n)]),
            ("next", "done"): torch.tensor([[i % 3 == 1] for i in range(n)]),
            "weight": torch.cat([torch.rand(n_src, 1) * 2, torch.ones(n_tar, 1)]),
            "tbm": torch.cat([torch.rand(n_src, 1), torch.zeros(n_tar, 1)]),
        },
        [n],
    )
    if latents:
        td["z_s"] = torch.randn(n, DS)
        td["z_sa"] = torch.randn(n, DSA)
        td["next", "z_s"] = torch.randn(n, DS)
        td["r_hat"] = torch.randn(n, 1)
        td["z_next_hat"] = torch.randn(n, DS)
    return td


# ---------------------------------------------------------------- plain reference
def _mlp(params, x, prefix):
    flat = params.flatten_keys(".")
    layers = sorted({int(k[len(prefix):].split(".")[0]) for k in flat.keys() if k.startswith(prefix)})
    for j, i in enumerate(layers):
        x = x @ flat[f"{prefix}{i}.weight"].transpose(-1, -2) + flat[f"{prefix}{i}.bias"]
        if j < len(layers) - 1:
            x = torch.relu(x)
    return x


def _reference(loss, td, *, use_tbm=True, source_actor=False):
    V = lambda z, p: _mlp(p, z, "module.net.")[:, 0]  # noqa: E731
    Q = lambda z, p: torch.stack([_mlp(p[k], z, "module.net.")[:, 0] for k in range(p.shape[0])])  # noqa: E731
    r = td["next", "reward"][:, 0]
    d = td["next", "terminated"][:, 0].float()
    tar = td["domain"] == 1
    src = td["domain"] == 0
    w = td["weight"][:, 0] if use_tbm else torch.ones(len(r))
    vp = loss.value_network_params.data
    with torch.no_grad():
        y_real = r + GAMMA * (1 - d) * V(td["next", "z_s"], vp)
        y_al = td["r_hat"][:, 0] + GAMMA * (1 - d) * V(td["z_next_hat"], vp)
        y = torch.where(src, y_al, y_real) if use_tbm else y_real
        min_q = Q(td["z_sa"], loss.target_qvalue_network_params).min(0).values
    q = Q(td["z_sa"], loss.qvalue_network_params)
    hub = F.huber_loss(q, y.expand_as(q), reduction="none", delta=DELTA)
    if use_tbm:
        loss_q = (hub[:, tar].mean(-1) + (w[src] * hub[:, src]).mean(-1)).mean()
    else:
        loss_q = hub.mean(-1).mean()
    v = V(td["z_s"], loss.value_network_params)
    u = min_q - v
    ev = torch.where(u < 0, 1 - KAPPA, KAPPA) * u**2
    loss_v = ev[tar].mean() if use_tbm else ev.mean()
    ap = loss.actor_network_params
    flat = ap.flatten_keys(".")
    mean = torch.tanh(_mlp(ap, td["observation"], "module.0.module.net."))
    std = flat["module.0.module.log_std"].clamp(-10, 2).exp()
    logp = torch.distributions.Normal(mean, std).log_prob(td["action"]).sum(-1)
    aw = torch.exp(BETA * (min_q - v.detach())).clamp(max=MAXW)
    per = -aw * logp
    if use_tbm:
        loss_pi = per[tar].mean() + ((w * per)[src].mean() if source_actor else 0.0)
    else:
        loss_pi = per.mean()
    return {"loss_qvalue": loss_q, "loss_value": loss_v, "loss_actor": loss_pi}


def _trainable(loss):
    return dict(loss.named_parameters())


def _grads(value, params):
    g = torch.autograd.grad(value, list(params.values()), allow_unused=True, retain_graph=True)
    return {k: gi for k, gi in zip(params, g)}


@pytest.mark.parametrize(
    "flags", [dict(), dict(source_actor=True), dict(use_tbm=False), dict(use_tbm=False, source_actor=True)]
)
def test_matches_plain_pytorch_reference(flags):
    loss = _loss(**flags)
    td = _batch()
    out = loss(td)
    ref = _reference(loss, td, **flags)
    params = _trainable(loss)
    for name in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(out[name], ref[name])
        g_out, g_ref = _grads(out[name], params), _grads(ref[name], params)
        for k in params:
            if g_ref[k] is None:
                assert g_out[k] is None or torch.count_nonzero(g_out[k]) == 0, (name, k)
            else:
                torch.testing.assert_close(g_out[k], g_ref[k], msg=f"{name} grad {k}")


def test_minus_tbm_on_target_rows_is_a_plain_iql_step():
    """use_tbm=False on a target-only batch == plain IQL (same params): same losses, same Adam step."""
    torch.manual_seed(1)
    loss = _loss(use_tbm=False)
    td = _batch(n_src=0, n_tar=8)
    ref_params = {k: p.detach().clone().requires_grad_(True) for k, p in _trainable(loss).items()}
    ref = _reference(loss, td, use_tbm=False)
    total_ref = ref["loss_qvalue"] + ref["loss_value"] + ref["loss_actor"]
    grads_ref = torch.autograd.grad(total_ref, list(_trainable(loss).values()), allow_unused=True)
    out = loss(td)
    # TABB (use_tbm=True) gives the same result on a target-only batch
    out_tabb = _loss()
    out_tabb.load_state_dict(loss.state_dict())
    out2 = out_tabb(td)
    for name in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(out[name], ref[name])
        torch.testing.assert_close(out2[name], ref[name])
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    opt.zero_grad()
    (out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]).backward()
    opt.step()
    ref_opt = torch.optim.Adam(ref_params.values(), lr=1e-2)
    for p, g in zip(ref_params.values(), grads_ref):
        p.grad = None if g is None else g.clone()
    ref_opt.step()
    for k, p in _trainable(loss).items():
        torch.testing.assert_close(p.detach(), ref_params[k].detach(), msg=k)


@pytest.mark.parametrize("source_actor", [False, True])
def test_each_loss_reaches_only_its_own_parameters(source_actor):
    model = LatentModel.from_dims(OBS, ACT, latent_dim=DS, latent_sa_dim=DSA, hidden_sizes=HID)
    model.requires_grad_(True)  # even a non-frozen model must get no gradient from TABBLoss
    loss = _loss(model, source_actor=source_actor)
    td = _batch(latents=False)
    owners = {
        "loss_qvalue": "qvalue_network_params",
        "loss_value": "value_network_params",
        "loss_actor": "actor_network_params",
    }
    for name, owner in owners.items():
        for p in list(loss.parameters()) + list(model.parameters()):
            p.grad = None
        loss(td)[name].backward()
        for k, p in loss.named_parameters():
            has = p.grad is not None and torch.count_nonzero(p.grad) > 0
            assert has == k.startswith(owner), (name, k)
        assert all(p.grad is None for p in model.parameters())
        for p in loss.target_qvalue_network_params.values(True, True):
            assert p.grad is None and not p.requires_grad


def test_source_actor_changes_only_the_actor_loss():
    torch.manual_seed(2)
    base, src_actor = _loss(), _loss(source_actor=True)
    src_actor.load_state_dict(base.state_dict())
    td = _batch()
    a, b = base(td), src_actor(td)
    torch.testing.assert_close(a["loss_qvalue"], b["loss_qvalue"])
    torch.testing.assert_close(a["loss_value"], b["loss_value"])
    assert not torch.allclose(a["loss_actor"], b["loss_actor"])


def test_weight_key_is_read_and_defaults_to_one():
    loss = _loss()
    td = _batch()
    ones = td.clone()
    ones["weight"] = torch.ones(9, 1)
    torch.testing.assert_close(loss(td.exclude("weight"))["loss_qvalue"], loss(ones)["loss_qvalue"])
    assert not torch.allclose(loss(td)["loss_qvalue"], loss(ones)["loss_qvalue"])
    # another weighting scheme under another key
    other = td.exclude("weight").set("my_weight", td["weight"])
    loss.set_keys(weight="my_weight")
    torch.testing.assert_close(loss(other)["loss_qvalue"], _loss_from(loss)(td)["loss_qvalue"])


def _loss_from(loss):
    new = _loss()
    new.load_state_dict(loss.state_dict())
    return new


def test_input_is_not_mutated():
    model = LatentModel.from_dims(OBS, ACT, latent_dim=DS, latent_sa_dim=DSA, hidden_sizes=HID).freeze()
    loss = _loss(model)
    for td in (_batch(), _batch(latents=False)):
        before = td.clone()
        loss(td)
        loss.qvalue_loss(td)
        loss.value_loss(td)
        loss.actor_loss(td)
        assert set(td.keys(True, True)) == set(before.keys(True, True))
        assert (td == before).all()


def test_missing_latents_are_computed_with_the_latent_model():
    model = LatentModel.from_dims(OBS, ACT, latent_dim=DS, latent_sa_dim=DSA, hidden_sizes=HID).freeze()
    loss = _loss(model)
    raw = _batch(latents=False)
    cached = model.cache_latents(raw.clone())
    a, b = loss(raw), loss(cached)
    for name in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(a[name], b[name])


def test_outputs_and_metrics():
    loss = _loss()
    td = _batch()
    out = loss(td)
    for key in ("mean_weight", "mean_tbm", "weight_entropy", "ess", "mean_q", "mean_v", "mean_target_value"):
        assert out[key].shape == () and not out[key].requires_grad, key
    src = td["domain"] == 0
    w = td["weight"][src, 0]
    torch.testing.assert_close(out["mean_weight"], w.mean())
    torch.testing.assert_close(out["mean_tbm"], td["tbm"][src, 0].mean())
    torch.testing.assert_close(out["ess"], w.sum() ** 2 / (w**2).sum())
    assert "mean_tbm" not in loss(td.exclude("tbm")).keys()


def test_vmap_and_loop_agree():
    a, b = _loss(), _loss(deactivate_vmap=True)
    b.load_state_dict(a.state_dict())
    td = _batch()
    oa, ob = a(td), b(td)
    for name in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(oa[name], ob[name])


def test_set_keys_state_dict_and_soft_update():
    loss = _loss()
    with pytest.raises(ValueError, match="not an accepted tensordict key"):
        loss.set_keys(not_a_key="x")
    td = _batch()
    clone = _loss()
    clone.load_state_dict(loss.state_dict())
    for name in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(loss(td)[name], clone(td)[name])
    # two critics with distinct parameters
    w0 = loss.qvalue_network_params["module", "net", "0", "weight"]
    assert not torch.allclose(w0[0], w0[1])
    updater = SoftUpdate(loss, tau=0.005)
    old_target = loss.target_qvalue_network_params.clone()
    torch.testing.assert_close(old_target, loss.qvalue_network_params.data.clone())
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    opt.zero_grad()
    loss(td)["loss_qvalue"].backward()
    opt.step()
    online = loss.qvalue_network_params.data.clone()
    updater.step()
    expected = old_target.apply(lambda t, o: 0.995 * t + 0.005 * o, online)
    assert (loss.target_qvalue_network_params != old_target).any()
    torch.testing.assert_close(loss.target_qvalue_network_params.data.clone(), expected)


def test_clear_errors():
    loss = _loss()
    with pytest.raises(KeyError, match=r"'z_next_hat'.*set_keys\(next_latent_hat="):
        loss(_batch().exclude("z_next_hat"))
    with pytest.raises(KeyError, match=r"'domain'.*set_keys\(domain="):
        loss(_batch().exclude("domain"))
    with pytest.raises(KeyError, match=r"reward.*set_keys\(reward="):
        loss(_batch().exclude(("next", "reward")))
    with pytest.raises(ValueError, match="obs_dim"):
        bad = _batch()
        loss(bad.set("observation", torch.zeros(9, OBS + 2)))
    nets = lambda: (make_actor(OBS, ACT, hidden_sizes=HID), make_latent_qvalue(DSA, hidden_sizes=HID),  # noqa: E731
                    make_latent_value(DS, hidden_sizes=HID))
    with pytest.raises(ValueError, match="expectile"):
        TABBLoss(*nets(), expectile=1.5)
    with pytest.raises(ValueError, match="gamma"):
        TABBLoss(*nets(), gamma=1.5)


def test_with_tbm_transform_end_to_end():
    model = LatentModel.from_dims(OBS, ACT, latent_dim=DS, latent_sa_dim=DSA, hidden_sizes=HID).freeze()
    value = make_latent_value(DS, hidden_sizes=HID)
    loss = TABBLoss(make_actor(OBS, ACT, hidden_sizes=HID), make_latent_qvalue(DSA, hidden_sizes=HID), value, model)
    tbm = TargetBellmanMismatch(model, value, gamma=0.99)
    td = tbm(_batch(latents=False).exclude("weight", "tbm"))
    out = loss(td)
    total = out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]
    assert torch.isfinite(total)
    total.backward()


@pytest.mark.parametrize("latents", [True, False])
def test_keyword_call_matches_tensordict_call(latents):
    """TorchRL's ``@dispatch`` form: ``loss(action=..., next_reward=..., ...)`` -> (L_Q, L_V, L_pi)."""
    torch.manual_seed(0)
    if latents:
        loss, td = _loss(), _batch()
    else:  # no cached latents: the frozen latent model computes them from the raw entries
        model = LatentModel.from_dims(OBS, ACT, latent_dim=DS, latent_sa_dim=DSA, hidden_sizes=HID).freeze()
        loss, td = _loss(model), _batch(latents=False)
    out = loss(td.clone())
    kwargs = {"_".join((k,) if isinstance(k, str) else k): td.get(k) for k in loss.in_keys if td.get(k, None) is not None}
    assert "next_reward" in kwargs and ("next_z_s" in kwargs) == latents
    lq, lv, lpi = loss(**kwargs)
    torch.testing.assert_close(lq, out["loss_qvalue"])
    torch.testing.assert_close(lv, out["loss_value"])
    torch.testing.assert_close(lpi, out["loss_actor"])
