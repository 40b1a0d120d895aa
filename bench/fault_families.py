"""The fault families of ``bench/fault_bench.py`` and the sampler of its cases.

Each family is one mechanism that breaks training, with the codes a correct diagnosis may
give for it decided here, from the mechanism, before any run: the codes that name the cause
and the codes that name the symptom that mechanism must produce. A family also names its
healthy twin, the same recipe without the fault. Every case is a list of ordinary Hydra
overrides of ``python -m runner``, so any case reruns by hand.

A family whose sampled magnitude leaves the run as good as its twin is a generator bug, and so is a
healthy recipe that does not train to a sensible accuracy. Those found and fixed, by mechanism:

- the MLP is not augmented (random crops of 8x8 digits blur what an MLP reads pixel by pixel);
- a fault that changes the run's length re-sets the step schedule's cuts at a third and two thirds;
  ``lr_decayed_early`` cuts every tenth of the run's steps (per epoch was the healthy schedule itself);
- the LR grows with the square root of the batch (0.5-2x of the batch-64 range), plain SGD stops at 0.2;
- SGD's LR scales with the batch that dropout leaves (batch x (1 - p)): batch 8 at dropout 0.5 was all
  noise (test 0.77-0.83), at half the LR it trains (0.947);
- ``weight_decay_too_strong`` is sized by its pull over the run, lr x wd x steps (10 or 30, with
  wd >= 10), not by wd alone: wd 3 at lr 1e-3 over 250 steps is a pull of 0.75 and 5 of 6 such cases
  trained to 0.94-0.96 (see :func:`decay_for_pull`);
- the LR-too-high families (oscillation, explosion, warm-up peak) use SGD, not Adam, on the batch-normalised
  CNN and ResNet: batch norm makes a layer's output independent of its weights' scale, and Adam's steps
  (about lr per weight, whatever the gradient) grow those weights until the effective step is small
  again, so a BN net under Adam absorbs an LR 15-300x too high (7 of 8 such cases of sample seed 0
  trained to test 0.86-0.99; SGD on the same nets mostly broke, 0.07-0.79);
- ``lr_high_oscillation`` keeps a schedule that holds the LR (none, step, plateau): one that anneals it
  to zero brought the dev cases back (one-cycle CNN at LR 1.23: validation loss 0.755 -> 6.9 at the peak,
  then test 0.986; warm-up cosine MLP at AdamW 0.0195: 0.961; warm-up cosine SGD 0.131: 0.964), so the
  fault was gone by the end; an LR peak too high is ``warmup_peak_too_high``'s (100x);
- ResNet-18 gets the same ~250 steps as the others (it had 120, and a healthy Adam recipe reached test
  0.549), and under Adam its LR comes from the range's upper half (behind batch norm Adam's fixed-size
  step is small against the weights: 0.816 at the low end in 250 steps, 0.905 at twice the LR);
- SGD on a batch-normalised net at a constant LR (no schedule, or plateau) is not scaled up with the
  batch: the scaled step never anneals, and the last weights land on one point of a swing (a CNN at
  Nesterov 0.0998 ended at validation 0.632 after 21 epochs at 0.94-1.0, test 0.646; 0.986 at 0.0706).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BLOWUP = frozenset({"LOSS_EXPLOSION", "NONFINITE_GRADIENTS", "EXPLODING_GRADIENTS"})
# an LR too high for the loss surface: the loss swings or diverges, ReLU units are knocked dead
TOO_FAST = BLOWUP | {"LOSS_OSCILLATION", "DEAD_NEURONS"}
# the weights barely move: the loss hardly falls, or the run ends far from fitting; weights that stay
# near their initial values keep the initial, near-uniform predictions (a loss at ln(k))
TOO_SLOW = frozenset({"SLOW_CONVERGENCE", "NO_LEARNING", "UNDERFITTING", "STUCK_AT_CHANCE"})
# the model cannot fit what it is given
CANNOT_FIT = frozenset({"UNDERFITTING", "LOSS_PLATEAU", "SLOW_CONVERGENCE", "STUCK_AT_CHANCE"})
# the signal does not reach the first layers
NO_FLOW = frozenset(
    {"VANISHING_GRADIENTS", "SATURATED_ACTIVATIONS", "SLOW_CONVERGENCE", "STUCK_AT_CHANCE"}
)

TRAIN_EXAMPLES = 1294  # digits: 80% train, of which 90% is fitted on (the rest validates)
TARGET_STEPS = (
    250  # a run's length in optimizer steps, roughly: short, as the whole benchmark must be
)


def steps_per_epoch(batch: int, subset: int | None = None) -> int:
    return max(1, math.ceil(min(subset or TRAIN_EXAMPLES, TRAIN_EXAMPLES) / batch))


def epochs_for(batch: int, subset: int | None = None, steps: int = TARGET_STEPS) -> int:
    """Epochs that give about ``steps`` optimizer steps (3 to 60)."""
    return max(3, min(60, round(steps / steps_per_epoch(batch, subset))))


def recipe_steps(r: dict[str, Any]) -> int:
    """The optimizer steps a recipe's run takes (its epochs of its batches, within its max_steps)."""
    batch = int(r.get("batch", 64))
    epochs = epochs_for(batch)
    return min(2 * TARGET_STEPS, epochs * steps_per_epoch(batch))


