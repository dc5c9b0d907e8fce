"""Benchmark: the churn model (issue 18 item 1) against the recency and frequency baselines.

The whole churn run of the library (labels, point-in-time user_stats through a Feast home,
time split, fit, evaluation with paired bootstrap intervals, gate) on a dataset, and the
Markdown table RESULTS.md's "Churn" section shows. Nothing is registered.

    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python benchmarks/churn.py [--dataset instacart]
        [--limit-users N] [--snapshots 8] [--horizon-days 30] [--resamples 1000] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from shoprec.churn.evaluate import MODEL
from shoprec.churn.features import churn_home
from shoprec.churn.train import ChurnConfig, run_churn
from shoprec.data.loaders import load_dataset
from shoprec.features.settings import FeatureStoreSettings
from shoprec.home import Home


def table(evaluation: dict[str, Any], gate: dict[str, Any], facts: dict[str, Any]) -> str:
    """Metrics per model, the model minus each baseline (paired 95 % interval), the verdict."""
    lines = ["| model | ROC-AUC | PR-AUC | Brier | PR-AUC: model minus it [95 %] | ROC-AUC: model minus it [95 %] |",
             "|---|---:|---:|---:|---|---|"]
    for name, row in evaluation["models"].items():
        paired = evaluation["paired"].get(name)
        cells = ["", ""] if paired is None else [
            f"{paired[m]['delta']:+.4f} [{paired[m]['low']:+.4f}, {paired[m]['high']:+.4f}]" for m in ("pr_auc", "roc_auc")]
        label = f"**{name}**" if name == MODEL else name
        lines.append(f"| {label} | {row['roc_auc']:.4f} | {row['pr_auc']:.4f} | {row['brier']:.4f} | {' | '.join(cells)} |")
    rows = facts["rows"]
    test = evaluation["models"][MODEL]
    lines += ["", f"Test snapshot {facts['test_snapshot']}: {test['rows']} users, churn rate {test['churn_rate']:.3f}; "
              f"training rows {rows['fit']} (+{rows['valid']} held-out users for early stopping) from "
              f"{len(facts['snapshots']) - 1} earlier snapshots; best epoch {facts['best_epoch']} on {facts['device']}.",
              f"Gate: {'PASSED' if gate['passed'] else 'REJECTED'}: {gate['reason']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="instacart")
    parser.add_argument("--limit-users", type=int, default=0)
    parser.add_argument("--snapshots", type=int, default=8)
    parser.add_argument("--horizon-days", type=int, default=30)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--markdown", type=Path, default=None, help="Also write the table here.")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    data = load_dataset(args.dataset, limit_users=args.limit_users or None)
    config = ChurnConfig(horizon_days=args.horizon_days, snapshots=args.snapshots, resamples=args.resamples)
    with tempfile.TemporaryDirectory(prefix="shoprec-churn-bench-") as scratch:
        home = Home(Path(scratch))
        outcome = run_churn(data.events, data.items, FeatureStoreSettings(home=churn_home(home)),
                            Path(scratch) / "bundle", None, config, source=args.dataset)
    text = (f"{args.dataset}: {len(data.events):,} events, {data.events['user_id'].nunique():,} users, "
            f"horizon {args.horizon_days} days, {args.snapshots} snapshots, {args.resamples} resamples, "
            f"{time.perf_counter() - started:.0f} s\n\n" + table(outcome.evaluation, outcome.gate, outcome.facts))
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
