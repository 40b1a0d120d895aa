"""What a checkpoint must hold, checked field by field before any of it is applied.

``torch.load(..., weights_only=True)`` only promises plain data and tensors: a file that loads can still
hold ``model=1``, ``epoch=-5`` or an RNG state of the wrong size, which would fail deep inside torch (or
silently train extra epochs). :func:`check_payload` checks the types and ranges a checkpoint of this
runner has; :func:`check_fits` checks it against the objects this config built (optimizer and scheduler
classes, parameter shapes, state sizes), so a mismatch is one line naming both sides.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.errors import UserError

FORMAT = 2  # the payload layout written by Trainer.checkpoint_payload
# the "kind" of best.pt: the best epoch's weights, not a training state
BEST_WEIGHTS = "best_weights"
# What a resume continues as its checkpoint saved it: the optimizer's state (its LRs among it), the
# schedule's position, the weights, the data order. A launch that changed one of them would train on at
# the checkpoint's values while its report and TensorBoard recorded the new ones.
RECIPE = ("seed", "model", "optimizer", "scheduler", "data", "trainer.precision", "trainer.clip")
# data keys that only say where the data is and how fast it is read
_HOW_READ = ("root", "download", "cache", "num_workers", "pin_memory", "eval_batch_size")
_UNSET = object()


def kind_of(value: Any) -> str:
    """A coarse type name: int and float are both numbers, list and tuple both lists."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


class _Fields:
    """Raises a :class:`UserError` naming the checkpoint, the field and what it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def bad(self, field: str, what: str) -> UserError:
        return UserError(
            f"checkpoint {self.path} is not usable: {field} {what}; use another checkpoint or start "
            "without trainer.resume"
        )

    def integer(self, p: dict[str, Any], key: str, low: int = 0, high: float = math.inf) -> int:
        v = p.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.bad(key, f"is {kind_of(v)} {v!r:.40}, not an integer")
        if not low <= v <= high:
            raise self.bad(key, f"is {v}, outside [{low}, {high}]")
        return v

    def number(self, field: str, v: Any, low: float = -math.inf, nan_ok: bool = False) -> float:
        if kind_of(v) != "number":
            raise self.bad(field, f"is {kind_of(v)} {v!r:.40}, not a number")
        if math.isnan(v) and not nan_ok:
            raise self.bad(field, "is NaN")
        if v < low:
            raise self.bad(field, f"is {v}, below {low}")
        return float(v)

    def of(self, field: str, v: Any, kind: str) -> Any:
        if kind_of(v) != kind:
            raise self.bad(field, f"is {kind_of(v)} {v!r:.40}, not a {kind}")
        return v

    def state_dict(self, field: str, v: Any) -> dict[str, torch.Tensor]:
        """A module's ``state_dict``: a non-empty dict of tensors by name."""
        sd = self.of(field, v, "dict")
        if not sd:
            raise self.bad(field, "is empty")
        for k, t in sd.items():
            if not isinstance(k, str) or not isinstance(t, torch.Tensor):
                raise self.bad(f"{field}[{k!r:.40}]", f"is {kind_of(t)}, not a tensor")
        return sd

    def byte_state(self, field: str, v: Any) -> torch.Tensor:
        t = self.of(field, v, "tensor")
        if t.dtype != torch.uint8 or t.dim() != 1:
            raise self.bad(
                field, f"is a {t.dtype} tensor of shape {list(t.shape)}, not an RNG state"
            )
        return t


