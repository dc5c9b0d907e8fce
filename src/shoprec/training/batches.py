"""Training windows and batches cut from per-user item sequences (see shoprec.sequences)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shoprec.sequences import PAD, Batch


def training_windows(sequences: Sequence[np.ndarray], max_len: int, crops: str = "all") -> np.ndarray:
    """Left-padded windows of `max_len + 1` items: inputs are w[:-1], targets w[1:].

    crops="last": one window per user, its most recent items (the SASRec default).
    crops="all": the whole sequence cut from the end into windows that share one boundary
    item, so every transition is a target exactly once per epoch (long histories are not
    thrown away, which matters on ML-1M where the longest user has 2,277 items).
    """
    if crops not in ("all", "last"):
        raise ValueError(f"crops must be 'all' or 'last', not {crops!r}")
    width = max_len + 1
    rows: list[np.ndarray] = []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            start = max(0, end - width)
            rows.append(seq[start:end])
            if crops == "last":
                break
            end = start + 1  # the next window ends on this window's first item
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, width - len(row):] = row
    return out


@dataclass
class ContextBatch(Batch):
    """A `Batch` with `context_rows` [B, L]: for each target, the row of the user-context
    table (`training.loop.UserContextData`) that holds its point-in-time user context (0: none)."""

    context_rows: torch.Tensor

    def to(self, device: torch.device) -> "ContextBatch":
        return ContextBatch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                            self.context_rows.to(device, non_blocking=True))


def window_batches(
    windows: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    rank: int = 0,
    world_size: int = 1,
    context_windows: np.ndarray | None = None,
    by_length: bool = True,
) -> Iterator[Batch]:
    """Batches of similar-length windows in random order, trimmed of all-padding columns.

    by_length=False: batches of windows drawn at random (a shuffled DataLoader, as SASRec+'s
    reference code), wider on average. The loss is a mean over a batch's targets and every
    batch is one step, so with batches of similar lengths a short window's targets weigh far
    more than a long one's (ML-1M, one window per user: the shortest quarter of users gets
    26% of the gradient instead of 6.5%); random batches weigh every target about equally.

    Under DDP every rank draws the same global batches (same rng seed) and takes its own
    slice of each, so N processes see exactly the data one process would, per step.
    context_windows: `training_windows` of the sequences' context rows (the same shape as
    `windows`): the batches are then `ContextBatch`es, in the same order as without them.
    """
    lengths = (windows != PAD).sum(1)
    # Shuffle, then sort by length inside blocks of 50 batches: random but few padded columns.
    order = rng.permutation(len(windows))
    block = batch_size * 50
    for s in range(0, len(order), block) if by_length else ():
        part = order[s:s + block]
        order[s:s + block] = part[np.argsort(-lengths[part], kind="stable")]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    for b in rng.permutation(len(batches)):
        rows = batches[b]
        mine = np.array_split(rows, world_size)[rank]
        if len(mine) == 0:
            mine = rows[:1]  # keep DDP in step: every rank must run every step
        chunk = windows[mine]
        # Trim columns that are padding in every row, but keep them aligned at the right end.
        width = int((chunk != PAD).sum(1).max())
        chunk = chunk[:, chunk.shape[1] - width:]
        inputs = chunk[:, :-1]
        targets = np.where(inputs == PAD, PAD, chunk[:, 1:])
        if context_windows is None:
            yield Batch(torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(targets)))
            continue
        # The context of the target at column j is that of the event w[j + 1] (the one predicted).
        rows_of = context_windows[mine][:, context_windows.shape[1] - width + 1:]
        rows_of = np.where(targets == PAD, 0, rows_of)
        yield ContextBatch(torch.from_numpy(np.ascontiguousarray(inputs)),
                           torch.from_numpy(np.ascontiguousarray(targets)),
                           torch.from_numpy(np.ascontiguousarray(rows_of)))
