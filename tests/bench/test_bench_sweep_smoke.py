"""bench/lr_sweep_stop.py and bench/lr_finder.py run end to end with --quick.

Not a test of their figures (--quick figures mean nothing): the scripts still run real multiruns and
real finder runs against the current runner, print every row and write their markdown.
"""

from __future__ import annotations

import json
import sys

import pytest
from helpers import ROOT, cli_fork, run_bench


@pytest.mark.slow
def test_lr_sweep_stop_quick_runs_both_sweeps_and_names_the_stopped_trial(tmp_path):
    proc = run_bench("lr_sweep_stop", tmp_path, "--keep", str(tmp_path / "sweeps"))
    text = proc.stdout
    assert "| wall time |" in text and "| best trial | #1 lr=0.1 | #1 lr=0.1 |" in text
    # lr=10 blows up at once with SGD: stopped in the sweep with stop_on, trained out without it
    assert "- stopped lr=10: " in text
    (row,) = [line for line in text.splitlines() if line.startswith("| mlp/sgd |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5:8] == ["yes", "yes", "1"] and cells[8] == "0"
    for kind in ("without", "with"):
        assert len(list((tmp_path / "sweeps" / "mlp_sgd" / kind).glob("*/report.json"))) == 3


@pytest.mark.slow
def test_lr_finder_quick_scores_each_task_in_its_split(tmp_path):
    proc = run_bench("lr_finder", tmp_path)
    text = proc.stdout
    rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| mlp/sgd/digits", "| mlp/adam/mnist28"))
    ]
    assert len(rows) == 2, text
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert (
            0 < float(cells[2]) <= 1 and 0 < float(cells[5]) <= 1
        )  # grid best and the finder's acc
        assert float(cells[6]) == pytest.approx(float(cells[5]) / float(cells[2]), abs=2e-3)
    assert "## dev tasks" in text and "total " in text


@pytest.mark.slow  # four real range tests in a subprocess: ~25 s on a quiet machine
def test_lr_finder_range_test_only_screens_against_a_printed_grid(tmp_path):
    """--range-test-only --grid-from a results .md: one range test per task, screened, nothing trained
    (--quick: only the data sets of the tasks with a grid are written; digits is not written)."""
    printed = tmp_path / "printed.md"
    printed.write_text(
        "grid (test accuracy per LR):\n\n"
        "    mlp/sgd/digits         0.01:0.869  0.03:0.925  0.1:0.958  0.3:0.964  1:0.103\n"
        "    mlp/adam/digits        0.001:0.930  0.003:0.942  0.01:0.958  0.03:0.944\n"
    )
    proc = cli_fork.run(
        [
            sys.executable,
            str(ROOT / "bench" / "lr_finder.py"),
            *("--quick", "--range-test-only", "--grid-from", str(printed)),
            *("--keep", str(tmp_path / "k")),
            *("--tasks", "mlp/sgd/digits", "mlp/adam/digits", "mlp/sgd/mnist28", "--seeds", "2"),
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): line
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and "/" in line and not line.startswith("| task |")
    }
    assert set(rows) == {
        "mlp/sgd/digits",
        "mlp/adam/digits",
    }  # no grid printed for mnist28: skipped
    assert "| auto |" in proc.stdout and "| below 0.95 |" in proc.stdout
    for task in rows:  # a range test per seed
        for seed in (0, 100):
            assert (tmp_path / "k" / task / f"s{seed}" / "range_test" / "lr_find.json").exists()
    # the auto column's LR is the range test's own suggestion, as lr_find.json recorded it
    kept = {r["task"]: r for r in json.loads((tmp_path / "k" / "results.json").read_text())}
    auto_cell = rows["mlp/adam/digits"].split("|")[2].split()[0]
    assert float(auto_cell) == pytest.approx(
        kept["mlp/adam/digits"]["curve"]["suggested_lr"], rel=1e-2
    )


@pytest.mark.slow  # 2 x (2 grid runs + 1 finder run) of one epoch in a subprocess: ~5 s quiet
def test_lr_finder_seeds_average_both_sides(tmp_path):
    """--seeds 2: every grid LR and the finder's run trained at the task's seed and + 100; the grid's
    best is the best mean, the score the finder runs' mean over it, and both seeds are printed."""
    keep = tmp_path / "k"
    proc = run_bench(
        "lr_finder", tmp_path, "--seeds", "2", "--tasks", "mlp/sgd/digits", "--keep", str(keep)
    )
    (r,) = json.loads((keep / "results.json").read_text())
    assert r["seeds"] == [0, 100]
    for seed in r["seeds"]:  # a run directory per seed, on both sides
        assert (keep / "mlp/sgd/digits" / f"s{seed}" / "auto" / "lr_find.json").exists()
        grid = (keep / "mlp/sgd/digits" / f"s{seed}").glob("grid_*/report.json")
        assert len(list(grid)) == 2  # every LR of the --quick grid (1e-3, 0.1)
    for lr, accs in r["grid_seeds"].items():
        assert len(accs) == 2 and r["grid"][lr] == pytest.approx(sum(accs) / 2)
    assert r["best_acc"] == pytest.approx(max(r["grid"].values()))
    accs = [p["acc"] for p in r["per_seed"]]
    assert len(accs) == 2 and r["acc"] == pytest.approx(sum(accs) / 2)
    assert r["ratio"] == pytest.approx(r["acc"] / r["best_acc"])
    assert "Seeds: 2 per task" in proc.stdout
    assert "mlp/sgd/digits         seed 100: " in proc.stdout
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("| mlp/sgd/digits |")]
    per_seed = row.strip("|").split("|")[8].split(",")
    # each seed's cell ends with its accuracy (``curve lr -> checked lr acc``)
    assert len(per_seed) == 2 and float(per_seed[1].split()[-1]) == pytest.approx(accs[1], abs=1e-3)


def test_lr_finder_grids_from_reads_per_seed_accuracies_and_a_printed_mean(tmp_path, monkeypatch):
    """--grid-from: a results.json gives each seed's accuracy per LR, a printed grid line its mean."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import lr_finder

    kept = tmp_path / "results.json"
    kept.write_text(
        json.dumps(
            [{"task": "mlp/sgd/digits", "grid": {"0.1": 0.5}, "grid_seeds": {"0.1": [0.4, 0.6]}}]
        )
    )
    assert lr_finder.grids_from(kept) == {"mlp/sgd/digits": {0.1: [0.4, 0.6]}}
    printed = tmp_path / "printed.md"
    printed.write_text("    mlp/sgd/digits         0.01:0.869  0.1:0.958\n      x seed 100: 0.1\n")
    assert lr_finder.grids_from(printed) == {"mlp/sgd/digits": {0.01: [0.869], 0.1: [0.958]}}
    assert lr_finder.run_seeds("mlp/sgd/digits/seed4", 0, 3) == [4, 104, 204]
    assert lr_finder.run_seeds("cnn/adam/mnist28/bs256/seed3", 1, 2) == [4, 104]
