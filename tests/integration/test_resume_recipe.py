"""A resume keeps the config its checkpoint was trained with.

The checkpoint's optimizer state holds the LRs and its scheduler state the schedule: a resume that changed
``optimizer.lr`` used to train on at the checkpoint's LR while report.json recorded the new one. Such a
launch is refused in one line naming each change; what only says how the data is read, or how long the
run is, may change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_cfg, run_cli

from runner.checkpoint import load_checkpoint
from runner.checkpoint_schema import check_payload, check_recipe, recipe_of
from runner.errors import UserError

BASE = ["diag=off", "scheduler=none", "data.subset=400"]


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} | {
        "report.json": (run / "report.json").read_bytes()
    }


def test_a_resume_that_changes_the_lr_is_refused_and_one_that_does_not_continues(tmp_path):
    run = tmp_path / "run"
    first = run_cli([*BASE, "trainer.max_epochs=1"], tmp_path, run_dir=run)
    assert first.returncode == 0, first.stderr
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["recipe"]
    assert saved["optimizer.lr"] == 0.001 and saved["data.subset"] == 400
    before = _files(run)

    changed = run_cli(
        [*BASE, "trainer.max_epochs=2", "optimizer.lr=0.5", "trainer.resume=auto"],
        tmp_path,
        run_dir=run,
    )
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    (line,) = changed.stderr.strip().splitlines()
    assert line.startswith(
        "error: trainer.resume: this launch changes optimizer.lr=0.5 (trained with 0.001)"
    )
    assert "start a new run without trainer.resume" in line
    assert _files(run) == before  # nothing written

    many = run_cli(
        [
            *BASE,
            "trainer.max_epochs=2",
            "optimizer.lr=0.5",
            "seed=3",
            "data.batch_size=32",
            "model.dropout=0.3",
            "trainer.resume=auto",
        ],
        tmp_path,
        run_dir=run,
    )
    assert many.returncode == 2
    assert (
        "data.batch_size=32 (trained with 64), model.dropout=0.3 (trained with 0.1), "
        "optimizer.lr=0.5 (trained with 0.001) and 1 more" in many.stderr
    ), many.stderr
    assert _files(run) == before

    # a longer run (no schedule to stretch) and another way of reading the data continue the run
    longer = run_cli(
        [*BASE, "trainer.max_epochs=2", "data.num_workers=1", "trainer.resume=auto"],
        tmp_path,
        run_dir=run,
    )
    assert longer.returncode == 0 and "resumed from" in longer.stdout, longer.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["epochs"] == 2


def test_the_recipe_holds_what_training_reads_as_written(tmp_path):
    cfg = compose_cfg(["scheduler=cosine", "data.num_workers=3"], tmp_path)
    recipe = recipe_of(cfg)
    assert recipe["scheduler.lr_scheduler.T_max"] == 20  # resolved: trainer.max_epochs
    assert recipe["optimizer.betas"] == [0.9, 0.999] and recipe["seed"] == 42
    assert "trainer.clip.max_norm" in recipe and "trainer.precision" in recipe
    assert not any(k.startswith(("data.num_workers", "data.eval_batch_size")) for k in recipe)
    assert not any(
        k.startswith(("trainer.max_epochs", "trainer.resume", "diag", "callbacks")) for k in recipe
    )


def test_a_checkpoint_without_a_recipe_resumes_and_a_malformed_one_is_refused(tmp_path):
    cfg = compose_cfg([], tmp_path)
    check_recipe({}, tmp_path / "old.pt", cfg)  # written before checkpoints kept their recipe
    check_recipe({"recipe": recipe_of(cfg)}, tmp_path / "last.pt", cfg)
    with pytest.raises(UserError, match=r"seed=42 \(trained with 7\)"):
        check_recipe({"recipe": {**recipe_of(cfg), "seed": 7}}, tmp_path / "last.pt", cfg)
    with pytest.raises(UserError, match=r"model.extra=\(unset\) \(trained with 1\)"):
        check_recipe({"recipe": {**recipe_of(cfg), "model.extra": 1}}, tmp_path / "last.pt", cfg)
    # a value taken from another key follows it: T_max from trainer.max_epochs (the horizon check's)
    cosine = compose_cfg(["scheduler=cosine"], tmp_path)
    trained = {**recipe_of(cosine), "scheduler.lr_scheduler.T_max": 2}
    check_recipe({"recipe": trained}, tmp_path / "last.pt", cosine)
    explicit = compose_cfg(["scheduler=cosine", "scheduler.lr_scheduler.T_max=5"], tmp_path)
    with pytest.raises(UserError, match=r"scheduler.lr_scheduler.T_max=5 \(trained with 2\)"):
        check_recipe({"recipe": trained}, tmp_path / "last.pt", explicit)
    with pytest.raises(UserError, match="recipe is list"):
        check_payload(_payload(recipe=[1, 2]), tmp_path / "last.pt")


def _payload(**fields):
    """The fields check_payload reads before the recipe, as a run writes them."""
    import torch

    return {
        "format": 2,
        "model": {"w": torch.zeros(2)},
        "optimizer_class": "Adam",
        "scheduler_class": None,
        **fields,
    }