@dataclass(frozen=True)
class Family:
    """A fault: its mechanism, the codes that would be a right answer, how to inject it at a magnitude."""

    name: str
    mechanism: str
    acceptable: frozenset[str]
    inject: Callable[[float, dict[str, Any]], list[str]]  # (magnitude, recipe) -> fault overrides
    magnitudes: tuple[float, ...]
    twin: str  # the healthy twin: the recipe the fault is injected into, without it
    models: tuple[str, ...] = ("mlp", "cnn")
    optimizers: tuple[str, ...] = ("sgd", "sgd_momentum", "sgd_nesterov", "adam", "adamw")
    schedulers: tuple[str, ...] = ("none", "cosine", "step", "onecycle", "warmup_cosine", "plateau")
    weight: float = 1.0
    # the LR too high: batch norm absorbs it under Adam (see NORMALIZED and the module docstring)
    adam_on_batchnorm: bool = True


def _lr(recipe: dict[str, Any], factor: float) -> list[str]:
    return [f"optimizer.lr={recipe['lr'] * factor:.3g}"]


MIN_HARMFUL_DECAY = (
    10.0  # AdamW's weights settle near 1/wd at most: 0.1, below a hidden layer's He scale
)


def decay_for_pull(pull: float, recipe: dict[str, Any]) -> float:
    """The AdamW weight decay whose pull over the recipe's run, lr x wd x steps, is ``pull``.

    Decoupled decay multiplies every weight by (1 - lr x wd) each step, so over the run it alone would
    shrink a weight by e^-(lr x wd x steps); Adam's own step is at most lr per weight, so the two balance
    where |w| is about 1/wd. A fault needs both: a pull of 10+ (the decay acts within the run) and
    wd >= 10 (the weights it allows are below what the layers need). Weight decay 3 at lr 1e-3 over 250
    steps is a pull of 0.75: the decay never got going, and 5 of 6 such test cases trained to 0.94-0.96.
    """
    lr = float(recipe.get("lr", 1e-3))
    return max(MIN_HARMFUL_DECAY, pull / (lr * recipe_steps(recipe)))


