"""bench/overhead.py, bench/whole_run.py, bench/instructions.py, bench/time_to_accuracy.py, bench/holdout.py and bench/autotrainer.py
run end to end with --quick.

Benchmarks are not tests: nothing here asserts a time or a ratio, only that each script
still runs against the current runner, prints every row and writes its markdown.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import pytest
from helpers import ROOT, cli_fork


@pytest.fixture
def bench_modules(monkeypatch):
    """The bench scripts' folder on sys.path for this test only (the scripts import each other by name)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))


def _rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ")
        and not line.startswith("| workload")
        and not line.startswith("| run ")
    ]


def test_overhead_quick_times_every_loop(tmp_path):
    """The MLP only: the CNN goes through the same code with another config (and the MLP has the breakdown)."""
    out = tmp_path / "overhead.md"
    proc = cli_fork.run(
        [
            sys.executable,
            str(ROOT / "bench" / "overhead.py"),
            "--quick",
            "--workloads",
            "mlp/digits",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(proc.stdout)
    loops = {(r[0], r[1]) for r in rows}
    for loop in (
        "hand loop",
        "runner, diag=off",
        "runner, diag=default",
        "runner, diag=full",
        "lightning",
        "runner, diag=off, TensorBoard every 50 steps",  # the MLP's breakdown
        "runner, diag=off, no TensorBoard hook",
        "runner, no hooks, no non-finite guard",
    ):
        assert ("mlp/digits", loop) in loops, proc.stdout
    for r in rows:
        if r[2] != "pytorch-lightning not installed":
            assert float(r[2]) > 0 and float(r[3]) > 0, r  # steps/s and the ratio to the hand loop
    # a hand loop beside its hand-loop partner: the A/A check
    hand = [r for r in rows if r[1] == "hand loop"]
    assert len(hand) == 1 and float(hand[0][3]) > 0
    assert "(2) >= 0.98" in proc.stdout and "(3) ahead of" in proc.stdout
    assert out.read_text().count("| mlp/digits |") >= 5  # the markdown file holds the same table
    assert list(tmp_path.iterdir()) == [out]  # run directories went to a temporary folder


def test_lockstep_runs_the_partners_step_before_fetching_each_batch_and_times_both(bench_modules):
    """One partner step per batch, and the batch fetched after it, right before the loop's own step
    (fetched before it, a loop measures below an identical partner)."""
    import overhead

    calls: list[str] = []

    class Loader:  # three batches an epoch, noting each fetch
        def __iter__(self):
            for i in range(3):
                calls.append(f"fetch {i}")
                yield i

    batches = overhead.LockstepBatches(Loader(), 5, partner=lambda: calls.append("partner"))
    got = []
    for b in batches:
        calls.append(f"step {b}")
        got.append(b)
    assert got == [0, 1, 2, 0, 1] and len(batches) == 5
    assert calls[:9] == [
        "partner",
        "fetch 0",
        "step 0",
        "partner",
        "fetch 1",
        "step 1",
        "partner",
        "fetch 2",
        "step 2",
    ]
    # no partner step after the last batch
    assert calls.count("partner") == 5 and calls[-1] == "step 1"
    assert len(batches.own_cpu) == len(batches.partner_cpu) == 5
    rates = batches.rates(warmup=1, steps=4)
    assert set(rates) == {"wall", "cpu", "partner_wall", "partner_cpu"} and all(
        v > 0 for v in rates.values()
    )
    with pytest.raises(RuntimeError, match="only 5 steps were timed"):
        batches.rates(warmup=5, steps=1)


def test_overhead_keeps_lightnings_environment_to_the_lightning_rows(tmp_path):
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (every torch.cuda.is_available() then asks NVML):
    the bench undoes it for the other loops and sets it around Lightning's only.

    Run in a process forked from :mod:`helpers.cli_fork`'s server (torch and the runner imported,
    Lightning not), its environment ``env``, without the variable: what the check needs of a fresh
    interpreter. Forked even when this process has imported Lightning (another test in it did: its
    environment has the variable, so ``cli_fork.run`` would start a new interpreter), as the variable is
    read at run time only. Were Lightning imported in the run already, its import would set nothing and
    the second line would read None."""
    # found, not imported: importing it here would set the variable in this process
    if importlib.util.find_spec("pytorch_lightning") is None:
        pytest.skip("could not import 'pytorch_lightning'")
    script = tmp_path / "lightning_env.py"
    script.write_text(
        "import os, sys; sys.path.insert(0, 'bench'); import overhead as ov; "
        "assert ov.lightning_available(); print(os.environ.get('PYTORCH_NVML_BASED_CUDA_CHECK')); "
        "ctx = ov.lightning_env(); ctx.__enter__(); print(os.environ.get('PYTORCH_NVML_BASED_CUDA_CHECK')); "
        "ctx.__exit__(None, None, None); print(os.environ.get('PYTORCH_NVML_BASED_CUDA_CHECK'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    proc = cli_fork.run_forked([sys.executable, str(script)], ROOT, env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["None", "1", "None"]


def test_time_to_accuracy_quick_times_the_dry_run_and_a_training_run(tmp_path):
    out = tmp_path / "tta.md"
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r[0]: r for r in _rows(proc.stdout)}
    dry = rows["start-up only (trainer.max_epochs=0)"]
    # the dry run built, tested and exited without a step
    assert float(dry[1]) > 0 and dry[6] == "0 (0)"
    default = rows["mlp/digits (the default run)"]
    # start-up <= trained <= exit
    assert 0 < float(default[1]) <= float(default[2]) <= float(default[3])
    assert 0.0 <= float(default[5]) <= 1.0 and default[6].startswith("1 (")
    assert any(name.startswith("floor:") for name in rows)
    assert "start-up (to the first step)" in proc.stdout
    # the file names the command that made it, arguments included, but not where the file went
    assert out.read_text().startswith(
        "# bench/time_to_accuracy.py\n\n`python bench/time_to_accuracy.py --quick`\n"
    )


def test_holdout_quick_checks_a_fault_and_a_healthy_run_with_and_without_the_autotrainer(tmp_path):
    out = tmp_path / "holdout.md"
    proc = cli_fork.run(
        [
            sys.executable,
            str(ROOT / "bench" / "holdout.py"),
            "--quick",
            "--autotrainer",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r[0]: r for r in _rows(out.read_text()) if r[0] != "case"}
    assert set(rows) == {"adam_lr1", "seed1"}, out.read_text()
    # Adam at lr 1 blows up
    assert rows["adam_lr1"][5] == "found" and "LOSS_EXPLOSION" in rows["adam_lr1"][2]
    assert "rollback(LOSS_EXPLOSION)" in rows["adam_lr1"][7]
    assert (
        rows["seed1"][5] == "clean" and rows["seed1"][7] == "-" and rows["seed1"][8] == "left alone"
    )
    assert (
        "faults named in the final report: 1/1" in proc.stdout
        and "healthy runs it acted on: 0/1" in proc.stdout
    )
    assert list(tmp_path.iterdir()) == [out]  # run directories went to a temporary folder


@pytest.mark.slow
def test_autotrainer_quick_runs_each_case_as_is_with_it_and_its_twin_and_resumes(tmp_path):
    """Four tiny fault-bench cases: a blown-up LR is rolled back (and measured), healthy runs are left
    alone; a second call with --score-only reruns nothing and prints the same tables."""
    out, runs = tmp_path / "autotrainer.md", tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "bench" / "autotrainer.py"), "--quick", "--runs", str(runs)]
    proc = cli_fork.run(
        [*cmd, "--out", str(out)],
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    cases = {r[0]: r for r in _rows(text) if "-" in r[0] and len(r) == 9}
    nan = next(r for name, r in cases.items() if name.startswith("lr_high_nan"))
    assert nan[8].startswith("rollback(") and float(nan[3]) > float(nan[2])  # with > without
    healthy = [r for r in _rows(text) if r[0].startswith("healthy-")]
    assert len(healthy) == 2 and all(r[4] == "-" for r in healthy), text
    assert "healthy runs with an action that changed them: 0/2" in text
    assert "runs that crashed or did not run: 0" in text
    assert sorted(p.name for p in (runs / nan[0]).iterdir()) == ["off", "on", "twin"]
    again = cli_fork.run([*cmd, "--score-only"], cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and "runs to do" not in again.stdout
    assert text.strip() in again.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autotrainer.md", "runs"]


def test_instructions_quick_counts_the_hand_loop_and_diag_off_on_both_workloads(
    bench_modules, tmp_path
):
    import instructions

    why_not = instructions.perf_works()
    if why_not:
        pytest.skip(why_not)
    out = tmp_path / "instructions.md"
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {(r[0], r[1]): r for r in _rows(proc.stdout)}
    assert set(rows) == {
        (w, loop)
        for w in ("mlp/digits", "cnn/synthetic28")
        for loop in ("hand loop", "runner, diag=off")
    }, proc.stdout
    for r in rows.values():
        assert r[2].endswith("M") and float(r[2][:-1]) > 1  # millions of instructions per step
    assert all(rows[(w, "hand loop")][3] == "1.0000" for w in ("mlp/digits", "cnn/synthetic28"))
    assert "instructions per step over the hand loop" in proc.stdout
    assert out.read_text().startswith("# bench/instructions.py") and list(tmp_path.iterdir()) == [
        out
    ]


def test_results_files_name_the_command_with_its_arguments_but_not_the_output_path(bench_modules):
    from results_file import command_line

    assert (
        command_line(
            "overhead.py", ["--workloads", "cnn/synthetic28", "--out", "x.md", "--rounds", "20"]
        )
        == "python bench/overhead.py --workloads cnn/synthetic28 --rounds 20"
    )
    assert (
        command_line("overhead.py", ["--out=a b.md", "--quick"])
        == "python bench/overhead.py --quick"
    )
    assert command_line("lr_finder.py", ["--tag", "a b"]) == "python bench/lr_finder.py --tag 'a b'"


def test_fault_bench_quick_prints_every_case_as_a_row(bench_modules, tmp_path):
    """bench/fault_bench.py --quick: the metrics table has its columns and every case is a row."""
    proc = cli_fork.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fault_bench.py"),
            "--quick",
            "--runs",
            str(tmp_path / "runs"),
        ],
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| family |"))
    for column in (
        "recall",
        "false alarms",
        "wrong cause",
        "first live line wrong",
        "first detection median",
        "p90",
    ):
        assert column in header, header
    summary = {r[0] for r in _rows(proc.stdout) if r and r[0].startswith("**")}
    assert summary == {"**all faults**", "**healthy**", "**overall**"}
    from fault_families import quick_cases

    case_rows = {r[0]: r for r in _rows(proc.stdout) if "-" in r[0] and len(r) == 6}
    assert set(case_rows) == {c.name for c in quick_cases()}
    for row in case_rows.values():
        assert row[2] in ("found", "missed", "wrong cause", "clean", "alarm", "error"), row
    # the LR x200 case blows up at once: its first live line (read from its events.jsonl) names a blow-up
    (nan_row,) = [r for name, r in case_rows.items() if name.startswith("lr_high_nan")]
    assert nan_row[4].split()[0] in ("LOSS_EXPLOSION", "NONFINITE_GRADIENTS", "EXPLODING_GRADIENTS")


def test_whole_run_quick_gives_every_loop_time_to_accuracy_and_start_up(tmp_path):
    out = tmp_path / "whole_run.md"
    proc = cli_fork.run(
        [
            sys.executable,
            str(ROOT / "bench" / "whole_run.py"),
            "--quick",
            "--workloads",
            "mlp/digits",  # the CNN goes through the same code with another config
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds_part, paired_part = proc.stdout.split("Paired epochs", 1)
    rows = _rows(proc.stdout)
    epoch_rows = {(r[0], r[1]): r for r in _rows(rounds_part) if len(r) == 6}
    # the paired table: each loop's epochs alternating with a hand loop's, ratios on both clocks
    paired = {(r[0], r[1]): r for r in _rows(paired_part) if len(r) == 7}
    for loop in (
        "hand loop (control)",
        "runner, diag=off",
        "runner, diag=default",
        "lightning, default checkpoint",
    ):
        row = paired[("mlp/digits", loop)]
        if row[2] != "pytorch-lightning not installed":
            assert float(row[2]) > 0 and float(row[4]) > 0, row
            float(row[6])  # the epoch's extra milliseconds, signed
    assert "- paired: runner diag=default >= 0.90 x hand loop, mlp/digits: wall" in proc.stdout
    assert re.search(
        r"its epoch over the hand loop's \d+\.\d ms: [+-]\d+\.\d\d ms; 0\.90 allows \+\d+\.\d\d ms",
        proc.stdout,
    )
    for workload in ("mlp/digits",):
        for loop in (
            "hand loop",
            "hand loop (control)",  # the rounds' A/A check
            "runner, diag=off",
            "runner, diag=default",
            "runner, diag=full",
            "runner, diag=off, no checkpoints",
            "lightning, no checkpoint",
            "lightning, default checkpoint",
        ):
            row = epoch_rows[(workload, loop)]
            if row[2] != "pytorch-lightning not installed":
                assert float(row[2]) > 0 and float(row[4]) > 0, row  # ratios: wall, CPU time
        assert float(epoch_rows[(workload, "hand loop")][2]) == 1.0
    to_accuracy = {(r[0], r[1]) for r in rows if len(r) == 3 and "/" in r[0]}
    assert ("mlp/digits", "runner, diag=default") in to_accuracy
    assert ("mlp/digits", "hand loop") in to_accuracy
    start = {
        r[0]: (float(r[1]), float(r[2]))
        for r in rows
        if len(r) == 3 and "/" not in r[0] and r[0] != "start-up (fresh process)"
    }
    assert min(start["import torch + one optimizer step"]) > 0  # wall and CPU seconds
    assert min(start["runner to its first step"]) > 0
    # the verdict's share: per round, the runner's start minus the baseline's (one round here: the two rows)
    share = start["runner's own share (per round: runner minus baseline)"]
    for i in (0, 1):
        difference = (
            start["runner to its first step"][i] - start["import torch + one optimizer step"][i]
        )
        assert share[i] == pytest.approx(difference, abs=0.011)
    assert f"start-up share <= 0.5 s: wall {share[0]:.2f} s" in proc.stdout
    assert out.read_text().count("| mlp/digits |") >= 7  # the markdown file holds the same tables
    assert list(tmp_path.iterdir()) == [out]  # run directories went to a temporary folder


def test_autotrainer_selects_cases_by_family_and_skips_the_first_ones(bench_modules):
    """--families and --skip pick the next cases of a family in the half (for tuning on more dev cases)."""
    import argparse

    import autotrainer

    def names(**kw):
        args = argparse.Namespace(
            quick=False, split="dev", per_family=2, healthy=0, families=None, sample_seed=0
        )
        args.skip = 0
        vars(args).update(kw)
        return [c.name for c in autotrainer.select(args)]

    first = names(families="clip_too_tight")
    assert len(first) == 2 and all(n.startswith("clip_too_tight-") for n in first)
    later = names(families="clip_too_tight", skip=1)
    assert later[0] == first[1] and later[1] not in first
    both = names(families="clip_too_tight,healthy", healthy=3)
    assert sum(n.startswith("healthy-") for n in both) == 3


def test_epoch_costs_quick_gives_every_part_its_paired_ratio_and_cost(bench_modules, tmp_path):
    out = tmp_path / "epoch_costs.md"
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "epoch_costs.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r[0]: r for r in _rows(proc.stdout) if len(r) == 6}
    from epoch_costs import DEFAULT, GUARDED_HAND, VARIANTS

    assert set(VARIANTS) <= set(rows)
    # a hand loop with the guard, against the plain one: its cost is its ratio minus 1
    guarded = rows[GUARDED_HAND]
    wall_cost, cpu_cost = map(float, guarded[5].removesuffix(" to a hand loop").split(" / "))
    assert abs(wall_cost - (float(guarded[1]) - 1)) < 2e-3
    assert abs(cpu_cost - (float(guarded[3]) - 1)) < 2e-3
    base = rows[DEFAULT]
    assert base[5] == "-"
    for name in VARIANTS:
        assert float(rows[name][1]) > 0 and float(rows[name][3]) > 0, rows[name]
        if name != DEFAULT:  # a part's cost: its row's ratio minus the default's, on each clock
            wall_cost, cpu_cost = map(float, rows[name][5].split(" / "))
            assert abs(wall_cost - (float(rows[name][1]) - float(base[1]))) < 2e-3
            assert abs(cpu_cost - (float(rows[name][3]) - float(base[3]))) < 2e-3
    # the same parts in milliseconds: the default's row has no cost, every other a signed ms and k/1
    ms_rows = {r[0]: r for r in _rows(proc.stdout) if len(r) == 4 and r[0] != "mlp/digits"}
    assert set(ms_rows) == {*VARIANTS, GUARDED_HAND}
    assert ms_rows[DEFAULT][2:] == ["-", "-"]
    for name, row in ms_rows.items():
        float(row[1])
        if name == GUARDED_HAND:
            assert row[2].endswith(" to a hand loop") and re.fullmatch(r"[01]/1 slower", row[3])
        elif name != DEFAULT:
            float(row[2])
            assert re.fullmatch(r"[01]/1", row[3]), row
    assert out.read_text().startswith(
        "# bench/epoch_costs.py\n\n`python bench/epoch_costs.py --quick`"
    )


def test_guarded_hand_loop_skips_a_step_whose_gradients_are_not_finite(bench_modules, tmp_path):
    """The epoch_costs row prices the runner's guard on a hand loop: that loop must skip as the runner does."""
    import torch
    from whole_run import HandLoop, build

    parts = build("mlp/digits", "off", tmp_path / "run", (), 1)
    loop = HandLoop(parts, 1, guard=True)
    x, y = next(iter(parts.train_loader))
    first = next(loop.model.parameters())
    hook = first.register_hook(lambda g: torch.full_like(g, float("nan")))
    loop.train_loader = [(x, y)]
    before = [p.detach().clone() for p in loop.model.parameters()]
    loop.epoch()  # its one step has NaN gradients: no update, no scheduler step
    assert all(torch.equal(b, p) for b, p in zip(before, loop.model.parameters()))
    assert loop.sched.last_epoch == 0
    hook.remove()
    loop.epoch()  # finite again: the step is taken
    assert not torch.equal(before[0], first.detach())
    assert loop.sched.last_epoch == 1


def test_ab_revision_quick_times_both_versions_and_gives_the_verdict(tmp_path):
    out = tmp_path / "ab.md"
    args = ["--classes", "diag.epoch_log:EpochJSONL,runner.trainer:Trainer", "--quick"]
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "ab_revision.py"), *args, "--out", str(out)],
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r[0]: r for r in _rows(proc.stdout) if r[0] != "version"}
    assert set(rows) == {"old (HEAD)", "new (working tree)"}
    for row in rows.values():
        float(row[1])  # a signed number of ms
    assert re.search(
        r"old minus new, per round: median [+-]\d+\.\d+ ms .* in [01]/1 rounds", proc.stdout
    )
    assert out.read_text().startswith(
        "# bench/ab_revision.py\n\n`python bench/ab_revision.py --classes "
        "diag.epoch_log:EpochJSONL,runner.trainer:Trainer --quick`"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--classes", "diag.epoch_log:NoSuchHook"],
            "--classes: no NoSuchHook in module diag.epoch_log",
        ),
        (["--classes", "diag.epoch_log"], "--classes: 'diag.epoch_log' is not module:name"),
        (
            ["--rev", "no-such-rev", "--classes", "diag.epoch_log:EpochJSONL"],
            "--rev no-such-rev: git has no",
        ),
        (
            ["--rounds", "0", "--classes", "diag.epoch_log:EpochJSONL"],
            "--rounds must be at least 1",
        ),
    ],
)
def test_ab_revision_refuses_what_it_cannot_find_in_one_line(tmp_path, args, message):
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "ab_revision.py"), *args],
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_ab_revision_swaps_the_revisions_methods_in_and_back(bench_modules):
    from ab_revision import Versions, revision_class

    from diag.epoch_log import EpochJSONL

    before = dict(EpochJSONL.__dict__)
    current, old = revision_class("HEAD", "diag.epoch_log:EpochJSONL")
    assert current is EpochJSONL and old is not EpochJSONL
    versions = Versions([(current, old)])
    versions.use("old")
    try:
        assert EpochJSONL.on_train_batch_end is not before["on_train_batch_end"]
        assert EpochJSONL.on_train_batch_end.__code__.co_filename == "HEAD:diag/epoch_log.py"
    finally:
        versions.use("new")
    assert dict(EpochJSONL.__dict__) == before


