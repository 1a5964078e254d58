"""Training the cell classifier: one function for the worker, the CLI, the tests and the benchmark.

`train_classifier` splits the labelled cells (by slide when it can, mdsdys.splits), trains from
scratch, or fine-tunes the active model's weights when it is given one (FineTuneConfig), with early
stopping on validation macro-F1, fits a temperature on validation, calibrates the
Grad-CAM outside-nucleus warning on validation cells with nucleus masks, and scores a frozen test split. It does no file I/O: `result.checkpoint` goes to
`mdsdys.registry.versions.register_model` as a separate step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mdsdys import compute, stats
from mdsdys.augment import CLASSIFIER_AUGMENT, NO_AUGMENT, AugmentConfig, augment
from mdsdys.classify.archs import create_model, get_arch
from mdsdys.classify.cam import MIN_CAM_CALIBRATION_CELLS, calibrate_cam_warning
from mdsdys.classify.classifier import (
    MAX_VIEWS,
    CellSample,
    Classifier,
    calibrated,
    check_crops,
    forward_logits,
)
from mdsdys.classify.inputs import Normalizer, fit_slide_colour, normalise_colour, stack_squares
from mdsdys.classify.ood import fit_ood_reference
from mdsdys.compute import EpochReport, autocast, memory_format
from mdsdys.errors import (
    TrainingCancelled,
    TrainingDataError,
)
from mdsdys.imaging.geometry import CELL_MARGIN, GEOMETRY_RULE
from mdsdys.imaging.stain import REFERENCE, StainFit
from mdsdys.imaging.thumbnails import square_resize
from mdsdys.schemes import LabelScheme, scheme_to_mapping
from mdsdys.splits import Split, split_samples

log = logging.getLogger(__name__)
# At most this many cells' Grad-CAMs calibrate the warning: ~10 ms each on a CPU at 64 px.
CAM_CALIBRATION_CELLS = 400


@dataclass(frozen=True)
class FineTuneConfig:
    """How a retrain starts from the active classifier's weights instead of from scratch (issue 13).

    A lab's first labelled cells from its own microscope adapt a model trained elsewhere. On
    bench/cross_microscope.py's k = 50 step (PBC plus 50 labelled BCCD white cells, scored on the 183
    other BCCD cells; docs/notes/issue13-classifier.md, three seeds each) training from scratch for 60
    epochs read 0.836-0.874; fine-tuning the PBC model for 15 epochs with slides fully balanced read
    0.869-0.923 at an eighth of the from-scratch peak rate (mean 0.891), 0.858-0.902 at a quarter
    (0.876), 0.836 at a quarter with power 0.5, in a quarter of the time (70-80 s against 255-300 s
    on 2 cores). PBC's own held-out cells fell from 0.917 to 0.89.
    """

    enabled: bool = True
    epochs: int = 15                 # at most ClsTrainConfig.epochs
    lr: float = 2.5e-4               # OneCycle peak: an eighth of the from-scratch rate keeps what was learnt
    # Every slide is drawn as often as the largest (see ClsTrainConfig.slide_balance_power): the new
    # slide's few cells are what the model must learn; PBC's thousands it already knows.
    slide_balance_power: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ClsTrainConfig:
    """Everything that decides a trained classifier; stored in its checkpoint."""

    # cellnet was chosen by bench/classifier.py on a 2-core CPU (README, "Cell classifier"): as accurate
    # as ResNet-18 on PBC at a third of its training time, and an 8x8 Grad-CAM grid at 64 px. Its
    # GroupNorm variant keeps no training-set statistics: trained on PBC with the same recipe for 25
    # epochs, it called 0.61 of BCCD's white cells right against BatchNorm's 0.43 (issue 13, README).
    arch: str = "cellnet_gn"
    # The paper's 64 px (Lee et al. 2022); 64 keeps training inside the CPU budget. It is also
    # mdsdys.imaging.thumbnails.THUMBNAIL_SIDE: at this side proposals read the stored thumbnails as they are.
    input_size: int = 64
    # ~5 minutes for 2,500 cells on 2 CPU cores. The strong augmentation of issue 13 needs more epochs
    # than the light one did (40): at 25 epochs PBC macro-F1 was 0.85-0.89.
    epochs: int = 60
    batch_size: int = 64             # the paper used 32; 64 halves the per-step overhead on a CPU
    optimizer: str = "adamw"         # 'adam' for the paper's setting
    lr: float = 2e-3                 # OneCycle peak; from-scratch ResNets train well at 1e-3..3e-3 with AdamW
    schedule: str = "onecycle"       # 'constant' for the paper's setting
    weight_decay: float = 0.05       # AdamW's decoupled decay; a strong regulariser for ~10^3 images
    label_smoothing: float = 0.1     # keeps logits moderate, so temperature scaling has less to fix
    # Loss weight of class c is (n_max / n_c) ** power: 0.5 lifts a 2.4% class (MD in the paper)
    # about 4x against the largest, without the false alarms full inverse weighting brings.
    class_weight_power: float = 0.5
    # Each epoch draws its training cells so that a slide's cells are drawn (n_largest / n_slide) ** power
    # times as often as the largest slide's: a lab's first labelled cells from its own microscope are
    # not drowned by thousands imported from another (issue 13: chosen by the k-curve of
    # bench/cross_microscope.py, README). 0 draws every cell once per epoch.
    slide_balance_power: float = 0.5
    val_fraction: float = 0.1        # the paper's 80/10/10
    test_fraction: float = 0.1
    # Epochs without a better validation macro-F1 before stopping; counted only once the one-cycle
    # rate has annealed to half its peak, before which no model is kept (see _first_kept_epoch).
    patience: int = 8
    min_per_class: int = 3           # one each for training, validation and test
    max_minutes: float | None = None  # wall-clock cap; the best epoch so far is kept
    augment: AugmentConfig = CLASSIFIER_AUGMENT
    # White balance and stain normalisation of each slide's cells to mdsdys.imaging.stain.REFERENCE
    # before the network (issue 13): the colour no longer depends on the microscope.
    stain_normalise: bool = True
    # Test-time views: every prediction averages the logits of this many orientations of the cell
    # (classify.classifier.dihedral_view; 1 reads it once), each read at every share of the square's
    # side in test_crops (classify.classifier.central_view): the cell cut tighter as well, so that what
    # lies around it (another smear's packed red cells, neighbours, a cut a little wide) weighs less.
    # One PBC-trained model (docs/notes/issue13-classifier.md), PBC held out / BCCD's white cells cut
    # around their masks / the same as wide fields whose nucleus is found, and cells/s of predict_squares
    # on 2 CPU cores: 4 orientations 0.919 / 0.657 / 0.636, 173; 2 orientations x (1.0, 0.8) 0.916 /
    # 0.686 / 0.657, 162 (the default: the same 4 forward passes); 4 x (1.0, 0.8) 0.916 / 0.696 / 0.693, 94;
    # 1 x (1.0, 0.8) 0.917 / 0.664 / 0.633, 290. Two other models gained 0.025 and 0.003 on BCCD from the crop.
    test_views: int = 2
    test_crops: tuple[float, ...] = (1.0, 0.8)
    # Retraining with an active classifier of the same architecture, input size, classes and colour
    # rule, which has seen most of the run's cells, starts from its weights (FineTuneConfig, fine_tune_base);
    # `enabled=False` always trains from scratch.
    fine_tune: FineTuneConfig = FineTuneConfig()
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for the checkpoint and the models table."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClsTrainConfig:
        """Inverse of to_dict; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        if isinstance(values.get("fine_tune"), dict):
            values["fine_tune"] = FineTuneConfig.from_dict(values["fine_tune"])
        if isinstance(values.get("test_crops"), list):
            values["test_crops"] = tuple(values["test_crops"])
        return cls(**values)


