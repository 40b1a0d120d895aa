"""Data-parallel training with ``torch.distributed``: process group, ranks, one run directory, reductions.

How a run becomes data-parallel (``trainer.strategy``):

- ``torchrun --nproc_per_node=N -m runner ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
  ``MASTER_ADDR``/``MASTER_PORT``; every rank joins the group from them (``env://``).
  ``auto`` then means DDP; ``ddp`` says so explicitly.
- A SLURM (or local) job of the submitit launcher with several tasks: submitit's
  :class:`~submitit.helpers.TorchDistributedEnvironment` exports the same variables.
- ``trainer.strategy=ddp`` in a plain ``python -m runner``: a one-process ``gloo`` group
  (in-memory store, no port), so the laptop runs the cluster's code path unchanged.

Backends: ``gloo`` for CPU tensors, ``nccl`` for CUDA tensors (one group serving both when
CUDA is present, so object collectives stay on the CPU and metric tensors on the GPU).

Hydra resolves ``hydra.run.dir`` once per process, so ``${now:...}`` would give every rank
its own directory. :func:`share_run_dir` (before Hydra composes) and
:func:`publish_run_dir` (first thing in the task, on rank 0) make every rank use rank 0's.

torch is imported inside the functions that use it: the entry point asks who it is before Hydra
composes, and a config refused there is said at once, not after torch's two-second import.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from runner.errors import UserError

if TYPE_CHECKING:
    import torch

    from diag.hooks import FitState

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "ddp")
T = TypeVar("T")

# Hydra flags that print something and exit without running the task (rank 0 would never publish).
_INFO_FLAGS = {
    "-h",
    "--help",
    "--hydra-help",
    "-c",
    "--cfg",
    "-i",
    "--info",
    "-sc",
    "--shell-completion",
    "--version",
}
_MULTIRUN_FLAGS = {"-m", "--multirun"}
_publish_pending = False  # rank 0 owes the waiting ranks its run directory


# -- who am I ------------------------------------------------------------------
def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun (or submitit's export) set it; 1 when not launched that way."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """True when a launcher set the ``env://`` variables (torchrun, or submitit's export)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def launch_rank() -> int:
    """This process's rank as its launcher set it, known before any process group exists (torchrun's
    ``RANK``, or a submitit task's, exported here): a submitit job's tasks join their group only later."""
    _export_submitit_env()
    return get_rank() if is_initialized() else int(os.environ.get("RANK", "0"))


def is_initialized() -> bool:
    """Is there a process group? Read without importing torch: a process that never imported
    ``torch.distributed`` has none (so ``python -m runner --help`` or a bad override never waits for torch)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return sys.modules["torch.distributed"].get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return sys.modules["torch.distributed"].get_world_size() if is_initialized() else 1


def is_rank_zero() -> bool:
    return get_rank() == 0


def local_rank() -> int:
    """This process's index on its machine (picks its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def backend() -> str:
    """``gloo`` on CPU-only machines; with CUDA, one group with gloo for CPU and nccl for GPU tensors."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


# -- set-up and teardown ----------------------------------------------------------
def _export_submitit_env() -> None:
    """Inside a multi-task submitit job (SLURM or local), export torchrun's variables from submitit's."""
    if launched() or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment

        env = TorchDistributedEnvironment()
    except (ImportError, RuntimeError):
        return
    if env.world_size > 1:
        # keep every GPU visible: the rank picks cuda:LOCAL_RANK itself
        env.export(set_cuda_visible_devices=False)


def init_process_group() -> bool:
    """Join the group the environment describes, or make a one-process group; False if one already exists."""
    import torch
    import torch.distributed as dist

    if is_initialized():
        return False
    if not dist.is_available():
        raise UserError(
            "trainer.strategy=ddp needs torch.distributed, which this PyTorch build lacks: "
            "use trainer.strategy=auto"
        )
    _export_submitit_env()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())  # before nccl creates its communicators
    if launched():
        dist.init_process_group(backend(), init_method="env://")
    else:
        dist.init_process_group(backend(), store=dist.HashStore(), rank=0, world_size=1)
    return True


def start(strategy: str) -> bool:
    """Resolve ``trainer.strategy`` and join the process group; True when training is data-parallel.

    ``auto`` is DDP exactly when several processes were launched, so one config serves a
    laptop and a cluster; ``ddp`` with a single process runs DDP with world size 1.
    """
    if strategy not in STRATEGIES:
        raise UserError(
            f"trainer.strategy={strategy!r} is not valid: choose auto (DDP when launched with "
            "torchrun on several processes) or ddp"
        )
    _export_submitit_env()
    several = env_world_size() > 1 or get_world_size() > 1
    if strategy == "auto" and not several:
        return False
    init_process_group()
    _quiet_other_ranks()
    return True


def _quiet_other_ranks() -> None:
    """Only rank 0 writes the run's log file; the others print warnings and errors only."""
    if is_rank_zero():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.WARNING)


