"""Seed 7's ResNet at 10000x its LR (issue 21): a restart for a run stuck at chance after the update ratio
sized the rollback's cut reads the ratio again at the LR that cut left, instead of compounding a fixed x0.1
on the same evidence (:func:`runner.autotrainer.lr_evidence.cut_at_current_lr`). The real policy on a real
model and optimizer, the ratio samples in the live diagnosis's series as the loop records them."""

from __future__ import annotations

import pytest
import torch
from test_autotrainer_causes import net, policy_for

from runner.autotrainer import lr_evidence


def _at(state, step: int, code: str, severity: str = "critical"):
    state.step = step
    state.issues = [{"code": code, "severity": severity, "first_step": step, "evidence": "t"}]
    return state


def _exploded_twice(sized_by: float | None):
    """A run at LR 2000 blown up at step 10 (rolled back x0.1), again at step 60: with ``sized_by`` (the
    peak ratio at LR 200) the second cut is the update ratio's, without it a plain x0.1 again."""
    model = net()
    policy, state = policy_for(
        model,
        torch.optim.SGD(model.parameters(), lr=2000.0),
        cfg=("optimizer.lr=2000.0", "trainer.max_epochs=20"),
    )
    state.max_steps = 230
    policy.on_train_batch_end(_at(state, 10, "LOSS_EXPLOSION"))
    if sized_by is not None:
        policy.diagnostics.series.update_ratio.extend([2.49, sized_by, 0.8])
    policy.on_train_batch_end(_at(state, 60, "LOSS_EXPLOSION"))
    assert [a["action"] for a in policy.actions] == ["rollback", "rollback"]
    return policy, state


@pytest.mark.parametrize(("ratio_after", "cut"), [(0.0105, 1.0), (3.0, 0.01)])
def test_a_restart_after_a_sized_cut_reads_the_ratio_at_the_lr_it_left(
    ratio_after: float, cut: float
) -> None:
    """The second rollback cut x0.03/39.2 (LR 200 -> 0.153); stuck at chance 10 steps later with the weights
    moving 0.0105 of their norm a step, the restart keeps 0.153 (it was cut x0.1 more: 13x under the
    twin's 0.2); with 3.0 a step at 0.153 the LR is still shown too high and is cut x0.03/3."""
    policy, state = _exploded_twice(sized_by=39.2)
    second = policy.actions[-1]
    assert second["changes"][lr_evidence.SIZED] == "update_ratio"
    left = second["lr_after"]
    assert left == pytest.approx(200.0 * 0.03 / 39.2, rel=1e-3)
    policy.diagnostics.series.update_ratio.extend([ratio_after, ratio_after / 2])
    policy.on_train_batch_end(_at(state, 70, "STUCK_AT_CHANCE"))
    restart = policy.actions[-1]
    assert (restart["action"], restart["code"]) == ("restart", "STUCK_AT_CHANCE")
    assert restart["changes"]["optimizer.lr"] == pytest.approx(left * cut, rel=1e-4)
    assert "trainer.clip.max_norm" not in restart["changes"]


def test_a_restart_after_fixed_cuts_still_cuts_once_more() -> None:
    """Two rollbacks at the rule's x0.1 (no ratio above the bar): stuck at chance still restarts x0.1 more,
    as before (seed 5's and 6's LR-high cases that needed it)."""
    policy, state = _exploded_twice(sized_by=None)
    assert lr_evidence.SIZED not in policy.actions[-1]["changes"]
    policy.diagnostics.series.update_ratio.extend([0.0105])
    policy.on_train_batch_end(_at(state, 70, "STUCK_AT_CHANCE"))
    restart = policy.actions[-1]
    assert restart["action"] == "restart"
    assert restart["changes"]["optimizer.lr"] == pytest.approx(2000.0 * 0.1 * 0.1 * 0.1, rel=1e-4)


def test_the_cut_at_the_current_lr() -> None:
    assert lr_evidence.cut_at_current_lr([0.01, float("nan")], 0.3, 0.03)[0] == 1.0
    assert lr_evidence.cut_at_current_lr([], 0.3, 0.03)[0] == 1.0
    assert lr_evidence.cut_at_current_lr([0.6, 0.2], 0.3, 0.03)[0] == pytest.approx(0.05)


def _one_cycle_early(severity: str, first: float):
    """Seed 7's one-cycle SGD CNN at 100x its LR (recipe 0.686): update ratios 0.01 and ``first`` sampled
    before the check at step 10, at 0.0353 (its warm-up), then never above 0.064 at the peak; at step 200
    DEAD_NEURONS at ``severity``."""
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0353)
    policy, state = policy_for(model, optimizer, cfg=("optimizer.lr=0.686",))
    state.max_steps = 483
    policy.diagnostics.series.update_ratio.extend([0.01, first])
    state.step, state.issues = 10, []
    policy.on_train_batch_end(state)
    for group in optimizer.param_groups:
        group["lr"] = 0.686
    policy.diagnostics.series.update_ratio.extend([0.064, 0.012, 0.002])
    policy.on_train_batch_end(_at(state, 200, "DEAD_NEURONS", severity))
    return policy


def test_a_critical_finding_reads_the_ratio_at_the_recipe_s_lr_as_evidence() -> None:
    """0.046 at 0.0353 is 0.894 at 0.686: the critical dead units restart at x0.03/0.894 of the recipe's LR
    (with the rule's x0.5 alone the restart stayed 50x its twin's LR)."""
    policy = _one_cycle_early("critical", first=0.046)
    restart = policy.actions[-1]
    assert (restart["action"], restart["code"]) == ("restart", "DEAD_NEURONS")
    at_recipe = 0.046 * 0.686 / 0.0353
    assert restart["changes"]["optimizer.lr"] == pytest.approx(0.686 * 0.03 / at_recipe, rel=1e-3)


def test_the_recipe_lr_reading_is_no_evidence_for_a_warning_or_under_the_bar() -> None:
    """A warning (what a healthy run under a warm-up may show) is not acted on; at a critical finding a
    reading at the recipe's LR under max_update_ratio (0.0145 at 0.0353: 0.28) leaves the rule's x0.5."""
    assert _one_cycle_early("warning", first=0.046).actions == []
    policy = _one_cycle_early("critical", first=0.0145)
    restart = policy.actions[-1]
    assert restart["action"] == "restart"
    assert restart["changes"]["optimizer.lr"] == pytest.approx(0.686 * 0.5, rel=1e-3)
    assert lr_evidence.shows_too_high(0.064, 0.31, 0.2, critical=True, max_ratio=0.3)
    assert not lr_evidence.shows_too_high(0.064, 0.31, 0.2, critical=False, max_ratio=0.3)