def paper_config(**overrides: Any) -> ClsTrainConfig:
    """Lee et al. 2022: Inception-v3 from scratch, Adam 1e-4, batch 32, 200 epochs (75 px: its minimum).

    The paper reports no augmentation, class weighting or smoothing, so none is used.
    """
    settings = {"arch": "inception_v3", "input_size": 75, "optimizer": "adam", "lr": 1e-4, "schedule": "constant",
                "batch_size": 32, "epochs": 200, "weight_decay": 0.0, "label_smoothing": 0.0,
                "class_weight_power": 0.0, "slide_balance_power": 0.0, "patience": 200, "augment": NO_AUGMENT,
                "stain_normalise": False, "test_views": 1, "test_crops": (1.0,),
                "fine_tune": FineTuneConfig(enabled=False)} | overrides
    return ClsTrainConfig(**settings)


@dataclass
class ClassifierResult:
    """What train_classifier returns: the model, its checkpoint dict and how training went."""

    classifier: Classifier
    checkpoint: dict[str, Any]
    history: list[EpochReport]
    split: Split

    @property
    def metrics(self) -> dict[str, Any]:
        """Metrics on the frozen test split (see checkpoint['metrics'])."""
        return self.checkpoint["metrics"]


def _as_samples(samples: Sequence[Sequence[Any]]) -> list[CellSample]:
    return [s if isinstance(s, CellSample) else CellSample(*s) for s in samples]


