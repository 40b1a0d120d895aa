"""The LR finder's suggestion rules on synthetic range-test curves, and ``auto``'s choice by optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diag.lr_finder import (
    ADAPTIVE_CAP,
    HARD_TASK_CAP,
    LearningRateFinder,
    auto_cap,
    auto_rule,
    descent_index,
    optimizer_family,
    outside_tested,
    relative_fall,
    rule_label,
)

LOG_CENTRE = -1.3  # the loss falls fastest at lr = 10**-1.3 = 0.05


def sgd_like_curve(lrs: np.ndarray) -> np.ndarray:
    """Flat, a sigmoid drop centred at 0.05, a minimum near 0.2, then a steep rise (SGD's shape)."""
    x = np.log10(lrs)
    return 2.3 - 2.0 / (1 + np.exp(-5 * (x - LOG_CENTRE))) + 3.0 * np.clip(x + 0.8, 0, None) ** 2


def replay(
    curve_fn,
    method: str = "auto",
    family: str | None = None,
    n: int = 200,
    diverge: float = 4.0,
    batch_size: int | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The documented ``range_test(train_fn)`` fed a known curve, unsmoothed (these curves rise past
    ``diverge`` x their minimum before lr=10: the test finds an edge)."""
    lrs = np.exp(np.linspace(np.log(1e-6), np.log(10.0), n))
    curve = curve_fn(lrs)
    values = iter(curve)
    finder = LearningRateFinder(
        min_lr=1e-6,
        max_lr=10.0,
        num_steps=n,
        method=method,
        smooth=0.0,
        diverge_factor=diverge,
        optimizer_family=family,
        batch_size=batch_size,
    )
    return finder.range_test(lambda lr: float(next(values))), lrs, curve


def test_auto_reads_the_fastest_fall_for_sgd_and_a_fifth_of_the_minimum_for_adam():
    sgd, lrs, curve = replay(sgd_like_curve, family="sgd")
    lr_min = lrs[np.argmin(curve)]
    assert sgd["rule"] == "auto" and sgd["method"] == "descent"
    assert sgd["suggested_lr"] == pytest.approx(10**LOG_CENTRE, rel=0.1)
    assert sgd["suggested_lr"] < lr_min  # before the minimum, never on the rising side
    adam, _, _ = replay(sgd_like_curve, family="adaptive")
    assert adam["method"] == "min5"
    assert adam["suggestions"]["min5"] == pytest.approx(lr_min / 5, rel=0.05)
    assert adam["suggestions"]["min10"] == pytest.approx(lr_min / 10, rel=0.05)
    # a fifth of this minimum (~0.04) is over an adaptive optimizer's ceiling
    assert adam["suggested_lr"] == ADAPTIVE_CAP and adam["capped_at"] == ADAPTIVE_CAP
    # the SGD rule sits well above a tenth of the minimum: where minimum/10 undershot SGD
    assert sgd["suggested_lr"] > 2 * adam["suggestions"]["min10"]
    unknown, _, _ = replay(
        sgd_like_curve, family=None
    )  # train_fn alone says nothing of the optimizer: fastai's tenth, under the same ceiling
    assert unknown["method"] == "min10" and unknown["suggested_lr"] == adam["suggested_lr"]
    # every rule's answer is reported whichever chose
    assert set(sgd["suggestions"]) == {
        "valley",
        "steepest",
        "min10",
        "descent",
        "min5",
        "min2",
        "min1",
    }
    assert sgd["suggestions"]["descent"] == sgd["suggested_lr"]


def test_descent_moves_with_the_drop_and_has_no_safety_shift():
    for centre in (-3.0, -2.0, -1.0):

        def curve(lrs, c=centre):
            x = np.log10(lrs)
            return 2.3 - 2.0 / (1 + np.exp(-5 * (x - c))) + 3.0 * np.clip(x - c - 0.6, 0, None) ** 2

        result, _, _ = replay(curve, method="descent", diverge=100)
        assert result["suggested_lr"] == pytest.approx(10**centre, rel=0.1), centre
        # the classic steepest rule is the same point moved a tenth of the curve to the left
        assert result["suggestions"]["steepest"] < result["suggested_lr"] / 3


def test_descent_on_a_curve_that_never_falls_is_a_tenth_of_its_minimum():
    # the first 20 points (a tenth) are skipped, as for every rule
    rising, lrs, curve = replay(lambda lrs: 1.0 + 0.01 * np.log(lrs / 1e-6), method="descent")
    assert rising["method"] == "min10"
    assert rising["suggested_lr"] == pytest.approx(lrs[20 + np.argmin(curve[20:])] / 10, rel=0.05)
    assert descent_index(np.array([1e-3, 1e-2, 1e-1]), np.array([1.0, 1.0, 1.0])) is None


def test_optimizer_family_and_the_rule_it_picks():
    params = [torch.nn.Parameter(torch.zeros(2))]
    for opt in (
        torch.optim.SGD(params, lr=0.1),
        torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
        torch.optim.SGD(params, lr=0.1, momentum=0.9),
    ):
        assert optimizer_family(opt) == "sgd" and auto_rule(optimizer_family(opt)) == "descent"
    for opt in (
        torch.optim.Adam(params),
        torch.optim.AdamW(params),
        torch.optim.RMSprop(params),
        torch.optim.Adagrad(params),
    ):
        assert optimizer_family(opt) == "adaptive" and auto_rule("adaptive") == "min5"
    assert auto_rule(None) == "min10"  # range_test(train_fn) told nothing of the optimizer
    # a curve that hardly fell: half its minimum's LR for SGD, the minimum's LR for the rest
    assert auto_rule("sgd", 0.03) == "min2" and auto_rule("adaptive", 0.03) == "min1"
    assert auto_rule(None, 0.03) == "min1"
    assert auto_rule("sgd", 0.2) == "descent" and auto_rule("adaptive", 0.2) == "min5"
    with pytest.raises(ValueError, match="optimizer_family"):
        LearningRateFinder(optimizer_family="momentum")
    with pytest.raises(ValueError, match="choose one of auto, descent"):
        LearningRateFinder(method="fastest")


@pytest.mark.parametrize(
    "opt_cls, rule, cap",
    # this toy problem's SGD test runs to lr=10 without diverging: no edge, so at most SGD's 0.1 x
    # sqrt(batch / 64), 0.0707 at its batch of 32
    # Adam's minimum/5 is over its ceiling of 0.01 (the toy task is easy: its loss fell far)
    [(torch.optim.SGD, "descent", 0.1 / 2**0.5), (torch.optim.Adam, "min5", ADAPTIVE_CAP)],
)
def test_torch_mode_learns_the_family_from_its_optimizer(opt_cls, rule, cap):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    finder = LearningRateFinder(min_lr=1e-4, max_lr=10.0, num_steps=60)
    result = finder.range_test_torch(
        model, opt_cls(model.parameters(), lr=1e-3), batches, torch.nn.functional.cross_entropy
    )
    assert result["rule"] == "auto" and result["method"] == rule
    assert result["optimizer_family"] == ("sgd" if opt_cls is torch.optim.SGD else "adaptive")
    assert result["capped_at"] == pytest.approx(cap)
    assert result["suggested_lr"] == pytest.approx(min(result["suggestions"][rule], cap))
    assert result["batch_size"] == 32 and finder.batch_size == 32  # read off the first batch


def test_descent_ignores_a_fall_after_the_minimum():
    """A spike past the minimum then a fall back (seen on a CIFAR-shaped set) is not where SGD trains."""

    def curve(lrs):
        x = np.log10(lrs)
        before = 2.3 - 0.5 / (1 + np.exp(-5 * (x - LOG_CENTRE))) + np.clip(x + 0.8, 0, None) ** 2
        # up to 4 at lr=1, then down to 2.5 at lr=2: a far steeper fall, still above the minimum (1.8)
        return np.where(x < 0, before, np.where(x < 0.3, 4.0, 2.5))

    result, lrs, losses = replay(curve, method="descent")
    assert result["suggested_lr"] == pytest.approx(10**LOG_CENTRE, rel=0.1)
    assert result["suggested_lr"] < lrs[np.argmin(losses)]


def test_auto_reads_half_the_minimum_on_a_curve_that_hardly_fell():
    """A hard task learns little in the test: its slopes are noise, its minimum is still the edge."""

    def curve(lrs):
        x = np.log10(lrs)
        wiggle = 0.01 * np.sin(3 * x)  # small bumps as a young EMA leaves on a noisy loss
        return (
            2.4
            - 0.06 / (1 + np.exp(-5 * (x + 1.5)))
            + wiggle
            + 3.0 * np.clip(x + 0.7, 0, None) ** 2
        )

    for family in ("sgd", "adaptive"):
        result, lrs, losses = replay(curve, family=family)
        assert relative_fall(np.asarray(result["smoothed_losses"][20:-5])) < 0.05
        # SGD: half the minimum; any other optimizer: the minimum itself, under the hard-task cap
        assert result["method"] == ("min2" if family == "sgd" else "min1")
        lr_min = lrs[20 + np.argmin(losses[20:-5])]
        assert result["suggestions"]["min2"] == pytest.approx(lr_min / 2, rel=0.05)
        assert result["suggestions"]["min1"] == pytest.approx(lr_min, rel=0.05)
        # SGD's test found an edge: uncapped; an adaptive one on a hard task: at most 3e-3
        expected = lr_min / 2 if family == "sgd" else HARD_TASK_CAP
        assert result["suggested_lr"] == pytest.approx(expected, rel=0.05)


def test_descent_reads_only_the_three_decades_before_the_minimum():
    """A young EMA's wiggle at the start of a noisy test (seen on a Fashion-shaped set at 6e-7) can be
    steeper than a hard task's real fall: SGD's LR is never read more than 1000x under the minimum."""

    def curve(lrs):
        x = np.log10(lrs)
        start_wiggle = 0.3 * np.clip(-4 - x, 0, None)  # steeper than the real fall, until 1e-4
        fall = 0.12 / (1 + np.exp(-5 * (x - LOG_CENTRE)))
        return 2.4 + start_wiggle - fall + 3.0 * np.clip(x + 0.7, 0, None) ** 2

    result, lrs, losses = replay(curve, method="descent")
    lr_min = lrs[20 + np.argmin(losses[20:-5])]
    assert result["suggested_lr"] == pytest.approx(10**LOG_CENTRE, rel=0.1)
    assert result["suggested_lr"] > lr_min / 1000


def late_minimum(lrs: np.ndarray) -> np.ndarray:
    """Falls by ~35% until lr ~2, then a rise too gentle to diverge before lr=10 (a BatchNorm CNN's test)."""
    x = np.log10(lrs)
    return 2.3 - 0.8 / (1 + np.exp(-3 * (x + 0.5))) + 0.3 * np.clip(x - 0.3, 0, None) ** 2


def diverging_at_2(lrs: np.ndarray) -> np.ndarray:
    """The same curve given an edge: it blows up at lr=2."""
    return np.where(lrs < 2, late_minimum(lrs), 50.0)


def test_auto_caps_sgd_at_the_conventional_lr_when_the_test_never_diverged():
    """A BatchNorm CNN's test can run to lr=10 with its minimum at 1-4: no edge to read off it."""
    result, _, _ = replay(late_minimum, family="sgd")
    assert result["stop_reason"] == "completed" and result["method"] == "descent"
    assert result["suggestions"]["descent"] > 0.1  # the rule's own reading, kept in the suggestions
    assert result["suggested_lr"] == 0.1 and result["capped_at"] == 0.1
    assert "capped at 0.1 (no divergence below 9)" in rule_label(result)
    # the same curve given an edge is read as before, uncapped
    edged, _, _ = replay(diverging_at_2, family="sgd")
    assert edged["capped_at"] is None and edged["suggested_lr"] == edged["suggestions"]["descent"]
    # a rule asked for by name is never capped
    named, _, _ = replay(late_minimum, method="descent", family="sgd")
    assert named["capped_at"] is None and named["suggested_lr"] > 0.1


@pytest.mark.parametrize(
    "batch, cap", [(None, 0.1), (64, 0.1), (32, 0.1 / 2**0.5), (128, 0.1 * 2**0.5), (256, 0.2)]
)
def test_sgd_no_edge_ceiling_scales_with_the_square_root_of_the_batch(batch, cap):
    """The bench's batch-256 BatchNorm CNNs lost 5-20% at 0.1 against 0.2-0.3 (a quarter of the steps,
    half the gradient noise), and 40% at 0.5: the ceiling is 0.1 x sqrt(batch / 64); 0.1 itself when the
    batch is not known."""
    result, _, _ = replay(late_minimum, family="sgd", batch_size=batch)
    assert result["suggestions"]["descent"] > 0.2  # the cap binds at every batch here
    assert result["suggested_lr"] == pytest.approx(cap)
    assert result["capped_at"] == pytest.approx(cap)
    assert result["batch_size"] == batch
    if batch:
        assert f"batch {batch})" in rule_label(result)
    # an edge: no ceiling at any batch
    edged, _, _ = replay(diverging_at_2, family="sgd", batch_size=batch)
    assert edged["capped_at"] is None


@pytest.mark.parametrize("family", ["adaptive", None])
@pytest.mark.parametrize("curve", [late_minimum, diverging_at_2])
def test_auto_caps_an_adaptive_optimizer_edge_or_not(family, curve):
    """Whether an Adam test diverged just under lr=9 or not at all is chance: the ceiling holds either way."""
    result, _, _ = replay(curve, family=family)
    rule = "min5" if family == "adaptive" else "min10"  # an unknown optimizer: fastai's tenth
    assert result["method"] == rule and result["suggestions"][rule] > ADAPTIVE_CAP
    assert result["suggested_lr"] == ADAPTIVE_CAP and result["capped_at"] == ADAPTIVE_CAP
    assert "capped at 0.01 (adaptive)" in rule_label(result)
    named, _, _ = replay(curve, method="min10", family=family)
    assert named["capped_at"] is None and named["suggested_lr"] > ADAPTIVE_CAP


def test_auto_caps_an_adaptive_optimizer_lower_on_a_hard_task():
    """A loss that fell by under 10% in the test (the CIFAR-shaped set): at most Adam's 3e-3."""

    def shallow(lrs):  # the late-minimum shape, falling by ~7% only
        x = np.log10(lrs)
        return 2.3 - 0.16 / (1 + np.exp(-3 * (x + 0.5))) + 0.3 * np.clip(x - 0.3, 0, None) ** 2

    result, _, _ = replay(shallow, family="adaptive")
    fall = relative_fall(np.asarray(result["smoothed_losses"][20:-5]))
    assert 0.05 < fall < 0.10 and result["method"] == "min5"
    assert result["suggested_lr"] == HARD_TASK_CAP and result["capped_at"] == HARD_TASK_CAP
    assert f"loss fell {fall:.0%} < 10%" in rule_label(result)


def test_auto_cap_by_family_fall_and_edge():
    assert auto_cap("sgd", 0.3, no_edge=True) == 0.1 and auto_cap("sgd", 0.3, no_edge=False) is None
    assert auto_cap("sgd", 0.3, True, batch_size=256) == pytest.approx(0.2)
    assert auto_cap("sgd", 0.3, False, batch_size=128) is None
    assert auto_cap("adaptive", 0.3, True, batch_size=256) == ADAPTIVE_CAP  # SGD's alone scales
    assert auto_cap("adaptive", 0.3, no_edge=False) == ADAPTIVE_CAP == auto_cap(None, 0.3, True)
    assert auto_cap("adaptive", 0.06, no_edge=False) == HARD_TASK_CAP


# -- the check's candidates and its pick ------------------------------------------
def test_candidate_ladder_is_three_x_apart_around_the_pick():
    from diag.lr_finder import candidate_ladder

    assert candidate_ladder(0.01, 5, 1e-7, 10.0) == pytest.approx(
        [0.01 / 9, 0.01 / 3, 0.01, 0.03, 0.09]
    )
    # an even count puts its extra rung below the pick (the safer side)
    assert candidate_ladder(0.01, 2, 1e-7, 10.0) == pytest.approx([0.01 / 3, 0.01])
    assert candidate_ladder(0.01, 4, 1e-7, 10.0) == pytest.approx([0.01 / 9, 0.01 / 3, 0.01, 0.03])


def test_candidate_ladder_keeps_its_count_under_the_divergence_and_over_min_lr():
    from diag.lr_finder import candidate_ladder

    # diverged at 0.05: the rungs over it move under the ladder's bottom; the pick stays a rung
    assert candidate_ladder(0.02, 5, 1e-7, 0.05) == pytest.approx(
        [0.02 / 3**k for k in (4, 3, 2, 1, 0)]
    )
    # near min_lr: the rungs under it move over the top
    assert candidate_ladder(3e-7, 5, 1e-7, 10.0) == pytest.approx(
        [3e-7 * 3**k for k in (-1, 0, 1, 2, 3)]
    )
    with pytest.raises(ValueError, match="count=0"):
        candidate_ladder(0.01, 0, 1e-7, 10.0)


def test_pick_trial_takes_the_lowest_score_and_drops_the_diverged():
    from diag.lr_finder import pick_trial

    trials = [
        {"lr": 0.01, "diverged": False, "score": 0.9},
        {"lr": 0.03, "diverged": False, "score": 0.4},
        {"lr": 0.1, "diverged": True, "score": float("nan")},
        {"lr": 0.3, "diverged": False, "score": float("nan")},
    ]
    assert pick_trial(trials)["lr"] == 0.03
    tie = [
        {"lr": 0.1, "diverged": False, "score": 0.5},
        {"lr": 0.03, "diverged": False, "score": 0.5},
    ]
    assert pick_trial(tie)["lr"] == 0.03  # a tie keeps the lower LR
    assert pick_trial([trials[2]]) is None


def test_a_truncated_trial_next_to_a_broken_candidate_steps_down_one():
    """Trials shorter than the run: a winner whose next candidate up diverged or learned nothing sits
    at the edge of stability; the candidate under it is taken. Trials as long as the run: the winner."""
    from diag.lr_finder import learned, pick_trial

    trials = [
        {"lr": 0.02, "diverged": False, "score": 2.0},
        {"lr": 0.06, "diverged": False, "score": 1.9},
        {"lr": 0.18, "diverged": False, "score": 2.4},  # no better than untrained (2.3)
    ]
    assert not learned(trials[2], 2.3) and learned(trials[2])
    assert pick_trial(trials, 2.3, truncated=True)["lr"] == 0.02
    assert pick_trial(trials, 2.3, truncated=False)["lr"] == 0.06
    assert pick_trial(trials[:2], 2.3, truncated=True)["lr"] == 0.06  # nothing broke above it


def test_next_candidate_follows_a_best_at_either_end_within_the_bounds():
    from diag.lr_finder import next_candidate

    up = [
        {"lr": 1e-3, "diverged": False, "score": 2.0},
        {"lr": 3e-3, "diverged": False, "score": 1.5},
    ]
    assert next_candidate(up, 1e-7, 10.0) == pytest.approx(9e-3)
    assert next_candidate(up, 1e-7, 5e-3) is None  # over the range test's divergence
    down = [
        {"lr": 1e-3, "diverged": False, "score": 1.0},
        {"lr": 3e-3, "diverged": False, "score": 1.5},
    ]
    assert next_candidate(down, 1e-7, 10.0) == pytest.approx(1e-3 / 3)
    middle = [*down, {"lr": 3e-4, "diverged": False, "score": 1.2}]
    assert next_candidate(middle, 1e-7, 10.0) is None  # the score turned up: done


def _trial(lr: float, score: float, diverged: bool = False) -> dict:
    return {"lr": lr, "diverged": diverged, "score": score}


def test_interpolate_finds_the_vertex_of_a_parabola_in_log_lr():
    """Scores on an exact parabola in log LR around a minimum at 0.05: three rungs 3x apart bracketing
    it give back 0.05 itself, from either side of it."""
    import math

    from diag.lr_finder import interpolate

    def score(lr: float) -> float:
        return 1.0 + (math.log(lr) - math.log(0.05)) ** 2

    for mid in (0.04, 0.06):
        trials = [_trial(lr, score(lr)) for lr in (mid / 3, mid, mid * 3)]
        assert interpolate(trials, trials[1]) == pytest.approx(0.05, rel=1e-9)
    # uneven spacing (a line-search rung 3x further than the ladder's own): the same vertex
    trials = [_trial(lr, score(lr)) for lr in (0.02, 0.06, 0.54)]
    assert interpolate(trials, trials[1]) == pytest.approx(0.05, rel=1e-9)


def test_interpolate_moves_at_most_half_way_to_a_neighbour():
    """A bracketed minimum's vertex lies between the midpoints to its neighbours, on any spacing."""
    import math

    from diag.lr_finder import interpolate

    rng = np.random.default_rng(0)
    for _ in range(500):
        lo, hi = 0.03 / 3 ** rng.uniform(0.2, 2), 0.03 * 3 ** rng.uniform(0.2, 2)
        trials = [_trial(lo, 1 + rng.uniform(1e-6, 2)), _trial(0.03, 1.0)]
        trials.append(_trial(hi, 1 + rng.uniform(1e-6, 2)))
        got = math.log(interpolate(trials, trials[1]))
        assert (math.log(lo) + math.log(0.03)) / 2 - 1e-9 <= got
        assert got <= (math.log(0.03) + math.log(hi)) / 2 + 1e-9


def test_interpolate_keeps_the_pick_without_a_bracket():
    """No move at a ladder end, next to a candidate that diverged or learned nothing, or when the pick
    is not under both neighbours (a pick stepped down from the edge of stability)."""
    from diag.lr_finder import interpolate

    end = [_trial(0.01, 1.0), _trial(0.03, 1.5)]
    assert interpolate(end, end[0]) == 0.01
    broke = [_trial(0.01, 1.2), _trial(0.03, 1.0), _trial(0.09, float("nan"), diverged=True)]
    assert interpolate(broke, broke[1]) == 0.03
    nothing = [_trial(0.01, 1.2), _trial(0.03, 1.0), _trial(0.09, 2.4)]
    assert (
        interpolate(nothing, nothing[1], start_score=2.3) == 0.03
    )  # 2.4: no better than untrained
    assert interpolate(nothing, nothing[1]) != 0.03  # without the untrained score it learned
    stepped = [_trial(0.01, 1.2), _trial(0.03, 1.1), _trial(0.09, 1.0)]
    assert interpolate(stepped, stepped[1]) == 0.03


def test_a_reading_below_the_lrs_tested_is_named_so_and_kept_off_the_curve():
    """A narrow range (1e-2 to 1) whose minimum sits at 3e-2: ``minimum/10`` reads 3e-3, an LR the test
    never tried. The console line and the legend say so, and no marker is drawn for it: it used to sit
    left of the curve at the first loss, widening the axis to an LR with no loss measured."""
    lrs = np.exp(np.linspace(np.log(1e-2), np.log(1.0), 60))
    curve = iter(1.0 + (np.log10(lrs) - np.log10(3e-2)) ** 2)
    finder = LearningRateFinder(
        min_lr=1e-2, max_lr=1.0, num_steps=60, method="valley", smooth=0.0, diverge_factor=100
    )
    result = finder.range_test(lambda lr: float(next(curve)))
    below = result["suggestions"]["min10"]
    assert below == pytest.approx(3e-3, rel=0.1)
    assert outside_tested(result, below) == " (below the LRs tested)"
    assert outside_tested(result, 3e-2) == "" and outside_tested(result, 1e-2) == ""
    assert outside_tested(result, 2.0) == " (above the LRs tested)"
    fig = finder.figure(result)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"minimum/10: {below:.2e} (below the LRs tested)" in legend, legend
    drawn = [x for line in ax.get_lines() for x in np.atleast_1d(line.get_xdata())]
    assert min(drawn) >= result["lrs"][0]  # nothing drawn left of the first LR tried
    assert ax.get_xlim()[0] > 5e-3  # the axis is the range tested, not stretched to the reading
