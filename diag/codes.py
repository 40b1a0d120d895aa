"""The fixed diagnosis vocabulary shared by the live diagnosis, the analyzer, the AutoTrainer and tests.

Each code carries its meaning and the recommendations that go with it, so every
symptom found comes with its fixes, and an :class:`Issue` is one finding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CODES: dict[str, dict[str, Any]] = {
    "LOSS_EXPLOSION": {
        "meaning": "loss went non-finite or grew by orders of magnitude",
        "recommendations": [
            "Reduce the learning rate by 10-100x (optimizer.lr)",
            "Add gradient clipping (trainer.clip.max_norm=1.0)",
            "Use a warm-up schedule (scheduler=warmup_cosine)",
        ],
    },
    "NONFINITE_GRADIENTS": {
        "meaning": "NaN/Inf in gradients",
        "recommendations": [
            "Reduce the learning rate by 10x (optimizer.lr)",
            "Add gradient clipping (trainer.clip.max_norm=1.0)",
            "Check the inputs and the loss for NaN/Inf; under fp16 prefer bf16",
        ],
    },
    "LOSS_OSCILLATION": {
        "meaning": "loss swings up and down without a downward trend",
        "recommendations": [
            "Reduce the learning rate by 2-10x (optimizer.lr)",
            "Use a decaying schedule (scheduler=cosine or scheduler=plateau)",
            "Increase the batch size for steadier gradients (data.batch_size)",
        ],
    },
    "SLOW_CONVERGENCE": {
        "meaning": "loss barely moves: learning rate too low",
        "recommendations": [
            "Increase the learning rate by 10-100x (optimizer.lr), or run mode=lr_find",
            "Switch to an adaptive optimizer (optimizer=adam)",
        ],
    },
    "LOSS_PLATEAU": {
        "meaning": "loss stopped improving after early progress",
        "recommendations": [
            "Decay the learning rate (scheduler=cosine or scheduler=plateau)",
            "Stop early: the best checkpoint is in checkpoints/best.pt",
            "If accuracy is still low, increase model capacity or reduce regularisation",
        ],
    },
    "STUCK_AT_CHANCE": {
        "meaning": "loss ≈ ln(classes), accuracy ≈ 1/classes: data, label or model bug",
        "recommendations": [
            "Check that labels match inputs (shuffled or noisy labels?)",
            "Check the data pipeline: inputs normalised, train/val transforms separated",
            "Try to overfit one small batch (data.subset=64); if it cannot, the model or loss has a bug",
        ],
    },
    "OVERFITTING": {
        "meaning": "train loss falls while validation loss rises",
        "recommendations": [
            "Add weight decay (optimizer=adamw optimizer.weight_decay=0.05) or dropout (model.dropout=0.2)",
            "Use more training data or augmentation (data.augmentation=standard)",
            "Stop early: use checkpoints/best.pt",
        ],
    },
    "UNDERFITTING": {
        "meaning": "both losses high and flat: model too small or too regularised",
        "recommendations": [
            "Use a bigger model (model.hidden=[512,512] or model=cnn)",
            "Reduce regularisation (dropout, weight decay)",
            "Train longer (trainer.max_epochs)",
        ],
    },
    "VANISHING_GRADIENTS": {
        "meaning": "early-layer gradients orders of magnitude below late layers, or global norm tiny",
        "recommendations": [
            "Use a non-saturating activation (model.activation=relu or gelu)",
            "Use He initialisation (model.init=he)",
            "Add batch normalisation (model.batchnorm=true)",
        ],
    },
    "EXPLODING_GRADIENTS": {
        "meaning": "gradient norm huge or growing",
        "recommendations": [
            "Add gradient clipping (trainer.clip.max_norm=1.0)",
            "Reduce the learning rate (optimizer.lr)",
            "Check the initialisation scale (model.init=he)",
        ],
    },
    "DEAD_NEURONS": {
        "meaning": "a large share of ReLU units never fire",
        "recommendations": [
            "Use leaky ReLU or GELU (model.activation=leaky_relu)",
            "Initialise biases at zero (model.bias_init=0) with He init (model.init=he)",
            "Lower the learning rate (optimizer.lr)",
        ],
    },
    "SATURATED_ACTIVATIONS": {
        "meaning": "sigmoid/tanh units pinned at their bounds",
        "recommendations": [
            "Use a non-saturating activation (model.activation=relu)",
            "Use Xavier/He initialisation (model.init=xavier)",
            "Add batch normalisation (model.batchnorm=true)",
        ],
    },
    "LR_DECAYED_TOO_EARLY": {
        "meaning": "the schedule cut the learning rate before loss settled",
        "recommendations": [
            "Increase the plateau patience (scheduler.lr_scheduler.patience=5) or the factor (scheduler.lr_scheduler.factor=0.5)",
            "Switch to a cosine or one-cycle schedule (scheduler=cosine)",
            "Increase the initial learning rate",
        ],
    },
    "BAD_INITIALIZATION": {
        "meaning": "weight scale far from He/Xavier for the layer's fan-in",
        "recommendations": [
            "Use He initialisation for ReLU nets (model.init=he) or Xavier for tanh/sigmoid",
            "Do not scale initial weights by hand (model.init=default)",
        ],
    },
    "NO_LEARNING": {
        "meaning": "weights barely change (update/weight ratio tiny)",
        "recommendations": [
            "Increase the learning rate (optimizer.lr)",
            "Check that parameters are passed to the optimizer and require grad",
            "Check that gradient clipping is not too tight (trainer.clip.max_norm)",
        ],
    },
}

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}  # higher is worse


@dataclass
class Issue:
    """One finding: a code from :data:`CODES`, how bad, when first seen, the numbers, what to change."""

    code: str
    severity: str
    first_step: int
    evidence: str
    recommendations: list[str] = field(default_factory=list)
    layer: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown diagnosis code {self.code!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if not self.recommendations:
            self.recommendations = list(CODES[self.code]["recommendations"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["layer"] is None:
            d.pop("layer")
        return d


# The codes that mean the run blew up: what a sweep calls diverged, what explains the dead units and
# oscillation that follow, and what the documented history API always reports as critical.
BLOWUP_CODES = frozenset({"LOSS_EXPLOSION", "NONFINITE_GRADIENTS"})
