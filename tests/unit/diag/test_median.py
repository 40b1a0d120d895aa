"""diag.diagnosis.median_1d: the rules' median, exactly np.median's value on 1-d data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diag.diagnosis import median_1d


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
