"""Documented features together, and files that are not checkpoints, through the real CLI."""

from __future__ import annotations

import json


def test_onecycle_with_the_lr_finder_trains_with_the_lr_found(cli, tmp_path):
    proc = cli(
        "scheduler=onecycle",
        "optimizer.lr=auto",
        "trainer.max_epochs=1",
        "lr_find.num_steps=20",
        run_dir=tmp_path / "run",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["completed"] and report["lr_finder"]["suggested_lr"] > 0


def test_a_text_file_given_as_a_checkpoint_is_one_line_and_exit_2(cli, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    proc = cli(f"trainer.resume={text}", "trainer.max_epochs=1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {text} was refused: no integrity record at its end (truncated, or not "
        "written by this runner); use another checkpoint or start without trainer.resume"
    ]