def check_payload(payload: Any, path: Path) -> None:
    """Types and ranges of every field :meth:`runner.trainer.Trainer.checkpoint_payload` writes."""
    f = _Fields(path)
    if not isinstance(payload, dict):
        raise f.bad("the file", f"holds {kind_of(payload)}, not a runner checkpoint")
    if kind_of(payload.get("format")) != "number" or payload.get("format") != FORMAT:
        raise f.bad(
            "format",
            f"is {payload.get('format')!r:.20} (this runner reads {FORMAT}): it was not written by this "
            "version of the runner",
        )
    if payload.get("kind") == BEST_WEIGHTS:
        value = payload.get("value")
        shown = f"{value:.4g}" if kind_of(value) == "number" else f"{value!r:.20}"
        raise UserError(
            f"checkpoint {path} holds only the weights of the best epoch (step "
            f"{payload.get('step')!r:.12}, {payload.get('monitor')!s:.40} {shown}), not a state to resume "
            "training from: give trainer.resume checkpoints/last.pt or the run directory (best.pt's weights "
            "load with runner.checkpoint.load_best_weights)"
        )
    f.state_dict("model", payload.get("model"))
    f.of("optimizer_class", payload.get("optimizer_class"), "str")
    if payload.get("scheduler_class") is not None:
        f.of("scheduler_class", payload.get("scheduler_class"), "str")
    if payload.get("recipe") is not None:
        recipe = f.of("recipe", payload["recipe"], "dict")
        if not recipe or not all(isinstance(k, str) for k in recipe):
            raise f.bad("recipe", "holds no config keys")
    opt = f.of("optimizer", payload.get("optimizer"), "dict")
    f.of("optimizer.state", opt.get("state"), "dict")
    groups = f.of("optimizer.param_groups", opt.get("param_groups"), "list")
    for i, group in enumerate(groups):
        where = f"optimizer.param_groups[{i}]"
        f.of(where, group, "dict")
        params = f.of(f"{where}.params", group.get("params"), "list")
        if not all(kind_of(p) == "number" and isinstance(p, int) for p in params):
            raise f.bad(f"{where}.params", "holds something other than parameter indices")
        f.number(f"{where}.lr", group.get("lr"), low=0.0)
        for key, value in group.items():
            if key == "params":
                continue
            kind = kind_of(value)
            if kind == "number":
                f.number(f"{where}.{key}", value)
            elif kind == "list":
                for j, x in enumerate(value):
                    f.number(f"{where}.{key}[{j}]", x)
            elif kind not in ("bool", "null", "tensor"):
                raise f.bad(f"{where}.{key}", f"is {kind} {value!r:.40}")
    for key in ("scheduler", "scaler"):
        if payload.get(key) is not None:
            f.of(key, payload[key], "dict")
    rng = f.of("rng", payload.get("rng"), "dict")
    f.byte_state("rng.torch", rng.get("torch"))
    if rng.get("data") is not None:
        f.byte_state("rng.data", rng["data"])
    if rng.get("cuda") is not None:
        for j, state in enumerate(f.of("rng.cuda", rng["cuda"], "list")):
            f.byte_state(f"rng.cuda[{j}]", state)
    mid_epoch = f.of("mid_epoch", payload.get("mid_epoch"), "bool")
    f.integer(payload, "batch_in_epoch")
    if mid_epoch:
        f.byte_state("epoch_rng", payload.get("epoch_rng"))
        acc = payload.get("epoch_acc")
        if acc is not None:
            f.of("epoch_acc", acc, "list")
            if len(acc) != 3 or not all(
                isinstance(t, torch.Tensor) and t.numel() == 1 for t in acc[:2]
            ):
                raise f.bad("epoch_acc", "is not [loss sum, correct count, samples]")
            f.integer({"epoch_acc[2]": acc[2]}, "epoch_acc[2]")
    epoch = f.integer(payload, "epoch")
    step = f.integer(payload, "step")
    f.integer(payload, "skipped_steps", high=step)
    f.number("best_val_loss", payload.get("best_val_loss"), low=0.0)  # a cross-entropy
    history = f.of("history", payload.get("history"), "list")
    if len(history) > epoch + 1:
        raise f.bad("history", f"has {len(history)} epochs, more than epoch {epoch} allows")
    for i, row in enumerate(history):
        f.of(f"history[{i}]", row, "dict")
        f.integer(row, "epoch", high=epoch)
        f.integer(row, "step", high=step)
    hooks = f.of("hooks", payload.get("hooks"), "dict")
    for name, state in hooks.items():
        f.of(f"hooks.{name}", state, "dict")


