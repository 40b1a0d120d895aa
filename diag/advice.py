"""Recommendations in the words of whoever reads them.

A recommendation (:class:`Advice`) is plain text with symbolic knobs in it: ``{learning_rate}``,
``{clip_norm}``, ``{activation}``... A renderer is a table from knob to how its reader sets that knob;
rendering puts each knob's setting where its placeholder is (in parentheses, or as written when the
table's entry starts with ``,``, ``:`` or ``;``) and leaves out knobs the table does not name. So a hand
loop reads "Reduce the learning rate by 10-100x", the runner's user reads the same words with
``(optimizer.lr)`` and a Lightning user with ``(lr= of the optimizer in configure_optimizers)``.

``diag`` ships three tables: ``plain`` (the default everywhere), ``runner`` (the Hydra runner's overrides:
the runner selects it with ``advice: runner`` in ``conf/diag/*.yaml``) and ``lightning`` (Trainer and
optimizer arguments, used by :mod:`diag.integrations.lightning`). A caller can pass its own mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Renderer = Mapping[str, str]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_RAW_LEAD = (",", ":", ";")


@dataclass(frozen=True)
class Advice:
    """One recommendation: plain words with ``{knob}`` placeholders, and a suggested value per knob."""

    text: str
    values: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def knobs(self) -> list[str]:
        """The knobs this recommendation turns, in the order they appear."""
        return _PLACEHOLDER.findall(self.text)


PLAIN: dict[str, str] = {
    "clip_norm": "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={value})",
    "activation": "{value}",
    "lr_range_test": ", or find it with a learning-rate range test (diag.LearningRateFinder)",
    "lr_schedule": "cosine annealing or reduce-on-plateau",
    "optimizer": "e.g. Adam",
    "best_checkpoint": ": keep the weights of the best validation loss",
    "best_checkpoint_saved": ": keep the weights of the best validation loss",
    "subset": "about {value} examples",
    "weight_decay": "AdamW with weight_decay={value}",
    "dropout": "p={value}",
    "patience": "patience={value}",
    "factor": "factor={value}",
    "lower_weight_decay": "weight_decay={value}",
    "lower_dropout": "p={value}",
    "momentum": "momentum={value}, or betas=({value}, 0.999) for Adam",
    "normalization": "measured on the training split",
}

RUNNER: dict[str, str] = {
    "learning_rate": "optimizer.lr",
    "clip_norm": "trainer.clip.max_norm={value}",
    "warmup": "scheduler=warmup_cosine",
    "lr_schedule": "scheduler=cosine or scheduler=plateau",
    "cosine_schedule": "scheduler=cosine",
    "batch_size": "data.batch_size",
    "lr_range_test": ", or run mode=lr_find",
    "optimizer": "optimizer={value}",
    "best_checkpoint_saved": ": the best checkpoint is in checkpoints/best.pt",
    "best_checkpoint": ": use checkpoints/best.pt",
    "subset": "data.subset={value}",
    "weight_decay": "optimizer=adamw optimizer.weight_decay={value}",
    "dropout": "model.dropout={value}",
    "augmentation": "data.augmentation=standard",
    "capacity": "model.hidden=[512,512] or model=cnn",
    "epochs": "trainer.max_epochs",
    "activation": "model.activation={value}",
    "init": "model.init={value}",
    "bias_init": "model.bias_init={value}",
    "batchnorm": "model.batchnorm=true",
    "patience": "scheduler.lr_scheduler.patience={value}",
    "factor": "scheduler.lr_scheduler.factor={value}",
    "lower_weight_decay": "optimizer.weight_decay={value}",
    "lower_dropout": "model.dropout={value}",
    "momentum": "optimizer.momentum={value}, or optimizer.betas=[{value},0.999] for Adam",
    "normalization": "data.normalize=true data.mean=null data.std=null: measured on the training split",
}

LIGHTNING: dict[str, str] = {
    "learning_rate": "lr= of the optimizer in configure_optimizers",
    "clip_norm": "Trainer(gradient_clip_val={value})",
    "activation": "{value} in the model",
    "warmup": "a warm-up LambdaLR returned by configure_optimizers",
    "lr_schedule": "CosineAnnealingLR or ReduceLROnPlateau returned by configure_optimizers",
    "cosine_schedule": "CosineAnnealingLR or OneCycleLR returned by configure_optimizers",
    "batch_size": "batch_size= of the DataLoader",
    "lr_range_test": ", or find it with Tuner(trainer).lr_find(model)",
    "optimizer": "torch.optim.Adam in configure_optimizers",
    "best_checkpoint_saved": " (EarlyStopping and ModelCheckpoint with monitor='val_loss')",
    "best_checkpoint": " (EarlyStopping and ModelCheckpoint with monitor='val_loss')",
    "subset": "Trainer(overfit_batches=1)",
    "weight_decay": "weight_decay={value} of torch.optim.AdamW in configure_optimizers",
    "dropout": "nn.Dropout({value}) in the model",
    "epochs": "Trainer(max_epochs=...)",
    "patience": "patience={value} of ReduceLROnPlateau",
    "factor": "factor={value} of ReduceLROnPlateau",
    "lower_weight_decay": "weight_decay={value} of the optimizer in configure_optimizers",
    "lower_dropout": "nn.Dropout({value}) in the model",
    "momentum": "momentum={value} of SGD, or betas=({value}, 0.999) of Adam, in configure_optimizers",
    "normalization": "transforms.Normalize with the training set's mean and std",
}

RENDERERS: dict[str, Renderer] = {"plain": PLAIN, "runner": RUNNER, "lightning": LIGHTNING}


def _doubled(value: Any) -> str | None:
    """A width or list of widths at twice its size, as an override writes it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return str(2 * value)
    if isinstance(value, (list, tuple)) and value and all(_doubled(v) for v in value):
        return "[" + ",".join(str(2 * v) for v in value) + "]"
    return None


