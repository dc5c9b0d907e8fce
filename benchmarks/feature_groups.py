"""Which Feast features help SASRec+: validation NDCG@10 with and without each feature group.

The feature service materializes `user_stats` (counts, recency, mean price) and `item_stats`;
this runs the same fit twice per data set, without the user context and with it (the numeric
user_stats of each example as of strictly before it, `features.user_context`), and prints
the validation figures that decide `FitConfig.user_context` (never test: test is printed
only beside them, for the record). The feature tables are built in memory as the pipeline
builds them (`features.tables.build_feature_tables`) and joined point in time with
`user_context.join_user_stats_asof` (equal to Feast's join, tests/features/test_user_context.py).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python benchmarks/feature_groups.py \
        --datasets instacart ml-100k --budget-minutes 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import PRESETS, load  # noqa: E402

from shoprec.evaluation.splits import SplitSpec  # noqa: E402
from shoprec.features.tables import build_feature_tables  # noqa: E402
from shoprec.features.user_context import USER_CONTEXT_FEATURES  # noqa: E402
from shoprec.training.fit import FitConfig, fit_and_evaluate  # noqa: E402
from shoprec.training.loop import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["instacart", "ml-100k"])
    parser.add_argument("--budget-minutes", type=float, default=4.0)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.datasets:
        data = load(name)
        started = time.perf_counter()
        user_stats = build_feature_tables(data.events, data.items).user_stats
        tables_s = time.perf_counter() - started
        preset = PRESETS[name]
        for group, columns in (("none", ()), ("user_stats", USER_CONTEXT_FEATURES)):
            config = FitConfig(
                model=dict(preset["model"]),
                train=TrainConfig(**preset["train"], max_epochs=args.max_epochs,
                                  budget_minutes=args.budget_minutes, progress=False),
                split=SplitSpec("temporal") if preset.get("split") == "temporal" else
                SplitSpec("leave-one-out", validation_users=preset.get("validation_users")),
                bootstrap=50, user_context=columns, baselines=("mostpop",),
            )
            started = time.perf_counter()
            outcome = fit_and_evaluate(data, config, user_stats=user_stats if columns else None)
            tr = outcome.train_result
            tuned = max(outcome.repeat_tuning.values()) if outcome.repeat_tuning else None
            row = {"dataset": name, "features": group,
                   "read": list(outcome.user_context.columns) if outcome.user_context else [],
                   "valid_ndcg": tr.best_valid_ndcg, "valid_ndcg_with_repeat": tuned,
                   "test_ndcg": outcome.results["sasrec"].metrics["NDCG@10"],
                   "epochs": tr.epochs, "best_epoch": tr.best_epoch, "s_per_epoch": tr.seconds_per_epoch,
                   "seconds": time.perf_counter() - started, "tables_seconds": tables_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'data':<10} {'features':<11} {'valid NDCG@10':>13} {'+repeat':>8} {'test':>7} {'epochs':>6}")
    for r in rows:
        rep = "" if r["valid_ndcg_with_repeat"] is None else f"{r['valid_ndcg_with_repeat']:.4f}"
        print(f"{r['dataset']:<10} {r['features']:<11} {r['valid_ndcg']:>13.4f} {rep:>8} "
              f"{r['test_ndcg']:>7.4f} {r['epochs']:>6}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))



if __name__ == "__main__":
    main()