def _class_indices(samples: list[CellSample], scheme: LabelScheme) -> np.ndarray:
    index = {code: i for i, code in enumerate(scheme.codes)}
    unknown = sorted({s.code for s in samples} - set(index))
    if unknown:
        raise TrainingDataError(
            f"Labels {unknown} are not classes of scheme {scheme.name!r} ({', '.join(scheme.codes)}); "
            "train with the scheme the cells were labelled in."
        )
    return np.array([index[s.code] for s in samples], dtype=np.int64)


def check_training_data(y: np.ndarray, scheme: LabelScheme, min_per_class: int) -> None:
    """Raise TrainingDataError unless every class has at least min_per_class labelled cells."""
    codes = scheme.codes
    if y.size < len(codes):
        raise TrainingDataError(
            f"Only {y.size} labelled cells for the {len(codes)} classes of scheme {scheme.name!r}; "
            f"label at least {min_per_class} cells of each class, then train again."
        )
    counts = np.bincount(y, minlength=len(codes))
    short = [f"{code} ({n})" for code, n in zip(codes, counts) if n < min_per_class]
    if short:
        raise TrainingDataError(
            f"Too few labelled cells of {', '.join(short)} in scheme {scheme.name!r}: each class needs at least "
            f"{min_per_class} (one each for training, validation and test). Label more, or use a scheme without them."
        )


def _split(samples: list[CellSample], y: np.ndarray, config: ClsTrainConfig,
           frozen_test: Collection[int] | None, seen: Collection[int] | None = None) -> Split:
    codes = np.array([str(v) for v in y])
    groups = [s.group for s in samples]
    frozen = seen_mask = None
    if frozen_test:
        frozen = np.array([s.cell_id is not None and s.cell_id in frozen_test for s in samples])
    if seen is not None:
        seen_mask = np.array([s.cell_id is not None and s.cell_id in seen for s in samples])
    return split_samples(codes, groups, config.val_fraction, config.test_fraction, config.seed, frozen, seen_mask)


def plan_split(samples: Sequence[CellSample | tuple], scheme: LabelScheme, config: ClsTrainConfig,
               frozen_test: Collection[int] | None = None, seen: Collection[int] | None = None) -> dict[str, Any]:
    """The split train_classifier would make, without training: cells per part and class (for previews)."""
    samples = _as_samples(samples)
    y = _class_indices(samples, scheme)
    return _data_summary(samples, y, _split(samples, y, config, frozen_test, seen), scheme.codes)


def check_training_counts(plan: dict[str, Any], minimum: int) -> None:
    """Refuse, saying how many more labels each short class needs, when one has < minimum training cells."""
    short = {code: n for code, n in plan["counts"]["train"].items() if n < minimum}
    if short:
        needs = ", ".join(f"{code}: {n} now, label {minimum - n} more" for code, n in short.items())
        raise TrainingDataError(
            f"Not enough training labels for a candidate: every class needs at least {minimum} cells in the "
            f"training part ({plan['split']} split; the test and validation cells are not counted). {needs}.")


def _data_summary(samples: list[CellSample], y: np.ndarray, split: Split, codes: Sequence[str]) -> dict[str, Any]:
    parts = {"train": split.train, "val": split.val, "test": split.test}
    return {
        "split": split.kind,
        "cells": {name: int(idx.size) for name, idx in parts.items()},
        "counts": {name: {c: int(n) for c, n in zip(codes, np.bincount(y[idx], minlength=len(codes)))}
                   for name, idx in parts.items()},
        "slides": {name: sorted({samples[i].group for i in idx}) for name, idx in parts.items()},
    }