def runner_table(model: Mapping[str, Any]) -> dict[str, str]:
    """:data:`RUNNER` for the run's ``model`` config: only ``model.*`` overrides that model has (a CNN
    has no ``model.hidden``, a ResNet no ``model.dropout``), and more capacity said as that model grows."""
    table = {
        knob: entry
        for knob, entry in RUNNER.items()
        if all(key in model for key in re.findall(r"\bmodel\.([a-z_]+)=", entry))
    }
    bigger = [
        f"model.{key}={grown}"
        for key in ("hidden", "channels", "width")
        if (grown := _doubled(model.get(key)))
    ]
    if "hidden" in model:
        bigger.append("model=cnn")  # the MLP's alternative on images
    elif "channels" in model:
        bigger.append("model=resnet18")
    if bigger:
        table["capacity"] = " or ".join(bigger)
    else:
        table.pop("capacity", None)
    return table


def renderer(name_or_table: str | Renderer | None) -> Renderer:
    """The table for ``"plain"``, ``"runner"``, ``"lightning"`` (None: plain), or a caller's own mapping."""
    if name_or_table is None:
        return PLAIN
    if isinstance(name_or_table, str):
        try:
            return RENDERERS[name_or_table]
        except KeyError:
            raise ValueError(
                f"unknown advice renderer {name_or_table!r}: use one of {sorted(RENDERERS)} "
                "or a mapping from knob to text"
            ) from None
    return name_or_table


def render(advice: Advice, table: str | Renderer | None = None) -> str:
    """The recommendation as its reader sets things: each knob through ``table``, or left out."""
    table = renderer(table)

    def knob(match: re.Match[str]) -> str:
        name = match.group(1)
        entry = table.get(name)
        if entry is None:
            return ""
        value = advice.values.get(name)
        if value is None:
            entry = entry.replace("={value}", "").replace("{value}", "")
        else:
            entry = entry.replace("{value}", value)
        return entry if entry.startswith(_RAW_LEAD) or entry.startswith(" (") else f" ({entry})"

    return _PLACEHOLDER.sub(knob, advice.text)


def render_all(advice: list[Advice], table: str | Renderer | None = None) -> list[str]:
    """Every recommendation of a list, rendered through one table."""
    return [render(a, table) for a in advice]