FAMILIES: tuple[Family, ...] = (
    Family(
        "lr_high_oscillation",
        "LR some 10-30x too high: steps overshoot the valley, the loss bounces or drifts up",
        TOO_FAST,
        lambda m, r: _lr(r, m),
        (15.0, 30.0),
        "the same recipe at its sampled LR",
        # a schedule that anneals (cosine, warm-up cosine, one-cycle) carries an LR 15-30x too high down
        # through the sane range in the run's last part, and the run recovers: see the module docstring
        schedulers=("none", "step", "plateau"),
        adam_on_batchnorm=False,
    ),
    Family(
        "lr_high_explosion",
        "LR 100-300x too high: the first steps throw the weights far out, the loss grows by orders",
        TOO_FAST,
        lambda m, r: _lr(r, m),
        (100.0, 300.0),
        "the same recipe at its sampled LR",
        adam_on_batchnorm=False,
    ),
    Family(
        "lr_high_nan",
        "LR 1000x+ too high without clipping: the loss overflows to Inf/NaN",
        BLOWUP,
        lambda m, r: [*_lr(r, m), "trainer.clip.max_norm=null"],
        (3000.0, 10000.0),
        "the same recipe at its sampled LR",
        optimizers=("sgd", "sgd_momentum", "sgd_nesterov"),
    ),
    Family(
        "lr_too_low",
        "LR 1000x+ too low: the weights barely move",
        TOO_SLOW,
        lambda m, r: _lr(r, m),
        (1e-3, 1e-4),
        "the same recipe at its sampled LR",
    ),
    Family(
        "momentum_too_high",
        "SGD momentum near 1: the velocity keeps growing past the minimum",
        TOO_FAST | {"LOSS_PLATEAU", "STUCK_AT_CHANCE", "MOMENTUM_TOO_HIGH"},
        lambda m, r: [f"optimizer.momentum={m}", "optimizer.nesterov=false", *_lr(r, 3.0)],
        (0.995, 0.999),
        "the same recipe with momentum 0.9",
        optimizers=("sgd_momentum",),
        # OneCycleLR cycles the momentum itself (0.85-0.95) and overwrites the injected value
        schedulers=("none", "cosine", "step", "warmup_cosine", "plateau"),
    ),
    Family(
        "lr_decayed_early",
        "the schedule cuts the LR 10-100x every tenth of the run: it is near zero before the loss settles",
        frozenset({"LR_DECAYED_TOO_EARLY"}) | TOO_SLOW | {"LOSS_PLATEAU"},
        lambda m, r: [
            "scheduler=step",
            "scheduler.interval=step",
            f"scheduler.lr_scheduler.step_size={max(1, recipe_steps(r) // 10)}",
            f"scheduler.lr_scheduler.gamma={m}",
        ],
        (0.1, 0.01),
        "the same recipe under its sampled scheduler",
        schedulers=("step",),
    ),
    Family(
        "warmup_peak_too_high",
        "one-cycle or warm-up climbs to a peak LR 100x too high mid-run",
        TOO_FAST,
        lambda m, r: [f"scheduler={'onecycle' if m > 150 else 'warmup_cosine'}", *_lr(r, 100.0)],
        (100.0, 200.0),
        "the same recipe with its sampled LR as the peak",
        schedulers=("onecycle", "warmup_cosine"),
        adam_on_batchnorm=False,
    ),
    Family(
        "clip_too_tight",
        "gradients clipped to a norm of 1e-4: every step is a tiny step",
        TOO_SLOW,
        lambda m, r: [f"trainer.clip.max_norm={m}"],
        (1e-4, 1e-5),
        "the same recipe without clipping",
        optimizers=("sgd", "sgd_momentum", "sgd_nesterov"),
    ),
    Family(
        "weight_decay_too_strong",
        "decoupled weight decay whose pull over the run (lr x wd x steps) is 10-30: every weight is "
        "shrunk e^-10 or more, and Adam's steps (at most lr each) cap the weights near 1/wd <= 0.1",
        CANNOT_FIT
        | {"NO_LEARNING", "VANISHING_GRADIENTS", "DEAD_NEURONS", "TOO_MUCH_REGULARIZATION"},
        lambda m, r: ["optimizer=adamw", f"optimizer.weight_decay={decay_for_pull(m, r):.3g}"],
        (10.0, 30.0),
        "the same recipe with weight decay up to 0.05",
        optimizers=("adam", "adamw"),
    ),
    Family(
        "dropout_too_strong",
        "dropout 0.9+: almost no signal crosses each layer",
        CANNOT_FIT | {"TOO_MUCH_REGULARIZATION"},
        lambda m, r: [f"model.dropout={m}"],
        (0.9, 0.95),
        "the same recipe with dropout up to 0.5",
        models=("mlp",),
    ),
    Family(
        "capacity_too_small",
        "a hidden layer of 1-2 units cannot separate 10 classes",
        CANNOT_FIT,
        lambda m, r: [f"model.hidden=[{int(m)}]"],
        (1.0, 2.0),
        "the same recipe with hidden [256,256]",
        models=("mlp",),
    ),
    Family(
        "deep_no_norm",
        "12-20 layers without normalisation or residuals: the gradient fades or blows through the depth",
        NO_FLOW | BLOWUP | {"DEAD_NEURONS", "UNDERFITTING", "NO_LEARNING"},
        lambda m, r: [
            f"model.hidden=[{','.join(['32'] * int(m))}]",
            "model.batchnorm=false",
            "model.activation=tanh",
        ],
        (12.0, 20.0),
        "the same recipe with two hidden layers",
        models=("mlp",),
    ),
    Family(
        "init_too_small",
        "initial weights x0.001: signal and gradient vanish through the layers",
        frozenset({"BAD_INITIALIZATION"}) | NO_FLOW | TOO_SLOW,
        lambda m, r: [f"model.init_scale={m}"],
        (1e-3, 1e-4),
        "the same recipe at init_scale 1",
    ),
    Family(
        "init_too_large",
        "initial weights x30-100: huge logits, a first loss far above ln(10)",
        frozenset({"BAD_INITIALIZATION", "SATURATED_ACTIVATIONS"}) | TOO_FAST,
        lambda m, r: [f"model.init_scale={m}"],
        (30.0, 100.0),
        "the same recipe at init_scale 1",
    ),
    Family(
        "saturating_activations",
        "6-8 sigmoid layers: units pinned at their bounds, gradients shrink by 4x per layer",
        NO_FLOW | {"UNDERFITTING", "LOSS_PLATEAU"},
        lambda m, r: [
            "model.activation=sigmoid",
            f"model.hidden=[{','.join(['64'] * int(m))}]",
            "model.batchnorm=false",
        ],
        (6.0, 8.0),
        "the same recipe with ReLU and two hidden layers",
        models=("mlp",),
        optimizers=("sgd", "sgd_momentum", "sgd_nesterov"),
    ),
    Family(
        "dead_bias",
        "biases of -5 to -10: ReLU units start (and stay) off",
        frozenset({"DEAD_NEURONS", "STUCK_AT_CHANCE", "VANISHING_GRADIENTS", "NO_LEARNING"}),
        lambda m, r: [f"model.bias_init={m}", "model.activation=relu"],
        (-5.0, -10.0),
        "the same recipe with biases at their default",
        # the CNN's convolutions have no bias behind batch norm, and one bias on every logit is no change
        models=("mlp",),
    ),
    Family(
        "inputs_wrong_constants",
        "inputs normalised with wrong constants (mean 0.9, std 0.01): inputs ~ -90, huge activations",
        frozenset({"BAD_INITIALIZATION", "SATURATED_ACTIVATIONS", "INPUTS_NOT_NORMALIZED"})
        | TOO_FAST
        | {"STUCK_AT_CHANCE"},
        lambda m, r: [f"data.mean=[{m}]", "data.std=[0.01]"],
        (0.9, 0.5),
        "the same recipe with measured constants",
    ),
    Family(
        "labels_noisy",
        "labels shuffled (noise 1.0) or mostly replaced (0.8): little or no signal to learn",
        frozenset({"STUCK_AT_CHANCE", "OVERFITTING", "UNDERFITTING", "LOSS_PLATEAU"}),
        lambda m, r: [f"data.label_noise={m}"],
        (1.0, 0.8),
        "the same recipe with label noise up to 0.2",
    ),
    Family(
        "too_few_examples",
        "32-64 training examples for many epochs: the model memorises them",
        frozenset({"OVERFITTING"}),
        lambda m, r: [f"data.subset={int(m)}", "data.batch_size=16", "trainer.max_epochs=60"],
        (64.0, 32.0),
        "the same recipe on the full training split",
    ),
    Family(
        "batch_extreme",
        "batch 2 (gradient noise swamps the step; batch norm needs 2) or the whole split (few steps)",
        TOO_FAST | TOO_SLOW | {"LOSS_PLATEAU"},
        lambda m, r: [
            f"data.batch_size={int(m)}",
            "trainer.max_steps=300" if m < 3 else "trainer.max_epochs=10",
        ],
        (2.0, float(TRAIN_EXAMPLES)),
        "the same recipe at its sampled batch size",
    ),
)

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}
# the models whose hidden layers are batch-normalised: each layer's output does not depend on its weights'
# scale, so a step too large grows the weights and shrinks its own effect (see the module docstring)
NORMALIZED = ("cnn", "resnet18")

