"""Checkpoints by time and work: the cadence, the background writer, and the fit's end always leaving last.pt."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from torch import nn

from diag.hooks import FitState, Hook, HookList
from runner.checkpoint import (
    CheckpointHook,
    CheckpointWriter,
    load_best_weights,
    load_checkpoint,
    read_checkpoint,
    save_atomic,
    snapshot,
)
from runner.errors import UserError
from runner.trainer import Trainer


class FakeClock:
    """A clock the test moves: ``Tick`` advances it by a fixed amount per training step."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tick(Hook):
    """Before the checkpoint hook: every step takes ``seconds`` on the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def on_train_batch_end(self, state: FitState) -> None:
        self.clock.now += self.seconds


class StepCount(Hook):
    """Counts the training steps taken (none, when the fit is refused at its start)."""

    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, state: FitState) -> None:
        self.steps += 1


class StopAt(Hook):
    """Stops the fit after step ``step`` (as the AutoTrainer does before a guided restart)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, state: FitState) -> None:
        if state.step >= self.step:
            state.stop_training, state.stop_reason = True, "test stop"


def _fit(tmp_path, hook: CheckpointHook, *before: Hook, epochs: int = 3, batches: int = 10):
    """A real fit of a small linear model on fixed batches, ending as train.run ends it (on_fit_end)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = FitState(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path
    )
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))] * batches
    hooks = HookList({**{f"h{i}": h for i, h in enumerate(before)}, "checkpoint": hook})
    Trainer(max_epochs=epochs, progress=False).fit(state, data, data[:2], hooks)
    hooks.on_fit_end(state)
    return state


def test_every_minutes_saves_last_by_elapsed_time_and_the_end_always_saves(tmp_path):
    clock = FakeClock()
    hook = CheckpointHook(every_minutes=1, clock=clock)  # steps take 25 s: a save every 3rd step
    state = _fit(tmp_path, hook, Tick(clock, 25.0))
    # 75 s, 150 s, ...: every third step, the last of them the fit's end (step 30)
    assert hook.saved_steps == list(range(3, 31, 3))
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["step"] == state.step == 30 and not saved["mid_epoch"]
    assert torch.equal(saved["model"]["weight"], state.model.weight.detach())


def test_a_checkpoint_that_costs_more_than_the_time_budget_waits(tmp_path):
    clock = FakeClock()
    # any real write costs more than a 1e-12 share of a minute: after the first save, only the end saves
    hook = CheckpointHook(every_minutes=1, max_time_fraction=1e-12, clock=clock)
    _fit(tmp_path, hook, Tick(clock, 25.0))
    assert hook.saved_steps == [3, 30]
    # step 3's last.pt is written first, unless the writer thread had not started it when step 30's
    # replaced it in the queue (a loaded machine: the whole fit takes milliseconds)
    written = [p.name for p in hook.writer.written]
    assert written in (["last.pt", "best.pt", "last.pt"], ["best.pt", "last.pt"])
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 30


def test_without_a_cadence_the_fit_end_leaves_last_and_best(tmp_path):
    hook = CheckpointHook(every_minutes=None)
    state = _fit(tmp_path, hook)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # no temporary files
    last, best = load_checkpoint(folder / "last.pt"), load_best_weights(folder / "best.pt")
    assert last["step"] == 30 and last["hooks"]["checkpoint"]["best"] == best["value"] == hook.best
    assert min(h["val/loss"] for h in state.history) == pytest.approx(hook.best)
    assert best["step"] == 10 * (1 + [h["val/loss"] for h in state.history].index(hook.best))
    assert best["epoch"] == best["step"] // 10 - 1 and best["monitor"] == "val/loss"
    assert sorted(best) == ["epoch", "format", "kind", "model", "monitor", "step", "value"]


def test_best_pt_holds_weights_and_resuming_from_it_is_refused_naming_last_pt(tmp_path):
    """best.pt is the best epoch's weights (what restoring the best model needs), not a training state:
    trainer.resume given it says so in one line and names last.pt; load_checkpoint refuses it alike."""
    hook = CheckpointHook(every_minutes=None)
    _fit(tmp_path, hook)
    best_pt = tmp_path / "checkpoints" / "best.pt"
    model = nn.Linear(4, 3)
    model.load_state_dict(load_best_weights(best_pt)["model"])  # loads into a fresh model as is
    with pytest.raises(
        UserError, match=r"holds only the weights of the best epoch .*checkpoints/last.pt"
    ):
        load_checkpoint(best_pt)
    with pytest.raises(UserError, match=r"kind is None, not 'best_weights'"):
        load_best_weights(tmp_path / "checkpoints" / "last.pt")


class Weights(Hook):
    """Records the weights at every epoch's end."""

    def __init__(self) -> None:
        self.at: dict[int, torch.Tensor] = {}

    def on_epoch_end(self, state: FitState) -> None:
        self.at[state.step] = state.model.weight.detach().clone()


