"""The pipeline's `evaluate` step as a library function: re-evaluate a saved bundle (loaded
through its integrity check) on the same split it was trained for (the `SplitSpec` its
config.json records), side by side with the baselines refit on that split, and write the
comparison as Markdown. Also the comparison table the model card shares.

The report also says what the list policies cost the bundle's model (`evaluation.tradeoffs`,
on at most `TRADEOFF_USERS` of the test users): NDCG@10 with sponsored slots at several
relevance floors (the serving default, `DEFAULT_FLOOR`, marked), and the NDCG@10 / intra-list
diversity / long-tail exposure trade-off for a few MMR diversity values (when the items have
categories). The same figures are in `BundleEvaluation.tradeoffs` and its scalars."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec.models.bundle import load_bundle
from shoprec.data.dataset import EventData
from shoprec.evaluation.evaluate import evaluate
from shoprec.evaluation.splits import SplitSpec, cap_users, events_for_training, make_split
from shoprec.evaluation.tradeoffs import diversity_tradeoff, sponsored_cost
from shoprec.evaluation.tuning import baseline_kinds, baseline_validation, fit_baseline
from shoprec.models.content import category_codes
from shoprec.ranking.sponsored import DEFAULT_FLOOR, DEFAULT_SLOTS

FLOORS = (0.0, 0.5, DEFAULT_FLOOR, 0.99)  # relevance floors the sponsored-slot cost is shown at
DIVERSITY = (0.0, 0.1, 0.3, 0.5, 1.0)  # MMR diversity values of the trade-off table
# Test users the trade-offs replay (a fixed sample, `cap_users`): each is a Python-level
# re-ranking per floor and diversity value, so they are capped apart from the main metrics.
TRADEOFF_USERS = 2000


@dataclass
class BundleEvaluation:
    rows: list[dict[str, Any]]  # one per model, the bundle's model first
    markdown: str
    scalars: dict[str, float]  # flat name -> value, for Output[Metrics]
    # "sponsored": `sponsored_cost` rows, "diversity": `diversity_tradeoff` rows (empty without
    # item categories); both of the bundle's model. Empty when not asked for.
    tradeoffs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def evaluate_bundle(
    bundle_dir: str | Path,
    data: EventData,
    training_set: pd.DataFrame | None = None,
    baselines: tuple[str, ...] = ("mostpop", "markov1", "itemknn"),
    bootstrap: int = 1000,
    k: int = 10,
    tradeoffs: bool = True,
    tradeoff_users: int = TRADEOFF_USERS,
) -> BundleEvaluation:
    """Evaluate the bundled model and the baselines on the bundle's split of `data` (on
    repeat-purchase data also BuyAgain, the time-decayed frequency and TIFU-KNN); with
    `tradeoffs`, also what sponsored slots and diversity cost the bundled model, on at most
    `tradeoff_users` test users."""
    bundle = load_bundle(bundle_dir)
    spec = SplitSpec.from_dict(bundle.config.get("training", {}).get("split"))
    split = make_split(events_for_training(data, training_set), bundle.vocab, spec,
                       sessions=bool(getattr(bundle.model, "needs_sessions", False)))
    popularity = np.zeros(bundle.vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    codes, names = category_codes(data.items, bundle.vocab)
    category = codes.numpy() if names else None
    exclude = bundle.exclude_seen
    models = {bundle.config["kind"]: bundle.model}
    # The same baselines, tuned by the same rule on the same training sequences, as training
    # compared with (`evaluation.tuning`): the figures here equal the model card's.
    held_out = baseline_validation(split)
    models.update({n: fit_baseline(n, bundle.vocab.n_items, split.train, exclude_seen=exclude, k=k,
                                   held_out=held_out).model
                   for n in baseline_kinds(exclude, baselines) if n not in models})
    rows = []
    for name, model in models.items():
        result = evaluate(model, split.test, exclude_seen=exclude, popularity=popularity,
                          category=category, k=k, bootstrap=bootstrap, name=name)
        rows.append(result.to_dict())
    scalars = {f"{row['model']}_{metric}": float(value)
               for row in rows for metric, value in row["metrics"].items()}
    scalars["test_users"] = float(split.test.n_users)
    scalars["test_targets"] = float(len(split.test))
    header = (f"# Evaluation of {bundle.config['kind']} ({Path(bundle_dir).name})\n\n"
              f"Split: {split.spec.describe()}; test set {split.test.describe_size()}; full ranking over "
              f"{bundle.vocab.n_items} items; seen items {'excluded' if exclude else 'kept'}; "
              f"ties count against the target; 95% bootstrap intervals.\n\n")
    markdown = header + comparison_markdown(rows, k) + "\n"
    found: dict[str, list[dict[str, Any]]] = {}
    if tradeoffs and len(split.test):
        users = cap_users(split.test, tradeoff_users, spec.seed)
        found["sponsored"] = sponsored_cost(bundle.model, users, exclude_seen=exclude, floors=FLOORS,
                                            k=k, bootstrap=bootstrap, seed=spec.seed)
        found["diversity"] = [] if category is None else diversity_tradeoff(
            bundle.model, users, exclude_seen=exclude, features=category, popularity=popularity,
            values=DIVERSITY, k=k, bootstrap=bootstrap, seed=spec.seed)
        markdown += "\n" + tradeoffs_markdown(found, bundle.config["kind"], users.n_users, split.test.n_users, k) + "\n"
        scalars.update(tradeoff_scalars(found, k))
    return BundleEvaluation(rows, markdown, scalars, found)


def _percent(value: float) -> str:
    return f"{round(value * 100):02d}"


def tradeoff_scalars(tradeoffs: dict[str, list[dict[str, Any]]], k: int = 10) -> dict[str, float]:
    """Flat scalars of the trade-off rows: `sponsored_floor90_NDCG@10` and `..._delta` per
    floor; `diversity30_NDCG@10`, `diversity30_ILD@10`, `diversity30_long_tail_share` per value."""
    out: dict[str, float] = {}
    for row in tradeoffs.get("sponsored", []):
        if row["floor"] is not None:
            name = f"sponsored_floor{_percent(row['floor'])}"
            out.update({f"{name}_NDCG@{k}": row[f"NDCG@{k}"], f"{name}_NDCG@{k}_delta": row["delta"],
                        f"{name}_fill": row["fill"]})
    for row in tradeoffs.get("diversity", []):
        name = f"diversity{_percent(row['diversity'])}"
        out.update({f"{name}_NDCG@{k}": row[f"NDCG@{k}"], f"{name}_ILD@{k}": row[f"ILD@{k}"],
                    f"{name}_long_tail_share": row["long_tail_share"]})
    return {key: float(value) for key, value in out.items()}


def tradeoffs_markdown(tradeoffs: dict[str, list[dict[str, Any]]], model: str, users: int,
                       test_users: int, k: int = 10) -> str:
    """The trade-off tables (Markdown): sponsored slots by floor, then diversity by value."""
    sample = f"{users} of the {test_users} test users" if users < test_users else f"all {users} test users"
    lines = [f"## What the list policies cost {model}", "",
             f"Replayed on {sample} from the same masked score rows; NDCG@{k} of the list shown; "
             f"deltas are paired with the plain model, 95% bootstrap intervals.", ""]
    sponsored = tradeoffs.get("sponsored", [])
    if sponsored:
        lines += [f"### Sponsored slots (up to {DEFAULT_SLOTS} per list)", "",
                  "Candidates are simulated: 20 per user drawn uniformly from the catalogue, log-normal "
                  f"bids (median 1). A candidate is shown only above the relevance floor (the serving "
                  f"default is {DEFAULT_FLOOR}).", "",
                  f"| floor | NDCG@{k} | delta | delta 95% CI | sponsored per list | relevance of sponsored shown |",
                  "|---|---|---|---|---|---|"]
        for row in sponsored:
            floor = "organic" if row["floor"] is None else (
                f"{row['floor']:g} (serving default)" if row["floor"] == DEFAULT_FLOOR else f"{row['floor']:g}")
            relevance = row["sponsored_relevance"]
            lines.append(f"| {floor} | {row[f'NDCG@{k}']:.4f} | {row['delta']:+.4f} | "
                         f"{row['delta_low']:+.4f} .. {row['delta_high']:+.4f} | {row['fill']:.2f} | "
                         f"{'' if np.isnan(relevance) else f'{relevance:.3f}'} |")
        lines.append("")
    diversity = tradeoffs.get("diversity", [])
    lines += ["### Diversity (MMR over item categories)", ""]
    if not diversity:
        lines += ["The items have no categories: no diversity trade-off.", ""]
    else:
        lines += [f"| diversity | NDCG@{k} | delta | delta 95% CI | HR@{k} | intra-list diversity@{k} | "
                  f"long-tail share | coverage |", "|---|---|---|---|---|---|---|---|"]
        for row in diversity:
            lines.append(f"| {row['diversity']:g} | {row[f'NDCG@{k}']:.4f} | {row['delta']:+.4f} | "
                         f"{row['delta_low']:+.4f} .. {row['delta_high']:+.4f} | {row[f'HR@{k}']:.4f} | "
                         f"{row[f'ILD@{k}']:.3f} | {row['long_tail_share']:.4f} | {row['coverage']:.3f} |")
        lines.append("")
    return "\n".join(lines)


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
