"""Data-parallel training across processes, through ``ignite.distributed``.

Three ways to run ``cnnlab train``, all the same code path:

* one process (the default);
* under ``torchrun`` (one machine or several): torchrun sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` and ``train()``
  joins the process group itself (:func:`ensure_initialized`);
* ``cnnlab train --nproc N``: :func:`spawn` starts N local workers with exactly the
  environment torchrun would give them, so from there on it *is* the torchrun path.

The backend follows the device: nccl for CUDA, gloo for CPU. Each process trains
its own shard of every epoch's permutation (``TensorBatches(rank=, world_size=)``),
DistributedDataParallel averages the gradients, ignite's metrics sum their counts
over all ranks, and only rank 0 writes files or prints.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from cnnlab.core.errors import CnnlabError, RunDirError, first_line
from cnnlab.core.i18n import _
from cnnlab.core.runtime import available_cores

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(CnnlabError):
    """The distributed setup is unusable, or the processes of one run disagree."""


class DisagreementError(DistributedError):
    """The processes of one run hold different values where they must agree."""

    raised_on_every_rank = True  # so rank 0 alone reports it


# --- where are we? -------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process run (torchrun, or :func:`spawn`)."""
    if not all(k in os.environ for k in TORCHRUN_VARS):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def world_size() -> int:
    import ignite.distributed as idist

    return idist.get_world_size()


def rank() -> int:
    import ignite.distributed as idist

    return idist.get_rank()


def local_rank() -> int:
    import ignite.distributed as idist

    return idist.get_local_rank()


def rank_from_env() -> int:
    """This process's rank as the launcher's environment says, before the process group is joined (0 alone)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """Rank 0, the only process that writes files and prints (True when not distributed)."""
    return rank() == 0


# --- joining the process group -------------------------------------------------------------


def backend_for(device: torch.device) -> str:
    """nccl when training on CUDA (where available), gloo otherwise."""
    if device.type == "cuda" and torch.distributed.is_nccl_available():
        return "nccl"
    return "gloo"


def ensure_initialized(device: torch.device) -> bool:
    """Join the process group the environment describes; True when this run is distributed.

    A no-op when a group already exists (the caller set one up) or when the
    environment describes a single process.
    """
    import ignite.distributed as idist

    if idist.get_world_size() > 1:
        return True
    if not launched_by_torchrun():
        return False
    if not torch.distributed.is_available():
        raise DistributedError(_("this PyTorch build has no torch.distributed; install a standard PyTorch build"))
    backend = backend_for(device)
    if backend == "nccl":
        need = int(os.environ["LOCAL_RANK"]) + 1
        if torch.cuda.device_count() < need:
            raise DistributedError(
                _("local rank {rank} needs GPU {rank}, but this machine has {device_count}; use at most "
                  "one process per GPU").format(rank=need - 1, device_count=torch.cuda.device_count())
            )
    # Under SLURM, ignite derives the local rank from SLURM_LOCALID, which is 0 for every
    # worker of `srun torchrun` (one task per node): torchrun's own variables are the truth.
    with _hide_env("SLURM_JOB_ID"):
        try:
            if _single_node_agent_store():
                _init_on_agent_store(backend)
            else:
                _warn_about_shared_store_restarts()
                idist.initialize(backend)
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(
                _("could not join the {backend} process group (rank {rank} of {world_size}, master "
                  "{addr}:{port}): {reason}").format(backend=backend, rank=os.environ['RANK'], world_size=os.environ['WORLD_SIZE'], addr=os.environ.get('MASTER_ADDR'), port=os.environ.get('MASTER_PORT'), reason=first_line(exc))
            ) from None
    return True


def _single_node_agent_store() -> bool:
    """torchrun on one machine, with its agent's TCP store shared with the workers (its default)."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        and os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE")
        and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ
    )


def _init_on_agent_store(backend: str) -> None:
    """Join the group through torchrun's store, under a key prefix per restart attempt.

    torchrun's agent keeps one TCP store for all attempts, and the workers'
    rendezvous keys (gloo addresses, barrier counters) survive a restart: the
    restarted workers read the dead ones' addresses and hang (PyTorch issue
    #135712; seen with this repository's torch). On one machine every worker has
    the same TORCHELASTIC_RESTART_COUNT, so prefixing the keys with it isolates
    the attempts. (Across machines the counts can differ; see docs/distributed.md.)
    """
    import datetime

    import ignite.distributed as idist

    rank_, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    timeout = datetime.timedelta(minutes=30)
    store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=False, timeout=timeout
    )
    prefix = f"cnnlab/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    torch.distributed.init_process_group(
        backend, store=torch.distributed.PrefixStore(prefix, store), rank=rank_, world_size=size, timeout=timeout
    )
    idist.get_world_size()  # ignite adopts the group now, while SLURM's variables are hidden