def test_best_holds_the_weights_of_its_epoch_not_the_ones_trained_after_the_copy(tmp_path):
    weights = Weights()
    hook = CheckpointHook(every_minutes=None)
    state = _fit(tmp_path, hook, weights, epochs=6)
    best = load_best_weights(tmp_path / "checkpoints" / "best.pt")
    assert torch.equal(best["model"]["weight"], weights.at[best["step"]])
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert torch.equal(last["model"]["weight"], state.model.weight.detach())


@pytest.mark.parametrize(
    "bad", [{"every_minutes": 0}, {"max_time_fraction": 0}, {"max_time_fraction": 2}]
)
def test_a_bad_cadence_setting_is_a_user_error_naming_it(bad):
    with pytest.raises(UserError, match=f"callbacks.checkpoint.{next(iter(bad))}"):
        CheckpointHook(**bad)


def test_a_fit_stopped_mid_epoch_by_a_hook_still_leaves_its_last_step(tmp_path):
    hook = CheckpointHook(every_minutes=None)
    state = _fit(tmp_path, hook, StopAt(13))
    assert state.step == 13
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 13


def test_every_n_steps_saves_mid_epoch_checkpoints_that_resume_where_they_were(tmp_path):
    hook = CheckpointHook(every_minutes=None, every_n_steps=4)
    _fit(tmp_path, hook, StopAt(14))
    assert hook.saved_steps == [4, 8, 12, 14]  # inside epochs 1 and 2, and the fit's end
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["step"] == 14


def test_save_now_returns_once_the_file_is_complete(tmp_path):
    hook = CheckpointHook(every_minutes=None)
    state = _fit(tmp_path, hook, epochs=1)
    state.step = 99
    path = hook.save_now(state, mid_epoch=True)
    assert path is not None
    saved = read_checkpoint(path)  # readable at once: the write finished before save_now returned
    assert saved["step"] == 99 and saved["mid_epoch"]


def test_writer_writes_in_the_background_and_the_file_reads_back_complete(tmp_path):
    writer = CheckpointWriter()
    path = tmp_path / "ck" / "last.pt"
    big = {"model": {"w": torch.arange(1_000_000, dtype=torch.float32)}, "step": 7}
    writer.submit(path, big)
    writer.join()
    back = read_checkpoint(path)
    assert back["step"] == 7 and torch.equal(back["model"]["w"], big["model"]["w"])
    assert writer.idle and writer.written == [path]


def test_a_queued_write_is_replaced_by_a_newer_one_for_the_same_file(tmp_path):
    writer = CheckpointWriter()
    slow = {"model": {"w": torch.zeros(4_000_000)}, "step": 0}
    writer.submit(tmp_path / "other.pt", slow)  # keeps the writer busy while the next two queue
    for step in range(1, 6):
        writer.submit(
            tmp_path / "last.pt", {"model": {"w": torch.full((3,), float(step))}, "step": step}
        )
    writer.join()
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 5
    assert writer.written.count(tmp_path / "last.pt") < 5  # older queued states were dropped


def test_a_failing_background_write_keeps_the_previous_file_and_surfaces_as_a_user_error(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(2)}, "step": 1}, path)
    writer = CheckpointWriter()
    writer.submit(
        path, {"model": {"w": torch.zeros(2)}, "step": 2, "bad": lambda: None}
    )  # unpicklable
    with pytest.raises(UserError, match="cannot write checkpoint"):
        writer.join()
    assert read_checkpoint(path)["step"] == 1  # the previous checkpoint survived
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    writer.join()  # raised once: the writer is usable again
    writer.submit(path, {"model": {"w": torch.zeros(2)}, "step": 3})
    writer.join()
    assert read_checkpoint(path)["step"] == 3


