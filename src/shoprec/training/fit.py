"""End to end from plain frames: vocabulary, sequences, split, baselines, the transformer,
and one evaluation of every model on the same test set. Used by the benchmark, the pipeline
components, the CLI and the torchrun entry point; works without Feast (an optional
point-in-time training-set frame replaces the raw events when given)."""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from shoprec import schema as S
from shoprec.config import DEFAULT_HISTORY_LEN
from shoprec.models.bundle import DEFAULT_FEATURE_SERVICE, save_bundle
from shoprec.data.dataset import EventData
from shoprec.errors import DataSourceError
from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import EvalResult, evaluate
from shoprec.evaluation.report import comparison_markdown
from shoprec.evaluation.splits import EvalSet, Split, SplitSpec, events_for_training, make_split
from shoprec.evaluation.tuning import TUNING_USERS, baseline_kinds, baseline_validation, fit_baseline, sample_users
from shoprec.features.user_context import UserContextTransform, join_user_stats_asof
from shoprec.models.base import Recommender
from shoprec.models.cold_items import ColdImputation, impute_cold_item_embeddings
from shoprec.models.content import ItemFeatures, item_features
from shoprec.models.contextual import WithUserContext
from shoprec.models.repeat_head import fit_repeat_head, mixture_scores, newest_openings, session_examples
from shoprec.models.sasrec import SASRec
from shoprec.sequences import ItemVocab, build_vocab
from shoprec.training.device import seed_everything
from shoprec.training.loop import TrainConfig, TrainResult, UserContextData, distributed_context, train


def exclude_seen_policy(info: dict[str, Any]) -> bool:
    """Whether a user's past items are excluded from recommendations: yes (the MovieLens
    protocol) unless the data set is repeat-purchase (grocery), where they are the point."""
    return not bool(info.get("repeat_purchase", False))


@dataclass
class FitConfig:
    """model: SASRec keyword arguments; train: the loop's settings; split: which split to make
    (`SplitSpec`: leave-one-out with an optional validation sample, or a temporal cut; the bundle
    records it resolved); content: fuse category / title features when present;
    impute_cold_items: with content, give items without training events id embeddings
    borrowed from their content look-alikes (off only to measure what it is worth)."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitSpec = SplitSpec()
    content: bool = True
    impute_cold_items: bool = True
    # Where title embeddings computed by earlier runs are kept (`Home.embeddings`); None: embed
    # every title each time.
    embedding_cache: Path | None = None
    # Repeat-purchase data only: the SASRec repeat bonus weights tried on validation (0 = off).
    # Up to weights so large that past items rank first by count (the transformer then only
    # orders equal counts and the rest): validation decides how much "buy again" there is.
    repeat_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0)
    # ... and the decays of its per-purchase weight (decay ** items bought since; 1 = counts).
    repeat_decays: tuple[float, ...] = (1.0, 0.999, 0.995, 0.99, 0.98, 0.95)
    # Always compared; on repeat-purchase data BuyAgain, the time-decayed frequency and TIFU-KNN
    # join them (`evaluation.tuning.baseline_kinds`), each tuned on held-out training items.
    baselines: tuple[str, ...] = ("mostpop", "markov1", "itemknn")
    bootstrap: int = 1000
    k: int = 10
    # The user-context input (`features.user_context`): these numeric user_stats features of
    # each example, point in time, enter SASRec (empty = off, the default: on the validation
    # splits measured it did not help; figures in FEATURE_VALIDATION and the model card).
    user_context: tuple[str, ...] = ()
    # Repeat-purchase data with sessions: also fit the learned repeat head
    # (`models.repeat_head`) and keep it instead of the bonus where session-opening validation
    # says it ranks better (`choose_repeat_side`). Off by default until serving sends the
    # sessions of a history (the predictor refuses a model with a head).
    repeat_head: bool = False
    repeat_shares: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)


# Validation NDCG@10 of SASRec+ without and with each feature group: the measurements that
# decided the default above (benchmarks/feature_groups.py, the same epochs and seed for both,
# 1 thread; benchmarks/RESULTS.md, "Features into the model"). Instacart: the pipeline's
# temporal split, 4 epochs, the transformer's own score, and in brackets with the validated
# repeat bonus; ML-100K: leave-one-out, 10 epochs. The user context did not help on either.
FEATURE_VALIDATION: dict[str, dict[str, str]] = {
    "Instacart sample": {"without": "0.0200 (0.1125)", "with user_stats": "0.0180 (0.1127)"},
    "ML-100K": {"without": "0.1109", "with user_stats": "0.1079"},
}


def user_context_line(outcome: "FitOutcome") -> str:
    """The model card's sentence on the user-context features and why they are (not) used."""
    measured = "; ".join(f"{data}: " + ", ".join(f"{group} {score}" for group, score in groups.items())
                         for data, groups in FEATURE_VALIDATION.items())
    why = f" (validation NDCG@10 that decided it: {measured})" if measured else ""
    if outcome.user_context is None:
        return f"user features (Feast user_stats): not used{why}"
    return (f"user features (Feast user_stats, point in time, log1p + standardized): "
            f"{', '.join(outcome.user_context.columns)}{why}")


