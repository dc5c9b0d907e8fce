"""The pipeline's `evaluate` step as a library function: re-evaluate a saved bundle (loaded
through its integrity check) on the same split it was trained for (the `SplitSpec` its
config.json records), side by side with the baselines refit on that split, and write the
comparison as Markdown. Also the comparison table the model card shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec.models.bundle import load_bundle
from shoprec.data.dataset import EventData
from shoprec.evaluation.evaluate import evaluate
from shoprec.evaluation.splits import SplitSpec, events_for_training, make_split
from shoprec.evaluation.tuning import baseline_kinds, fit_baseline
from shoprec.models.content import category_codes


@dataclass
class BundleEvaluation:
    rows: list[dict[str, Any]]  # one per model, the bundle's model first
    markdown: str
    scalars: dict[str, float]  # flat name -> value, for Output[Metrics]


def evaluate_bundle(
    bundle_dir: str | Path,
    data: EventData,
    training_set: pd.DataFrame | None = None,
    baselines: tuple[str, ...] = ("mostpop", "markov1", "itemknn"),
    bootstrap: int = 1000,
    k: int = 10,
) -> BundleEvaluation:
    """Evaluate the bundled model and the baselines on the bundle's split of `data` (on
    repeat-purchase data also BuyAgain, the time-decayed frequency and TIFU-KNN)."""
    bundle = load_bundle(bundle_dir)
    spec = SplitSpec.from_dict(bundle.config.get("training", {}).get("split"))
    split = make_split(events_for_training(data, training_set), bundle.vocab, spec)
    popularity = np.zeros(bundle.vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    codes, names = category_codes(data.items, bundle.vocab)
    category = codes.numpy() if names else None
    exclude = bundle.exclude_seen
    models = {bundle.config["kind"]: bundle.model}
    # The same baselines, tuned by the same rule on the same training sequences, as training
    # compared with (`evaluation.tuning`): the figures here equal the model card's.
    models.update({n: fit_baseline(n, bundle.vocab.n_items, split.train, exclude_seen=exclude, k=k).model
                   for n in baseline_kinds(exclude, baselines) if n not in models})
    rows = []
    for name, model in models.items():
        result = evaluate(model, split.test, exclude_seen=exclude, popularity=popularity,
                          category=category, k=k, bootstrap=bootstrap, name=name)
        rows.append(result.to_dict())
    scalars = {f"{row['model']}_{metric}": float(value)
               for row in rows for metric, value in row["metrics"].items()}
    scalars["test_users"] = float(len(split.test))
    header = (f"# Evaluation of {bundle.config['kind']} ({Path(bundle_dir).name})\n\n"
              f"Split: {split.spec.describe()}; {len(split.test)} test users; full ranking over "
              f"{bundle.vocab.n_items} items; seen items {'excluded' if exclude else 'kept'}; "
              f"ties count against the target; 95% bootstrap intervals.\n\n")
    return BundleEvaluation(rows, header + comparison_markdown(rows, k) + "\n", scalars)


def comparison_markdown(rows: list[dict[str, Any]], k: int = 10) -> str:
    """The models side by side (Markdown): metrics with 95% intervals, then segments."""
    lines = [f"| model | HR@{k} | NDCG@{k} | NDCG@{k} 95% CI | MRR@{k} | coverage | popularity bias | diversity@{k} |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m, (low, high) = row["metrics"], row["intervals"][f"NDCG@{k}"]
        diversity = m.get(f"diversity@{k}")
        lines.append(
            f"| {row['model']} | {m[f'HR@{k}']:.4f} | {m[f'NDCG@{k}']:.4f} | {low:.4f}-{high:.4f} | "
            f"{m[f'MRR@{k}']:.4f} | {m['coverage']:.3f} | {m['popularity_bias']:.3f} | "
            f"{'' if diversity is None else f'{diversity:.3f}'} |"
        )
    segment_names = sorted({name for row in rows for name in row.get("segments", {})})
    if segment_names:
        lines += ["", f"| model | segment | users | HR@{k} | NDCG@{k} |", "|---|---|---|---|---|"]
        for row in rows:
            for name in segment_names:
                seg = row["segments"].get(name)
                if seg:
                    lines.append(f"| {row['model']} | {name} | {seg['users']} | "
                                 f"{seg[f'HR@{k}']:.4f} | {seg[f'NDCG@{k}']:.4f} |")
    return "\n".join(lines)
