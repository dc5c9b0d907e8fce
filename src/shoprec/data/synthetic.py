"""A seeded synthetic shop log: N events and an items table, written as Parquet in chunks.

The measuring instrument of the scale benchmark (`benchmarks/scale.py`): a log with the shape
of a real shop's, of any size, generated in bounded memory (30M events take about the memory
of one chunk plus the per-user and per-item arrays, never the whole log).

Shape of the log:

- users: events per user are lognormal (heavy-tailed: a few very active users, many with a
  handful of events), capped at `max_user_factor` times the mean so no user looks like a bot;
  each user is active over a window of 30 days to the whole year.
- items: Zipf popularity (the item of popularity rank r is drawn with weight r^-item_zipf; ids
  are not in rank order), lognormal prices, categories of Zipf-like sizes, and titles made of
  a brand, an adjective and the category's noun.
- sessions: a user's events fall into sessions (`session_id` "<user>-<n>"), each started at a
  time of day drawn from a daytime and an evening peak, its events seconds to minutes apart;
  after the first item of a session, new items come from the same category with probability
  `category_affinity`, else from the whole catalogue.
- the funnel: a session opens with a view; each later event is an add-to-cart (`cart_rate`), a
  purchase (`purchase_rate`) or a view of a new item. A cart or purchase is of the item of the
  event just before it, so purchases follow views and carts of the same item: views are most
  events, purchases the fewest. Carts and purchases have a quantity of 1 or more.
- time: `days` days from `start` (default the year 2025), in UTC.

The events file is ordered by user (users in id order, each user's events in time order), in
row groups of about `chunk_rows`. Users are generated in blocks of about `BLOCK_EVENTS` events,
each block from its own random stream, so the data depends on the seed and the shape only,
never on the chunk size.

    python -m shoprec.data.synthetic OUT_DIR --events 5M [--seed 0] [--chunk-rows 1M]
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec import schema as S

EVENTS_PER_USER = 50
"""Default scale: users = events / 50 (5M events -> 100k users)."""
EVENTS_PER_ITEM = 100
"""Default scale: items = events / 100 (5M events -> 50k items)."""
ITEMS_PER_CATEGORY = 250
"""Default scale: categories = items / 250, between 5 and 500."""
BLOCK_EVENTS = 1 << 16
"""Users are generated in blocks of about this many events, one random stream per block."""
CHUNK_ROWS = 1_000_000
"""Default rows per write (Parquet row group): the bound on the generator's memory."""

EVENTS_FILE = "events.parquet"
ITEMS_FILE = "items.parquet"

EVENT_SCHEMA = pa.schema([
    pa.field(S.USER_ID, pa.string()),
    pa.field(S.ITEM_ID, pa.string()),
    pa.field(S.EVENT_TYPE, pa.string()),
    pa.field(S.TIMESTAMP, pa.timestamp("ms", tz="UTC")),
    pa.field(S.QUANTITY, pa.int32()),
    pa.field(S.PRICE, pa.float64()),
    pa.field(S.SESSION_ID, pa.string()),
])
"""Columns and types of the events file (the canonical events columns)."""

_TYPES = pa.array([S.VIEW, S.CART, S.PURCHASE])
_DEPARTMENTS = ("Kitchen", "Garden", "Home", "Sports", "Toys", "Beauty", "Office", "Pets",
                "Books", "Music", "Outdoor", "Grocery", "Baby", "Health", "Auto", "Tools",
                "Fashion", "Shoes", "Electronics", "Games")
_KINDS = ("knife", "lamp", "chair", "ball", "puzzle", "cream", "pen", "leash", "novel",
          "speaker", "tent", "coffee", "stroller", "vitamin", "wiper", "drill", "jacket",
          "sneaker", "charger", "console", "mug", "rug", "bottle", "bag", "watch")
_BRANDS = ("Acme", "Nordic", "Vela", "Orbit", "Kestrel", "Lumen", "Pioneer", "Sable", "Tundra",
           "Zenith", "Brio", "Cobalt", "Dune", "Ember", "Fable", "Grove")
_ADJECTIVES = ("classic", "compact", "deluxe", "eco", "essential", "large", "light", "mini",
               "premium", "pro", "smart", "soft", "sturdy", "travel", "vintage", "wireless")


