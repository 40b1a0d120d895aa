"""Settings of the run that explain a stalled or stuck run, found before the table repairs the symptom.

The diagnosis names symptoms (the loss barely moves, the run is at chance, the first layers get no
gradient); some of them have their cause in a setting the run can read directly, and repairing the
symptom instead (a raised LR) leaves the cause in place: gradient clipping at a max norm of 1e-4 makes
every step tiny at any LR; a batch of 2 (gradient noise swamps the step) or of the whole split (a
handful of steps in the run) trains badly at any LR; an MLP a dozen layers deep without normalisation
passes almost no gradient to its first layers, and normalisation alone does not make it train in a
short run (the restart also cuts it to ``deep_depth`` layers of ``deep_width``); a hidden layer narrower than the classes
(one unit for ten digits) cannot separate them at any LR; biases filled with -5 keep ReLU units off from the
first step (the dead-unit rule's restart also halved the LR, which was not the cause); dropout of 0.9+ passes almost no signal, and
a weight decay of 3 pulls the weights to zero faster than the data pushes them.

All of them are read from the config, so the policy also looks for them at fit start (``at_setup``),
before any step is spent; each names the symptom it makes (``code``), under which it is recorded.
Settings under ``callbacks.autotrainer.setting_causes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.autotrainer import restart_batch
from runner.autotrainer.restarts import capacity_fix, flatten, mlp_params
from runner.autotrainer.settings import SettingCauses


@dataclass(frozen=True)
class SettingCause:
    """A setting found to cause the symptom: its name, the words for the record, the symptom it makes
    (``code``: what an action taken at set-up is recorded under), and its repair, either in place (the
    online ``action``) or as the config ``changes`` of a restart."""

    name: str
    why: str
    code: str
    changes: dict[str, Any] = field(default_factory=dict)
    action: str | None = (
        None  # an online action of actions.ACTIONS; None: a restart with ``changes``
    )

    @property
    def online(self) -> bool:
        return self.action is not None


def deep_cut(cfg: DictConfig, hidden: list[int], rules: SettingCauses) -> list[int]:
    """``deep_depth`` layers of the widest width, widened to ``deep_width`` where that fits in
    ``capacity.max_params`` (halved until it does): the depth was the fault, not the width, and the
    fault's width (a uniform 32) is narrower than a healthy recipe's."""
    cap = rules.capacity
    inputs = int(cfg.data.in_channels) * int(cfg.data.image_size) ** 2
    classes = int(cfg.data.num_classes)
    widest = max(hidden)
    width = max(widest, rules.deep_width)
    while (
        width > widest and mlp_params(inputs, [width] * rules.deep_depth, classes) > cap.max_params
    ):
        width //= 2
    return [max(width, widest)] * rules.deep_depth


def find(
    cfg: DictConfig | None, clip: float | None, steps_per_epoch: int, rules: SettingCauses
) -> SettingCause | None:
    """The first setting of this run (its config, its loop's clipping) that explains a stalled run, or None."""
    if clip is not None and clip < rules.min_clip:
        return SettingCause(
            "clip_too_tight",
            f"gradients clipped to a norm of {clip:g} (below {rules.min_clip:g}): every step is tiny "
            "at any LR",
            "SLOW_CONVERGENCE",
            {"trainer.clip.max_norm": None},
            action="loosen_clip",
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
            epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
            steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
            new = restart_batch.choose(
                batch,
                steps_per_epoch,
                int(epochs) if isinstance(epochs, int) else None,
                int(steps) if isinstance(steps, int) else None,
                smallest=rules.min_batch,
                largest=rules.batch,
                min_steps_per_epoch=rules.min_steps_per_epoch,
                keep_steps=rules.keep_steps,
            )
            return SettingCause(
                "batch_extreme",
                f"{why}; batch {new} keeps the run's steps (the LR kept)",
                "SLOW_CONVERGENCE",
                {"data.batch_size": new},
            )
    hidden = OmegaConf.select(cfg, "model.hidden", default=None)
    norm = OmegaConf.select(cfg, "model.batchnorm", default=None)
    if hidden is not None and norm is False and len(hidden) > rules.max_depth_without_norm:
        wanted = flatten(rules.deep_changes)
        changes = {k: v for k, v in wanted.items() if OmegaConf.select(cfg, k, default=None) != v}
        # normalisation alone is not enough in a short run: 12 layers of 32 with batch norm reached 0.20;
        # cut to deep_depth layers of deep_width (within the capacity's max_params): two layers of the
        # fault's 32 units with dropout 0.5 ended 0.838 against its twin's 0.925
        changes["model.hidden"] = deep_cut(cfg, [int(h) for h in hidden], rules)
        return SettingCause(
            "deep_without_norm",
            f"an MLP of {len(hidden)} hidden layers without normalisation: the gradient fades "
            "through the depth",
            "VANISHING_GRADIENTS",
            changes,
        )
    bias = OmegaConf.select(cfg, "model.bias_init", default=None)
    if isinstance(bias, (int, float)) and bias < rules.min_bias_init:
        return SettingCause(
            "bias_too_negative",
            f"every bias filled with {bias:g} (below {rules.min_bias_init:g}): ReLU units start off and "
            "get no gradient to come back",
            "DEAD_NEURONS",
            {"model.bias_init": None},
        )
    classes = OmegaConf.select(cfg, "data.num_classes", default=None)
    if hidden is not None and isinstance(classes, int) and min(int(h) for h in hidden) < classes:
        widen = capacity_fix(cfg, rules.capacity)
        if widen:
            return SettingCause(
                "capacity_too_small",
                f"a hidden layer of {min(int(h) for h in hidden)} unit(s) for {classes} classes: "
                "too narrow to separate them at any LR",
                "UNDERFITTING",
                widen,
            )
    decay = OmegaConf.select(cfg, "optimizer.weight_decay", default=None)
    if isinstance(decay, (int, float)) and decay > rules.max_weight_decay:
        return SettingCause(
            "weight_decay_too_strong",
            f"weight decay {decay:g} (above {rules.max_weight_decay:g}): it pulls the weights to zero "
            "faster than the data pushes them",
            "TOO_MUCH_REGULARIZATION",
            {"optimizer.weight_decay": rules.weight_decay},
            action="lower_weight_decay",
        )
    dropout = OmegaConf.select(cfg, "model.dropout", default=None)
    if isinstance(dropout, (int, float)) and dropout > rules.max_dropout:
        return SettingCause(
            "dropout_too_strong",
            f"dropout {dropout:g} (above {rules.max_dropout:g}): almost no signal crosses a layer",
            "TOO_MUCH_REGULARIZATION",
            {"model.dropout": rules.dropout},
            action="lower_dropout",
        )
    return None
