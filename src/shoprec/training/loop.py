"""The training loop: Adam on `model.loss`, validation NDCG@10 each epoch, early stopping,
the best weights kept, a progress bar and one progress line per epoch (epoch of the planned
number, validation NDCG@10, time left: `progress_line`); DDP when launched by torchrun (gloo on
CPU, NCCL on GPU)."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from tqdm.auto import tqdm

from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet
from shoprec.models.base import Recommender
from shoprec.models.contextual import WithUserContext
from shoprec.training.batches import ContextBatch, training_windows, window_batches
from shoprec.training.device import (
    autocast, choose_device, release_freed_cpu_memory, seed_everything, tune_cpu_allocator, use_bf16,
)


@dataclass
class TrainConfig:
    """How to train. `budget_minutes` stops before an epoch that would not fit in the budget."""

    max_epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # validations without a new best before stopping
    # "constant", or "cosine": linear warm-up over `warmup` of the run, then a cosine decay
    # to `min_lr_ratio` x the rate at the end of the run, the end being `max_epochs` or, with a
    # budget, the epochs that fit in it (re-estimated after every epoch).
    schedule: str = "constant"
    warmup: float = 0.03
    min_lr_ratio: float = 0.02
    eval_every: int = 1  # epochs between validations
    budget_minutes: float | None = None
    seed: int = 0
    crops: str = "all"  # see training.data.training_windows
    # "length": batches of similar-length windows (fewer padded columns); "random": batches of
    # windows drawn at random, every target weighing about the same (see window_batches).
    batching: str = "length"
    amp: str = "auto"  # see training.device.use_bf16
    # Where seen items are never recommended (the data's exclude-seen policy: films, not
    # groceries), each position's softmax leaves out the other items of its training window,
    # as the reference SASRec+ draws its 3,000 negatives outside the user's sequence (ML-1M:
    # NDCG@10 0.1857 against 0.1821 with the full softmax): evaluation never ranks them, so
    # training need not push them down. Full softmax only (SASRec `leave_out_window`).
    loss_leaves_out_seen: bool = False
    device: str | None = None
    progress: bool = True
    checkpoint_dir: str | None = None  # also keep the best weights on disk (best.safetensors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scheduled_rate(config: TrainConfig, progress: float) -> float:
    """The learning rate at `progress` (0..1) through the run under `config.schedule`."""
    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule != "cosine":
        raise ValueError(f"schedule must be 'constant' or 'cosine', not {config.schedule!r}")
    progress = min(max(progress, 0.0), 1.0)
    if config.warmup > 0 and progress < config.warmup:
        return config.learning_rate * max(progress / config.warmup, 0.01)
    decay = (progress - config.warmup) / max(1e-9, 1.0 - config.warmup)
    floor = config.min_lr_ratio
    return config.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * decay)))


def planned_epochs(config: TrainConfig, epochs_done: int, elapsed: float) -> int:
    """How many epochs the run will have: `max_epochs`, or fewer where the budget ends first
    (estimated from the mean epoch so far, validation included)."""
    if config.budget_minutes is None or epochs_done == 0:
        return config.max_epochs
    mean_epoch = elapsed / epochs_done
    fit = epochs_done + int((config.budget_minutes * 60.0 - elapsed) // mean_epoch)
    return max(epochs_done, min(config.max_epochs, fit))


@dataclass
class TrainResult:
    """What happened: best epoch and score, time, device, why it stopped, per-epoch log."""

    best_epoch: int
    best_valid_ndcg: float
    epochs: int
    seconds: float
    seconds_per_epoch: float
    device: str
    bf16: bool
    world_size: int
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UserContextData:
    """The user context of a run (`features.user_context`): `table` [E+1, F] float32, one row
    per training-set event (row 0: zeros, for padding); `train_rows` parallel to the training
    sequences (element j: the table row of that event's point-in-time context); `valid` [V, F]:
    the context of each validation target."""

    table: torch.Tensor
    train_rows: Sequence[np.ndarray]
    valid: np.ndarray


def distributed_context() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed was initialised (see training.ddp)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(
    model: Recommender,
    train_sequences: Sequence[np.ndarray],
    valid: EvalSet,
    config: TrainConfig,
    exclude_seen: bool,
    k: int = 10,
    context: UserContextData | None = None,
) -> TrainResult:
    """Train `model` in place and leave it holding its best-validation weights (on CPU).
    context: the user context of every target (a SASRec built with `user_features`)."""
    if not model.trainable:
        raise ValueError(f"{model.kind} is fit in closed form (call .fit), not trained")
    if config.batching not in ("length", "random"):
        raise ValueError(f"batching must be 'length' or 'random', not {config.batching!r}")
    if config.loss_leaves_out_seen and not exclude_seen:
        raise ValueError("loss_leaves_out_seen is for data whose seen items are never recommended "
                         "(exclude_seen); here they are recommended again, so the loss must rank them")
    rank, world = distributed_context()
    device = choose_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    bf16 = use_bf16(device, config.amp)
    if device.type == "cpu":
        tune_cpu_allocator()
    seed_everything(config.seed + rank)  # dropout differs per rank; data order does not
    model.to(device).train()
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    prepare = getattr(model, "prepare_training", None)
    if callable(prepare):
        prepare(train_sequences)  # e.g. SASRec's sampled softmax draws negatives by training counts
    windows = training_windows(train_sequences, model.max_len, config.crops)  # type: ignore[attr-defined]
    # The same cuts of the context rows (equal lengths): window for window, element for element.
    context_windows = None if context is None else \
        training_windows(context.train_rows, model.max_len, config.crops)  # type: ignore[attr-defined]
    context_table = None if context is None else context.table.to(device)
    scored = model if context is None else WithUserContext(model, valid.histories, context.valid)
    data_rng = np.random.default_rng(config.seed)  # identical on every rank
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    stale, stopped, started = 0, "max_epochs", time.perf_counter()
    budget = None if config.budget_minutes is None else config.budget_minutes * 60.0
    epoch = 0
    n_batches = math.ceil(len(windows) / config.batch_size)
    # A first guess from the budget is impossible before one epoch is timed: plan for
    # max_epochs (warm-up only touches the first few percent) and re-plan after each epoch.
    total_epochs = _agree(planned_epochs(config, 0, 0.0), world)
    step = 0
    for epoch in range(1, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        bar = tqdm(
            window_batches(windows, config.batch_size, data_rng, rank, world, context_windows,
                           by_length=config.batching == "length"),
            total=n_batches, desc=f"epoch {epoch}", leave=False,
            disable=not config.progress or rank != 0, mininterval=2.0,
        )
        losses = []
        cut_short = False
        for batch in bar:
            if budget is not None and step % BUDGET_CHECK_STEPS == 0 and losses and \
                    _agree(int(time.perf_counter() - started > budget), world):
                # The budget ends inside this epoch (one epoch of a large log can outlast the
                # whole budget): validate what was learnt so far and stop. Checked every few
                # steps, rank 0's clock for all ranks, so every rank leaves at the same step.
                cut_short = True
                break
            rate = scheduled_rate(config, step / max(1, total_epochs * n_batches))
            for group in optimizer.param_groups:
                group["lr"] = rate
            step += 1
            batch = batch.to(device)
            with autocast(device, bf16):
                options = {"leave_out_window": True} if config.loss_leaves_out_seen else {}
                if isinstance(batch, ContextBatch) and context_table is not None:
                    loss = net(batch.inputs, batch.targets, context_table[batch.context_rows], **options)
                else:
                    loss = net(batch.inputs, batch.targets, **options)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if len(losses) % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        bar.close()
        log = {"epoch": epoch, "steps": len(losses), "loss": float(np.mean(losses)) if losses else float("nan"),
               "train_seconds": time.perf_counter() - epoch_start,
               "learning_rate": optimizer.param_groups[0]["lr"]}
        if epoch % config.eval_every == 0 or epoch == config.max_epochs or cut_short:
            score = _validate(scored, valid, exclude_seen, k, rank, world, device, log)
            if score > best_score:
                best_score, best_epoch, stale = score, epoch, 0
                best_state = {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}
                if config.checkpoint_dir and rank == 0:
                    Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
                    save_file(best_state, str(Path(config.checkpoint_dir) / "best.safetensors"))
            else:
                stale += 1
        if device.type == "cpu":
            release_freed_cpu_memory()  # the allocator keeps some freed memory per step, never across epochs
        log["seconds"] = time.perf_counter() - epoch_start
        history.append(log)
        if config.progress and rank == 0:
            elapsed = time.perf_counter() - started
            # A plain line per epoch, flushed: a pipeline step's log (and `shoprec run`) shows
            # it as it happens, where the bar alone would be a silent spinner.
            tqdm.write(progress_line(epoch, planned_epochs(config, epoch, elapsed), log, elapsed, config,
                                     best_score, best_epoch, k), file=sys.stdout)
            sys.stdout.flush()
        if cut_short:
            stopped = "budget"
            break
        if stale >= config.patience:
            stopped = "early_stopping"
            break
        elapsed = time.perf_counter() - started
        mean_epoch = elapsed / epoch
        if budget is not None and elapsed + mean_epoch > budget:
            stopped = "budget"
            break
        if config.schedule != "constant" and epoch >= total_epochs:
            stopped = "schedule_end"  # the learning rate has decayed: more epochs would not move
            break
        # Rank 0's clock decides for all ranks, so their learning rates never differ.
        total_epochs = _agree(planned_epochs(config, epoch, elapsed), world)
    seconds = time.perf_counter() - started
    model.to("cpu")
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        best_epoch=best_epoch, best_valid_ndcg=best_score, epochs=epoch, seconds=seconds,
        seconds_per_epoch=float(np.mean([h["train_seconds"] for h in history])) if history else 0.0,
        device=str(device), bf16=bf16, world_size=world, stopped=stopped, history=history,
    )


PROGRESS_PREFIX = "[train]"  # the start of every progress line (`shoprec run` looks for it)


def progress_line(epoch: int, planned: int, log: dict[str, float], elapsed: float, config: TrainConfig,
                  best_score: float, best_epoch: int, k: int = 10) -> str:
    """One epoch's progress as people read it: epoch of the planned number, loss, validation
    NDCG@k and HR@k, the best so far, the time spent and the time left at most (the budget's
    end, or the planned epochs at the mean epoch time; early stopping may end it sooner)."""
    mean_epoch = elapsed / max(epoch, 1)
    left = max(0.0, (planned - epoch) * mean_epoch)
    if config.budget_minutes is not None:
        left = min(left, max(0.0, config.budget_minutes * 60.0 - elapsed))
    valid = (f" valid NDCG@{k} {log['valid_ndcg']:.4f} HR@{k} {log['valid_hr']:.4f}"
             f" (best {best_score:.4f} @ {best_epoch})" if "valid_ndcg" in log else "")
    return (f"{PROGRESS_PREFIX} epoch {epoch}/{planned} loss {log['loss']:.4f}{valid}"
            f" | {log['seconds']:.1f}s/epoch, {_clock(elapsed)} spent, at most {_clock(left)} left"
            f"{' *' if best_epoch == epoch else ''}")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s"


BUDGET_CHECK_STEPS = 20  # how often (training steps) the budget is checked inside an epoch


def _agree(value: int, world: int) -> int:
    """Rank 0's `value` on every rank (the value itself when not distributed)."""
    if world == 1:
        return value
    shared = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        shared = shared.cuda()
    dist.broadcast(shared, src=0)
    return int(shared.item())


def _validate(
    model: Recommender, valid: EvalSet, exclude_seen: bool, k: int, rank: int, world: int,
    device: torch.device, log: dict[str, float],
) -> float:
    """Rank 0 computes validation NDCG@k and HR@k; every rank receives the same NDCG so all
    take the same early-stopping decision."""
    result = torch.zeros(2, dtype=torch.float64)
    if rank == 0:
        ranks, _ = rank_targets(model, valid, exclude_seen, k)
        result[0] = float(M.ndcg_at_k(ranks, k).mean()) if len(ranks) else 0.0
        result[1] = float(M.hit_rate_at_k(ranks, k).mean()) if len(ranks) else 0.0
    if world > 1:
        shared = result.to(device) if dist.get_backend() == "nccl" else result
        dist.broadcast(shared, src=0)
        result = shared.cpu()
    log["valid_ndcg"], log["valid_hr"] = float(result[0]), float(result[1])
    return float(result[0])
