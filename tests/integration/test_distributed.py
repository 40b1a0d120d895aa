"""Data-parallel training through torchrun (2 gloo processes on CPU) and sweeps through submitit.

The DDP runs are checked against a single-process replay of the same training: every rank's
shard of each step through one model, the ranks' gradients averaged, one optimizer step. The
run must end with the replay's weights on every rank, its epoch train loss/accuracy must be the
ones over all shards, and validation and test metrics must equal a plain evaluation of the
checkpoint over the whole split.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, cli_fork, compose_cfg, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf

from runner import distributed
from runner.devices import seed_everything
from runner.errors import UserError
from runner.trainer import Trainer

# What the reconstruction assumes, pinned so that changes of the defaults do not change these runs
# (no dropout: each rank draws its own masks; no schedule; Adam at a fixed LR; 10 steps per epoch on 2 ranks).
PINNED = [
    "data=digits",
    "data.batch_size=64",
    "model=mlp",
    "model.hidden=[64,64]",
    "model.dropout=0.0",
    "optimizer=adam",
    "optimizer.lr=1e-3",
    "scheduler=none",
    "trainer.clip.max_norm=null",
    "trainer.precision=32",
]
CHECKSUM = re.compile(r"weights sha256 by rank: 0=([0-9a-f]{64}) 1=([0-9a-f]{64}) \(in sync\)")


def torchrun_command(
    args: list[str], tmp_path: Path, nproc: int = 2
) -> tuple[list[str], dict[str, str]]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m runner ...`` with outputs in
    tmp_path, and its environment."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "runner",
        "trainer.strategy=ddp",
        f"paths.log_dir={tmp_path}",
        "trainer.progress=false",
        *PINNED,
        *args,
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    return cmd, env


def torchrun(
    args: list[str], tmp_path: Path, nproc: int = 2, timeout: float = 240
) -> subprocess.CompletedProcess:
    """:func:`torchrun_command` run to its end: the launcher forked (:mod:`helpers.cli_fork`, it only
    starts and watches the ranks), each rank a new interpreter as torchrun starts it."""
    cmd, env = torchrun_command(args, tmp_path, nproc)
    return cli_fork.run(cmd, tmp_path, timeout, env=env)


def reconstruct(
    tmp_path: Path, epochs: int, world_size: int, overrides: tuple[str, ...] = ()
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Replay DDP in one process, step for step: each rank's batch forward and backward, its gradient
    weighted 1/world_size (DDP averages the ranks' gradients), one optimizer step; per-epoch train metrics.

    Buffers (BatchNorm running statistics) end as rank 0's: each rank's forward starts from the
    same buffers (DDP broadcasts rank 0's), and rank 0's forward runs last.
    """
    cfg = compose_cfg([*PINNED, *overrides, f"trainer.max_epochs={epochs}"], tmp_path)
    seed_everything(int(cfg.seed))
    data = instantiate(cfg.data)
    data.setup()
    model = instantiate(cfg.model)
    opt = instantiate(cfg.optimizer, lr=cfg.optimizer.lr)(params=model.parameters())
    loaders = [
        data.loader(
            "train",
            generator=torch.Generator().manual_seed(int(cfg.seed)),
            rank=r,
            world_size=world_size,
        )
        for r in range(world_size)
    ]
    history = []
    for _ in range(epochs):
        loss_sum = correct = seen = 0.0
        for batches in zip(*loaders):
            start = [b.detach().clone() for b in model.buffers()]
            opt.zero_grad()
            for x, y in reversed(batches):
                with torch.no_grad():
                    for buf, saved in zip(model.buffers(), start):
                        buf.copy_(saved)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                (loss / world_size).backward()  # gradients add up to the ranks' mean
                loss_sum += float(loss.detach()) * len(y)
                correct += float((logits.argmax(1) == y).sum())
                seen += len(y)
            opt.step()
        history.append({"loss": loss_sum / seen, "accuracy": correct / seen})
    return model, history