def teardown(barrier: bool = False) -> None:
    """Destroy the process group (if any) so the process exits cleanly.

    ``barrier`` (after a successful run) first waits for every rank, so no rank tears its
    connections down while rank 0 is still writing reports; after a failure there is no
    barrier, since the other ranks may be stuck in a collective that will never complete.
    """
    if not is_initialized():
        return
    import torch.distributed as dist

    # A DDP wrapper left in a reference cycle would outlive the group and be torn down with the
    # interpreter, racing gloo's threads (an intermittent "terminate called" abort on exit): free it now.
    gc.collect()
    if barrier and get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """Under DDP each rank drives its own GPU, ``cuda:LOCAL_RANK``; CPU stays CPU."""
    import torch

    if device.type != "cuda":
        return device
    dev = torch.device("cuda", local_rank())
    torch.cuda.set_device(dev)
    return dev


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """The DDP wrapper the training forward goes through (averages gradients during backward).

    Wrapping broadcasts rank 0's parameters and buffers, so every rank starts from the same weights.
    The bare module stays what hooks, evaluation and checkpoints see.
    """
    import torch

    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def require_single_process(what: str) -> None:
    """Refuse modes that have no data-parallel meaning when torchrun started several processes."""
    if env_world_size() > 1:
        raise UserError(f"{what} runs in one process: start it with python -m runner, not torchrun")


# -- one run directory ---------------------------------------------------------------
def quote_override(value: str) -> str:
    """A Hydra override value quoted for Hydra's grammar (any path: spaces, commas, '=', brackets, quotes).

    Double quotes unless the value holds one, so the shell quoting around it stays readable.
    """
    q = "'" if '"' in value else '"'
    return q + value.replace("\\", "\\\\").replace(q, "\\" + q) + q


def share_run_dir(argv: list[str]) -> list[str]:
    """Before Hydra composes, under torchrun with several processes: make every rank use rank 0's run dir.

    Every rank joins the process group here. Rank 0 goes on to compose and, first thing in
    the task, sends the directory Hydra resolved (:func:`publish_run_dir`). The other ranks
    wait for it and compose with ``hydra.run.dir`` pinned to it and ``hydra.output_subdir=null``,
    so only rank 0 writes ``.hydra/`` and no rank creates a directory of its own.
    Returns the argv to run Hydra with.
    """
    global _publish_pending
    if env_world_size() <= 1:
        return argv
    args = argv[1:]
    if any(a in _INFO_FLAGS for a in args):
        return argv
    if any(a in _MULTIRUN_FLAGS for a in args):
        raise UserError(
            "-m/--multirun under torchrun would run the whole sweep on every rank: drop -m, or sweep "
            "DDP jobs with hydra/launcher=slurm hydra.launcher.tasks_per_node=N "
            "trainer.strategy=ddp"
        )
    init_process_group()
    if get_rank() == 0:
        _publish_pending = True
        return argv
    run_dir = broadcast_object(None)
    keep = [a for a in args if a.split("=", 1)[0] not in ("hydra.run.dir", "hydra.output_subdir")]
    return [
        argv[0],
        *keep,
        f"hydra.run.dir={quote_override(str(run_dir))}",
        "hydra.output_subdir=null",
    ]


def publish_run_dir(run_dir: os.PathLike[str] | str) -> None:
    """First thing in the Hydra task on every rank, after :func:`share_run_dir`.

    Rank 0 sends the resolved run directory to the waiting ranks (once); the other ranks,
    whose logging Hydra has just configured, stop writing to the run's log file.
    """
    global _publish_pending
    if _publish_pending:
        _publish_pending = False
        broadcast_object(str(run_dir))
    if is_initialized():
        _quiet_other_ranks()


