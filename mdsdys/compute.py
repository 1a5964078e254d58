"""Where training runs: the device, its layout and precision, processes under DDP, and epoch reports.

Both trainers (`segment.train`, `classify.train`) use CUDA when present (bf16 autocast there) and
report each epoch as an `EpochReport`. Several processes, for labs with several GPUs or nodes:

The training functions (clstrain.train_classifier, segtrain.train_segmenter) are the same in one
process and under torchrun. They ask `current_world()` which process they are; with one process
every helper here is a no-op. Under torchrun the CLI joins the process group (`process_group`):

    torchrun --nproc_per_node=2 -m mdsdys train classifier

Every rank trains on its share of each batch, gradients are averaged by DistributedDataParallel,
and only rank 0 reports progress, registers the model and writes to the store. Decisions that
must be the same on every rank (stop early, stop at the time cap, cancel) are taken by rank 0
and broadcast, so no rank waits forever in a collective the others have left.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """Progress after one epoch of either trainer, for on_epoch callbacks (progress bars, job state, logs)."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float
    seconds: float  # since training started
    val_dice: float | None = None  # segmenter: mean per validation field, at the training scale
    val_iou: float | None = None  # segmenter
    split: str | None = None  # segmenter: "by slide" or "by patch"
    val_macro_f1: float | None = None  # classifier
    lr: float | None = None  # classifier: the learning rate of this epoch's last step
    best_epoch: int | None = None  # classifier: the epoch whose weights are kept so far


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU, the default layout elsewhere."""
    # channels_last lets oneDNN skip layout conversions around every convolution on the CPU (issue 4).
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def inference_batch(device: torch.device) -> int:
    """Images per network call when reading cells: 64 on the CPU, 256 on a GPU."""
    # On 2 CPU cores the cellnet reads batches of 32-96 about 1.6x faster per image than batches of
    # 256 (1,340 against 845 passes/s, bench/classifier.py's forward): a small batch's activations
    # stay in cache. A GPU wants large batches.
    return 64 if device.type == "cpu" else 256


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Training's precision: bf16 autocast on CUDA (issue 4: AMP there); plain fp32 on the CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Reading cells: bf16 autocast on CUDA, and on a CPU that computes bf16 natively (cpu_bf16); else fp32."""
    if device.type == "cpu" and cpu_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return autocast(device)


def cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX) and MDSDYS_CPU_BF16 is not "0".

    There the classifier reads cells 1.75x faster under bf16 autocast (2 cores, 4 views of the
    default model: 234 -> 410 cells/s in predict_squares), its proposals 0.9953 the same top class
    on PBC's held-out cells (the 3 of 640 that moved were near ties) and none of BCCD's 283 moved,
    probabilities 0.00015 apart on average (docs/notes/issue13-classifier.md). Without the
    instructions bf16 is emulated and slower than fp32. MDSDYS_CPU_BF16=0 keeps fp32 everywhere.
    """
    return os.environ.get("MDSDYS_CPU_BF16", "1") != "0" and _cpu_has_bf16()


@functools.cache
def _cpu_has_bf16() -> bool:
    # torch's own CPU probes (those its compiler uses); a torch without them gets fp32.
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and bool(probe()) for probe in probes)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 reports, saves and registers."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_by_torchrun() -> bool:
    """torchrun sets WORLD_SIZE (and RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for each process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current_world() -> World:
    """The process group this process has joined, or SINGLE."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def backend() -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if torch.cuda.is_available() else "gloo"


@contextlib.contextmanager
def process_group() -> Iterator[World]:
    """Join the torchrun process group for the duration of a training command; SINGLE when not launched so."""
    if not launched_by_torchrun() or current_world().distributed:
        yield current_world()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend())
    world = current_world()
    log.info("joined %s process group as rank %d of %d", backend(), world.rank, world.size)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def device(world: World) -> torch.device:
    """This rank's GPU when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank if world.distributed else torch.cuda.current_device())
    return torch.device("cpu")


def wrap(net: nn.Module, world: World) -> nn.Module:
    """The module to call in training: DDP around `net` across ranks, `net` itself in one process.

    Rank 0's weights are broadcast when DDP is built, so every rank starts from the same model.
    """
    if not world.distributed:
        return net
    ids = [world.local_rank] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's part of a batch that every rank drew identically."""
    return batch[world.rank::world.size] if world.distributed else batch


def agree(flag: bool, world: World) -> bool:
    """Rank 0's answer, on every rank."""
    if not world.distributed:
        return flag
    value = torch.tensor([int(flag)], device=device(world))
    dist.broadcast(value, src=0)
    return bool(value.item())


def mean(value: float, world: World) -> float:
    """The mean of a per-rank number (a training loss) over the ranks."""
    if not world.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device(world))
    dist.all_reduce(total)
    return float(total.item()) / world.size
