"""The fixed diagnosis vocabulary shared by the live diagnosis, the analyzer, the AutoTrainer and tests.

Each code carries its meaning and the recommendations that go with it, so every
symptom found comes with its fixes, and an :class:`Issue` is one finding. A recommendation names
what to turn symbolically (:class:`diag.advice.Advice`); its reader's table renders it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diag.advice import Advice, Renderer, render_all

CODES: dict[str, dict[str, Any]] = {
    "LOSS_EXPLOSION": {
        "meaning": "loss went non-finite or grew by orders of magnitude",
        "advice": [
            Advice("Reduce the learning rate by 10-100x{learning_rate}"),
            Advice("Add gradient clipping{clip_norm}", {"clip_norm": "1.0"}),
            Advice("Use a warm-up schedule{warmup}"),
            # what a NaN validation loss beside a finite training loss points at first
            Advice(
                "Look for NaN/Inf in the validation inputs, and run one validation batch through the "
                "model in eval mode: BatchNorm's running statistics can be non-finite where training's "
                "batch statistics are not"
            ),
        ],
    },
    "NONFINITE_GRADIENTS": {
        "meaning": "NaN/Inf in gradients",
        "advice": [
            Advice("Reduce the learning rate by 10x{learning_rate}"),
            Advice("Add gradient clipping{clip_norm}", {"clip_norm": "1.0"}),
            Advice("Check the inputs and the loss for NaN/Inf; under fp16 prefer bf16"),
        ],
    },
    "LOSS_OSCILLATION": {
        "meaning": "loss swings up and down without a downward trend",
        "advice": [
            Advice("Reduce the learning rate by 2-10x{learning_rate}"),
            Advice("Use a decaying schedule{lr_schedule}"),
            Advice("Increase the batch size for steadier gradients{batch_size}"),
        ],
    },
    "SLOW_CONVERGENCE": {
        "meaning": "loss barely moves: learning rate too low",
        "advice": [
            Advice("Increase the learning rate by 10-100x{learning_rate}{lr_range_test}"),
            Advice("Switch to an adaptive optimizer{optimizer}", {"optimizer": "adam"}),
        ],
    },
    "LOSS_PLATEAU": {
        "meaning": "loss stopped improving after early progress",
        "advice": [
            Advice("Decay the learning rate{lr_schedule}"),
            Advice("Stop early{best_checkpoint_saved}"),
            Advice("If accuracy is still low, increase model capacity or reduce regularisation"),
        ],
    },
    "STUCK_AT_CHANCE": {
        "meaning": "loss ≈ ln(classes), accuracy ≈ 1/classes: data, label or model bug",
        "advice": [
            Advice("Check that labels match inputs (shuffled or noisy labels?)"),
            Advice("Check the data pipeline: inputs normalised, train/val transforms separated"),
            Advice(
                "Try to overfit one small batch{subset}; if it cannot, the model or loss has a bug",
                {"subset": "64"},
            ),
            # what a run at chance whose weights barely move points at first (see diagnosis.weights_still)
            Advice(
                "Raise the learning rate 10-100x{learning_rate}{lr_range_test}: weights that barely "
                "move leave any model at chance"
            ),
        ],
    },
    "OVERFITTING": {
        "meaning": "train loss falls while validation loss rises",
        "advice": [
            Advice(
                "Add weight decay{weight_decay} or dropout{dropout}",
                {"weight_decay": "0.05", "dropout": "0.2"},
            ),
            Advice("Use more training data or augmentation{augmentation}"),
            Advice("Stop early{best_checkpoint}"),
        ],
    },
    "UNDERFITTING": {
        "meaning": "both losses high and flat: model too small or too regularised",
        "advice": [
            Advice("Use a bigger model{capacity}"),
            Advice("Reduce regularisation (dropout, weight decay)"),
            Advice("Train longer{epochs}"),
            Advice("Use a batch size that gives many steps of steady gradients{batch_size}"),
        ],
    },
    "VANISHING_GRADIENTS": {
        "meaning": "early-layer gradients orders of magnitude below late layers, or global norm tiny",
        "advice": [
            Advice("Use a non-saturating activation{activation}", {"activation": "relu or gelu"}),
            Advice("Use He initialisation{init}", {"init": "he"}),
            Advice("Add batch normalisation{batchnorm}"),
        ],
    },
    "EXPLODING_GRADIENTS": {
        "meaning": "gradient norm huge or growing",
        "advice": [
            Advice("Add gradient clipping{clip_norm}", {"clip_norm": "1.0"}),
            Advice("Reduce the learning rate{learning_rate}"),
            Advice("Check the initialisation scale{init}", {"init": "he"}),
        ],
    },
    "DEAD_NEURONS": {
        "meaning": "a large share of ReLU units never fire",
        "advice": [
            Advice("Use leaky ReLU or GELU{activation}", {"activation": "leaky_relu"}),
            Advice(
                "Initialise biases at zero{bias_init} with He init{init}",
                {"bias_init": "0", "init": "he"},
            ),
            Advice("Lower the learning rate{learning_rate}"),
        ],
    },
    "SATURATED_ACTIVATIONS": {
        "meaning": "sigmoid/tanh units pinned at their bounds",
        "advice": [
            Advice("Use a non-saturating activation{activation}", {"activation": "relu"}),
            Advice("Use Xavier/He initialisation{init}", {"init": "xavier"}),
            Advice("Add batch normalisation{batchnorm}"),
        ],
    },
    "LR_DECAYED_TOO_EARLY": {
        "meaning": "the schedule cut the learning rate before loss settled",
        "advice": [
            Advice(
                "Increase the plateau patience{patience} or the factor{factor}",
                {"patience": "5", "factor": "0.5"},
            ),
            Advice("Switch to a cosine or one-cycle schedule{cosine_schedule}"),
            Advice("Increase the initial learning rate"),
        ],
    },
    "TOO_MUCH_REGULARIZATION": {
        "meaning": "weight decay or dropout so strong the model cannot fit even its training data",
        "advice": [
            Advice("Lower the weight decay{lower_weight_decay}", {"lower_weight_decay": "1e-4"}),
            Advice("Lower the dropout{lower_dropout}", {"lower_dropout": "0.1"}),
            Advice(
                "Check that the training loss can fall at all with both off, then add them back"
            ),
        ],
    },
    "INPUTS_NOT_NORMALIZED": {
        "meaning": "inputs far from zero mean and unit scale (not normalised, or with the wrong constants)",
        "advice": [
            Advice("Normalise inputs with the training set's own mean and std{normalization}"),
            Advice(
                "Check the normalisation constants against the data's pixel range (0-1 or 0-255)"
            ),
        ],
    },
    "MOMENTUM_TOO_HIGH": {
        "meaning": "momentum (or Adam's beta1) near 1: the velocity carries updates past the minimum",
        "advice": [
            Advice("Lower the momentum{momentum}", {"momentum": "0.9"}),
            Advice("Then lower the learning rate if the loss still swings{learning_rate}"),
        ],
    },
    "BAD_INITIALIZATION": {
        "meaning": "weight scale far from He/Xavier for the layer's fan-in",
        "advice": [
            Advice(
                "Use He initialisation for ReLU nets{init} or Xavier for tanh/sigmoid",
                {"init": "he"},
            ),
            Advice("Do not scale initial weights by hand{init}", {"init": "default"}),
        ],
    },
    "NO_LEARNING": {
        "meaning": "weights barely change (update/weight ratio tiny)",
        "advice": [
            Advice("Increase the learning rate{learning_rate}"),
            Advice("Check that parameters are passed to the optimizer and require grad"),
            Advice("Check that gradient clipping is not too tight{clip_norm}"),
        ],
    },
}
# Each code's recommendations in plain words (the default reader: a hand-written loop). A loop with its
# own vocabulary renders ``advice`` through its table (diag.advice: "runner", "lightning").
for _entry in CODES.values():
    _entry["recommendations"] = render_all(_entry["advice"], "plain")


def recommendations(code: str, table: str | Renderer | None = None) -> list[str]:
    """A code's recommendations through ``table`` (plain words by default; see :mod:`diag.advice`)."""
    return render_all(CODES[code]["advice"], table)


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
    # which of the code's advice comes first: a rule whose evidence points at one fix (UNDERFITTING on a run
    # stopped while still learning: train longer, not a bigger model) says so, and every reader shows it first
    lead: int = 0

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown diagnosis code {self.code!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if not 0 <= self.lead < len(CODES[self.code]["advice"]):
            raise ValueError(f"{self.code} has no advice number {self.lead}")
        if not self.recommendations:
            self.recommendations = render_all(advice_of(self), "plain")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["layer"] is None:
            d.pop("layer")
        if not d["lead"]:
            d.pop("lead")
        return d


def advice_of(issue: Issue) -> list[Advice]:
    """The advice of ``issue``'s code, the one its rule leads with first."""
    advice = list(CODES[issue.code]["advice"])
    return [advice.pop(issue.lead), *advice]


# The codes that mean the run blew up: what a sweep calls diverged, what explains the dead units and
# oscillation that follow, and what the documented history API always reports as critical.
BLOWUP_CODES = frozenset({"LOSS_EXPLOSION", "NONFINITE_GRADIENTS"})
