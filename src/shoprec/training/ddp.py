"""Train from a dataset directory, on one process or under torchrun with DDP.

    torchrun --nproc_per_node=2 -m shoprec.training.ddp --data DATASET_DIR --out BUNDLE_DIR

gloo on CPU, NCCL on GPU. Every rank trains on its slice of each global batch; rank 0
validates, evaluates every model and writes the bundle (plus --result-json when given).

--training-set: the point-in-time training set (Parquet) the pipeline's train step built from
Feast; every rank trains on it exactly as the in-pod train step does (`fit_and_evaluate`'s
`training_set`), and the bundle records --feature-service as its source. --validation,
--repeat-head, --repeat-history and --test-sessions are the in-pod train step's settings of the same names, so a
job validates on session openings and keeps the learned repeat head as the pod would."""

from __future__ import annotations

import os

# Before torch loads: spinning OpenMP threads slowed a run on shared cores 3-15x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from shoprec.data.dataset import EventData  # noqa: E402
from shoprec.training.device import configure_cpu_threads  # noqa: E402
from shoprec.evaluation.splits import VALIDATION_TARGETS, SplitSpec  # noqa: E402
from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome  # noqa: E402
from shoprec.training.loop import TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path, help="an EventData directory")
    parser.add_argument("--out", required=True, type=Path, help="bundle directory (rank 0 writes)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--no-content", action="store_true")
    parser.add_argument("--budget-minutes", type=float, default=None)
    parser.add_argument("--split", choices=("leave-one-out", "temporal"), default="leave-one-out",
                        help="leave-one-out (benchmarks) or a global temporal split (the pipeline)")
    parser.add_argument("--cutoff", default=None,
                        help="temporal split: the cut time (default: the 90%% time quantile)")
    parser.add_argument("--validation", choices=VALIDATION_TARGETS, default="newest",
                        help="temporal split: validate on each user's newest item, or on the item "
                             "opening their newest session (SplitSpec.validation)")
    parser.add_argument("--repeat-head", action="store_true",
                        help="on repeat-purchase data, fit the learned repeat head and keep it where "
                             "validation prefers it to the bonus (FitConfig.repeat_head)")
    parser.add_argument("--repeat-history", type=int, default=0,
                        help="how many newest items the repeat side reads (what the feature store "
                             "keeps per user); 0 = all of them")
    parser.add_argument("--test-sessions", type=int, default=1,
                        help="temporal split: test each user on the first item after the cut and on the "
                             "first item of each later session, up to this many (SplitSpec.test_sessions)")
    parser.add_argument("--training-set", type=Path, default=None,
                        help="a Parquet point-in-time training set (default: the clean events)")
    parser.add_argument("--feature-service", default=None,
                        help="the Feast feature service the training set came from (recorded)")
    parser.add_argument("--result-json", type=Path, default=None)
    args = parser.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        # Each of the N processes gets its share of the cores, not N times all of them.
        configure_cpu_threads(max(1, (os.cpu_count() or 1) // world))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    else:
        configure_cpu_threads()
    try:
        data = EventData.read(args.data)
        # pandas only here: a job without a training set never needs pyarrow's reader.
        training_set = None
        if args.training_set is not None:
            import pandas as pd

            training_set = pd.read_parquet(args.training_set)
        config = FitConfig(
            model={"hidden": args.hidden, "max_len": args.max_len, "dropout": args.dropout,
                   "repeat_history": args.repeat_history},
            train=TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                              patience=args.patience, seed=args.seed, amp=args.amp,
                              budget_minutes=args.budget_minutes, progress=True),
            split=SplitSpec(args.split, args.cutoff, validation=args.validation, test_sessions=args.test_sessions),
            repeat_head=args.repeat_head,
            content=not args.no_content,
            bootstrap=200,
        )
        outcome = fit_and_evaluate(data, config, training_set=training_set)
        if not dist.is_initialized() or dist.get_rank() == 0:
            # The bundle's own default service name unless the step said which one it joined.
            service = {"feature_service": args.feature_service} if args.feature_service else {}
            save_outcome(outcome, args.out, source=data.source, snapshot_id=data.info.get("snapshot_id"),
                         **service)
            if args.result_json:
                args.result_json.write_text(json.dumps(
                    {"train": outcome.train_result.to_dict(), "results": outcome.comparison()}, default=str))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