OPTIMIZERS: dict[str, list[str]] = {
    "sgd": ["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=false"],
    "sgd_momentum": ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=false"],
    "sgd_nesterov": ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"],
    "adam": ["optimizer=adam"],
    "adamw": ["optimizer=adamw"],
}
# a sane LR range per optimizer (log-uniform)
LR_RANGE = {
    "sgd": (0.05, 0.3),
    "sgd_momentum": (0.01, 0.08),
    "sgd_nesterov": (0.01, 0.08),
    "adam": (5e-4, 3e-3),
    "adamw": (5e-4, 3e-3),
}
PLAIN_SGD_MAX_LR = 0.2  # the batch scaling's ceiling for SGD without momentum (see sample_recipe)
SCHEDULERS = ("none", "cosine", "step", "onecycle", "warmup_cosine", "plateau")
# schedulers that hold the LR where it started (plateau cuts only when validation stalls)
CONSTANT_LR = ("none", "plateau")
BATCHES = (8, 16, 32, 64, 128, 256, 512)


@dataclass
class Case:
    """One run: its overrides, seed, the family (``healthy`` for none) and what counts as a right answer."""

    family: str
    overrides: list[str]
    seed: int
    acceptable: list[str] = field(default_factory=list)
    magnitude: float | None = None
    twin: list[str] = field(default_factory=list)  # the healthy twin's overrides (a fault's recipe)

    @property
    def key(self) -> str:
        """A stable id from the case's content: the same case always has the same id and split."""
        blob = json.dumps([self.family, self.overrides, self.seed], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def split(self) -> str:
        return "dev" if int(self.key, 16) % 2 == 0 else "test"

    @property
    def name(self) -> str:
        return f"{self.family}-{self.key}"


def sample_recipe(rng: random.Random, model: str, optimizer: str, scheduler: str) -> dict[str, Any]:
    """A healthy recipe from the sane space: every optimizer and scheduler, batch 8-512, mild noise."""
    lo, hi = LR_RANGE[optimizer]
    batch = rng.choice(BATCHES)
    if model == "resnet18":
        batch = max(batch, 64)  # slow on CPU: few, larger steps
    # The ranges are for batch 64; the gradient's noise falls as the batch grows, so the LR that trains
    # grows with it (square-root scaling, within 0.5-2x): batch 512 at a batch-64 SGD LR got 120 steps too
    # small to leave chance, batch 8 at the top of the range was all noise (recipe bugs, fixed here).
    base_lr = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if model == "resnet18" and optimizer in ("adam", "adamw"):
        # Adam's step is about lr per weight whatever the gradient, and behind batch norm a layer's effect
        # is its step relative to its weights' scale: the 17 batch-normalised layers of the ResNet took the
        # range's low end as too small a step (healthy-89e7067e5a6b, Adam 6.9e-4: test 0.549 in 120 steps,
        # 0.816 in 250; 0.905 in 250 at 1.44e-3). The same draw, mapped onto the range's upper half.
        base_lr = math.sqrt(lo * hi) * math.sqrt(base_lr / lo)
    label_noise = rng.choice((0.0, 0.0, 0.1, 0.2))
    # drawn for every model (the sampler's sequence, and so every other case, stays as it was), kept only
    # for the convolutional nets: see the module docstring (a recipe bug, fixed)
    augmentation = rng.choice(("none", "none", "standard"))
    dropout = rng.choice((0.0, 0.1, 0.3, 0.5)) if model == "mlp" else None
    scale = min(2.0, max(0.5, math.sqrt(batch / 64)))
    if optimizer.startswith("sgd"):
        # SGD's step carries the gradient's noise whole (Adam divides it by its running RMS), and dropout p
        # keeps a share 1-p of the units a batch trains: the noise is that of a batch of batch x (1-p).
        # Batch 8 at dropout 0.5 under the batch-only scaling (SGD momentum, lr 0.0258) swung to test
        # 0.77-0.83 with dead units; at half that LR the same recipe reached 0.947 (a recipe bug, fixed).
        scale = min(2.0, max(0.25, math.sqrt(batch * (1 - (dropout or 0.0)) / 64)))
    lr = scale * base_lr
    if optimizer == "sgd":
        # plain SGD scaled to 0.3-0.4 at a constant LR threw the CNN's validation accuracy between 0.94 and
        # 0.46 epoch to epoch (dev case healthy-966680bc91fc: test 0.75 at 0.402, 0.77 at 0.3; 0.86 at
        # 0.284): the scaling stops at 0.2 (a recipe bug, fixed)
        lr = min(lr, PLAIN_SGD_MAX_LR)
    if optimizer.startswith("sgd") and model in NORMALIZED and scheduler in CONSTANT_LR:
        # The batch scaling's larger step assumes a schedule that anneals it by the end. At a constant LR
        # SGD ends at its full step, and a batch-normalised net's last weights (and the running statistics
        # its evaluation uses, which lag them) are one point of a swing: healthy-7661c37dd297 (CNN, SGD
        # Nesterov 0.0998 = 1.41 x 0.0706, constant) had validation accuracy 0.94-1.0 for 21 epochs and
        # 0.632 at its last, test 0.646; at its unscaled 0.0706 the same recipe reached 0.986. No scaling up
        # without a schedule (a recipe bug, fixed).
        lr = min(lr, base_lr)
    recipe: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "lr": lr,
        "batch": batch,
        "label_noise": label_noise,
        "augmentation": augmentation if model != "mlp" else "none",
        "dropout": dropout,
        "weight_decay": rng.choice((0.0, 1e-4, 0.01, 0.05)),
    }
    return recipe


