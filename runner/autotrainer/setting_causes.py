"""Settings of the run that explain a stalled or stuck run, found before the table repairs the symptom.

The diagnosis names symptoms (the loss barely moves, the run is at chance, the first layers get no
gradient); some of them have their cause in a setting the run can read directly, and repairing the
symptom instead (a raised LR) leaves the cause in place: gradient clipping at a max norm of 1e-4 makes
every step tiny at any LR; a batch of 2 (gradient noise swamps the step) or of the whole split (a
handful of steps in the run) trains badly at any LR; an MLP a dozen layers deep without normalisation
passes almost no gradient to its first layers, and normalisation alone does not make it train in a
short run (the restart also cuts it to ``deep_depth`` layers). Settings under ``callbacks.autotrainer.setting_causes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.autotrainer.restarts import flatten
from runner.autotrainer.settings import SettingCauses


@dataclass(frozen=True)
class SettingCause:
    """A setting found to cause the symptom: its name, the words for the record, and its repair, either
    in place (``clip``: the new max norm, None for off) or as the config ``changes`` of a restart."""

    name: str
    why: str
    changes: dict[str, Any] = field(default_factory=dict)
    online: bool = False
    clip: float | None = None


def find(
    cfg: DictConfig | None, clip: float | None, steps_per_epoch: int, rules: SettingCauses
) -> SettingCause | None:
    """The first setting of this run (its config, its loop's clipping) that explains a stalled run, or None."""
    if clip is not None and clip < rules.min_clip:
        return SettingCause(
            "clip_too_tight",
            f"gradients clipped to a norm of {clip:g} (below {rules.min_clip:g}): every step is tiny "
            "at any LR",
            {"trainer.clip.max_norm": None},
            online=True,
        )
    if cfg is None:
        return None
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if isinstance(batch, int) and batch != rules.batch:
        few = 0 < steps_per_epoch < rules.min_steps_per_epoch
        if batch < rules.min_batch or few:
            why = (
                f"a batch of {batch}: the gradient's noise swamps the step"
                if batch < rules.min_batch
                else f"a batch of {batch}: {steps_per_epoch} step(s) per epoch, too few to train"
            )
            return SettingCause("batch_extreme", why, {"data.batch_size": rules.batch})
    hidden = OmegaConf.select(cfg, "model.hidden", default=None)
    norm = OmegaConf.select(cfg, "model.batchnorm", default=None)
    if hidden is not None and norm is False and len(hidden) > rules.max_depth_without_norm:
        wanted = flatten(rules.deep_changes)
        changes = {k: v for k, v in wanted.items() if OmegaConf.select(cfg, k, default=None) != v}
        # normalisation alone is not enough in a short run: 12 layers of 32 with batch norm reached 0.20
        changes["model.hidden"] = [max(int(h) for h in hidden)] * rules.deep_depth
        return SettingCause(
            "deep_without_norm",
            f"an MLP of {len(hidden)} hidden layers without normalisation: the gradient fades "
            "through the depth",
            changes,
        )
    return None
