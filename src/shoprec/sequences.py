"""Core sequence types below models, training and evaluation: the item vocabulary, padding,
per-user item sequences and the (inputs, targets) batch every model trains on.

Items are indexed 1..N; index 0 is padding everywhere (inputs, targets, score columns).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shoprec import schema as S
from shoprec.config import SESSION_GAP
from shoprec.errors import DataSourceError

PAD = 0


@dataclass(frozen=True)
class ItemVocab:
    """The item catalogue as a fixed order: item id (text) <-> index 1..N (0 is padding)."""

    ids: tuple[str, ...]

    @property
    def n_items(self) -> int:
        return len(self.ids)

    @cached_property
    def _positions(self) -> dict[str, int]:
        # Built once per vocabulary: serving looks up a few hundred ids per request, where a
        # dict is ~10x faster than rebuilding a pandas Index of the whole catalogue each time.
        return {item: n + 1 for n, item in enumerate(self.ids)}

    def index(self, item_ids: Sequence[object] | pd.Series | np.ndarray) -> np.ndarray:
        """Indices of `item_ids` (as text); unknown items get 0 (padding)."""
        if len(item_ids) > 10_000:  # whole event tables: pandas' vectorised hash join
            positions = pd.Index(self.ids).get_indexer(pd.Series(item_ids, dtype="object").astype(str))
            return (positions + 1).astype(np.int64)  # -1 (unknown) becomes 0
        lookup = self._positions
        return np.fromiter((lookup.get(str(i), PAD) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def item_ids(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Item ids of indices 1..N."""
        return [self.ids[int(i) - 1] for i in indices]

    def write(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps({"item_ids": list(self.ids)}))
        return Path(path)

    @staticmethod
    def read(path: str | Path) -> "ItemVocab":
        return ItemVocab(tuple(json.loads(Path(path).read_text())["item_ids"]))


def build_vocab(events: pd.DataFrame, items: pd.DataFrame | None = None) -> ItemVocab:
    """Every item of the items table (so items without interactions get an index), then any
    further item seen in the events, each in sorted text order."""
    if S.ITEM_ID not in events:
        raise DataSourceError(f"events frame has no '{S.ITEM_ID}' column: {list(events.columns)}")
    known: list[str] = []
    if items is not None and S.ITEM_ID in items:
        known = sorted(pd.unique(items[S.ITEM_ID].astype(str)))
    extra = sorted(set(pd.unique(events[S.ITEM_ID].astype(str))) - set(known))
    return ItemVocab(tuple(known + extra))


@dataclass
class Sequences:
    """Per-user item sequences in time order: `users[i]` bought/viewed `items[i]` (indices)."""

    users: np.ndarray  # [U] user ids as text
    items: list[np.ndarray]  # U arrays of int64 item indices, oldest first

    def __len__(self) -> int:
        return len(self.users)


def build_sequences(events: pd.DataFrame, vocab: ItemVocab) -> Sequences:
    """Sort events by (user, time) - stable, so ties keep their file order - and split per user.

    Events of items outside the vocabulary are dropped (they cannot be scored)."""
    missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in events]
    if missing:
        raise DataSourceError(f"events frame lacks column(s) {missing}: {list(events.columns)}")
    keys = [S.USER_ID, S.TIMESTAMP] if S.TIMESTAMP in events else [S.USER_ID]
    frame = events.assign(**{S.USER_ID: events[S.USER_ID].astype(str)}).sort_values(
        keys, kind="stable"
    )
    index = vocab.index(frame[S.ITEM_ID].to_numpy())
    users = frame[S.USER_ID].to_numpy()
    keep = index != PAD
    index, users = index[keep], users[keep]
    if len(index) == 0:
        return Sequences(np.array([], dtype=object), [])
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    parts = np.split(index, starts[1:])
    return Sequences(users[starts], parts)