def recipe_overrides(r: dict[str, Any]) -> list[str]:
    """The recipe as overrides; runs stay short (about TARGET_STEPS steps)."""
    out = [f"model={r['model']}", *OPTIMIZERS[r["optimizer"]], f"scheduler={r['scheduler']}"]
    out += [f"optimizer.lr={r['lr']:.3g}", f"optimizer.weight_decay={r['weight_decay']}"]
    out += [f"data.batch_size={r['batch']}", f"data.label_noise={r['label_noise']}"]
    out += [f"data.augmentation={r['augmentation']}"]
    if r["dropout"] is not None:
        out.append(f"model.dropout={r['dropout']}")
    if r["model"] == "resnet18":
        out.append("model.width=16")
    # ResNet-18 ran 120 steps (for CPU time) and a healthy recipe did not train in them (test 0.549, see
    # sample_recipe); at width 16 on 8x8 digits 250 steps cost about 10 s of CPU: the same budget as the rest
    epochs = epochs_for(r["batch"])
    out += [f"trainer.max_epochs={epochs}", f"trainer.max_steps={2 * TARGET_STEPS}"]
    if r["scheduler"] == "step":
        # the step schedule's default (x0.1 every 10 epochs) cut a 60-epoch run's LR 1000x by its middle:
        # a healthy step schedule cuts twice, at a third and two thirds of the run (a recipe bug, fixed)
        out.append(f"scheduler.lr_scheduler.step_size={max(1, epochs // 3)}")
    return out