def split_key(samples: list[CellSample], test: np.ndarray) -> tuple[list[int], str]:
    """(test cell ids, SHA-256 of them); without cell ids the hash is over the crops' bytes."""
    ids = sorted(int(samples[i].cell_id) for i in test if samples[i].cell_id is not None)
    if len(ids) == test.size:
        return ids, hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
    digests = sorted(hashlib.sha256(np.ascontiguousarray(samples[i].crop).tobytes()).hexdigest() for i in test)
    return ids, hashlib.sha256(",".join(digests).encode()).hexdigest()


def _class_weights(y_train: np.ndarray, n_classes: int, power: float) -> torch.Tensor:
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.max() / np.maximum(counts, 1)) ** power, 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


def slide_draw(groups: Sequence[str], power: float) -> torch.Tensor | None:
    """Per training cell, its chance of being drawn when slides are balanced by `power`; None if all are equal."""
    counts = Counter(groups)
    if power == 0 or len(counts) < 2:
        return None
    largest = max(counts.values())
    weights = torch.tensor([(largest / counts[g]) ** power for g in groups], dtype=torch.float64)
    return weights / weights.sum()


def _optimizer(net: nn.Module, config: ClsTrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        # No weight decay on BatchNorm and bias parameters (the usual practice since Goyal et al. 2017).
        decay = [p for p in net.parameters() if p.ndim > 1]
        rest = [p for p in net.parameters() if p.ndim <= 1]
        return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=config.lr)
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; use 'adamw' or 'adam'.")


MIN_ONECYCLE_STEPS = 16
ONECYCLE_WARMUP = 0.25  # share of the steps spent rising to the peak rate


def _scheduler(optimizer: torch.optim.Optimizer, config: ClsTrainConfig, steps: int):
    if config.schedule == "onecycle":
        if steps < MIN_ONECYCLE_STEPS:
            # OneCycleLR divides by the length of its warm-up phase, which is zero for some tiny
            # step counts (4 at pct_start 0.25); a run this short gains nothing from a schedule.
            return None
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps,
                                                   pct_start=ONECYCLE_WARMUP)
    if config.schedule == "constant":
        return None
    raise ValueError(f"Unknown schedule {config.schedule!r}; use 'onecycle' or 'constant'.")


