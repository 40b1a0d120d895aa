"""Weight scale at initialisation versus He and Xavier for each layer's fan-in.

Fan-in follows torch's layout: a ``Linear`` weight is (out, in) and a conv
weight (out, in/groups, *kernel), so fan-in is ``shape[1]`` times the kernel
size. ``shape[0]`` is the fan-out of a torch layer, so taking it would make
the expected scale wrong whenever a layer is not square. Matrices used as
``x @ W`` (in, out) can be checked with ``layout="in_out"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from torch import nn

from diag.codes import Issue
from diag.gradient_stats import ArrayLike, as_numpy

FACTOR = 10.0  # "far off": more than this factor from both He and Xavier
CHECKED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fan_in_out(shape: tuple[int, ...], layout: str = "out_in") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape (torch's convention for ``out_in``)."""
    if len(shape) < 2:
        raise ValueError(f"fan-in needs a weight with at least 2 dimensions, got shape {shape}")
    if layout == "in_out":
        if len(shape) != 2:
            raise ValueError(f"layout='in_out' is for (in, out) matrices, got shape {shape}")
        return int(shape[0]), int(shape[1])
    if layout != "out_in":
        raise ValueError(f"layout must be 'out_in' or 'in_out', got {layout!r}")
    receptive = math.prod(shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def _named_weights(weights: Any) -> list[tuple[str | int, ArrayLike]]:
    if isinstance(weights, nn.Module):
        return [
            (f"{name}.weight" if name else "weight", m.weight)
            for name, m in weights.named_modules()
            if isinstance(m, CHECKED_MODULES)
        ]
    if isinstance(weights, dict):
        return list(weights.items())
    return list(enumerate(weights))


def check_initialization(
    weights: Iterable[ArrayLike] | dict[str, ArrayLike] | nn.Module, layout: str = "out_in"
) -> dict[str, Any]:
    """Compare each weight's std with the He (sqrt(2/fan_in)) and Xavier (sqrt(2/(fan_in+fan_out))) std.

    ``weights`` is a list of arrays/tensors (layers named by index), a
    ``{name: weight}`` mapping, or a module (its Linear and Conv weights, by
    name). Status per layer: ``ok``, ``too_small``/``too_large`` (more than
    10x off from both He and Xavier; a critical ``non_finite`` when any weight is NaN/Inf), or ``not_applicable`` for 1-D tensors
    (biases, norm scales) and empty ones. Returns ``{'layers': [...],
    'all_ok': bool, 'issues': [BAD_INITIALIZATION issue dicts]}``.
    """
    layers, issues = [], []
    for name, weight in _named_weights(weights):
        w = as_numpy(weight).astype(np.float64, copy=False)
        entry: dict[str, Any] = {"layer": name, "shape": tuple(w.shape)}
        if w.ndim < 2 or w.size == 0:
            layers.append(
                {
                    **entry,
                    "status": "not_applicable",
                    "actual_std": float(w.std()) if w.size else math.nan,
                }
            )
            continue
        fan_in, fan_out = fan_in_out(w.shape, layout)
        he = math.sqrt(2.0 / fan_in)
        xavier = math.sqrt(2.0 / (fan_in + fan_out))
        finite = w[np.isfinite(w)]
        actual = float(finite.std()) if finite.size else math.nan
        if finite.size < w.size or not math.isfinite(actual):
            status = "non_finite"  # NaN/Inf weights: broken, not badly scaled
        elif actual < min(he, xavier) / FACTOR:
            status = "too_small"
        elif actual > max(he, xavier) * FACTOR:
            status = "too_large"
        else:
            status = "ok"
        entry.update(
            fan_in=fan_in,
            fan_out=fan_out,
            expected_std=he,
            he_std=he,
            xavier_std=xavier,
            actual_std=actual,
            ratio=actual / he,
            mean=float(finite.mean()) if finite.size else math.nan,
            max_abs=float(np.abs(finite).max()) if finite.size else math.nan,
            status=status,
        )
        layers.append(entry)
        if status != "ok":
            broken = status == "non_finite"
            issues.append(
                Issue(
                    code="BAD_INITIALIZATION",
                    severity="critical" if broken else "warning",
                    first_step=0,
                    layer=str(name),
                    evidence=(
                        f"{name}: {w.size - finite.size} of {w.size} weights are NaN/Inf: every "
                        "output through this layer will be too (re-initialise it)"
                        if broken
                        else f"{name}: weight std {actual:.3g}, expected {xavier:.3g} (Xavier) to "
                        f"{he:.3g} (He) for fan-in {fan_in}"
                    ),
                ).to_dict()
            )
    checked = [r for r in layers if r["status"] != "not_applicable"]
    return {"layers": layers, "all_ok": all(r["status"] == "ok" for r in checked), "issues": issues}