def _merge(base: list[str], extra: list[str]) -> list[str]:
    """``extra`` wins over ``base`` key by key (Hydra would reject a key given twice)."""
    keys = {o.split("=", 1)[0] for o in extra}
    kept = [o for o in base if o.split("=", 1)[0] not in keys]
    # a group chosen again keeps its position before the fields that refine it
    groups = [o for o in extra if "." not in o.split("=", 1)[0]]
    fields = [o for o in extra if "." in o.split("=", 1)[0]]
    return groups + kept + fields


def _step_size_for_epochs(overrides: list[str]) -> list[str]:
    """A step schedule's cuts at a third and two thirds of the run the overrides now make: a fault that
    changes the run's length (``too_few_examples``: 60 epochs; ``batch_extreme``: 10) kept the step size
    the base recipe's epochs set, and cut the LR 10x every epoch or two (a recipe bug, fixed)."""
    kv = dict(o.split("=", 1) for o in overrides)
    if kv.get("scheduler") != "step" or "trainer.max_epochs" not in kv:
        return overrides
    size = f"scheduler.lr_scheduler.step_size={max(1, int(kv['trainer.max_epochs']) // 3)}"
    return [size if o.startswith("scheduler.lr_scheduler.step_size=") else o for o in overrides]


def _pick(rng: random.Random, options: tuple[str, ...], wanted: tuple[str, ...]) -> str:
    choices = [o for o in options if o in wanted] or list(options)
    return rng.choice(choices)