@dataclass
class UserContextInputs:
    """What `user_context_inputs` prepares: the fitted transform, the run's `UserContextData`
    and the context of each test user."""

    transform: UserContextTransform
    data: UserContextData
    test: np.ndarray


def user_context_inputs(events: pd.DataFrame, vocab: ItemVocab, split: Split, columns: tuple[str, ...],
                        user_stats: pd.DataFrame | None = None) -> UserContextInputs:
    """The user context of every training target, validation and test user of `split`.

    `events` carries the user_stats `columns` as of strictly before each event (the point-in-time
    training set) unless `user_stats` (an in-memory user_stats table) is given to join them from.
    The split is made again over event row numbers instead of item ids (the same spec, users and
    order), so every item of a training sequence, and every evaluation target, names its event
    row, whose context is that row's user_stats."""
    if user_stats is not None:
        events = join_user_stats_asof(events, user_stats, columns)
    rows = pd.DataFrame({S.USER_ID: events[S.USER_ID].to_numpy(), S.ITEM_ID: np.arange(len(events)).astype(str),
                         S.TIMESTAMP: events[S.TIMESTAMP].to_numpy()})
    known = vocab.index(events[S.ITEM_ID].to_numpy()) > 0
    rows = rows[known]  # the events the item split keeps (items outside the vocabulary are dropped)
    by_row = make_split(rows, ItemVocab(tuple(np.arange(len(events)).astype(str))), split.spec)
    if [len(s) for s in by_row.train] != [len(s) for s in split.train] or len(by_row.test) != len(split.test) \
            or len(by_row.valid) != len(split.valid):
        raise DataSourceError("the event-row split does not match the item split")
    trained = np.concatenate([np.asarray(s, dtype=np.int64) for s in by_row.train] or [np.zeros(0, np.int64)]) - 1
    transform = UserContextTransform.fit(events.iloc[np.unique(trained)], columns)
    table = np.zeros((len(events) + 1, transform.width), dtype=np.float32)
    table[1:] = transform.apply(events)
    data = UserContextData(torch.from_numpy(table), by_row.train, table[by_row.valid.targets])
    return UserContextInputs(transform, data, table[by_row.test.targets])


@dataclass
class FitOutcome:
    """Everything a bundle and a report need."""

    vocab: ItemVocab
    split: Split
    exclude_seen: bool
    popularity: np.ndarray  # [N+1] training counts
    features: ItemFeatures
    models: dict[str, Recommender]
    results: dict[str, EvalResult]
    fit_seconds: dict[str, float]
    train_result: TrainResult
    config: FitConfig
    cold_items: ColdImputation | None = None  # None: no content features, or imputation off
    repeat_tuning: dict[str, float] | None = None  # weight -> validation NDCG@k (repeat data only)
    baseline_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # chosen on validation
    user_context: UserContextTransform | None = None  # the user-context transform SASRec reads
    repeat_side: dict[str, float] | None = None  # bonus vs repeat head on session openings (`choose_repeat_side`)

    @property
    def n_items(self) -> int:
        return self.vocab.n_items

    @property
    def test_users(self) -> int:
        return self.split.test.n_users

    def comparison(self) -> list[dict[str, Any]]:
        """One row per model: metrics, intervals, segments, fit time; the transformer first."""
        rows = []
        for name, result in self.results.items():
            row = {**result.to_dict(), "fit_seconds": self.fit_seconds[name],
                   "device": self.train_result.device if name == "sasrec" else "cpu"}
            if name == "sasrec":
                row["seconds_per_epoch"] = self.train_result.seconds_per_epoch
                row["epochs"] = self.train_result.epochs
            rows.append(row)
        return rows