class SequenceViews(Sequence[np.ndarray]):
    """User i's items as `views[i]`: a read-only slice of one flat array (no copy), oldest first."""

    __slots__ = ("flat", "offsets")

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat, self.offsets = flat, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        row = int(i)
        if row < 0:
            row += n
        if not 0 <= row < n:
            raise IndexError(f"sequence {i} out of range for {n} users")
        return self.flat[self.offsets[row]:self.offsets[row + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        flat, bounds = self.flat, self.offsets.tolist()
        for start, stop in zip(bounds[:-1], bounds[1:]):
            yield flat[start:stop]


@dataclass
class FlatSequences:
    """Per-user item sequences in one flat array: user `users[i]`'s items (indices, oldest first)
    are `flat[offsets[i]:offsets[i + 1]]`, a view.

    The same contract as `Sequences` (`len`, `users`, `items[i]`, iteration over `items`), so
    splits, baselines and training windows take either; built from the same events they hold
    exactly what `build_sequences` does. Items are int32 (4 bytes an event, no per-user array
    objects), and `save` / `load` keep them as .npy files that load memory-mapped.

    rows: optional, for each flat item the position of its event in the events frame it was
    built from (`from_events(..., with_rows=True)`), to carry other columns along.
    """

    users: np.ndarray  # [U] user ids as text, in sorted order
    flat: np.ndarray  # [total] int32 item indices, user by user
    offsets: np.ndarray  # [U + 1] int64: user i's items are flat[offsets[i]:offsets[i + 1]]
    rows: np.ndarray | None = None  # [total] int64 event positions, when asked for

    FILES = ("items.npy", "offsets.npy", "users.npy")

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.users) + 1 or (len(self.offsets) and self.offsets[-1] != len(self.flat)):
            raise DataSourceError(f"flat sequences: {len(self.users)} users need {len(self.users) + 1} "
                                  f"offsets ending at {len(self.flat)}, got {len(self.offsets)}")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def items(self) -> SequenceViews:
        return SequenceViews(self.flat, self.offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, keep: np.ndarray) -> "FlatSequences":
        """Only the flat items where `keep` is true (order kept); users left without any are dropped."""
        keep = np.asarray(keep, dtype=bool)
        kept = _offsets(keep)  # kept items before each flat position
        counts = kept[self.offsets[1:]] - kept[self.offsets[:-1]]
        present = counts > 0
        rows = None if self.rows is None else self.rows[keep]
        return FlatSequences(self.users[present], self.flat[keep], _offsets(counts[present]), rows)

    def save(self, directory: str | Path) -> Path:
        """Write items.npy (int32), offsets.npy (int64) and users.npy (fixed-width text) under
        `directory`; `load` reads them back memory-mapped."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        users = np.asarray(self.users, dtype=str) if len(self.users) else np.zeros(0, dtype="<U1")
        for name, array in zip(self.FILES, (np.asarray(self.flat, np.int32), np.asarray(self.offsets, np.int64), users)):
            np.save(out / name, array, allow_pickle=False)
        return out

    @staticmethod
    def load(directory: str | Path, mmap: bool = True) -> "FlatSequences":
        """The sequences `save` wrote; with `mmap` (default) the arrays are read-only memory maps:
        only the pages read are in memory, and processes share them."""
        root = Path(directory)
        missing = [name for name in FlatSequences.FILES if not (root / name).is_file()]
        if missing:
            raise DataSourceError(f"no flat sequences in {root}: {missing} missing")
        mode = "r" if mmap else None
        flat, offsets, users = (np.load(root / name, mmap_mode=mode, allow_pickle=False) for name in FlatSequences.FILES)
        return FlatSequences(users, flat, offsets)

    @staticmethod
    def from_events(events: pd.DataFrame, vocab: ItemVocab, with_rows: bool = False) -> "FlatSequences":
        """`build_sequences` into flat arrays: events sorted by (user, time), stable (ties keep
        their order in the frame), events of items outside the vocabulary dropped.

        Only the key columns are sorted (user codes, times), never a copy of the frame."""
        missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in events]
        if missing:
            raise DataSourceError(f"events frame lacks column(s) {missing}: {list(events.columns)}")
        codes, names = pd.factorize(events[S.USER_ID].astype(str).to_numpy(), sort=True)
        order = _user_time_order(codes, events[S.TIMESTAMP] if S.TIMESTAMP in events else None)
        index = vocab.index(events[S.ITEM_ID].to_numpy())[order]
        known = index != PAD
        order = order[known]
        counts = np.bincount(codes[order], minlength=len(names))
        present = counts > 0
        return FlatSequences(np.asarray(names, dtype=object)[present], index[known].astype(np.int32),
                             _offsets(counts[present]), order.astype(np.int64, copy=False) if with_rows else None)

    @staticmethod
    def from_parquet(
        path: str | Path, vocab: ItemVocab, directory: str | Path, memory_limit: str = "1GB",
        batch_rows: int = 1 << 20,
    ) -> "FlatSequences":
        """Build from an events Parquet file (or a glob of them) in bounded memory: DuckDB sorts by
        (user, time, row in file) under `memory_limit` (spilling to disk beyond it) and keeps
        the vocabulary's items; the items stream into `directory`/items.npy in batches. Returns
        `load(directory)`: the same histories `from_events` builds from the same events.

        The order is that of `build_sequences`: users by their id as text, each user's events by
        time, ties in file order (one file, or files in the order DuckDB lists them)."""
        import duckdb
        import pyarrow as pa

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with duckdb.connect() as con:
            con.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
            spill = str(out / ".spill").replace("'", "''")
            con.execute(f"SET temp_directory = '{spill}'")
            con.execute("SET preserve_insertion_order = true")
            con.register("vocab", pa.table({"item": pa.array(vocab.ids, pa.string()),
                                            "idx": pa.array(np.arange(1, vocab.n_items + 1, dtype=np.int32))}))
            columns = {row[0] for row in con.execute("SELECT name FROM parquet_schema(?)", [str(path)]).fetchall()}
            missing = [c for c in (S.USER_ID, S.ITEM_ID) if c not in columns]
            if missing:
                raise DataSourceError(f"events file {path} lacks column(s) {missing}")
            time_key = f'e."{S.TIMESTAMP}", ' if S.TIMESTAMP in columns else ""
            source = (f"FROM read_parquet(?, file_row_number = true, filename = true) e "
                      f'JOIN vocab v ON CAST(e."{S.ITEM_ID}" AS VARCHAR) = v.item')
            user = f'CAST(e."{S.USER_ID}" AS VARCHAR)'
            total = int(con.execute(f"SELECT count(*) {source}", [str(path)]).fetchall()[0][0])
            flat = np.lib.format.open_memmap(out / FlatSequences.FILES[0], mode="w+", dtype=np.int32, shape=(total,))
            # A relation streams its batches (a DB-API result would copy every row to Arrow first).
            result = con.sql(
                f"SELECT {user} AS u, v.idx AS i {source} ORDER BY u, {time_key}e.filename, e.file_row_number",
                params=[str(path)],
            )
            reader = (getattr(result, "to_arrow_reader", None) or result.fetch_record_batch)(batch_rows)
            users: list[str] = []
            counts: list[int] = []
            at = 0
            for batch in reader:
                chunk_users = batch.column(0).to_numpy(zero_copy_only=False)
                flat[at:at + len(batch)] = batch.column(1).to_numpy(zero_copy_only=False)
                at += len(batch)
                starts = np.flatnonzero(np.r_[True, chunk_users[1:] != chunk_users[:-1]])
                sizes = np.diff(np.r_[starts, len(chunk_users)])
                for start, size in zip(starts.tolist(), sizes.tolist()):
                    name = str(chunk_users[start])
                    if users and users[-1] == name:
                        counts[-1] += size  # the user goes on from the previous batch
                    else:
                        users.append(name)
                        counts.append(size)
            flat.flush()
            del flat
        if at != total:
            raise DataSourceError(f"read {at} events of {total} from {path}")
        users_array = np.asarray(users, dtype=str) if users else np.zeros(0, dtype="<U1")
        np.save(out / FlatSequences.FILES[1], _offsets(np.asarray(counts, dtype=np.int64)), allow_pickle=False)
        np.save(out / FlatSequences.FILES[2], users_array, allow_pickle=False)
        shutil.rmtree(out / ".spill", ignore_errors=True)
        return FlatSequences.load(out)




def session_starts(events: pd.DataFrame, rows: np.ndarray, offsets: np.ndarray,
                   gap: pd.Timedelta = SESSION_GAP) -> np.ndarray:
    """[len(rows)] bool: True where the event at `rows[j]` of `events` opens a session.

    `rows` and `offsets` are a `FlatSequences`' event positions and user offsets (each user's
    events in time order). Every user's first event opens one; after that a change of
    `session_id` where the log has one, else a gap of more than `gap` since the user's
    previous event (also where a session id is missing). Session ids are compared as
    factorized codes (8 bytes an event, never a column of Python strings)."""
    starts = np.zeros(len(rows), dtype=bool)
    starts[offsets[:-1][offsets[:-1] < len(rows)]] = True
    if len(rows) < 2:
        return starts
    by_gap = np.zeros(len(rows), dtype=bool)
    if S.TIMESTAMP in events:
        # In nanoseconds whatever the column's unit (a millisecond column's asi8 counts ms).
        nanos = pd.DatetimeIndex(pd.to_datetime(events[S.TIMESTAMP], utc=True)).as_unit("ns").asi8[rows]
        by_gap[1:] = (nanos[1:] - nanos[:-1]) > gap.value
    codes = pd.factorize(events[S.SESSION_ID])[0][rows] if S.SESSION_ID in events else None
    if codes is not None and (codes >= 0).any():
        known = codes >= 0  # -1: no session id on that event
        changed = np.zeros(len(rows), dtype=bool)
        changed[1:] = codes[1:] != codes[:-1]
        both = np.zeros(len(rows), dtype=bool)
        both[1:] = known[1:] & known[:-1]
        starts |= np.where(both, changed, by_gap)
    else:
        starts |= by_gap
    return starts


def keep_with_openings(items: np.ndarray, starts: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items[keep], their session openings): an opening on a dropped item moves to the next
    kept item of the same session (a session still opens where its first known item is), and
    a session whose items are all dropped leaves no mark. A first kept item that continues a
    session opened before the given span stays a continuation (False)."""
    items, starts, keep = np.asarray(items), np.asarray(starts, dtype=bool), np.asarray(keep, dtype=bool)
    if len(starts) != len(items) or len(keep) != len(items):
        raise ValueError(f"{len(items)} items, {len(starts)} session openings and {len(keep)} keep flags must align")
    session = np.cumsum(starts)[keep]  # the session each kept item belongs to (0: before any opening)
    opened = np.diff(np.concatenate(([0], session))) > 0
    return items[keep], opened


def _user_time_order(codes: np.ndarray, times: pd.Series | None) -> np.ndarray:
    """Positions in the order of pandas' stable sort by (user, time), NaT last, as
    `build_sequences` sorts: `codes` rank the users as text. Datetimes sort as integers
    (np.lexsort is stable), any other time column through pandas on the two key columns."""
    if times is None:
        return np.argsort(codes, kind="stable")
    if pd.api.types.is_datetime64_any_dtype(times.dtype):
        stamps = times.array
        return np.lexsort((stamps.asi8, stamps.isna(), codes))  # last key first
    keys = pd.DataFrame({"user": codes, "time": times.array})
    return keys.sort_values(["user", "time"], kind="stable").index.to_numpy()


def _offsets(counts: np.ndarray) -> np.ndarray:
    """[0, c0, c0 + c1, ...]: where each run starts, and the total at the end (int64)."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


@dataclass
class Batch:
    """inputs [B, L] and targets [B, L], left-padded with 0; a target is 0 where there is none."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))


def pad_histories(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """The last `max_len` items of each history, left-padded: [B, max_len or shorter]."""
    width = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), width), dtype=np.int64)
    for i, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-width:]
        if len(tail):
            out[i, width - len(tail):] = tail
    return torch.from_numpy(out)