def _batches(order: torch.Tensor, batch_size: int, world: compute.World) -> list[torch.Tensor]:
    """This rank's part of each batch; every rank gets the same number of batches."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and chunks[-1].numel() < 2 * world.size:  # BatchNorm cannot train on a batch of one
        chunks.pop()
    return [compute.shard(chunk, world) for chunk in chunks]


@dataclass
class _Run:
    """The tensors and settings one training run shares between its helpers."""

    net: nn.Module
    model: nn.Module          # what training calls: net, or DDP around it across processes
    world: compute.World
    images: torch.Tensor      # (N, 3, S, S) uint8 on the device
    targets: torch.Tensor     # (N,) int64 on the device
    normalizer: Normalizer
    device: torch.device
    config: ClsTrainConfig
    draw: torch.Tensor | None = None  # per training cell, its chance of being drawn; None: each once per epoch


def _train_epoch(run: _Run, train: torch.Tensor, optimizer, scheduler, weights: torch.Tensor,
                 generators: tuple[torch.Generator, torch.Generator], should_stop: Callable[[], bool] | None) -> float:
    """One pass over the training cells; `generators` draw the order (same on every rank) and the augmentation."""
    order_gen, augment_gen = generators
    run.model.train()
    if run.draw is None:
        order = train[torch.randperm(train.numel(), generator=order_gen)]
    else:
        order = train[torch.multinomial(run.draw, train.numel(), replacement=True, generator=order_gen)]
    total, seen = 0.0, 0
    for batch in _batches(order, run.config.batch_size, run.world):
        if should_stop is not None and compute.agree(should_stop(), run.world):
            raise TrainingCancelled("Training was cancelled; no model was saved.")
        batch = batch.to(run.device)
        x = run.normalizer(augment(run.images[batch], augment_gen, run.config.augment))  # (B, 3, S, S)
        x = x.contiguous(memory_format=memory_format(run.device))
        with autocast(run.device):
            logits = run.model(x).float()                                               # (B, C)
        loss = F.cross_entropy(logits, run.targets[batch], weight=weights, label_smoothing=run.config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total, seen = total + float(loss.detach()) * batch.numel(), seen + batch.numel()
    return total / max(seen, 1)


def _validate(run: _Run, val: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """(macro-F1, NLL) on the validation cells."""
    if val.numel() == 0:
        return math.nan, math.nan
    logits = forward_logits(run.net, run.images[val.to(run.device)], run.normalizer, run.device)
    y = run.targets[val.to(run.device)].cpu()
    f1 = stats.macro_f1(y.numpy(), logits.argmax(1).numpy(), n_classes)
    return f1, float(F.cross_entropy(logits, y))


def _fit(run: _Run, split: Split, y_train: np.ndarray, n_classes: int, on_epoch: Callable[[EpochReport], None] | None,
         should_stop: Callable[[], bool] | None) -> tuple[dict[str, torch.Tensor], list[EpochReport]]:
    """Train with early stopping on validation macro-F1; returns the best epoch's weights and the history."""
    config, world = run.config, run.world
    order_gen = torch.Generator().manual_seed(config.seed)
    # One process draws order and augmentation from one stream (as the benchmarked runs did);
    # across processes the order must match on every rank and the augmentation must not.
    augment_gen = torch.Generator().manual_seed(config.seed + 7919 * world.rank) if world.distributed else order_gen
    train, val = torch.from_numpy(split.train), torch.from_numpy(split.val)
    weights = _class_weights(y_train, n_classes, config.class_weight_power).to(run.device)
    optimizer = _optimizer(run.net, config)
    steps = config.epochs * len(_batches(train, config.batch_size, world))
    scheduler = _scheduler(optimizer, config, steps)
    first = _first_kept_epoch(config, scheduler)
    best_key, best_state, best_epoch, history = (False, -math.inf, -math.inf), None, 0, []
    start = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        train_loss = compute.mean(
            _train_epoch(run, train, optimizer, scheduler, weights, (order_gen, augment_gen), should_stop), world)
        val_f1, val_loss = _validate(run, val, n_classes)
        # Any epoch that may be kept beats every earlier one; then higher macro-F1, then lower loss.
        key = (epoch >= first, 0.0 if math.isnan(val_f1) else val_f1, 0.0 if math.isnan(val_loss) else -val_loss)
        if key > best_key:
            best_key, best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in run.net.state_dict().items()}
        entry = EpochReport(epoch, config.epochs, train_loss, val_loss, time.monotonic() - start,
                            val_macro_f1=val_f1, lr=optimizer.param_groups[0]["lr"], best_epoch=best_epoch)
        history.append(entry)
        if world.is_main:
            log.info("epoch %d/%d: loss %.4f, val loss %.4f, val macro-F1 %.4f (best epoch %d), %.0f s",
                     epoch, config.epochs, train_loss, val_loss, val_f1, best_epoch, entry.seconds)
            if on_epoch is not None:
                on_epoch(entry)
        if compute.agree(_should_end(entry, config, first), world):
            break
    return best_state, history


def _first_kept_epoch(config: ClsTrainConfig, scheduler: Any) -> int:
    """The first epoch whose model early stopping may keep, and from which it counts its patience.

    Under the one-cycle schedule, validation macro-F1 swings by up to 0.3 from one epoch to the next
    while the rate is high (PBC: 0.93 at epoch 17 of 40, 0.63 at 19), so a lucky epoch there would be
    kept and would stop the run before the rate anneals; only epochs after it has fallen to half its
    peak count. Any epoch counts under a constant rate. Until the first such epoch, the best so far
    is kept (a wall-clock cap may end a run earlier).
    """
    if not isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        return 1
    return max(1, math.ceil(config.epochs * (ONECYCLE_WARMUP + (1 - ONECYCLE_WARMUP) / 2)))


def _should_end(entry: EpochReport, config: ClsTrainConfig, first_kept: int) -> bool:
    """Early stopping (patience, counted from the first epoch that may be kept) or the wall-clock cap."""
    if entry.epoch - max(entry.best_epoch, first_kept) >= config.patience:
        log.info("stopping early: no better validation macro-F1 for %d epochs", config.patience)
        return True
    if config.max_minutes is not None and entry.seconds >= 60 * config.max_minutes:
        log.info("stopping at the %.1f-minute cap", config.max_minutes)
        return True
    return False


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 that minimises validation NLL of softmax(logits / T) (Guo et al. 2017), by LBFGS on log T."""
    if logits.numel() == 0:
        return 1.0
    logits, targets = logits.detach().double(), targets.detach()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    # A clamp: a handful of validation cells could otherwise push T to absurd values.
    return float(log_t.detach().exp().clamp(0.05, 20.0))


@dataclass(frozen=True)
class StartingPoint:
    """A model a retrain may start from: the active classifier's checkpoint and its version."""

    checkpoint: dict[str, Any]
    version: str