def _warn_about_shared_store_restarts() -> None:
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and os.environ.get("RANK") == "0":
        print(
            _("warning: torchrun's restarts (max-restarts) across machines share one TCP store between "
              "attempts, and a restarted group can hang (PyTorch issue #135712); launch torchrun with "
              "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 set"),
            file=sys.stderr, flush=True,
        )


def finalize() -> None:
    """Leave the process group, if this process is in one."""
    import ignite.distributed as idist

    if idist.get_world_size() > 1 or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        idist.finalize()


@contextlib.contextmanager
def _hide_env(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# --- per-rank pieces of a training run ----------------------------------------------------


def device_for_rank(device: torch.device) -> torch.device:
    """CUDA runs put each process on its own GPU (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if device.type != "cuda" or world_size() == 1:
        return device
    index = local_rank()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed, else ``model`` itself.

    The wrapper is used only for the training step; checkpoints and evaluation use
    the module underneath (``checkpoint.unwrap`` strips ``.module``).
    """
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def rank_seed(seed: int) -> int:
    """A per-rank seed for per-batch randomness (augmentation); rank 0 keeps ``seed``."""
    return seed if rank() == 0 else seed + 1_000_003 * rank()


def same_on_all_ranks(value: str, what: str, hint: str = "") -> None:
    """Raise :class:`DisagreementError` on every rank unless every rank holds the same ``value``.

    A collective call: every rank must reach it.
    """
    if world_size() == 1:
        return
    import ignite.distributed as idist

    values = idist.all_gather(value)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise DisagreementError(
            _("the processes disagree about {what}: rank 0 has {first!r}, rank {rank} has {other!r}").format(
                what=what, first=values[0], rank=odd[0], other=values[odd[0]])
            + ("; " + hint if hint else "")
        )


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of tensors' values (e.g. the split indices), to compare across ranks."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def check_run_agreement(train_idx: torch.Tensor, val_idx: torch.Tensor, resume: dict | None) -> None:
    """Every rank must train on the same split and start from the same point (collective).

    Catches machines with different dataset files, and a --run-dir that is not on
    storage shared by all machines (rank 0 would resume, the others start afresh).
    """
    start = f"resume at iteration {resume['trainer']['iteration']}" if resume else "fresh start"
    same_on_all_ranks(
        f"split {fingerprint(train_idx, val_idx)}, {start}",
        _("the train/validation split or the resume point"),
        _("every machine must read the same dataset files, and the run folder must be on storage all "
          "machines share"),
    )


def stop_agreed(flag: bool, iteration: int, every: int = 10) -> bool:
    """Whether to stop now: ``flag`` alone in one process; across ranks, checked every ``every`` steps.

    A signal reaches the processes at different steps; stopping must happen at the
    same step everywhere or a rank would wait forever for the others' gradients.
    Syncing every few steps keeps the cost of the check out of the step time.
    """
    if world_size() == 1:
        return flag
    return iteration % every == 0 and any_rank(flag)


def resume_position(saved: dict, epoch_length: int) -> dict:
    """``last.pt``'s trainer position expressed in this run's epoch length.

    The steps per epoch depend on the number of processes; a run saved at an
    epoch boundary can resume with any number of them, a run stopped mid-epoch
    only with the same number.
    """
    old, it = int(saved["epoch_length"]), int(saved["iteration"])
    if old == epoch_length:
        return dict(saved)
    if it % old:

        raise RunDirError(
            _("last.pt was saved in the middle of an epoch by {world_size} process(es) ({old} steps per epoch, "
              "this run has {epoch_length}); resume it with the same number of processes").format(world_size=saved.get('world_size', 1), old=old, epoch_length=epoch_length)
        )
    return {**saved, "iteration": it // old * epoch_length, "epoch_length": epoch_length}


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (collective)."""
    if world_size() == 1:
        return flag
    import ignite.distributed as idist

    return bool(idist.all_reduce(int(flag), op="MAX"))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled: only within one trusted run)."""
    if world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if world_size() > 1:
        import ignite.distributed as idist

        idist.barrier()


# --- starting runs -------------------------------------------------------------------------


def launch(fn: Callable[..., Any], *args: Any, nproc: int | None = None) -> int:
    """Run ``fn(*args)`` here, as one worker of a torchrun job, or in ``nproc`` local workers.

    Returns the exit code for the command line. In a distributed run a
    :class:`CnnlabError` is printed once (by rank 0; other ranks add theirs only
    when it is not a disagreement every rank reports) and becomes the exit code;
    single-process errors propagate to the caller unchanged.
    """
    if nproc is not None and nproc > 1:
        if launched_by_torchrun():
            raise DistributedError(
                _("this process already runs under torchrun, which starts the workers: nproc would start more"),
                option="nproc",
            )
        return spawn(fn, *args, nproc=nproc)
    if not launched_by_torchrun():
        fn(*args)
        return 0
    return run_worker(fn, args)


def run_worker(fn: Callable[..., Any], args: tuple) -> int:
    """One distributed worker: run, report a user error once, leave the group, return the exit code."""
    leave = True
    try:
        fn(*args)
        _leave_together()
        return 0
    except CnnlabError as exc:
        me = int(os.environ.get("RANK", "0"))
        if me == 0:
            print(_("error: {exc}").format(exc=exc), file=sys.stderr, flush=True)
        elif not getattr(exc, "raised_on_every_rank", False):  # e.g. a disagreement: rank 0 said it already
            print(_("error (rank {me}): {exc}").format(me=me, exc=exc), file=sys.stderr, flush=True)
        return exc.exit_code
    except RuntimeError as exc:
        if not _lost_peer(exc):
            raise
        leave = False  # tearing down a group with a dead member can block (NCCL); the process exits anyway
        me = int(os.environ.get("RANK", "0"))
        print(
            _("error (rank {me}): lost contact with the other processes ({reason}); last.pt holds the "
              "last finished epoch: the same command resumes from it (torchrun does so by itself when "
              "allowed to restart)").format(me=me, reason=first_line(exc)[:200]),
            file=sys.stderr, flush=True,
        )
        return 1
    finally:
        if leave:
            with contextlib.suppress(Exception):
                finalize()


def _leave_together(timeout_s: float = 60.0) -> None:
    """Wait until every rank has finished before any of them leaves the group.

    A gloo rank whose peer has already closed its connections can abort while
    tearing down its own (seen once in CI as exit 134 after a finished run). A
    monitored barrier cannot hang: a rank that never arrives (it failed) is
    reported after ``timeout_s`` and ignored here, since the process exits anyway.
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        import datetime

        with contextlib.suppress(Exception):
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))


# How gloo/NCCL report a process that died (the error reaches Python as a plain RuntimeError
# from inside backward(), so the type alone does not tell).
PEER_LOST = ("remote worker", "Connection reset by peer", "Connection closed by peer", "Broken pipe")


def _lost_peer(exc: BaseException) -> bool:
    return isinstance(exc, torch.distributed.DistError) or any(m in str(exc) for m in PEER_LOST)


def spawn(fn: Callable[..., Any], *args: Any, nproc: int) -> int:
    """Run ``fn(*args)`` in ``nproc`` local worker processes, like ``torchrun --nproc_per_node``.

    ``fn`` must be importable by name (a module-level function). Each worker gets
    torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) and
    OMP_NUM_THREADS = cores / nproc unless set. Ctrl-C and SIGTERM reach the
    workers, which stop together and save ``last.pt``. Returns the first
    failing worker's exit code, or 0.
    """
    import torch.multiprocessing as mp

    env = {
        "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, available_cores() // nproc))  # read by torch at import in each worker
    context = mp.start_processes(_spawned_worker, args=(env, fn, args), nprocs=nproc, join=False, start_method="spawn")

    def forward(signum: int, frame: object) -> None:
        # Ctrl-C in a terminal already reaches the workers (same process group); `kill` does not.
        for p in context.processes:
            if p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as exc:
        code = exc.exit_code
        return 128 - code if code < 0 else code or 1  # killed by signal N: 128 + N, as a shell reports it
    except mp.ProcessRaisedException as exc:
        print(str(exc).strip(), file=sys.stderr, flush=True)
        return 1
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0


def _spawned_worker(index: int, env: dict[str, str], fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(env, RANK=str(index), LOCAL_RANK=str(index), GROUP_RANK="0")
    code = run_worker(fn, args)
    if code:
        sys.stdout.flush()
        sys.exit(code)


def free_port() -> int:
    """A TCP port that is free on this machine right now (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