def generate(
    faulty: int = 170, healthy: int = 80, seed: int = 0, resnet_share: float = 0.04
) -> list[Case]:
    """The benchmark's cases, in a fixed shuffled order (a prefix is a random sample of the whole).

    Faulty cases cycle through the families; model, optimizer, scheduler, batch, data and seed are
    sampled around each fault (within what the family allows). ResNet-18 appears only in small numbers.
    """
    rng = random.Random(seed)
    models_all = ("mlp", "cnn")
    cases: list[Case] = []
    for i in range(faulty):
        fam = FAMILIES[i % len(FAMILIES)]
        model = rng.choice(fam.models)
        magnitude = rng.choice(fam.magnitudes)
        touches_model = any(o.startswith("model.") for o in fam.inject(magnitude, {"lr": 1.0}))
        # ResNet-18 has none of the MLP/CNN model knobs, and is slow on CPU
        if not touches_model and rng.random() < resnet_share * 2:
            model = "resnet18"
        opt = _pick(rng, tuple(OPTIMIZERS), fam.optimizers)
        if not fam.adam_on_batchnorm and model in NORMALIZED and opt in ("adam", "adamw"):
            opt = "sgd_momentum"  # no draw: every other case stays as it was
        sched = _pick(rng, SCHEDULERS, fam.schedulers)
        recipe = sample_recipe(rng, model, opt, sched)
        recipe["label_noise"] = 0.0  # the fault is the only thing wrong
        base = recipe_overrides(recipe)
        fault = fam.inject(magnitude, recipe)
        merged = _merge(base, fault)
        if not any(o.startswith("scheduler.lr_scheduler.step_size=") for o in fault):
            merged = _step_size_for_epochs(merged)
        case = Case(
            fam.name,
            merged,
            rng.randrange(1000),
            sorted(fam.acceptable),
            magnitude,
            base,
        )
        cases.append(case)
    for _ in range(healthy):
        model = rng.choice(models_all)
        if rng.random() < resnet_share:
            model = "resnet18"
        recipe = sample_recipe(rng, model, rng.choice(tuple(OPTIMIZERS)), rng.choice(SCHEDULERS))
        cases.append(Case("healthy", recipe_overrides(recipe), rng.randrange(1000)))
    rng.shuffle(cases)
    return cases


def quick_cases() -> list[Case]:
    """A handful of tiny cases for a smoke test: two faults, two healthy, a few dozen steps each."""
    tiny = ["trainer.max_epochs=2", "data.subset=256", "model.hidden=[32]", "diag=full"]
    return [
        Case(
            "lr_high_nan",
            [*tiny, *OPTIMIZERS["sgd"], "optimizer.lr=200"],
            0,
            sorted(FAMILY_BY_NAME["lr_high_nan"].acceptable),
            200.0,
            [*tiny, *OPTIMIZERS["sgd"]],
        ),
        Case(
            "dead_bias",
            [*tiny, "model.bias_init=-10"],
            1,
            sorted(FAMILY_BY_NAME["dead_bias"].acceptable),
            -10.0,
            tiny,
        ),
        Case("healthy", [*tiny, "optimizer=adam"], 2),
        Case("healthy", [*tiny, *OPTIMIZERS["sgd_nesterov"], "scheduler=onecycle"], 3),
    ]
