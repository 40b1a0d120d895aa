"""Hostile and damaged checkpoints: every one refused with one line before anything is applied.

A real fit writes a real ``last.pt`` (mid-epoch, so every field is present); each case damages a copy
(a truncation, a flipped bit, a field of the wrong type or range, re-sealed so the hash is valid, a
link or a directory in its place) and resumes from it in-process the way ``train.build`` does:
:func:`load_checkpoint`, then :func:`check_fits` against freshly built objects. Each must raise
:class:`UserError` with one line (no other exception), leave the file as it was, and apply nothing.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from diag.hooks import FitState, Hook, HookList
from runner.checkpoint import CheckpointHook, load_checkpoint, seal
from runner.checkpoint_schema import check_fits, kind_of
from runner.errors import UserError
from runner.trainer import Trainer

# A matrix of hundreds of cases: the full suite runs it; the fast tier keeps the unit tests.
pytestmark = pytest.mark.slow

EPOCHS, BATCHES = 3, 5


class StopAt(Hook):
    """Ends the fit after ``step`` steps, between two checkpoints."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, state: FitState) -> None:
        state.stop_training = state.step >= self.step


def _built(seed: int = 0) -> dict[str, Any]:
    """The objects a config builds before it restores: the same shapes and classes as the fit's."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "generator": torch.Generator().manual_seed(seed),
    }


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> bytes:
    """The bytes of a mid-epoch ``last.pt`` from a real fit."""
    run = tmp_path_factory.mktemp("fit")
    b = _built()
    state = FitState(
        model=b["model"], optimizer=b["optimizer"], run_dir=run, generator=b["generator"]
    )
    state.scheduler = b["scheduler"]
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))] * BATCHES
    hook = CheckpointHook(every_n_steps=4, every_minutes=None)
    hooks = HookList({"checkpoint": hook, "stop": StopAt(13)})
    Trainer(max_epochs=EPOCHS, progress=False).fit(state, data, data[:2], hooks)
    hook.writer.join()  # step 12: the third batch of the third epoch, the last written by cadence
    return (run / "checkpoints" / "last.pt").read_bytes()


def _resume(path: Path) -> None:
    """What ``train.build`` does with ``trainer.resume``, up to the point where state is applied."""
    payload = load_checkpoint(path)
    b = _built(seed=1)
    before = {k: v.clone() for k, v in b["model"].state_dict().items()}
    try:
        check_fits(
            payload,
            path,
            model=b["model"],
            optimizer=b["optimizer"],
            scheduler=b["scheduler"],
            generator=b["generator"],
            steps_per_epoch=BATCHES,
            max_epochs=EPOCHS,
        )
    finally:  # checking applies nothing, refused or not
        assert all(torch.equal(before[k], v) for k, v in b["model"].state_dict().items())


def _refused(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    with pytest.raises(UserError) as caught:
        _resume(path)
    message = str(caught.value)
    assert message and "\n" not in message and "Traceback" not in message, message
    if digest is not None:  # nothing lost: the file is as it was
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    return message


def test_the_undamaged_checkpoint_resumes(original, tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(original)
    _resume(path)
    payload = load_checkpoint(path)
    assert payload["mid_epoch"] is True and payload["step"] == 12 and payload["batch_in_epoch"] == 2
    assert len(original) > max(TRUNCATIONS)  # every cut below is a real truncation


TRUNCATIONS = sorted({0, 1, 21, 22, 50, *range(100, 6000, 41), -1, -2, -22, -78, -79, -100})


@pytest.mark.parametrize("cut", TRUNCATIONS)
def test_a_truncated_checkpoint_is_refused(original, tmp_path, cut):
    path = tmp_path / "last.pt"
    path.write_bytes(original[:cut])
    assert "refused" in _refused(path)


FLIPS = [(pos, bit) for pos, bit in zip(range(250), random.Random(24).choices(range(8), k=250))]


@pytest.mark.parametrize(("nth", "bit"), FLIPS)
def test_a_flipped_bit_anywhere_is_refused(original, tmp_path, nth, bit):
    data = bytearray(original)
    pos = random.Random(nth).randrange(len(data)) if nth else len(data) - 1
    data[pos] ^= 1 << bit
    path = tmp_path / "last.pt"
    path.write_bytes(bytes(data))
    assert "refused" in _refused(path)


def _payload(original: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(original), weights_only=True)


def _sealed(payload: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return seal(buffer.getvalue())


WRONG = [1, -5, "fast", [], {}, None, True, 1.5, float("nan"), torch.ones(2)]
OPTIONAL = {"scheduler_class", "scaler", "epoch_acc", "recipe"}  # None is a valid value of these


def _fields(payload: dict[str, Any]) -> list[tuple[str, ...]]:
    """Every top-level field and the nested ones a resume reads."""
    nested = [
        ("optimizer", "state"),
        ("optimizer", "param_groups"),
        ("optimizer", "param_groups", 0),
        ("optimizer", "param_groups", 0, "lr"),
        ("optimizer", "param_groups", 0, "betas"),
        ("optimizer", "param_groups", 0, "params"),
        ("optimizer", "state", 0, "exp_avg"),
        ("optimizer", "state", 0),
        ("scheduler", "last_epoch"),
        ("scheduler", "base_lrs"),
        ("scheduler", "T_max"),
        ("rng", "torch"),
        ("rng", "data"),
        ("history", 0),
        ("history", 0, "epoch"),
        ("history", 0, "step"),
        ("model", "0.weight"),
        ("hooks", "checkpoint"),
    ]
    return [(k,) for k in payload] + nested


def _confused(original: bytes) -> list[tuple[str, Any]]:
    payload = _payload(original)
    cases = []
    for field in _fields(payload):
        node = payload
        for k in field:
            node = node[k]
        for wrong in WRONG:
            if kind_of(wrong) == kind_of(node) and not (kind_of(wrong) == "number" and wrong < 0):
                continue  # a value of the right type and range is not a confusion
            if wrong is None and field[-1] in OPTIONAL:
                continue
            if node is None and kind_of(wrong) == "dict" and field[-1] in ("scheduler", "scaler"):
                continue  # a state dict where none was kept is of the right type
            if field == ("hooks",) and wrong == {}:
                continue  # no hook state is a valid (empty) state
            cases.append((".".join(map(str, field)), wrong))
    return cases


@pytest.fixture(scope="module")
def confused_cases(original):
    return _confused(original)


def _set(payload: dict[str, Any], dotted: str, value: Any) -> None:
    keys: list[Any] = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    if dotted.startswith("model."):  # parameter names hold a dot themselves
        keys = ["model", dotted.removeprefix("model.")]
    node = payload
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


N_CONFUSED = 190  # the cases _confused builds from the real payload (asserted below)


def test_the_type_confusion_matrix_has_its_cases(confused_cases):
    assert len(confused_cases) >= N_CONFUSED


@pytest.mark.parametrize("index", range(N_CONFUSED))
def test_a_field_of_the_wrong_type_or_range_is_refused_by_name(
    original, tmp_path, confused_cases, index
):
    field, wrong = confused_cases[index]
    print("case:", field, repr(wrong))
    payload = _payload(original)
    _set(payload, field, copy.deepcopy(wrong))
    path = tmp_path / "last.pt"
    path.write_bytes(_sealed(payload))  # a valid hash: the schema, not the seal, must catch it
    message = _refused(path)
    top = field.split(".")[0]
    assert top in message or "different model" in message or "was trained with" in message, message


SEMANTIC = {
    "epoch past the run": ("epoch", 7),
    "negative epoch": ("epoch", -5),
    "history longer than the epochs": ("history", [{"epoch": 0, "step": 1}] * 9),
    "skipped more steps than taken": ("skipped_steps", 10**6),
    "batch past the epoch": ("batch_in_epoch", BATCHES + 5),
    "short rng": ("rng.torch", torch.zeros(3, dtype=torch.uint8)),
    "rng of floats": ("rng.torch", torch.zeros(5056)),
    "lr as text": ("optimizer.param_groups.0.lr", "fast"),
    "negative lr": ("optimizer.param_groups.0.lr", -1.0),
    "nan lr": ("optimizer.param_groups.0.lr", float("nan")),
    "state of a missing parameter": ("optimizer.state.99", {"step": torch.tensor(1.0)}),
    "moment of another shape": ("optimizer.state.0.exp_avg", torch.zeros(5, 5)),
    "weight of another shape": ("model.0.weight", torch.zeros(8, 5)),
    "another optimizer": ("optimizer_class", "SGD"),
    "another scheduler": ("scheduler_class", "StepLR"),
    "no scheduler": ("scheduler_class", None),
    "old format": ("format", 1),
    "not a dict": ("", [1, 2, 3]),
}


@pytest.mark.parametrize("case", SEMANTIC)
def test_a_well_typed_but_impossible_checkpoint_is_refused(original, tmp_path, case):
    field, value = SEMANTIC[case]
    payload: Any = _payload(original)
    if field:
        _set(payload, field, value)
    else:
        payload = value
    path = tmp_path / "last.pt"
    path.write_bytes(_sealed(payload))
    _refused(path)


def test_another_optimizer_or_scheduler_is_named_on_both_sides(original, tmp_path):
    for field, value, words in (
        ("optimizer_class", "SGD", ("SGD", "Adam")),
        ("scheduler_class", "StepLR", ("StepLR", "CosineAnnealingLR")),
    ):
        payload = _payload(original)
        _set(payload, field, value)
        path = tmp_path / f"{field}.pt"
        path.write_bytes(_sealed(payload))
        message = _refused(path)
        assert all(w in message for w in words), message


def _link_to(target: Path):
    def make(path: Path) -> None:
        path.symlink_to(target)

    return make


@pytest.mark.parametrize(
    "kind",
    ["link to a good file", "link to /etc/passwd", "dangling link", "directory", "fifo", "empty"],
)
def test_a_link_a_directory_or_a_non_file_in_its_place_is_refused(original, tmp_path, kind):
    good = tmp_path / "good.pt"
    good.write_bytes(original)
    path = tmp_path / "last.pt"
    if kind == "link to a good file":
        path.symlink_to(good)
    elif kind == "link to /etc/passwd":
        path.symlink_to("/etc/passwd")
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "nowhere.pt")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b"")
    message = _refused(path)
    if "link" in kind:
        assert "symbolic link" in message and path.is_symlink()
    assert good.read_bytes() == original


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_sealed_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    """The hash is no secret: a hostile file can carry a valid one. ``weights_only`` still refuses it."""
    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    torch.save({"format": 2, "model": _RunsCode()}, buffer)
    path = tmp_path / "last.pt"
    path.write_bytes(seal(buffer.getvalue()))
    assert "holds objects other than tensors" in _refused(path)
    assert not (tmp_path / "PWNED").exists()
