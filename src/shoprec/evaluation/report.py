"""The pipeline's `evaluate` step as a library function: re-evaluate a saved bundle (loaded
through its integrity check) on the same split it was trained for, side by side with the
baselines refit on that split, and write the comparison as Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec.models.bundle import load_bundle
from shoprec.data.dataset import EventData
from shoprec.evaluation.evaluate import evaluate
from shoprec.models.baselines import BASELINES
from shoprec.models.content import category_codes
from shoprec.training.fit import FitConfig, comparison_markdown, events_for_training, make_split


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
    """Evaluate the bundled model and the baselines on the bundle's split of `data`."""
    bundle = load_bundle(bundle_dir)
    training = bundle.config.get("training", {})
    split_kind = training.get("split", "leave-one-out")
    cutoff = split_kind.split("@", 1)[1] if split_kind.startswith("temporal@") else None
    config = FitConfig(split="temporal" if cutoff else "leave-one-out", cutoff=cutoff)
    events = events_for_training(data, training_set)
    split = make_split(events, bundle.vocab, config)
    popularity = np.zeros(bundle.vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    codes, names = category_codes(data.items, bundle.vocab)
    category = codes.numpy() if names else None
    exclude = bundle.exclude_seen
    names_ = list(baselines) + ([] if exclude else ["buyagain"])
    models = {bundle.config["kind"]: bundle.model}
    models.update({n: BASELINES[n](bundle.vocab.n_items).fit(split.train) for n in names_ if n not in models})
    rows = []
    for name, model in models.items():
        result = evaluate(model, split.test, exclude_seen=exclude, popularity=popularity,
                          category=category, k=k, bootstrap=bootstrap, name=name)
        rows.append(result.to_dict())
    scalars = {f"{row['model']}_{metric}": float(value)
               for row in rows for metric, value in row["metrics"].items()}
    scalars["test_users"] = float(len(split.test))
    header = (f"# Evaluation of {bundle.config['kind']} ({Path(bundle_dir).name})\n\n"
              f"Split {split.kind}; {len(split.test)} test users; full ranking over "
              f"{bundle.vocab.n_items} items; seen items {'excluded' if exclude else 'kept'}; "
              f"ties count against the target; 95% bootstrap intervals.\n\n")
    return BundleEvaluation(rows, header + comparison_markdown(rows, k) + "\n", scalars)