def test_ab_revision_binds_the_revisions_function_in_the_old_classes_module_only(bench_modules):
    from ab_revision import revision_class, use_revision_functions

    import runner.trainer
    from diag import gradients

    pairs = [revision_class("HEAD", "runner.trainer:Trainer")]
    old_module = sys.modules[pairs[0][1].__module__]
    assert old_module.host_grad_norm is gradients.host_grad_norm  # its import took the current one
    use_revision_functions(pairs, "HEAD", ["diag.gradients:host_grad_norm"])
    assert old_module.host_grad_norm is not gradients.host_grad_norm
    assert old_module.host_grad_norm.__code__.co_filename == "HEAD:diag/gradients.py"
    # the working tree's module and the trainer's are left alone
    assert runner.trainer.host_grad_norm is gradients.host_grad_norm
    assert gradients.host_grad_norm.__code__.co_filename.endswith("diag/gradients.py")


def test_ab_revision_refuses_a_function_the_classes_do_not_import(tmp_path):
    args = [
        "--classes",
        "diag.epoch_log:EpochJSONL",
        "--functions",
        "diag.gradients:host_grad_norm",
    ]
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "ab_revision.py"), *args],
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "ab_revision: --functions: none of the --classes' modules imports "
        "diag.gradients:host_grad_norm by name"
    )