def build_sasrec(vocab: ItemVocab, features: ItemFeatures, model_kwargs: dict[str, Any],
                 user_features: int = 0) -> SASRec:
    model = SASRec(
        vocab.n_items,
        n_categories=len(features.categories),
        text_dim=0 if features.text is None else features.text.shape[1],
        # The repeat side reads the history the feature store keeps and serving sends.
        **{"repeat_history": DEFAULT_HISTORY_LEN, **model_kwargs,
           **({"user_features": user_features} if user_features else {})},
    )
    return model.set_item_features(
        features.category if features.categories else None, features.text
    )


def fit_and_evaluate(
    data: EventData, config: FitConfig, training_set: pd.DataFrame | None = None,
    user_stats: pd.DataFrame | None = None,
) -> FitOutcome:
    """Fit the baselines and the transformer on the split's training sequences and evaluate
    all of them on its test set with the data set's seen-items policy.

    With `config.user_context`, the transformer reads those user_stats features of each example
    as of strictly before it: from the training set (Feast's point-in-time join,
    `training_set.build_training_set` with `user_context.feature_refs`), or joined here from an
    in-memory `user_stats` table (the benchmark, which has no store)."""
    events = events_for_training(data, training_set)
    vocab = build_vocab(events, data.items)
    exclude = exclude_seen_policy(data.info)
    sessions = config.repeat_head and not exclude and config.split.kind == "temporal"
    split = make_split(events, vocab, config.split, sessions=sessions)
    if not split.train or len(split.test) == 0:
        raise DataSourceError(f"nothing to train or test on after the {split.kind} split")
    popularity = np.zeros(vocab.n_items + 1)
    np.add.at(popularity, np.concatenate(split.train), 1.0)
    features = item_features(data.items, vocab, text=config.content, cache=config.embedding_cache) if config.content else \
        item_features(None, vocab, text=False)
    names = baseline_kinds(exclude, config.baselines)
    models: dict[str, Recommender] = {}
    seconds: dict[str, float] = {}
    context = None
    if config.user_context:
        context = user_context_inputs(events, vocab, split, tuple(config.user_context), user_stats)
    seed_everything(config.train.seed)  # the initial weights too, not only the data order
    sasrec = build_sasrec(vocab, features, config.model, 0 if context is None else context.transform.width)
    started = time.perf_counter()
    train_result = train(sasrec, split.train, split.valid, config.train, exclude, config.k,
                         None if context is None else context.data)
    cold_items = None
    if config.content and config.impute_cold_items and (sasrec.n_categories or sasrec.text_dim):
        # Cold items were only ever pushed down by the full softmax: score them through
        # their content look-alikes instead (see models/cold_items.py).
        cold_items = impute_cold_item_embeddings(sasrec, popularity)
    repeat_tuning = None
    if not exclude and len(config.repeat_weights) > 1 and len(split.valid):
        repeat_tuning = tune_repeat_weight(sasrec, split.valid, config.repeat_weights, config.k,
                                           config.repeat_decays,
                                           context=None if context is None else context.data.valid)
    repeat_side = None
    rank, _ = distributed_context()
    # Under DDP only rank 0 chooses (it alone evaluates and writes the bundle).
    if sessions and split.train_starts is not None and context is None and rank == 0:
        repeat_side = choose_repeat_side(sasrec, split.train, split.train_starts, config.repeat_shares,
                                         config.k, config.train.seed,
                                         held_out=split.valid if split.spec.validation == "opening" else None)
    models["sasrec"], seconds["sasrec"] = sasrec, time.perf_counter() - started
    baseline_settings: dict[str, dict[str, Any]] = {}
    for name in names:
        started = time.perf_counter()
        tuned = fit_baseline(name, vocab.n_items, split.train, exclude_seen=exclude, k=config.k,
                             held_out=baseline_validation(split))
        models[name] = tuned.model
        if tuned.chosen:
            baseline_settings[name] = tuned.chosen
        seconds[name] = time.perf_counter() - started
    results: dict[str, EvalResult] = {}
    if rank == 0:  # under DDP only rank 0 evaluates and reports
        category = features.category.numpy() if features.categories else None
        for name, model in models.items():
            if name == "sasrec" and context is not None:
                model = WithUserContext(model, split.test.histories, context.test)
            results[name] = evaluate(
                model, split.test, exclude_seen=exclude, popularity=popularity, category=category,
                k=config.k, bootstrap=config.bootstrap, name=name,
            )
    return FitOutcome(vocab, split, exclude, popularity, features, models, results, seconds,
                      train_result, config, cold_items, repeat_tuning, baseline_settings,
                      None if context is None else context.transform, repeat_side)