def _same_shape(saved: Any, live: Any, where: str, f: _Fields) -> None:
    """``saved`` has the structure of ``live`` (a freshly built object's state): keys, kinds, lengths."""
    kind, want = kind_of(saved), kind_of(live)
    if want == "null" or (want == "number" and kind == "number"):
        return  # a value the live object has not set yet, or a number of either sort
    if kind != want:
        raise f.bad(where, f"is {kind} {saved!r:.40}, where this config has a {want}")
    if kind == "dict":
        missing = sorted(map(str, set(live) - set(saved)))
        if missing:
            raise f.bad(where, f"has no {', '.join(missing)[:80]}")
        for key in live:
            _same_shape(saved[key], live[key], f"{where}.{key}", f)
    elif kind == "list":
        if len(saved) != len(live):
            raise f.bad(where, f"has {len(saved)} entries, where this config has {len(live)}")
        for i, (s, v) in enumerate(zip(saved, live)):
            _same_shape(s, v, f"{where}[{i}]", f)
    elif kind == "tensor" and saved.shape != live.shape:
        raise f.bad(
            where, f"has shape {list(saved.shape)}, where this config has {list(live.shape)}"
        )


def check_fits(
    payload: dict[str, Any],
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator | None,
    steps_per_epoch: int,
    max_epochs: int,
) -> None:
    """The checkpoint fits the objects this config built: refused (one line, both sides named) if not."""
    f = _Fields(path)
    trained, built = payload["optimizer_class"], type(optimizer).__name__
    if trained != built:
        raise UserError(
            f"checkpoint {path} was trained with optimizer {trained}, this config builds {built}: "
            f"resume with the optimizer it was trained with (optimizer={trained.lower()}) or start "
            "without trainer.resume"
        )
    trained_s = payload.get("scheduler_class")
    built_s = type(scheduler).__name__ if scheduler is not None else None
    if trained_s != built_s:
        raise UserError(
            f"checkpoint {path} was trained with scheduler {trained_s or 'none'}, this config builds "
            f"{built_s or 'none'}: resume with the scheduler it was trained with or start without "
            "trainer.resume"
        )
    live = model.state_dict()
    missing = sorted(set(live) - set(payload["model"]))
    extra = sorted(set(payload["model"]) - set(live))
    if missing or extra:
        which = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which this model does not"
        raise UserError(
            f"checkpoint {path} holds a different model (it {which}): resume with the model it was "
            "trained with"
        )
    for key, tensor in live.items():
        saved = payload["model"][key]
        if saved.shape != tensor.shape:
            raise UserError(
                f"checkpoint {path} holds a different model ({key} has shape {list(saved.shape)}, "
                f"this model {list(tensor.shape)}): resume with the model it was trained with"
            )
    opt = payload["optimizer"]
    live_groups = optimizer.state_dict()["param_groups"]
    _same_shape(opt["param_groups"], live_groups, "optimizer.param_groups", f)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, state in opt["state"].items():
        if kind_of(index) != "number" or not 0 <= int(index) < len(params):
            raise f.bad("optimizer.state", f"names parameter {index!r:.20}, which does not exist")
        f.of(f"optimizer.state[{index}]", state, "dict")
        for key, value in state.items():
            where = f"optimizer.state[{index}].{key}"
            if isinstance(value, torch.Tensor):
                if value.numel() > 1 and value.shape != params[int(index)].shape:
                    raise f.bad(where, f"has shape {list(value.shape)}, not the parameter's")
            else:
                f.number(where, value)
    if scheduler is not None:
        _same_shape(payload.get("scheduler"), scheduler.state_dict(), "scheduler", f)
    size = torch.get_rng_state().numel()
    for key in ("torch",):
        if payload["rng"][key].numel() != size:
            raise f.bad(f"rng.{key}", f"has {payload['rng'][key].numel()} bytes, not {size}")
    if generator is not None:
        gsize = generator.get_state().numel()
        for where, state in (
            ("rng.data", payload["rng"].get("data")),
            ("epoch_rng", payload.get("epoch_rng")),
        ):
            if state is not None and state.numel() != gsize:
                raise f.bad(where, f"has {state.numel()} bytes, not {gsize}")
    if payload["batch_in_epoch"] > steps_per_epoch:
        raise f.bad(
            "batch_in_epoch",
            f"is {payload['batch_in_epoch']}, but an epoch of this config has {steps_per_epoch} batches",
        )
    if payload["epoch"] >= max_epochs:
        raise UserError(
            f"checkpoint {path} is at epoch {payload['epoch'] + 1}, past this config's "
            f"trainer.max_epochs={max_epochs}: resume with the trainer.max_epochs it was started with"
        )