def test_a_file_where_the_checkpoint_folder_belongs_stops_the_fit_before_its_first_step(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    steps = StepCount()
    with pytest.raises(UserError, match=r"checkpoints is a file where a folder belongs"):
        _fit(tmp_path, CheckpointHook(every_minutes=None), steps, epochs=1)
    assert steps.steps == 0


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_directory_or_a_link_at_last_pt_stops_the_fit_before_its_first_step(tmp_path, kind):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    if kind == "directory":
        (folder / "last.pt").mkdir()
    else:
        (folder / "last.pt").symlink_to(victim)
    steps = StepCount()
    with pytest.raises(UserError, match=r"last\.pt is (a directory|a symbolic link)"):
        _fit(tmp_path, CheckpointHook(every_minutes=None), steps, epochs=1)
    assert steps.steps == 0 and victim.read_text() == "precious"


def test_orphan_temporary_files_of_a_killed_writer_are_removed_at_the_start(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    orphans = [folder / ".last.pt.k1l2.tmp", folder / ".best.pt.x9.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a checkpoint")
    (folder / "notes.tmp").write_text("not ours")
    _fit(tmp_path, CheckpointHook(every_minutes=None), epochs=1)
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt", "notes.tmp"]


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_disk_full_in_the_writer_thread_is_the_same_user_error(small_disk):
    path = small_disk / "checkpoints" / "last.pt"
    writer = CheckpointWriter()
    writer.submit(path, {"model": {"w": torch.ones(10)}, "step": 1})
    writer.join()
    writer.submit(
        path, {"model": {"w": torch.zeros(200_000)}, "step": 2}
    )  # 800 kB on a 256 kB disk
    with pytest.raises(UserError, match=r"cannot write checkpoint .*previous checkpoint is intact"):
        writer.join()
    assert read_checkpoint(path)["step"] == 1


class EventsOnDisk(Hook):
    """After the checkpoint hook: at each of ``steps``, the val/acc points TensorBoard's reader finds on
    disk, and the epochs of the JSONL lines in the run directory's train file."""

    def __init__(self, run_dir, steps: tuple[int, ...]) -> None:
        self.run_dir, self.steps = run_dir, steps
        self.points: dict[int, list[int]] = {}
        self.lines: dict[int, list[int]] = {}

    def on_train_batch_end(self, state: FitState) -> None:
        if state.step not in self.steps:
            return
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        tags: list[str] = []
        if (self.run_dir / "tb").is_dir():  # the writer makes its folder with its first flush
            acc = EventAccumulator(str(self.run_dir / "tb"), size_guidance={"scalars": 0})
            acc.Reload()
            tags = acc.Tags()["scalars"]
        self.points[state.step] = (
            [e.step for e in acc.Scalars("val/acc")] if "val/acc" in tags else []
        )
        train = self.run_dir / "train_diagnostics.jsonl"
        text = train.read_text() if train.exists() else ""
        self.lines[state.step] = [json.loads(line)["epoch"] for line in text.splitlines()]


def test_a_checkpoint_puts_the_queued_events_and_jsonl_lines_on_disk_first(tmp_path):
    """TensorBoard and the JSONL logs flush by time (an hour here): at step 15 the first epoch's point
    and line are still in memory; a mid-epoch checkpoint at step 25 finds every epoch's point and line
    up to it on disk, so a run killed after it and resumed from it lacks none."""
    from diag.epoch_log import EpochJSONL
    from diag.tensorboard import TensorBoardScalars
    from runner.tensorboard_run import open_writer

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    state = FitState(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), run_dir=tmp_path
    )
    state.writer = open_writer(tmp_path / "tb", step=0)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))] * 10
    probe = EventsOnDisk(tmp_path, steps=(15, 25))
    hooks = HookList(
        {
            "tensorboard": TensorBoardScalars(every_n_steps=5, flush_secs=3600),
            "epoch_jsonl": EpochJSONL(flush_secs=3600),
            "checkpoint": CheckpointHook(every_n_steps=25, every_minutes=None),
            "probe": probe,
        }
    )
    try:
        Trainer(max_epochs=3, progress=False).fit(state, data, data[:2], hooks)
        hooks.on_fit_end(state)
    finally:
        state.writer.close()
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 30
    assert probe.points == {15: [], 25: [10, 20]}  # the step-25 checkpoint wrote both epochs' first
    assert probe.lines == {15: [], 25: [0, 1]}
    lines = (tmp_path / "train_diagnostics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]  # the fit's end: all of them


def test_a_snapshot_shares_nothing_the_fit_goes_on_changing():
    """The best payload is kept in memory for epochs: the history, its entries, the series lists and the
    tensors it holds must be copies, or the next epochs would rewrite what best.pt later says."""
    weights = torch.ones(3)
    entry = {"epoch": 0, "val/loss": 0.5}
    payload = {"history": [entry], "series": {"loss": [1.0, 0.9]}, "model": {"w": weights}, "n": 2}
    copy = snapshot(payload)
    entry["skipped_total"] = 1
    payload["history"].append({"epoch": 1})
    payload["series"]["loss"].append(0.8)
    weights.add_(1)
    assert copy == {
        "history": [{"epoch": 0, "val/loss": 0.5}],
        "series": {"loss": [1.0, 0.9]},
        "model": {"w": copy["model"]["w"]},
        "n": 2,
    }
    assert torch.equal(copy["model"]["w"], torch.ones(3))


def test_a_snapshot_copies_lists_of_number_subclasses_and_of_lists_element_by_element():
    # lists of exact int/float/bool/str/None are copied whole; anything else (a NumPy float, which
    # subclasses float, an inner list) takes the element-by-element path and is still a copy
    import numpy as np

    inner = [1.0]
    payload = {"xs": [np.float64(1.5), 2.0], "nested": [inner, [2.0]], "flags": [True, None, "a"]}
    copy = snapshot(payload)
    inner.append(3.0)
    payload["xs"].append(4.0)
    payload["flags"].append(False)
    assert copy == {"xs": [1.5, 2.0], "nested": [[1.0], [2.0]], "flags": [True, None, "a"]}
    assert type(copy["xs"][0]) is np.float64