# How many users' training sequences the repeat head learns and is validated on (a fixed sample).
REPEAT_HEAD_USERS = 20_000


def choose_repeat_side(model: SASRec, sequences: Sequence[np.ndarray], starts: Sequence[np.ndarray],
                       shares: tuple[float, ...], k: int = 10, seed: int = 0,
                       max_users: int = REPEAT_HEAD_USERS, held_out: EvalSet | None = None) -> dict[str, float] | None:
    """Fit a repeat head on the training sessions' first items and attach it to `model` (with
    the best repeat share) when it ranks the newest session openings better than the model as
    it is (its tuned bonus); returns the validation NDCG@k of each choice ("bonus",
    "head@share"), None when no session opened with an item bought before.

    The validation targets are each training sequence's newest session opening, which the head
    never trains on; the transformer has read those sequences (which favours its side of the
    mixture). With `held_out` (a split's validation set on session openings, `SplitSpec.validation`
    "opening", with its starts), its targets are used instead: neither model trained on them. At most
    `max_users` sequences (a fixed sample) take part: the features are built per example in
    Python, so the work stays bounded on a large log."""
    if model.needs_sessions:
        raise ValueError("the model already has a repeat head: choose the repeat side once, after training")
    if len(sequences) > max_users:
        kept = np.sort(np.random.default_rng(seed).choice(len(sequences), max_users, replace=False))
        sequences, starts = [sequences[i] for i in kept], [starts[i] for i in kept]
    train, valid = session_examples(sequences, starts)
    if not len(train):
        return None
    head, _ = fit_repeat_head(train, valid, seed=seed)
    if held_out is not None and held_out.starts is not None:
        chosen = sample_users(held_out, max_users, seed)
        histories, opens, targets = list(chosen.histories), list(chosen.starts), np.asarray(chosen.targets)
    else:
        histories, opens, targets = newest_openings(sequences, starts)
    if not len(targets):
        return None
    target_tensor = torch.as_tensor(targets)
    found: dict[str, float] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        bonus_ranks, head_ranks = [], {share: [] for share in shares}
        for s in range(0, len(histories), 256):
            rows = slice(s, s + 256)
            explore = model.transformer_scores(histories[rows])  # once: both sides start from it
            bonus = explore + model.repeat_bonus(histories[rows]) if model.repeat_weight else explore
            bonus_ranks.append(M.pessimistic_ranks(bonus, target_tensor[rows]))
            repeat = head.item_scores(model.repeat_view(histories[rows]), model.repeat_view(opens[rows]))
            for share in shares:
                head_ranks[share].append(M.pessimistic_ranks(mixture_scores(repeat, explore, share), target_tensor[rows]))
    model.train(was_training)
    found["bonus"] = float(M.ndcg_at_k(np.concatenate(bonus_ranks), k).mean())
    for share in shares:
        found[f"head@{share:g}"] = float(M.ndcg_at_k(np.concatenate(head_ranks[share]), k).mean())
    best_share = max(shares, key=lambda share: found[f"head@{share:g}"])
    if found[f"head@{best_share:g}"] > found["bonus"] + 1e-9:
        model.attach_repeat_head(head, best_share)
    return found