@dataclass(frozen=True)
class ShopShape:
    """What the synthetic log looks like: its size and its distributions.

    Attributes:
        events: rows of the events file.
        users / items / categories: how many (`scaled` derives them from `events`).
        seed: the same seed and shape give the same log, byte for byte.
        start / days: the log covers `days` days from `start` (UTC).
        user_sigma: sigma of the lognormal events per user (larger: heavier tail).
        max_user_factor: no user has more than this many times the mean events per user.
        item_zipf: Zipf exponent of item popularity.
        category_zipf: Zipf exponent of category sizes.
        session_events: mean events per session.
        event_gap_s: mean seconds between two events of a session (at least 1).
        cart_rate / purchase_rate: share of a session's later events that are carts / purchases.
        category_affinity: share of a session's new items taken from its first item's category.
        price_median / price_sigma: items' lognormal price.
    """

    events: int
    users: int
    items: int
    categories: int
    seed: int = 0
    start: str = "2025-01-01"
    days: int = 365
    user_sigma: float = 1.2
    max_user_factor: float = 100.0
    item_zipf: float = 1.0
    category_zipf: float = 0.8
    session_events: float = 6.0
    event_gap_s: float = 45.0
    cart_rate: float = 0.10
    purchase_rate: float = 0.04
    category_affinity: float = 0.6
    price_median: float = 20.0
    price_sigma: float = 0.9

    @classmethod
    def scaled(cls, events: int, users: int | None = None, items: int | None = None,
               seed: int = 0) -> "ShopShape":
        """The default shape for `events` rows: users and items grow with it (see
        `EVENTS_PER_USER`, `EVENTS_PER_ITEM`, `ITEMS_PER_CATEGORY`)."""
        if events < 1:
            raise ValueError(f"events must be at least 1, not {events}")
        users = users or max(1, min(events, max(10, round(events / EVENTS_PER_USER))))
        items = items or max(10, round(events / EVENTS_PER_ITEM))
        categories = min(items, max(5, min(500, round(items / ITEMS_PER_CATEGORY))))
        return cls(events=events, users=users, items=items, categories=categories, seed=seed)

    def __post_init__(self) -> None:
        if not 1 <= self.users <= self.events:
            raise ValueError(f"users must be between 1 and events ({self.events}), not {self.users}")
        if self.items < 1 or not 1 <= self.categories <= self.items:
            raise ValueError(f"need 1 <= categories ({self.categories}) <= items ({self.items})")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, not {self.seed}")
        if self.cart_rate + self.purchase_rate >= 1:
            raise ValueError("cart_rate + purchase_rate must be below 1")


@dataclass(frozen=True)
class SyntheticLog:
    """What `write_shop_log` wrote."""

    events_path: Path
    items_path: Path
    shape: ShopShape
    rows: int
    sessions: int
    chunks: int
    seconds: float


def write_shop_log(directory: str | Path, events: int | ShopShape, *, seed: int = 0,
                   users: int | None = None, items: int | None = None,
                   chunk_rows: int = CHUNK_ROWS) -> SyntheticLog:
    """Write a synthetic shop log: `directory/events.parquet` and `directory/items.parquet`.

    events: the number of events (the shape from `ShopShape.scaled(events, users, items, seed)`),
        or a whole `ShopShape` (then `seed`, `users` and `items` are ignored).
    chunk_rows: rows generated and written at a time; memory stays about one chunk (plus one
        block of `BLOCK_EVENTS`, the per-user and the per-item arrays) whatever the size. The
        data does not depend on it.

    Returns the paths, the shape used, and rows, sessions, chunks written and seconds taken.
    """
    began = time.perf_counter()
    shape = events if isinstance(events, ShopShape) else ShopShape.scaled(events, users, items, seed)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    catalogue = _Catalogue.draw(shape)
    pq.write_table(catalogue.table(), out / ITEMS_FILE)
    counts = _events_per_user(shape)
    start_ms = int(np.datetime64(shape.start, "ms").astype("int64"))
    rows = sessions = chunks = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    events_path = out / EVENTS_FILE
    with pq.ParquetWriter(events_path, EVENT_SCHEMA) as writer:
        for index, (first, stop) in enumerate(_user_blocks(counts)):
            rng = np.random.default_rng([shape.seed, 2, index])
            block, block_sessions = _block(shape, catalogue, first, counts[first:stop], rng, start_ms)
            pending.append(block)
            pending_rows += block.num_rows
            sessions += block_sessions
            while pending_rows >= chunk_rows:
                table = pa.concat_tables(pending)
                writer.write_table(table.slice(0, chunk_rows), row_group_size=chunk_rows)
                rest = table.slice(chunk_rows)
                pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
                rows += chunk_rows
                chunks += 1
        if pending_rows:
            writer.write_table(pa.concat_tables(pending), row_group_size=chunk_rows)
            rows += pending_rows
            chunks += 1
    return SyntheticLog(events_path, out / ITEMS_FILE, shape, rows, sessions, chunks,
                        time.perf_counter() - began)