# Fine-tuning adapts a model to labels it has not seen while it still knows most of them; when more
# than this share of a run's training cells is new to the active model (a first model trained on a
# handful of cells, then a study's worth of labels), or none is, training starts from scratch.
MAX_NEW_SHARE_TO_FINE_TUNE = 0.5


def fine_tune_base(start: StartingPoint | None, config: ClsTrainConfig, scheme: LabelScheme,
                   new_share: float = 0.0) -> tuple[bool, str]:
    """(whether training starts from `start`'s weights, why, in words).

    `new_share`: the share of the run's training and validation cells the active model never saw.
    """
    if not config.fine_tune.enabled:
        return False, "from scratch (fine-tuning turned off)"
    if start is None:
        return False, "from scratch (no active classifier)"
    checkpoint = start.checkpoint
    differences = [what for what, theirs, ours in (
        ("architecture", checkpoint.get("arch"), config.arch),
        ("input size", checkpoint.get("input_size"), config.input_size),
        ("classes", [c.get("code") for c in (checkpoint.get("scheme") or {}).get("classes", [])], list(scheme.codes)),
        ("colour rule", bool((checkpoint.get("colour") or {}).get("reference")), config.stain_normalise),
    ) if theirs != ours]
    if checkpoint.get("kind") != "classifier" or differences:
        return False, f"from scratch (the active {start.version} differs in {', '.join(differences) or 'kind'})"
    if new_share > MAX_NEW_SHARE_TO_FINE_TUNE:
        return False, f"from scratch ({new_share:.0%} of the training cells are new to the active {start.version})"
    if new_share == 0:  # nothing to adapt to: a click on the same cells asks for a whole new run
        return False, f"from scratch (no training cell is new to the active {start.version})"
    return True, f"fine-tuned from the active {start.version}"


def _new_share(samples: list[CellSample], split: Split, start: StartingPoint | None) -> float:
    """The share of the training and validation cells that `start`'s model did not train on (1.0 if unknown)."""
    if start is None:
        return 1.0
    known = set(start.checkpoint.get("seen_cells") or [])
    used = np.concatenate([split.train, split.val])
    new = sum(1 for i in used if samples[int(i)].cell_id is None or int(samples[int(i)].cell_id) not in known)
    return new / max(len(used), 1)