def tune_repeat_weight(model: SASRec, valid: EvalSet, weights: tuple[float, ...],
                       k: int = 10, decays: tuple[float, ...] = (1.0,), batch_size: int = 256,
                       max_users: int = TUNING_USERS, context: np.ndarray | None = None) -> dict[str, float]:
    """Pick the repeat bonus (weight, decay) with the best validation NDCG@k (ties: the smaller
    weight, then the earlier decay) and leave it set on `model`; returns every setting's
    validation NDCG@k, keyed "weight" (one decay tried) or "weight@decay".

    Why: under full softmax the transformer learns what comes next, but on grocery data the
    next basket mostly repeats earlier ones, which "buy again" exploits over the whole history
    and the transformer, reading a window, under-weights; a validated bonus lets it do both.
    The transformer's logits are computed once per batch and every setting reuses them. At most
    `max_users` validation users (a fixed sample) take part. Test data is never used."""
    users = np.arange(len(valid))
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
    settings = [(float(w), float(d)) for w in sorted(weights) for d in decays]
    gains = {s: [] for s in settings}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            rows = users[start:start + batch_size]
            histories = [valid.histories[r] for r in rows]
            targets = torch.as_tensor(valid.targets[rows])
            logits = model.transformer_scores(  # [B, N+1], once for every setting
                histories, context=None if context is None else context[rows])
            for decay in decays:
                unit = model.repeat_bonus(histories, 1.0, decay)  # [B, N+1], weight 1
                for weight in sorted(weights):
                    ranks = M.pessimistic_ranks(logits + unit * weight if weight else logits, targets)
                    gains[(float(weight), float(decay))].append(M.ndcg_at_k(ranks, k))
    model.train(was_training)
    found: dict[str, float] = {}
    best, best_score = settings[0], -1.0
    for setting in settings:
        score = float(np.concatenate(gains[setting]).mean()) if gains[setting] else 0.0
        found[f"{setting[0]:g}" if len(decays) == 1 else f"{setting[0]:g}@{setting[1]:g}"] = score
        if score > best_score + 1e-9:
            best, best_score = setting, score
    model.repeat_weight, model.repeat_decay = best
    return found


def cold_items_line(cold: ColdImputation | None) -> str:
    """The model card's sentence on items that had no training events."""
    if cold is None:
        return "cold items (no training events): none given content-imputed embeddings"
    return (f"{cold.imputed} cold items given content-imputed embeddings ({cold.by_title} by "
            f"title, {cold.by_category} by category); {cold.left_as_trained} without usable "
            f"content kept as trained")


def repeat_line(outcome: FitOutcome) -> str:
    """The model card's sentence on the repeat-purchase bonus."""
    if outcome.repeat_tuning is None:
        return "repeat-purchase bonus: off (this data set's policy excludes past items)" if outcome.exclude_seen \
            else "repeat-purchase bonus: not tuned"
    model = outcome.models["sasrec"]
    side = outcome.repeat_side
    if side is not None and getattr(model, "repeat_head_hidden", 0):
        figures = ", ".join(f"{name}: {value:.4f}" for name, value in side.items())
        return (f"repeat side: a learned repeat head (session features of each past item, "
                f"models/repeat_head.py) mixed with the transformer's softmax, repeat share "
                f"{model.repeat_share:g}; chosen over the bonus on the newest session openings of the "
                f"training sequences, NDCG@{outcome.config.k} ({figures})")
    weight, decay = getattr(model, "repeat_weight", 0.0), getattr(model, "repeat_decay", 1.0)
    best = sorted(outcome.repeat_tuning.items(), key=lambda kv: -kv[1])[:5]
    tried = ", ".join(f"{w}: {s:.4f}" for w, s in best)
    kept = "" if side is None else (f"; a learned repeat head lost to it on session openings (bonus "
                                    f"{side['bonus']:.4f}, best head {max(v for n, v in side.items() if n != 'bonus'):.4f})")
    reads = getattr(model, "repeat_history", 0)
    span = f"the newest {reads:,} items of the history (what serving sends)" if reads else "the whole history"
    return (f"repeat-purchase bonus weight {weight:g} x log(1 + purchases over {span}, each "
            f"decayed {decay:g} per later item), chosen on validation NDCG@{outcome.config.k} among "
            f"{len(outcome.repeat_tuning)} settings (best: {tried}){kept}")


