"""The rules' array kernels give exactly what the NumPy convenience functions they replace give."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diag.diagnosis import _climbed_back_to_chance, first_argmin_so_far, median_1d, windows
from diag.series import RunSeries


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 31, 120])
def test_the_same_value_as_numpy_on_odd_and_even_lengths_and_scales(n):
    rng = np.random.default_rng(n)
    for scale in (1e-6, 1.0, 1e6):
        a = rng.standard_normal(n) * scale
        assert median_1d(a) == float(np.median(a))
        assert median_1d(list(a)) == float(
            np.median(a)
        )  # lists too (some rules pass slices of lists)


def test_nan_and_empty_give_nan_as_numpy_does():
    assert math.isnan(median_1d(np.array([1.0, math.nan, 3.0])))
    assert math.isnan(median_1d(np.array([])))
    assert median_1d(np.array([math.inf, 1.0, 2.0])) == 2.0


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_first_argmin_so_far_is_argmin_of_every_prefix_first_occurrence_on_ties(n):
    rng = np.random.default_rng(n)
    for x in (
        rng.standard_normal(n),
        rng.integers(0, 3, n).astype(float),
    ):  # the second full of ties
        assert first_argmin_so_far(x).tolist() == [int(np.argmin(x[: i + 1])) for i in range(n)]


@pytest.mark.parametrize(("n", "w"), [(8, 8), (9, 8), (40, 8), (5, 2)])
def test_windows_are_the_sliding_window_view_as_a_copy(n, w):
    x = np.random.default_rng(n).standard_normal(n)
    got = windows(x, w)
    assert np.array_equal(got, np.lib.stride_tricks.sliding_window_view(x, w))
    got[0, 0] = 99.0  # a copy: the series is untouched
    assert x[0] != 99.0


def _climbed_back_reference(loss: list[float], lr: list[float], chance: float):
    """The rule as first written, one sample at a time."""
    best = 0
    for i in range(1, len(loss)):
        if not math.isfinite(loss[i]):
            return None
        if loss[i] < loss[best]:
            best = i
        low = loss[best] < 0.6 * chance and i > best + 1
        if low and min(loss[i - 1], loss[i]) >= 0.95 * chance and lr[i - 1] >= 1.5 * lr[best]:
            return best, i - 1
    return None


def test_climbed_back_to_chance_finds_what_the_sample_by_sample_rule_found():
    rng = np.random.default_rng(0)
    chance = math.log(10)
    found = 0
    for case in range(400):
        n = int(rng.integers(3, 40))
        fall = np.linspace(chance, chance * rng.uniform(0.1, 0.7), n)
        back = rng.uniform(0.9, 1.1, n) * chance
        loss = np.where(np.arange(n) > rng.integers(1, n), back, fall) * rng.uniform(0.97, 1.03, n)
        lr = np.cumprod(rng.uniform(0.9, 1.5, n)) * 1e-3
        if case % 5 == 0:
            loss[rng.integers(0, n)] = rng.choice([math.nan, math.inf])
        if case % 7 == 0:
            loss = np.round(loss, 1)  # ties
        s = RunSeries(num_classes=10)
        s.loss, s.lr, s.step = loss.tolist(), lr.tolist(), list(range(10, 10 * n + 1, 10))
        want = _climbed_back_reference(loss.tolist(), lr.tolist(), chance)
        assert _climbed_back_to_chance(s) == want, case
        found += want is not None
    assert found > 25  # the cases exercise the finding, not only its absence
