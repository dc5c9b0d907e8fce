"""Benchmark: the learned repeat head (`shoprec.models.repeat_head`) against the time-decayed
frequency on the Instacart sample, with the pipeline's temporal split (issue 17).

    .venv/bin/python benchmarks/repeat_head.py [--epochs 30] [--repeat-shares 0.8 0.9 0.95 0.99]

Split as `evaluation.splits.temporal_split`: the cut at the 90% time quantile; test = each
user's first item at or after it (history: everything before). The head trains on the first
items of the users' sessions before the cut (the newest such session per user is validation:
the epoch, the repeat share and the decay baseline's setting are chosen there, never on test).
Explore side: popularity before the cut (MostPop's distribution), so the table shows what the
head adds over a frequency ranking. A second test reads every session that opens after the
cut (history: everything before that session): more targets, so a tighter interval.
Prints a table: NDCG@10 / HR@10, the paired 95% bootstrap interval of the difference to the
decayed frequency; with --features item-only the session features are left out (zeros).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from shoprec import schema as S
from shoprec.data.loaders import load_instacart
from shoprec.evaluation import metrics as M
from shoprec.evaluation.splits import temporal_cutoff
from shoprec.models.baselines import DecayedFrequency
from shoprec.models.repeat_head import fit_repeat_head, mixture_scores, newest_openings, session_examples
from shoprec.sequences import FlatSequences, build_vocab, session_starts

DECAYS = (1.0, 0.999, 0.995, 0.99, 0.98, 0.95)


def ranks_of(scores: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    return M.pessimistic_ranks(scores, torch.as_tensor(targets, dtype=torch.long))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeat-shares", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.99, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sessions", action="store_true",
                        help="every event its own session for the head's features (items only); "
                             "the targets stay the sessions' first items")
    args = parser.parse_args()
    began = time.perf_counter()
    torch.set_num_threads(1)

    data = load_instacart()
    events = data.events
    cut = temporal_cutoff(events)
    vocab = build_vocab(events, data.items)
    seqs = FlatSequences.from_events(events, vocab, with_rows=True)
    assert seqs.rows is not None
    starts = session_starts(events, seqs.rows, seqs.offsets)
    before = (events[S.TIMESTAMP] < cut).to_numpy()[seqs.rows]
    seen = np.ones(len(starts), dtype=bool) if args.no_sessions else starts  # what the head reads

    early_items, early_starts, early_read = [], [], []  # each user's events before the cut
    test_h, test_s, test_t = [], [], []  # first item at or after the cut
    after_h, after_s, after_t = [], [], []  # every session opening after the cut
    for lo, hi in zip(seqs.offsets[:-1], seqs.offsets[1:]):
        items, opens, read = seqs.flat[lo:hi], starts[lo:hi], seen[lo:hi]
        head = int(before[lo:hi].sum())
        if head:
            early_items.append(items[:head]), early_starts.append(opens[:head]), early_read.append(read[:head])
        if 0 < head < len(items):
            test_h.append(items[:head]), test_s.append(read[:head]), test_t.append(int(items[head]))
            for at in np.flatnonzero(opens[head:]) + head:
                after_h.append(items[:at]), after_s.append(read[:at]), after_t.append(int(items[at]))

    train, valid = session_examples(early_items, early_starts, reads=early_read)
    head, losses = fit_repeat_head(train, valid, epochs=args.epochs, seed=args.seed)

    # Validation targets for the choices: each user's newest session opening before the cut.
    val_h, val_s, val_t = newest_openings(early_items, early_starts)
    if args.no_sessions:
        val_s = [np.ones(len(h), dtype=bool) for h in val_h]

    popularity = np.bincount(np.concatenate(early_items), minlength=vocab.n_items + 1).astype(np.float64)
    log_pop = torch.as_tensor(np.log(popularity + 1e-3), dtype=torch.float32)

    def decayfreq_scores(histories, decay):
        return DecayedFrequency(vocab.n_items, decay).fit(early_items).score_all(histories)

    def head_scores(histories, opens, share):
        explore = log_pop.expand(len(histories), -1)
        return mixture_scores(head.item_scores(histories, opens), explore, share)

    decay_valid = {d: M.ndcg_at_k(ranks_of(decayfreq_scores(val_h, d), val_t), 10).mean() for d in DECAYS}
    best_decay = max(DECAYS, key=lambda d: (decay_valid[d], -abs(1 - d)))
    share_valid = {s: M.ndcg_at_k(ranks_of(head_scores(val_h, val_s, s), val_t), 10).mean()
                   for s in args.repeat_shares}
    best_share = max(args.repeat_shares, key=lambda s: share_valid[s])

    table = Table(title=f"Learned repeat head{' (items only)' if args.no_sessions else ''} vs time-decayed frequency, Instacart sample "
                        f"({len(train)} training sessions, {len(valid)} validation; best epoch "
                        f"{int(np.nanargmin(losses)) + 1} of {len(losses)}, repeat share {best_share:g}, "
                        f"decay {best_decay:g})")
    for column in ("targets", "users", "decayfreq NDCG@10", "head NDCG@10", "change", "paired 95% CI",
                   "decayfreq HR@10", "head HR@10"):
        table.add_column(column, justify="right" if column != "targets" else "left")
    for name, (hs, ss, ts) in {"validation: newest session before the cut": (val_h, val_s, val_t),
                               "test: first item after the cut (the pipeline's)": (test_h, test_s, test_t),
                               "every session opening after the cut": (after_h, after_s, after_t)}.items():
        targets = np.asarray(ts)
        base = ranks_of(decayfreq_scores(hs, best_decay), targets)
        mine = ranks_of(head_scores(hs, ss, best_share), targets)
        nb, nm = M.ndcg_at_k(base, 10), M.ndcg_at_k(mine, 10)
        low, high = M.bootstrap_interval(nm - nb)
        table.add_row(name, f"{len(targets):,}", f"{nb.mean():.4f}", f"{nm.mean():.4f}",
                      f"{nm.mean() / nb.mean() - 1:+.1%}", f"[{low:+.4f}, {high:+.4f}]",
                      f"{M.hit_rate_at_k(base, 10).mean():.4f}", f"{M.hit_rate_at_k(mine, 10).mean():.4f}")
    console = Console(width=200)
    console.print(table)
    console.print("validation NDCG@10 by repeat share: "
                  + ", ".join(f"{s:g}: {v:.4f}" for s, v in share_valid.items())
                  + "; by decay: " + ", ".join(f"{d:g}: {v:.4f}" for d, v in decay_valid.items()))
    console.print(f"{time.perf_counter() - began:.0f} s in all; head weights {sum(p.numel() for p in head.parameters())}")


if __name__ == "__main__":
    main()