def test_grad_norm_quick_times_every_method_after_a_real_backward(bench_modules, tmp_path):
    out = tmp_path / "grad_norm.md"
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "grad_norm.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r[0]: r for r in _rows(proc.stdout) if not r[0].startswith("mlp/digits")}
    from grad_norm import BASELINE, BLOCK, BLOCK_WARMUP, METHODS, STEPS_PER_EPOCH

    assert set(rows) == set(METHODS)
    assert rows[BASELINE][2] == "1.00"
    for _, us, ratio, epoch_ms, timed in rows.values():
        assert float(us) > 0 and int(timed) == BLOCK - BLOCK_WARMUP  # --quick: one block each
        # the per-epoch column is the per-step median times the epoch's steps
        assert abs(float(epoch_ms) - STEPS_PER_EPOCH * float(us) / 1e3) < 2e-3 + 1e-3 * float(us)
        assert abs(float(ratio) - float(us) / float(rows[BASELINE][1])) < 0.01 + 0.01 * float(ratio)
    assert out.read_text().startswith("# bench/grad_norm.py\n\n`python bench/grad_norm.py --quick`")


def test_grad_norm_stops_on_a_method_that_disagrees_with_the_float64_norm(
    bench_modules, monkeypatch, tmp_path
):
    import grad_norm

    monkeypatch.setitem(grad_norm.METHODS, "twice the norm", lambda p: 2 * grad_norm.guard_norm(p))
    with pytest.raises(SystemExit, match="twice the norm gave .*, the float64 norm is"):
        grad_norm.measure("mlp/digits", tmp_path, 3)


def test_grad_norm_refuses_fewer_steps_than_methods_in_one_line(tmp_path):
    proc = cli_fork.run(
        [sys.executable, str(ROOT / "bench" / "grad_norm.py"), "--steps", "2"],
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "bench/grad_norm.py: --steps 2: give at least 100 (a block of 20 per method)"
    )