def full_split_metrics(
    tmp_path: Path, state_dict: dict[str, torch.Tensor], overrides: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    """Loss and accuracy of the given weights over the whole val and test splits, in one process."""
    cfg = compose_cfg([*PINNED, *overrides], tmp_path)
    data = instantiate(cfg.data)
    data.setup()
    model = instantiate(cfg.model)
    model.load_state_dict(state_dict)
    trainer = Trainer(max_epochs=1)
    return {split: trainer.evaluate(model, data.loader(split)) for split in ("val", "test")}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_weights_close(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    for name, value in model.state_dict().items():
        torch.testing.assert_close(state_dict[name], value, rtol=1e-4, atol=1e-5, msg=name)


# With BatchNorm: each rank's running statistics drift on its own batches; evaluation uses rank 0's.
# SGD with momentum, not Adam: the bias before a BatchNorm gets a gradient of pure rounding noise, which
# Adam scales up to full-size steps, so no replay could match it to a tolerance.
BN = ("model.batchnorm=true", "optimizer=sgd")
# The LR of the shared launch: found by rank 0 alone before training (optimizer.lr=auto), which every
# rank then trains with; the replays read it from the run's report.json.
AUTO_LR = ("optimizer.lr=auto", "lr_find.verify_steps=8")


def found_lr(run: Path) -> float:
    """The LR the range test of a run with ``optimizer.lr=auto`` found (and the run trained with)."""
    return float(json.loads((run / "report.json").read_text())["lr_finder"]["suggested_lr"])


@pytest.fixture(scope="module")
def bn_epoch(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One torchrun launch (2 ranks, 1 epoch, :data:`BN` at the LR rank 0 finds, :data:`AUTO_LR`) into
    the default run directory: the two-rank and the auto-LR tests only read it, the resume test
    continues a copy of it (each worker launches it once)."""
    log_dir = tmp_path_factory.mktemp("ddp_bn")
    return torchrun([*BN, *AUTO_LR, "trainer.max_epochs=1"], log_dir), log_dir


@pytest.mark.slow
def test_two_rank_ddp_one_run_dir_same_weights_exact_metrics(bn_epoch):
    res, tmp_path = bn_epoch
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]

    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # ${now:...} resolved once, by rank 0, for every rank
    run = runs[0]
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    # rank 0 alone writes TensorBoard: the run's event file and the range test's (AUTO_LR), one process's
    tb = list(run.glob("events.out.tfevents.*"))  # events.out.tfevents.<time>.<host>.<pid>.<n>
    assert len(tb) == 2 and len({p.name.rsplit(".", 2)[1] for p in tb}) == 1, tb
    logs = list(run.glob("*.log"))
    assert len(logs) == 1
    log_text = logs[0].read_text()
    # rank 0 alone writes it
    assert log_text.count("epoch   1/1") == 1 and log_text.count("test accuracy") == 1
    events = jsonl(run / "events.jsonl")
    assert [e["kind"] for e in events if e["kind"] in ("fit_start", "fit_end")] == [
        "fit_start",
        "fit_end",
    ]
    assert events[0]["world_size"] == 2
    assert "2 process(es) x batch 64 = effective batch size 128" in res.stdout

    # both ranks end with the weights rank 0 checkpointed
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    sums = CHECKSUM.search(log_text)
    assert sums, log_text
    assert sums.group(1) == sums.group(2) == distributed.weights_checksum(ckpt["model"])

    # ... which are the weights of the same training on both shards at once, at the LR found (the range
    # test and its check, on rank 0 alone, left no trace: weights, buffers, data order as seeded)
    lr = (f"optimizer.lr={found_lr(run)!r}",)
    model, history = reconstruct(tmp_path, epochs=1, world_size=2, overrides=(*BN, *lr))
    assert_weights_close(model, ckpt["model"])
    train = jsonl(run / "train_diagnostics.jsonl")
    assert len(train) == 1 and train[0]["num_batches"] == 10
    assert train[0]["loss"] == pytest.approx(history[0]["loss"], rel=1e-5)
    assert train[0]["accuracy"] == pytest.approx(history[0]["accuracy"], abs=1e-9)

    # validation and test metrics cover each split exactly once
    exact = full_split_metrics(tmp_path, ckpt["model"], overrides=BN)
    val = jsonl(run / "val_diagnostics.jsonl")[-1]
    assert val["loss"] == pytest.approx(exact["val"]["loss"], rel=1e-6)
    assert val["accuracy"] == pytest.approx(exact["val"]["acc"], abs=1e-12)
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["test_loss"] == pytest.approx(exact["test"]["loss"], rel=1e-6)
    assert report["metrics"]["test_acc"] == pytest.approx(exact["test"]["acc"], abs=1e-12)


@pytest.mark.slow
def test_ddp_auto_lr_rank_zero_finds_alone_and_every_rank_trains_with_it(bn_epoch):
    """``optimizer.lr=auto`` under torchrun (the shared launch, :func:`bn_epoch`): rank 0's range test
    and check take no collective (the loss all-reduce of a step used to wait forever for the rank that
    was not stepping); every rank then trains from the LR it found, in step (the two-rank test replays
    that training at that LR)."""
    res, log_dir = bn_epoch
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.count("optimizer.lr=auto: the check:") == 1  # rank 0 alone
    (run,) = (log_dir / "runs").iterdir()
    found = json.loads((run / "report.json").read_text())["lr_finder"]
    assert found["verify"]["steps"] == 8 and len(found["verify"]["trials"]) >= 2
    lr = found["suggested_lr"]
    assert json.loads((run / "lr_find.json").read_text())["suggested_lr"] == pytest.approx(lr)
    # no schedule here (PINNED): the LR found is the LR trained with
    first = re.search(r"epoch   1/1 .* lr (\S+) ", (run / "train.log").read_text())
    assert first and float(first.group(1)) == pytest.approx(lr, rel=5e-3)
    sums = CHECKSUM.search(res.stdout)  # both ranks trained with it: their weights end equal
    assert sums and sums.group(1) == sums.group(2), res.stdout[-2000:]


@pytest.mark.slow
def test_ddp_resume_loads_the_checkpoint_on_every_rank(tmp_path, bn_epoch):
    """The first epoch is the shared launch's (:func:`bn_epoch`, BatchNorm and SGD: see :data:`BN`),
    continued in a copy of its run directory to a second epoch."""
    first, first_log_dir = bn_epoch
    assert first.returncode == 0, first.stderr[-3000:]
    run, bn = tmp_path / "run", BN
    (done,) = (first_log_dir / "runs").iterdir()
    shutil.copytree(done, run)  # the shared run stays as it ended
    second = torchrun(
        [*bn, *AUTO_LR, "trainer.max_epochs=2", "trainer.resume=auto", f"hydra.run.dir={run}"],
        tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(r"resumed from \S+last.pt at epoch 1 \(step 10\)", second.stdout), (
        second.stdout
    )
    # the LR is the checkpoint's, the one the first launch found: no second range test
    assert "optimizer.lr=auto: the LR range test" not in second.stdout
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["run"]

    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 20
    # A rank that skipped the checkpoint would step with no momentum and drift from rank 0.
    sums = CHECKSUM.search(second.stdout)
    assert sums and sums.group(1) == sums.group(2) == distributed.weights_checksum(ckpt["model"])
    lr = (f"optimizer.lr={found_lr(done)!r}",)
    model, history = reconstruct(tmp_path, epochs=2, world_size=2, overrides=(*bn, *lr))
    assert_weights_close(model, ckpt["model"])
    train = jsonl(run / "train_diagnostics.jsonl")
    assert [r["epoch"] for r in train] == [0, 1]
    assert [r["loss"] for r in train] == pytest.approx([h["loss"] for h in history], rel=1e-5)
    starts = [e for e in jsonl(run / "events.jsonl") if e["kind"] == "fit_start"]
    assert [e["resumed"] for e in starts] == [False, True]
    exact = full_split_metrics(tmp_path, ckpt["model"], overrides=bn)
    val = jsonl(run / "val_diagnostics.jsonl")[-1]
    assert val["loss"] == pytest.approx(exact["val"]["loss"], rel=1e-6)
    report = json.loads((run / "report.json").read_text())
    assert report["metrics"]["test_acc"] == pytest.approx(exact["test"]["acc"], abs=1e-12)


@pytest.mark.slow
def test_ddp_strategy_without_torchrun_is_world_size_one(tmp_path):
    run = tmp_path / "run"
    res = run_cli([*PINNED, "trainer.strategy=ddp", "trainer.max_epochs=1"], tmp_path, run_dir=run)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "1 process(es) x batch 64 = effective batch size 64" in res.stdout
    assert (run / "report.json").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    model, history = reconstruct(tmp_path, epochs=1, world_size=1)  # plain single-process training
    assert_weights_close(model, ckpt["model"])
    assert jsonl(run / "train_diagnostics.jsonl")[0]["loss"] == pytest.approx(
        history[0]["loss"], rel=1e-5
    )


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep_of_ddp_jobs(tmp_path):
    """Each job of the sweep is a submitit job of 2 tasks: the SLURM path (ranks from submitit, no torchrun)."""
    # an optional plugin (the sweep extra)
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = run_cli(
        [
            "-m",
            "hydra/launcher=slurm_local",
            "hydra.launcher.tasks_per_node=2",
            *(o for o in PINNED if not o.startswith("optimizer.lr=")),
            "optimizer.lr=1e-3,3e-3",
            "trainer.max_epochs=1",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "validated against ConfigStore" not in res.stderr
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    sweep = sweeps[0]
    lrs = []
    for job in ("0", "1"):
        report = json.loads((sweep / job / "report.json").read_text())
        assert 0 < report["metrics"]["test_acc"] <= 1
        lrs += [
            o
            for o in (sweep / job / ".hydra" / "overrides.yaml").read_text().split()
            if "optimizer.lr" in o
        ]
        log_text = (sweep / job / "train.log").read_text()
        assert (
            "2 process(es) x batch 64 = effective batch size 128" in log_text
            and CHECKSUM.search(log_text)
        )
        assert len(list((sweep / job).glob("events.out.tfevents.*"))) == 1
    assert lrs == ["optimizer.lr=0.001", "optimizer.lr=0.003"]
    # the jobs ran as submitit jobs (2 tasks each, in their own processes, with submitit's logs)
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 4
    assert (sweep / "sweep.md").is_file()
    # job 0 is PINNED's configuration: the same data-parallel training as a torchrun launch of it
    model, _ = reconstruct(tmp_path, epochs=1, world_size=2)
    assert_weights_close(
        model, torch.load(sweep / "0" / "checkpoints" / "last.pt", weights_only=True)["model"]
    )


def _rank_zero_decides(rank: int, port: int, out: str) -> None:
    """One gloo rank: diverge from the other rank, then follow rank 0's AutoTrainer-style rollback + LR cut."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    from diag.hooks import FitState
    from runner.autotrainer import Snapshot, scale_lr

    distributed.init_process_group()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100)
    loop = Trainer(max_epochs=1)
    state = FitState(
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=loop.scaler,
        loop=loop,
        is_rank_zero=rank == 0,
    )
    snapshot = Snapshot.take(state)
    # each rank trains on different data: states diverge
    gen = torch.Generator().manual_seed(100 + rank)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()

    for _ in range(3):
        step(torch.randn(16, 4, generator=gen), torch.randint(0, 3, (16,), generator=gen))
    decision = None
    if rank == 0:  # the decision, taken where only rank 0 looks
        snapshot.restore(state)
        scale_lr(opt, sched, 0.1)
        loop.clip_max_norm = 1.0
        decision = {"action": "rollback", "lr_factor": 0.1}
    decision = distributed.follow_rank_zero(state, decision)
    after_decision = distributed.weights_checksum(model.state_dict())
    shared = torch.Generator().manual_seed(7)  # the same batch on both ranks from here on
    step(torch.randn(16, 4, generator=shared), torch.randint(0, 3, (16,), generator=shared))
    Path(out, f"rank{rank}.json").write_text(
        json.dumps(
            {
                "decision": decision,
                "lr": opt.param_groups[0]["lr"],
                "initial_lr": opt.param_groups[0]["initial_lr"],
                "base_lrs": sched.base_lrs,
                "clip": loop.clip_max_norm,
                "after_decision": after_decision,
                "snapshot": distributed.weights_checksum(snapshot.model),
                "after_step": distributed.weights_checksum(model.state_dict()),
            }
        )
    )
    distributed.teardown(barrier=True)


@pytest.mark.slow
def test_a_decision_on_rank_zero_is_applied_on_every_rank(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # two processes of their own, forked from the CLI runs' fork server (torch imported once there,
    # not in two new interpreters as mp.spawn's are): the gloo group, the decision and its broadcast
    # are the same in either
    multiprocessing.set_forkserver_preload(cli_fork.PRELOAD)
    mp.start_processes(
        _rank_zero_decides,
        args=(port, str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="forkserver",
    )
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["decision"] == r1["decision"] == {"action": "rollback", "lr_factor": 0.1}
    assert r0["lr"] == r1["lr"] == pytest.approx(1e-4)
    assert r0["base_lrs"] == r1["base_lrs"] == [pytest.approx(1e-4)] and r1[
        "initial_lr"
    ] == pytest.approx(1e-4)
    assert r0["clip"] == r1["clip"] == 1.0
    # both rolled back to rank 0's snapshot
    assert r0["after_decision"] == r1["after_decision"] == r0["snapshot"]
    # same optimizer moments too: the next step agrees bit for bit
    assert r0["after_step"] == r1["after_step"]


def test_strategy_and_torchrun_misuse_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="trainer.strategy='dp'"):
        distributed.start("dp")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="multirun under torchrun"):
        distributed.share_run_dir(["runner", "-m", "optimizer.lr=1e-3,1e-2"])
    with pytest.raises(UserError, match="mode=lr_find runs in one process"):
        distributed.require_single_process("mode=lr_find")
    assert not distributed.is_initialized()


def test_weights_checksum_tracks_every_byte():
    a = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.zeros(2, dtype=torch.bfloat16),
    }
    b = {k: v.clone() for k, v in a.items()}
    assert distributed.weights_checksum(a) == distributed.weights_checksum(b)
    b["w"][1, 2] = torch.nextafter(b["w"][1, 2], torch.tensor(100.0))
    assert distributed.weights_checksum(a) != distributed.weights_checksum(b)


# -- the AutoTrainer under DDP: rank 0 decides, every rank follows ---------------------------------------
LR_BY_RANK = re.compile(r"lr by rank: 0=(\S+) 1=(\S+) \(in sync\)")


@pytest.fixture(scope="module")
def autotrainer_attempts(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One torchrun launch (2 ranks) for both AutoTrainer tests, two decisions of rank 0 in it: a deep
    sigmoid MLP, which rank 0 restarts before its first step as attempt-1 with ReLU/He/BatchNorm and two
    layers; attempt-1 trains at SGD lr=20, explodes at once, and rank 0 rolls back and cuts the LR.
    Returns the launch and its run directory (each worker launches it once)."""
    log_dir = tmp_path_factory.mktemp("ddp_autotrainer")
    res = torchrun(
        [
            "autotrainer=default",
            "model.activation=sigmoid",
            "model.hidden=[64,64,64,64,64,64,64,64]",
            "optimizer=sgd",
            "optimizer.lr=20",
            "trainer.max_epochs=8",
            # no early-stopping swap at the end: every attempt ends on its last weights, its checkpoint's
            "callbacks.autotrainer.restore_best.codes=[]",
            "callbacks.autotrainer.restore_best.after_repair=false",
        ],
        log_dir,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()
    return res, run


@pytest.mark.slow
def test_ddp_autotrainer_rollback_and_lr_cut_are_the_same_on_every_rank(autotrainer_attempts):
    """SGD at lr=20 explodes at once (attempt-1 of :func:`autotrainer_attempts`): rank 0 rolls back and
    cuts the LR, rank 1 follows at the same step."""
    res, run = autotrainer_attempts
    report = json.loads((run / "report.json").read_text())
    actions = [a for a in report["autotrainer"]["actions"] if a["attempt"] == 1]
    first = actions[0]
    assert (
        first["code"] in ("LOSS_EXPLOSION", "NONFINITE_GRADIENTS") and first["action"] == "rollback"
    )
    assert first["lr_before"] == pytest.approx(20) and first["lr_after"] == pytest.approx(2)
    assert first["changes"]["trainer.clip.max_norm"] == 1.0
    # one decision per check, by rank 0 alone: rank 1 logs its warnings to the console too, and would have
    # printed its own action line had it decided on its own
    line = f"autotrainer: step {first['step']} {first['code']} -> rollback"
    assert res.stdout.count(line) == 1, res.stdout
    attempt = run / "attempt-1"
    assert [e["step"] for e in jsonl(attempt / "events.jsonl") if e["kind"] == "autotrainer"] == [
        a["step"] for a in actions
    ]

    # every rank ends with rank 0's weights and rank 0's (cut) learning rate
    ckpt = torch.load(attempt / "checkpoints" / "last.pt", weights_only=True)
    sums = CHECKSUM.findall(res.stdout)  # attempt-1's is the last
    assert sums and sums[-1][0] == sums[-1][1] == distributed.weights_checksum(ckpt["model"]), (
        res.stdout
    )
    lrs = LR_BY_RANK.findall(res.stdout)
    assert lrs, res.stdout
    # scheduler=none: the last cut
    final_lr = [a for a in actions if a["action"] != "give_up"][-1]["lr_after"]
    assert float(lrs[-1][0]) == float(lrs[-1][1]) == pytest.approx(final_lr, rel=1e-5)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(final_lr)
    assert all(bool(torch.isfinite(w).all()) for w in ckpt["model"].values())


@pytest.mark.slow
def test_ddp_autotrainer_guided_restart_runs_the_same_attempt_on_every_rank(autotrainer_attempts):
    """A deep sigmoid MLP (:func:`autotrainer_attempts`): rank 0 asks for a restart with
    ReLU/He/BatchNorm and two layers; both ranks train attempt-1 with it."""
    res, run = autotrainer_attempts
    report = json.loads((run / "report.json").read_text())
    restart = next(a for a in report["autotrainer"]["actions"] if a["action"] == "restart")
    assert restart["changes"] == {
        "model.batchnorm": True,
        "model.activation": "relu",
        "model.init": "he",
        "model.hidden": [256, 256],
    }
    assert [a["dir"] for a in report["autotrainer"]["attempts"]] == [".", "attempt-1"]
    # rank 0 alone writes attempt-1/.hydra and says so
    assert res.stdout.count("autotrainer: attempt-1 in ") == 1
    cfg = OmegaConf.load(run / "attempt-1" / ".hydra" / "config.yaml")
    assert (cfg.model.activation, cfg.model.init, cfg.model.batchnorm) == ("relu", "he", True)
    # both attempts end in sync; attempt-1's weights are those of the changed model (BatchNorm buffers)
    sums = CHECKSUM.findall(res.stdout)
    assert len(sums) == 2 and all(a == b for a, b in sums), res.stdout
    ckpt = torch.load(run / "attempt-1" / "checkpoints" / "last.pt", weights_only=True)
    assert sums[1][0] == distributed.weights_checksum(ckpt["model"])
    assert any(k.endswith("running_mean") for k in ckpt["model"])
    assert len(LR_BY_RANK.findall(res.stdout)) == 2
    assert report["metrics"]["test_acc"] > 0.9


def test_ddp_stop_decision_holds_on_every_rank_and_is_said_once(tmp_path):
    """NaN gradients on every step: both ranks stop after the same skipped steps; one `stopping:` line."""
    res = torchrun(
        [
            "optimizer=sgd",
            "optimizer.lr=1e30",
            "trainer.max_consecutive_skips=3",
            "trainer.max_epochs=2",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert out.count("stopping: 3 consecutive steps had non-finite gradients") == 1, out[-3000:]
    sums = CHECKSUM.search(res.stdout)
    assert sums and sums.group(1) == sums.group(2), res.stdout
    run = next((tmp_path / "runs").iterdir())
    # stopped in the first epoch on both ranks
    assert len(jsonl(run / "train_diagnostics.jsonl")) == 1


def _children(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


def _worker_with_rank(root_pid: int, rank: int) -> int | None:
    """The torchrun worker process whose environment says RANK=<rank> (a child of torchrun's agent)."""
    for pid in _children(root_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
        found = _worker_with_rank(pid, rank)
        if found:
            return found
    return None


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="finds the worker through /proc (Linux)"
)
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """SIGTERM reaches rank 1 only: the ranks agree on it, stop together, rank 0 saves; nobody hangs in an all-reduce."""
    run = tmp_path / "run"
    cmd, env = torchrun_command(
        ["trainer.max_epochs=500", "diag=off", f"hydra.run.dir={run}"], tmp_path
    )
    # the launcher forked, as :func:`torchrun`'s; the ranks are its children
    proc = cli_fork.start(cmd, tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        # training is under way: an epoch is done (checkpoints come by time, its JSONL line every epoch)
        while not (run / "train_diagnostics.jsonl").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        rank1 = _worker_with_rank(proc.pid, 1)
        assert rank1 is not None
        os.kill(rank1, signal.SIGTERM)
        # a timeout here: rank 0 waits in an all-reduce for the stopped rank
        out = "".join(proc.communicate(timeout=90))
    finally:
        if proc.poll() is None:
            proc.kill()
    # rank 0 says it, with where it saved
    assert out.count("interrupted by SIGTERM at step") == 1, out[-3000:]
    assert "checkpoints/last.pt" in out.split("interrupted by SIGTERM at step")[1].splitlines()[0]
    report = json.loads((run / "report.json").read_text())
    assert report["interrupted"] == "SIGTERM"
    step = report["metrics"]["steps"]
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["mid_epoch"] and ckpt["step"] == step
    assert 0 < step < 500 * 10
    assert [e for e in jsonl(run / "events.jsonl") if e["kind"] == "interrupted"][0]["step"] == step