def parse_count(text: str | int) -> int:
    """A count written as 30000, "30k", "1.5M" or "2G" (k = 1e3, M = 1e6, G = 1e9)."""
    if isinstance(text, int):
        return text
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*", str(text).replace("_", ""))
    if not found:
        raise ValueError(f"not a count: {text!r} (write e.g. 30000, 50k, 1.5M)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[found.group(2).lower()]
    return int(round(float(found.group(1)) * scale))


def format_count(count: int) -> str:
    """30000 -> "30k", 5000000 -> "5M", 1500000 -> "1.5M"; other counts as they are."""
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if count >= scale and (count * 10) % scale == 0:
            return f"{count / scale:g}{suffix}"
    return str(count)


# --- the parts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalogue:
    """Items in category order, with their cumulative popularity for inverse-CDF sampling."""

    ids: pa.Array  # item index -> "i<index>"
    category: np.ndarray  # item index -> category index
    price: np.ndarray  # item index -> price
    titles: list[str]
    category_names: list[str]
    order: np.ndarray  # position in category order -> item index
    cum: np.ndarray  # cumulative popularity share along `order`, ending at 1
    lo: np.ndarray  # category -> popularity share before its first item
    hi: np.ndarray  # category -> popularity share through its last item
    first: np.ndarray  # category -> first position in `order`
    last: np.ndarray  # category -> last position in `order` (first - 1 when empty)

    @staticmethod
    def draw(shape: ShopShape) -> "_Catalogue":
        rng = np.random.default_rng([shape.seed, 1])
        n, c = shape.items, shape.categories
        rank = rng.permutation(n)
        popularity = (rank + 1.0) ** -shape.item_zipf
        sizes = (np.arange(c) + 1.0) ** -shape.category_zipf
        category = rng.choice(c, size=n, p=sizes / sizes.sum())
        category[rng.permutation(n)[:c]] = np.arange(c)  # no empty category
        price = np.round(np.maximum(shape.price_median * np.exp(shape.price_sigma * rng.standard_normal(n)),
                                    0.5), 2)
        order = np.argsort(category, kind="stable")
        cum = np.cumsum(popularity[order])
        cum /= cum[-1]
        bounds = np.searchsorted(category[order], np.arange(c + 1))
        edges = np.concatenate([[0.0], cum])[bounds]
        names = [f"{_DEPARTMENTS[k // len(_KINDS) % len(_DEPARTMENTS)]} / {_KINDS[k % len(_KINDS)]}"
                 + ("" if k < len(_DEPARTMENTS) * len(_KINDS) else f" {k}") for k in range(c)]
        brand = rng.integers(len(_BRANDS), size=n)
        adjective = rng.integers(len(_ADJECTIVES), size=n)
        model = rng.integers(100, 1000, size=n)
        titles = [f"{_BRANDS[b]} {_ADJECTIVES[a]} {_KINDS[k % len(_KINDS)]} {m}"
                  for b, a, k, m in zip(brand.tolist(), adjective.tolist(), category.tolist(), model.tolist())]
        ids = pa.array([f"i{i}" for i in range(n)])
        return _Catalogue(ids, category, price, titles, names, order, cum, edges[:-1], edges[1:],
                          bounds[:-1], bounds[1:] - 1)

    def table(self) -> pa.Table:
        return pa.table({
            S.ITEM_ID: self.ids,
            S.TITLE: pa.array(self.titles),
            S.CATEGORY: pa.array(self.category_names).take(pa.array(self.category)),
            S.PRICE: pa.array(self.price),
        })

    def sample(self, u: np.ndarray, category: np.ndarray | None = None) -> np.ndarray:
        """Items for uniform draws `u`: by popularity, within `category` when given."""
        if category is None:
            position = np.searchsorted(self.cum, u, side="right")
            return self.order[np.minimum(position, len(self.order) - 1)]
        x = self.lo[category] + u * (self.hi[category] - self.lo[category])
        position = np.searchsorted(self.cum, x, side="right")
        return self.order[np.clip(position, self.first[category], self.last[category])]


def _events_per_user(shape: ShopShape) -> np.ndarray:
    """Each user's event count: lognormal weights (capped), summing exactly to `events`."""
    rng = np.random.default_rng([shape.seed, 0])
    weight = np.exp(shape.user_sigma * rng.standard_normal(shape.users))
    weight = np.minimum(weight, shape.max_user_factor * weight.mean())
    extra = shape.events - shape.users
    return 1 + rng.multinomial(extra, weight / weight.sum()) if extra else np.ones(shape.users, np.int64)


def _user_blocks(counts: np.ndarray) -> list[tuple[int, int]]:
    """[first, stop) user ranges of about `BLOCK_EVENTS` events each (a user is never split)."""
    block = (np.cumsum(counts) - 1) // BLOCK_EVENTS
    cuts = (np.flatnonzero(np.diff(block)) + 1).tolist()
    return list(zip([0, *cuts], [*cuts, len(counts)]))


def _block(shape: ShopShape, catalogue: _Catalogue, first_user: int, counts: np.ndarray,
           rng: np.random.Generator, start_ms: int) -> tuple[pa.Table, int]:
    """The events of users first_user .. first_user + len(counts) - 1, and their session count."""
    n_users, n = len(counts), int(counts.sum())
    day_ms = 86_400_000
    # Sessions: how many per user, and when each starts (inside the user's active window,
    # at a daytime or evening hour), in time order within each user.
    per_user = 1 + rng.binomial(counts - 1, 1.0 / shape.session_events)
    total = int(per_user.sum())
    span = np.clip(rng.uniform(0.1, 1.0, n_users) * shape.days, min(30, shape.days), shape.days)
    begin = rng.uniform(0.0, 1.0, n_users) * (shape.days - span)
    owner = np.repeat(np.arange(n_users), per_user)
    day = np.floor(begin[owner] + rng.random(total) * span[owner])
    evening = rng.random(total) < 0.55
    hour = np.where(evening, rng.normal(20.0, 1.5, total), rng.normal(12.5, 3.0, total)) % 24.0
    session_start = (day * day_ms + hour * 3_600_000).astype(np.int64)
    session_start = session_start[np.lexsort((session_start, owner))]
    first_session = np.cumsum(per_user) - per_user

    # Events into sessions: uniformly among a user's sessions, then in order.
    user_of_event = np.repeat(np.arange(n_users), counts)
    session = first_session[user_of_event] + (rng.random(n) * per_user[user_of_event]).astype(np.int64)
    session.sort()
    opens = np.ones(n, dtype=bool)
    opens[1:] = session[1:] != session[:-1]
    gap = 1000.0 + rng.exponential(max(shape.event_gap_s - 1.0, 0.0) * 1000.0, n)  # >= 1 s apart
    gap[opens] = 0.0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[np.flatnonzero(opens)][np.cumsum(opens) - 1]
    stamp = start_ms + session_start[session] + elapsed.astype(np.int64)

    # The funnel: a view opens the session; a cart or purchase is of the item just before it.
    u = rng.random(n)
    kind = np.where(u < shape.cart_rate, 1, np.where(u < shape.cart_rate + shape.purchase_rate, 2, 0))
    kind[opens] = 0
    fresh = kind == 0
    group_opens = opens[fresh]
    items = catalogue.sample(rng.random(len(group_opens)))
    opener = np.maximum.accumulate(np.where(group_opens, np.arange(len(group_opens)), 0))
    related = catalogue.sample(rng.random(len(group_opens)), catalogue.category[items[opener]])
    affine = ~group_opens & (rng.random(len(group_opens)) < shape.category_affinity)
    items = np.where(affine, related, items)
    item = items[np.cumsum(fresh) - 1]
    quantity = np.where(kind > 0, 1 + rng.poisson(0.3, n), 1).astype(np.int32)

    owner_of_event = owner[session]
    user_ids = pa.array([f"u{first_user + i}" for i in range(n_users)])
    session_ids = pa.array([f"u{first_user + o}-{s - f}" for o, s, f in
                            zip(owner.tolist(), range(total), first_session[owner].tolist())])
    table = pa.table({
        S.USER_ID: user_ids.take(pa.array(owner_of_event)),
        S.ITEM_ID: catalogue.ids.take(pa.array(item)),
        S.EVENT_TYPE: _TYPES.take(pa.array(kind)),
        S.TIMESTAMP: pa.array(stamp, type=pa.timestamp("ms", tz="UTC")),
        S.QUANTITY: pa.array(quantity),
        S.PRICE: pa.array(catalogue.price[item]),
        S.SESSION_ID: session_ids.take(pa.array(session)),
    }, schema=EVENT_SCHEMA)
    return table, int(np.count_nonzero(opens))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic shop log (events + items Parquet).")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--events", type=parse_count, default=1_000_000, help="e.g. 50k, 5M [1M]")
    parser.add_argument("--users", type=parse_count, default=None, help=f"[events / {EVENTS_PER_USER}]")
    parser.add_argument("--items", type=parse_count, default=None, help=f"[events / {EVENTS_PER_ITEM}]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-rows", type=parse_count, default=CHUNK_ROWS)
    args = parser.parse_args(argv)
    log = write_shop_log(args.out, args.events, seed=args.seed, users=args.users, items=args.items,
                         chunk_rows=args.chunk_rows)
    shape = log.shape
    print(f"{log.rows:,} events ({shape.users:,} users, {shape.items:,} items, {log.sessions:,} sessions) "
          f"in {log.chunks} chunks, {log.seconds:.1f} s: {log.events_path}, {log.items_path}")


if __name__ == "__main__":
    main()