def train_classifier(samples: Sequence[CellSample | tuple], scheme: LabelScheme,
                     config: ClsTrainConfig = ClsTrainConfig(), on_epoch: Callable[[EpochReport], None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     frozen_test: Collection[int] | None = None,
                     seen: Collection[int] | None = None,
                     start_from: StartingPoint | None = None) -> ClassifierResult:
    """Train a classifier on labelled crops; split, early-stop, calibrate and test it.

    `frozen_test`: cell ids that must be in the test split, so a retrained model is compared with
    the active one on the same cells (issue 6); `seen`: cell ids the active model trained on, so only
    cells new to both can join the test split (splits.py). `start_from`: the active model; when
    `fine_tune_base` allows, training starts from its weights and input scaling with
    `config.fine_tune`'s epochs, rate and slide balance, else from scratch.
    """
    samples = _as_samples(samples)
    if config.input_size < get_arch(config.arch).min_input:
        raise ValueError(f"{config.arch} needs input_size >= {get_arch(config.arch).min_input}; got {config.input_size}.")
    if not 1 <= config.test_views <= MAX_VIEWS:
        raise ValueError(f"test_views must be 1..{MAX_VIEWS}; got {config.test_views}.")
    check_crops(config.test_crops)
    y = _class_indices(samples, scheme)
    check_training_data(y, scheme, config.min_per_class)
    split = _split(samples, y, config, frozen_test, seen)
    warm, origin = fine_tune_base(start_from, config, scheme, _new_share(samples, split, start_from))
    net, normalizer = _starting_net(config, scheme, start_from if warm else None)
    if warm and normalizer is None:
        warm, origin = False, f"from scratch (the active {start_from.version}'s weights could not be loaded)"
    if warm:
        tune = config.fine_tune
        config = dataclasses.replace(config, epochs=min(tune.epochs, config.epochs), lr=tune.lr,
                                     slide_balance_power=tune.slide_balance_power)
    world = compute.current_world()
    device = compute.device(world)
    reference = REFERENCE if config.stain_normalise else None
    raw = stack_squares([square_resize(s.crop, config.input_size) for s in samples])  # (N, 3, S, S) uint8
    colours = _slide_colours(raw, samples, reference)
    images = _in_reference_colour(raw, samples, colours, reference)  # what the network reads
    if normalizer is None:
        normalizer = Normalizer.fit(images[torch.from_numpy(split.train)])
    net = net.to(device, memory_format=memory_format(device))
    run = _Run(net, compute.wrap(net, world), world, images.to(device), torch.from_numpy(y).to(device),
               normalizer, device, config,
               slide_draw([samples[int(i)].group for i in split.train], config.slide_balance_power))
    log.info("training %s %s on %s cells (%s split) on %s%s", config.arch, origin, len(samples), split.kind, device,
             f", rank {world.rank} of {world.size}" if world.distributed else "")
    start = time.monotonic()
    best_state, history = _fit(run, split, y[split.train], len(scheme.codes), on_epoch, should_stop)
    net.load_state_dict(best_state)
    train_seconds = time.monotonic() - start
    classifier = _calibrate(run, split, scheme, y)
    classifier.stain_reference = reference
    warning = _cam_warning(classifier, samples, split, colours)
    classifier.cam_warning, classifier.cam_diffuse = warning["threshold"], bool(warning.get("diffuse"))
    checkpoint = _checkpoint(run, classifier, samples, y, split, history, train_seconds) | {
        "cam_warning": warning, "geometry": {"rule": GEOMETRY_RULE, "margin": CELL_MARGIN},
        "start": {"fine_tuned_from": start_from.version if warm else None, "how": origin},
        "colour": _colour_record(reference, colours)}
    checkpoint["metrics"]["start"] = origin  # the Models view shows how each version began
    train, val = torch.from_numpy(split.train), torch.from_numpy(split.val)
    classifier.ood = checkpoint["ood"] = fit_ood_reference(  # issue 13: slides unlike the training images
        classifier, raw[train], raw[val], [samples[int(i)].group for i in split.val],
        inputs_train=images[train], inputs_val=images[val])
    return ClassifierResult(classifier, checkpoint, history, split)


def _starting_net(config: ClsTrainConfig, scheme: LabelScheme,
                  start: StartingPoint | None) -> tuple[nn.Module, Normalizer | None]:
    """A new network, seeded; with `start`'s weights and input scaling when given and they load, else no scaling."""
    torch.manual_seed(config.seed)
    net = create_model(config.arch, len(scheme.codes))
    if start is None:
        return net, None
    try:  # the weights expect the scaling they were trained with
        net.load_state_dict(start.checkpoint["state_dict"])
        scaling = start.checkpoint["normalizer"]
        return net, Normalizer(tuple(float(v) for v in scaling["mean"]), tuple(float(v) for v in scaling["std"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a damaged or foreign checkpoint
        log.warning("the active %s's weights could not be loaded (%s); training from scratch", start.version, exc)
        torch.manual_seed(config.seed)
        return create_model(config.arch, len(scheme.codes)), None


def _slide_colours(images: torch.Tensor, samples: list[CellSample], reference: StainFit | None) -> dict[str, StainFit]:
    """Each slide's colour fit, on its own cells (one mapping per slide keeps its cells' colours apart)."""
    if reference is None:
        return {}
    groups: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(sample.group, []).append(i)
    return {group: fit_slide_colour(images[torch.tensor(idx)]) for group, idx in groups.items()}


def _in_reference_colour(images: torch.Tensor, samples: list[CellSample], colours: dict[str, StainFit],
                         reference: StainFit | None) -> torch.Tensor:
    """The training squares, each slide normalised with its own fit; as they are without a reference."""
    if reference is None:
        return images
    out = images.clone()
    for group, colour in colours.items():
        idx = torch.tensor([i for i, s in enumerate(samples) if s.group == group])
        out[idx] = normalise_colour(images[idx], reference, colour)
    return out


def _colour_record(reference: StainFit | None, colours: dict[str, StainFit]) -> dict[str, Any] | None:
    """What the checkpoint keeps of the colour normalisation: the method, the reference and the slides' fits."""
    if reference is None:
        return None
    return {"method": ("white balance on the glass, then each channel's optical density scaled to the "
                       "reference's 99th percentile of stained pixels, fitted per slide"),
            "reference": reference.to_dict(), "slides": {g: c.to_dict() for g, c in sorted(colours.items())}}


def _cam_warning(classifier: Classifier, samples: list[CellSample], split: Split,
                 colours: dict[str, StainFit]) -> dict[str, Any]:
    """Calibrate the Grad-CAM outside-nucleus warning on the validation cells (issue 14).

    Validation cells are ones the model did not fit; when fewer than MIN_CAM_CALIBRATION_CELLS of them
    have nucleus masks, training cells make up the number (their CAMs sit, if anything, nearer the
    nucleus, so the threshold errs towards warning more).
    """
    order = [int(i) for i in split.val] + [int(i) for i in split.train]
    with_masks = [i for i in order if samples[i].nucleus is not None]
    n_val = sum(1 for i in split.val if samples[int(i)].nucleus is not None)
    picked = with_masks[:max(n_val, MIN_CAM_CALIBRATION_CELLS)][:CAM_CALIBRATION_CELLS]
    warning = calibrate_cam_warning(classifier, [samples[i].crop for i in picked], [samples[i].nucleus for i in picked],
                                    colours=[colours.get(samples[i].group) for i in picked])
    return warning | {"from": "validation" if len(picked) <= n_val else "validation and training"}


def _calibrate(run: _Run, split: Split, scheme: LabelScheme, y: np.ndarray) -> Classifier:
    val = torch.from_numpy(split.val)
    views, crops = run.config.test_views, check_crops(run.config.test_crops)
    val_logits = forward_logits(run.net, run.images[val.to(run.device)], run.normalizer, run.device,
                                views=views, crops=crops)
    temperature = fit_temperature(val_logits, torch.from_numpy(y[split.val]))
    run.net.eval()
    return Classifier(run.net, run.config.arch, scheme, run.config.input_size, run.normalizer, temperature,
                      device=run.device, views=views, crops=crops)


def _test_metrics(run: _Run, classifier: Classifier, split: Split, y: np.ndarray) -> dict[str, Any]:
    """Table 3 metrics, confusion, NLL and ECE (before and after calibration) on the test split."""
    if split.test.size == 0:
        return {}
    test = torch.from_numpy(split.test).to(run.device)
    logits = forward_logits(classifier.net, run.images[test], classifier.normalizer, classifier.device,
                            views=classifier.views, crops=classifier.crops)
    report = stats.classification_report(y[split.test], calibrated(logits, classifier.temperature), classifier.codes)
    report["ece_uncalibrated"] = stats.expected_calibration_error(y[split.test], calibrated(logits, 1.0))
    report.pop("codes")
    return report


def _checkpoint(run: _Run, classifier: Classifier, samples: list[CellSample], y: np.ndarray, split: Split,
                history: list[EpochReport], train_seconds: float) -> dict[str, Any]:
    """Everything needed to rebuild, use, compare and audit the model (nanoGPT-style single dict)."""
    test_ids, test_hash = split_key(samples, split.test)
    best_epoch = history[-1].best_epoch
    summary = stats.jsonable(_test_metrics(run, classifier, split, y) | {
        "test_split_sha256": test_hash, "split": split.kind, "temperature": classifier.temperature,
        "val_macro_f1": history[best_epoch - 1].val_macro_f1, "best_epoch": best_epoch,
        "epochs_run": len(history), "train_seconds": round(train_seconds, 1),
    })
    return {
        "kind": "classifier", "arch": run.config.arch, "config": run.config.to_dict(),
        "scheme": scheme_to_mapping(classifier.scheme),
        "state_dict": {k: v.detach().cpu() for k, v in classifier.net.state_dict().items()},
        "temperature": classifier.temperature, "input_size": run.config.input_size, "test_views": classifier.views,
        "test_crops": list(classifier.crops),
        "normalizer": {"mean": list(classifier.normalizer.mean), "std": list(classifier.normalizer.std)},
        "metrics": summary, "data": _data_summary(samples, y, split, classifier.codes),
        "test_cells": test_ids, "test_split_sha256": test_hash,
        "seen_cells": sorted(int(samples[i].cell_id) for i in np.concatenate([split.train, split.val])
                             if samples[i].cell_id is not None),
        "history": [dataclasses.asdict(h) for h in history], "torch": str(torch.__version__),
        "trained_on": {"device": run.device.type, "processes": run.world.size},
    }