def baselines_line(outcome: FitOutcome) -> str:
    """The model card's sentence on the baselines' settings (chosen on held-out training items)."""
    if not outcome.baseline_settings:
        return "baseline settings: defaults (no tuning grid)"
    chosen = "; ".join(f"{name} {', '.join(f'{k}={v}' for k, v in setting.items())}"
                       for name, setting in outcome.baseline_settings.items())
    return f"baseline settings chosen on held-out training items (never test): {chosen}"


def model_card(outcome: FitOutcome, source: str, snapshot_id: str | None, feature_service: str) -> str:
    """Markdown model card: data, metrics against the baselines, segments, intended use."""
    tr = outcome.train_result
    policy = "excluded (each item is consumed once)" if outcome.exclude_seen else \
        "kept (repeat purchase: past items are often the right answer)"
    return f"""# Model card: SASRec+ sequential recommender

## Data
- source: {source}; training-data snapshot: {snapshot_id or 'unknown'}; Feast feature service: {feature_service}
- {outcome.n_items} items; {len(outcome.split.train)} training sequences; split: {outcome.split.spec.describe()}
  ({len(outcome.split.valid)} validation users; test set {outcome.split.test.describe_size()})
- item features: {len(outcome.features.categories)} categories; title embeddings: {'MiniLM (all-MiniLM-L6-v2)' if outcome.features.text is not None else 'none'}
- {cold_items_line(outcome.cold_items)}
- {repeat_line(outcome)}
- {user_context_line(outcome)}
- {baselines_line(outcome)}

## Training
- device {tr.device} (bf16 {tr.bf16}, {tr.world_size} process(es)); {tr.epochs} epochs, best epoch {tr.best_epoch}
  (validation NDCG@{outcome.config.k} {tr.best_valid_ndcg:.4f}); stopped by {tr.stopped}; {tr.seconds:.0f} s, {tr.seconds_per_epoch:.1f} s/epoch

## Test metrics against the baselines
Full ranking over all items; users' past items {policy}; ties count against the target.

{comparison_markdown(outcome.comparison(), outcome.config.k)}

## Intended use
Ranking candidate items for a known user from their recent interaction sequence, as the
`predictor` behind the shoprec serving path. Not for users without any history (it falls back
to index order: use the MostPop baseline), not for items outside the vocabulary, and not for
decisions about people beyond which products to show.
"""


def save_outcome(
    outcome: FitOutcome,
    directory: str | Path,
    *,
    source: str,
    snapshot_id: str | None = None,
    feature_service: str = DEFAULT_FEATURE_SERVICE,
    model_name: str = "sasrec",
) -> Path:
    """Write the transformer (or `model_name`) as a bundle with every model's test metrics."""
    metrics = {
        "primary": model_name,
        "k": outcome.config.k,
        "models": {row["model"]: row for row in outcome.comparison()},
        "train": outcome.train_result.to_dict(),
        "cold_items": None if outcome.cold_items is None else outcome.cold_items.to_dict(),
        "repeat_tuning": outcome.repeat_tuning,
        "repeat_side": outcome.repeat_side,
        "baseline_settings": outcome.baseline_settings,
    }
    return save_bundle(
        directory, outcome.models[model_name], outcome.vocab,
        exclude_seen=outcome.exclude_seen, metrics=metrics, feature_service=feature_service,
        snapshot_id=snapshot_id,
        training={"train_config": outcome.config.train.to_dict(), "split": outcome.split.spec.to_dict(),
                  "content": outcome.config.content, "source": source},
        model_card=model_card(outcome, source, snapshot_id, feature_service),
        user_context=outcome.user_context if model_name == "sasrec" else None,
    )
