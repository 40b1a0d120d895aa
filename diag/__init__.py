"""Training diagnostics for any PyTorch loop: the documented toolkit API, the diagnosis vocabulary and the hook protocol.

Names are imported on first use (PEP 562), so ``import diag`` stays cheap for
the analyzer CLI, and ``LearningRateFinder`` resolves even though its module
is written separately. ``from diag import TrainingHistory`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TrainingHistory": "diag.history",
    "GradientStats": "diag.gradient_stats",
    "clip_gradients": "diag.gradient_stats",
    "ActivationStats": "diag.activations",
    "ActivationMonitor": "diag.activations",
    "detect_dead_neurons": "diag.activations",
    "check_initialization": "diag.init_check",
    "TrainingDebugger": "diag.debugger",
    "simulate_training": "diag.simulate",
    "LearningRateFinder": "diag.lr_finder",
    "Issue": "diag.codes",
    "CODES": "diag.codes",
    "Hook": "diag.hooks",
    "FitState": "diag.hooks",
    "DiagnosticsHook": "diag.live",
    "GradientHealthMonitor": "diag.gradient_stats",
    "LRFinder": "diag.lr_finder",
}

__all__ = [
    "CODES",
    "ActivationMonitor",
    "ActivationStats",
    "DiagnosticsHook",
    "FitState",
    "GradientHealthMonitor",
    "GradientStats",
    "Hook",
    "Issue",
    "LRFinder",
    "LearningRateFinder",
    "TrainingDebugger",
    "TrainingHistory",
    "check_initialization",
    "clip_gradients",
    "detect_dead_neurons",
    "simulate_training",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from diag.activations import ActivationMonitor, ActivationStats, detect_dead_neurons
    from diag.codes import CODES, Issue
    from diag.debugger import TrainingDebugger
    from diag.gradient_stats import GradientHealthMonitor, GradientStats, clip_gradients
    from diag.history import TrainingHistory
    from diag.hooks import FitState, Hook
    from diag.init_check import check_initialization
    from diag.live import DiagnosticsHook
    from diag.lr_finder import LearningRateFinder, LRFinder
    from diag.simulate import simulate_training


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