# -- collectives ---------------------------------------------------------------------
def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (any picklable value; identity without a group).

    Decisions taken on rank 0 (an AutoTrainer LR change or rollback, an LR-finder result)
    go through here so that every rank applies the same one.
    """
    import torch.distributed as dist

    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    import torch.distributed as dist

    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_training_state(state: FitState) -> None:
    """Every rank continues from rank 0's training state (collective: every rank calls it at the same step).

    Weights are broadcast in place; optimizer (moments, LR of each group), scheduler, grad scaler,
    the loop's clipping and the stop flag travel as one object. This is what makes a rollback or an
    LR change decided on rank 0 the same change on every rank.
    """
    import torch
    import torch.distributed as dist

    if get_world_size() == 1:
        return
    from diag.training_state import TrainingState, apply, capture

    with torch.no_grad():
        for tensor in state.model.state_dict().values():
            dist.broadcast(tensor, src=0)
    rest: tuple[TrainingState, float | None, tuple[bool, str]] | None = None
    if is_rank_zero():
        saved = capture(state.model, state.optimizer, state.scheduler, state.scaler)
        saved.model = {}  # the weights went by broadcast, in place
        rest = (
            saved,
            state.loop.clip_max_norm if state.loop is not None else None,
            (state.stop_training, state.stop_reason),
        )
    rest = broadcast_object(rest)
    if is_rank_zero() or rest is None:
        return
    training, clip_max_norm, (state.stop_training, state.stop_reason) = rest
    apply(training, None, state.optimizer, state.scheduler, state.scaler)
    if state.loop is not None:
        state.loop.set_clip(clip_max_norm)
    state.lr = state.current_lr


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank.

    DDP sends rank 0's buffers at the start of each training forward, but that forward then
    updates them from the rank's own batch; before evaluating or comparing weights, every rank
    takes rank 0's, which are the ones its checkpoints hold.
    """
    import torch
    import torch.distributed as dist

    if get_world_size() == 1:
        return
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def follow_rank_zero(state: FitState, decision: T | None) -> T | None:
    """Rank 0's ``decision`` on every rank and, when it is not None, rank 0's training state too.

    For policies such as the AutoTrainer: rank 0 decides and acts (its inputs, such as wall
    time or activation statistics of its own batches, may differ on other ranks), passes what it
    decided (None: nothing), and every rank returns with the same weights, optimizer and LR.
    Collective: every rank calls it at the same step.
    """
    decision = broadcast_object(decision if is_rank_zero() else None)
    if decision is not None:
        broadcast_training_state(state)
    return decision


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks, left on the device (no host sync); ``value`` itself without DDP.

    Gloo has no AVG reduction, so it is a SUM divided by the world size.
    """
    import torch.distributed as dist

    world = get_world_size()
    if world == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world


def sum_over_ranks(
    *values: torch.Tensor | float, device: torch.device | str = "cpu"
) -> list[float]:
    """Each value summed over all ranks, in one collective and one host read (float64: exact counts).

    Loss sums, correct counts and sample counts go through here before a mean is taken, so a
    metric over sharded data equals the metric over the whole split.
    """
    import torch
    import torch.distributed as dist

    packed = torch.stack(
        [torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values]
    )
    if get_world_size() > 1:
        dist.all_reduce(packed)
    return packed.tolist()


def max_over_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """The largest of an integer over all ranks (one collective): e.g. any rank's pending signal."""
    import torch
    import torch.distributed as dist

    if get_world_size() == 1:
        return int(value)
    t = torch.tensor(int(value), dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


# -- checks the loop relies on -------------------------------------------------------
def check_same_steps(steps_per_epoch: int) -> None:
    """Every rank must take the same number of optimizer steps, or DDP's all-reduce hangs."""
    steps = all_gather_object(int(steps_per_epoch))
    if len(set(steps)) > 1:
        raise UserError(
            f"ranks would take different numbers of steps per epoch ({steps}): the training "
            "loader must give every rank an equal shard"
        )


def describe(batch_size: int, steps_per_epoch: int) -> str:
    """The data-parallel layout in one line, effective batch size included."""
    import torch.distributed as dist

    world = get_world_size()
    return (
        f"data-parallel (DDP, {dist.get_backend()}): {world} process(es) x batch {batch_size} = "
        f"effective batch size {world * batch_size}, {steps_per_epoch} steps per epoch on every rank"
    )


def weights_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and bytes (same weights, same digest, on any rank or from a file)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(
            state_dict[name]
            .detach()
            .cpu()
            .contiguous()
            .reshape(-1)
            .view(torch.uint8)
            .numpy()
            .tobytes()
        )
    return h.hexdigest()


def check_weights_in_sync(model: torch.nn.Module) -> list[str]:
    """Gather every rank's weight checksum and log them (rank 0); an error line if any differ.

    Buffers are rank 0's by convention (:func:`broadcast_buffers`), so a difference means the
    parameters themselves diverged: a rank stepped differently.
    """
    broadcast_buffers(model)
    sums = all_gather_object(weights_checksum(model.state_dict()))
    if get_world_size() > 1 and is_rank_zero():
        line = "weights sha256 by rank: " + " ".join(f"{r}={s}" for r, s in enumerate(sums))
        if len(set(sums)) == 1:
            log.info("%s (in sync)", line)
        else:
            log.error("%s: ranks diverged", line)
    return sums


def check_lr_in_sync(optimizer: torch.optim.Optimizer) -> list[list[float]]:
    """Gather every rank's learning rates (one per param group) and log them (rank 0); an error line if any differ.

    Equal weights now do not mean equal steps later: a policy that changed the LR on one rank only
    (an AutoTrainer decision not followed) shows here.
    """
    lrs = all_gather_object([float(g["lr"]) for g in optimizer.param_groups])
    if get_world_size() > 1 and is_rank_zero():
        line = "lr by rank: " + " ".join(
            f"{r}={','.join(f'{v:.6g}' for v in lr)}" for r, lr in enumerate(lrs)
        )
        if all(lr == lrs[0] for lr in lrs):
            log.info("%s (in sync)", line)
        else:
            log.error("%s: ranks diverged", line)
    return lrs
