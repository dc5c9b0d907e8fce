"""Benchmark (issue 18, items 2-4): what the list policies cost, on real data.

- Sponsored slots: NDCG@10 of the lists shown with up to 2 sponsored slots at several relevance
  floors, against the organic lists (paired, 95% bootstrap interval), on ML-100K (ItemKNN,
  leave-one-out, seen items excluded) and the Instacart sample (the time-decayed frequency,
  tuned on held-out training items, leave-one-out, past items kept). Candidates are simulated:
  20 per user drawn uniformly from the catalogue, log-normal bids (`evaluation.tradeoffs`).
- Diversity: NDCG@10 / intra-list diversity / long-tail share / coverage for several MMR
  diversity values, over item categories: ML-100K (first genre) and the synthetic shop (its
  categories; per-brand exposure Gini, the brand being the first word of the synthetic title).
  The Instacart sample has no categories or titles: no diversity figure for it.
- Onboarding: new users (the newest 20% by first event) against plain popularity: ML-100K by
  user attributes; the synthetic shop by first-basket categories (`evaluation.onboarding`).

    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python benchmarks/tradeoffs.py [--markdown OUT.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads on shared cores

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shoprec import schema as S  # noqa: E402
from shoprec.data.dataset import EventData  # noqa: E402
from shoprec.data.loaders import load_instacart, load_movielens_100k  # noqa: E402
from shoprec.data.synthetic import write_shop_log  # noqa: E402
from shoprec.evaluation.onboarding import evaluate_onboarding  # noqa: E402
from shoprec.evaluation.splits import SplitSpec, make_split  # noqa: E402
from shoprec.evaluation.tradeoffs import diversity_tradeoff, sponsored_cost  # noqa: E402
from shoprec.evaluation.tuning import fit_baseline  # noqa: E402
from shoprec.models.content import category_codes  # noqa: E402
from shoprec.sequences import build_vocab  # noqa: E402

FLOORS = (0.0, 0.5, 0.9, 0.99)
DIVERSITY = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
SYNTHETIC_EVENTS = 200_000


def prepared(data: EventData, model_kind: str) -> dict[str, Any]:
    """Vocabulary, leave-one-out split, the fitted model, training popularity."""
    vocab = build_vocab(data.events, data.items)
    split = make_split(data.events, vocab, SplitSpec("leave-one-out"))
    exclude = not data.info.get("repeat_purchase", False)
    model = fit_baseline(model_kind, vocab.n_items, split.train, exclude_seen=exclude).model
    popularity = np.zeros(vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    return {"vocab": vocab, "split": split, "exclude": exclude, "model": model, "popularity": popularity}


def synthetic(directory: Path) -> EventData:
    log = write_shop_log(directory, SYNTHETIC_EVENTS, seed=0)
    events = pd.read_parquet(log.events_path)
    events[S.TIMESTAMP] = pd.to_datetime(events[S.TIMESTAMP], utc=True)
    return EventData(events, pd.read_parquet(log.items_path), None, "synthetic", {"repeat_purchase": False})


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "organic" if value is None else str(value)


def show(console: Console, markdown: list[str], title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "fallbacks") else "right")
    for row in rows:
        table.add_row(*[fmt(row[c]) if c != "delta 95% CI" else f"{row['delta_low']:+.4f} .. {row['delta_high']:+.4f}"
                        for c in columns])
    console.print(table)
    markdown += [f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        markdown.append("| " + " | ".join(
            fmt(row[c]) if c != "delta 95% CI" else f"{row['delta_low']:+.4f} .. {row['delta_high']:+.4f}"
            for c in columns) + " |")
    markdown.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    console, markdown = Console(width=150), []
    began = time.perf_counter()
    ml = load_movielens_100k()
    with tempfile.TemporaryDirectory() as tmp:
        shop = synthetic(Path(tmp))
    runs = {"ML-100K": (ml, "itemknn"), "Instacart sample": (load_instacart(), "decayfreq"),
            f"synthetic shop ({SYNTHETIC_EVENTS:,} events)": (shop, "itemknn")}
    for name, (data, kind) in runs.items():
        p = prepared(data, kind)
        test = p["split"].test
        rows = sponsored_cost(p["model"], test, exclude_seen=p["exclude"], floors=FLOORS, bootstrap=args.bootstrap)
        show(console, markdown, f"Sponsored slots, {name}: {kind}, {len(test)} test users, 2 slots, "
             f"{p['vocab'].n_items} items", rows,
             ["floor", "NDCG@10", "delta", "delta 95% CI", "fill", "sponsored_relevance", "sponsored_hit_rate"])
        codes, names = category_codes(data.items, p["vocab"])
        if not names:
            continue
        groups = None
        if data.items is not None and S.TITLE in data.items and name.startswith("synthetic"):
            brand = dict(zip(data.items[S.ITEM_ID].astype(str), data.items[S.TITLE].str.split().str[0]))
            groups = np.array([None, *[brand.get(i) for i in p["vocab"].ids]], dtype=object)
        rows = diversity_tradeoff(p["model"], test, exclude_seen=p["exclude"], features=codes.numpy(),
                                  popularity=p["popularity"], values=DIVERSITY, groups=groups,
                                  bootstrap=args.bootstrap)
        columns = ["diversity", "NDCG@10", "delta", "delta 95% CI", "HR@10", "ILD@10", "long_tail_share", "coverage"]
        show(console, markdown, f"Diversity (MMR over {len(names)} categories), {name}: {kind}, {len(test)} test users",
             rows, columns + (["group_gini"] if groups is not None else []))
    for name, data, basket in (("ML-100K", ml, False), (f"synthetic shop ({SYNTHETIC_EVENTS:,} events)", shop, True)):
        rows = evaluate_onboarding(data, first_basket=basket, bootstrap=args.bootstrap)
        show(console, markdown, f"Onboarding, {name}: new users' first 10 distinct items"
             + (" after their first session" if basket else "") + f" (cut {rows[0]['cut'][:10]})", rows,
             ["method", "users", "P@10", "R@10", "NDCG@10", "delta", "delta 95% CI", "fallbacks"])
    console.print(f"{time.perf_counter() - began:.0f} s")
    if args.markdown:
        args.markdown.write_text("\n".join(markdown))


if __name__ == "__main__":
    main()