def check_best_weights(payload: Any, path: Path) -> None:
    """Types of best.pt's fields (:meth:`runner.checkpoint.CheckpointHook.best_weights`)."""
    f = _Fields(path)
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind != BEST_WEIGHTS:
        raise f.bad(
            "kind", f"is {kind!r:.20}, not {BEST_WEIGHTS!r}: it is not a best.pt of this runner"
        )
    if payload.get("format") != FORMAT:
        raise f.bad("format", f"is {payload.get('format')!r:.20} (this runner reads {FORMAT})")
    f.state_dict("model", payload.get("model"))
    f.integer(payload, "epoch")
    f.integer(payload, "step")
    f.of("monitor", payload.get("monitor"), "str")
    f.number("value", payload.get("value"))


def _leaves(cfg: DictConfig) -> dict[str, Any]:
    """The recipe's keys, dotted, with their values as written (a list is one value)."""
    flat: dict[str, Any] = {}

    def walk(key: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{key}.{k}", v)
        else:
            flat[key] = node

    for key in RECIPE:
        node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(node, (DictConfig, ListConfig)):
            node = OmegaConf.to_container(node, resolve=False)
        walk(key, node)
    for key in _HOW_READ:
        flat.pop(f"data.{key}", None)
    return flat


def recipe_of(cfg: DictConfig, leaves: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config values a resume must share with its checkpoint, by dotted key, resolved (``leaves``:
    :func:`_leaves` of ``cfg`` when the caller has them)."""
    recipe: dict[str, Any] = {}
    for key in _leaves(cfg) if leaves is None else leaves:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        recipe[key] = value
    return recipe


def _shown(value: Any) -> str:
    return "(unset)" if value is _UNSET else str(value)


def check_recipe(payload: dict[str, Any], path: Path, cfg: DictConfig) -> None:
    """This launch keeps the config the checkpoint was trained with, or is refused in one line naming
    each change: the checkpoint's optimizer state and schedule would silently override a new LR."""
    saved = payload.get("recipe")
    if saved is None:  # a checkpoint written before checkpoints kept their recipe
        return
    leaves = _leaves(cfg)
    now = recipe_of(cfg, leaves)
    # a value this launch takes from another key follows that key: a cosine's T_max from
    # trainer.max_epochs, whose change the schedule's horizon check names
    follows = {k for k, v in leaves.items() if isinstance(v, str) and "${" in v}
    changed = [
        k
        for k in sorted(saved.keys() | now.keys())
        if k not in follows and saved.get(k, _UNSET) != now.get(k, _UNSET)
    ]
    if not changed:
        return
    shown = ", ".join(
        f"{k}={_shown(now.get(k, _UNSET))} (trained with {_shown(saved.get(k, _UNSET))})"
        for k in changed[:3]
    )
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    raise UserError(
        f"trainer.resume: this launch changes {shown}{more}, but a resume continues {path} with the "
        "optimizer state, schedule and data order it saved, so the change would not take effect: "
        "resume without it, or start a new run without trainer.resume"
    )
