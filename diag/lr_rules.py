"""The LR finder's rule names, as the config spells them: no torch, so a config is checked before torch loads."""

from __future__ import annotations

METHODS = ("valley", "steepest", "min10", "descent", "min5", "min2", "min1")
"""The rules that read an LR off a curve; ``auto`` (the default) picks one of them by optimizer."""
ALIASES = {
    "minimum/10": "min10",
    "minimum": "min10",
    "steep": "steepest",
    "minimum/5": "min5",
    "minimum/2": "min2",
    "minimum/1": "min1",
}
# how a rule is shown (legend, log lines): the config's spelling, not the internal short name
LABELS = {"min10": "minimum/10", "min5": "minimum/5", "min2": "minimum/2", "min1": "minimum/1"}


def canonical_method(method: str) -> str:
    """Map a method name or alias to ``auto`` or one of :data:`METHODS` (else ``ValueError``)."""
    name = ALIASES.get(str(method), str(method))
    if name != "auto" and name not in METHODS:
        raise ValueError(
            f"unknown LR finder method {method!r}: choose one of auto, descent, valley, steepest, "
            "minimum/10 (min10), minimum/5 (min5), minimum/2 (min2), minimum/1 (min1)"
        )
    return name
