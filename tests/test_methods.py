"""The plug-in point of cross-domain methods: TABB's edit by hand, the IQL configurations, the
registry, and a toy method that changes only what it says through the whole core."""
from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import (
    METHODS,
    TABB,
    CrossDomainMethod,
    PooledIQL,
    SourceEdit,
    SourceRows,
    make_method,
    register_method,
)
from tabb_torchrl.objectives import CrossDomainIQLLoss


def _rows(**columns):
    return SourceRows(reward=torch.tensor([1.0, 1.0, 0.0]), terminated=torch.tensor([0.0, 0.0, 1.0]),
                      next_value=torch.tensor([2.0, 4.0, 9.0]), next_feature=torch.zeros(3, 1),
                      columns=columns, value=lambda z: z.sum(-1), gamma=0.5)


def test_tabb_edit_by_hand():
    rows = _rows(r_hat=torch.tensor([[1.0], [0.0], [3.0]]), z_next_hat=torch.tensor([[2.0], [2.0], [5.0]]))
    edit = TABB(scaling="absolute", temperature=2.0).edit_source(rows)
    # y_real = [2, 3, 0] ; y_hat = [1 + 1, 0 + 1, 3 + 0] = [2, 1, 3] ; TBM = [0, 2, 3]
    assert edit.target.tolist() == [2.0, 1.0, 3.0]
    expected = 3 * torch.softmax(-torch.tensor([0.0, 2.0, 3.0]) / 2.0, 0)
    torch.testing.assert_close(edit.weight, expected)
    assert edit.metrics["mean_tbm"].item() == pytest.approx(5 / 3)
    assert edit.keep is None and edit.reward is None
    # weights="batch": the batch's weight column (a transform's), the aligned targets unchanged
    batch = TABB(weights="batch").edit_source(_rows(r_hat=torch.tensor([[1.0], [0.0], [3.0]]),
                                                    z_next_hat=torch.tensor([[2.0], [2.0], [5.0]]),
                                                    weight=torch.tensor([0.1, 0.2, 0.3])))
    assert batch.weight.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert batch.target.tolist() == [2.0, 1.0, 3.0]


def test_tabb_ema_anchor_follows_the_value_network():
    value = make_latent_value(2, hidden_sizes=(4,))
    anchor = copy.deepcopy(value).requires_grad_(False)
    m = TABB(anchor=anchor, value_network=value, anchor_tau=0.5)
    with torch.no_grad():
        for p in value.parameters():
            p.add_(1.0)
    before = [p.clone() for p in anchor.parameters()]
    m.after_update()
    for a0, a1, v in zip(before, anchor.parameters(), value.parameters()):
        torch.testing.assert_close(a1, a0 + 0.5 * (v - a0))
    assert "anchor.module.net.0.weight" in "".join(m.state_dict())  # checkpointed with the loss


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="std_eps must be > 0"):
        TABB(std_eps=0.0)
    with pytest.raises(ValueError, match="temperature"):
        TABB(temperature=-1.0)
    with pytest.raises(ValueError, match="Unknown TBM scaling"):
        TABB(scaling="median")
    with pytest.raises(ValueError, match="Unknown cross-domain method 'nope'.*known"):
        make_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method("tabb", TABB)


def test_pooled_iql_flags_and_registry():
    assert set(METHODS) >= {"tabb", "iql"}
    m = make_method("iql")
    assert isinstance(m, PooledIQL) and m.pooled and m.edit_source(_rows()).weight is None
    assert not TABB().pooled and TABB(source_actor=True).source_in_actor


def test_next_value_aggregates_candidates():
    rows = _rows()
    cands = torch.tensor([[[1.0], [3.0]], [[2.0], [2.0]], [[0.0], [-4.0]]])
    m = CrossDomainMethod()
    assert m.next_value(rows, cands, "mean").tolist() == [2.0, 2.0, -2.0]
    assert m.next_value(rows, cands, "min").tolist() == [1.0, 2.0, -4.0]
    with pytest.raises(ValueError, match="reduce"):
        m.next_value(rows, cands, "max")


class _RewardBonus(CrossDomainMethod):
    """A toy method: +1 on every source reward (a DARA-style reward correction)."""

    name = "reward_bonus_test"

    def edit_source(self, rows):
        return SourceEdit(reward=rows.reward + 1.0)


def _loss(method):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
                              make_latent_value(3, hidden_sizes=(8,)), method=method, features="raw")


def test_a_reward_correction_changes_only_the_source_targets():
    g = torch.Generator().manual_seed(0)
    td = TensorDict({"observation": torch.randn(6, 3, generator=g), "action": torch.rand(6, 2, generator=g) - 0.5,
                     "domain": torch.tensor([0, 0, 0, 1, 1, 1]), ("next", "observation"): torch.randn(6, 3, generator=g),
                     ("next", "reward"): torch.randn(6, 1, generator=g),
                     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
    base, bonus = _loss(CrossDomainMethod()), _loss(_RewardBonus())
    rows, n_s = bonus.rows(td)
    nets_b, nets_0 = bonus.networks(), base.networks()
    out0, out1 = base(td), bonus(td)
    # source targets +1 (no discounting of the bonus), target-row targets unchanged: mean target + 3/6
    assert out1["mean_target_value"].item() == pytest.approx(out0["mean_target_value"].item() + 0.5, abs=1e-5)
    # value and actor read target rows only: unchanged
    torch.testing.assert_close(out1["loss_value"], out0["loss_value"])
    torch.testing.assert_close(out1["loss_actor"], out0["loss_actor"])
    assert not torch.allclose(out1["loss_qvalue"], out0["loss_qvalue"])
    assert n_s == 3 and torch.equal(rows.reward, nets_b.value(rows.feature_s) * 0 + rows.reward)
    del nets_0


def test_a_row_filter_removes_rows_from_the_critic_loss():
    class KeepFirst(CrossDomainMethod):
        def edit_source(self, rows):
            keep = torch.zeros_like(rows.reward, dtype=torch.bool)
            keep[0] = True
            return SourceEdit(keep=keep)

    g = torch.Generator().manual_seed(1)
    td = TensorDict({"observation": torch.randn(5, 3, generator=g), "action": torch.rand(5, 2, generator=g) - 0.5,
                     "domain": torch.tensor([0, 0, 0, 1, 1]), ("next", "observation"): torch.randn(5, 3, generator=g),
                     ("next", "reward"): torch.randn(5, 1, generator=g),
                     ("next", "terminated"): torch.zeros(5, 1, dtype=torch.bool)}, [5])
    filtered = _loss(KeepFirst())(td)
    only_first = _loss(CrossDomainMethod())(td[torch.tensor([0, 3, 4])])
    torch.testing.assert_close(filtered["loss_qvalue"], only_first["loss_qvalue"])
    assert filtered["ess"].item() == pytest.approx(1.0)
