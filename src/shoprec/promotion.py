"""The promotion gate: `decide(candidate, champion, ...) -> Decision`, a plain function of
per-user metrics on one evaluation window, with a paired bootstrap over the same users.

Rules (each a `Check` with its numbers, so every decision carries its reasons):
- with a champion: NDCG@k improves by at least `Policy.min_improvement`, the lower bound of the
  paired-bootstrap interval of the difference is above zero, and no guard metric (catalogue
  coverage, short-history users' NDCG@k) drops by more than its tolerance;
- with no champion yet: the candidate must beat MostPop and Markov-1 by the same NDCG rule;
- outside checks (the infra check of the real predictor) are added with `Decision.with_check`.

Models are scored in item-id space (`GateWindow`), not index space, so a candidate and a champion
trained on different catalogues are still compared on exactly the same users and targets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoprec.bundle import load_bundle
from shoprec.errors import GateError
from shoprec.evaluation import metrics as M
from shoprec.evaluation.evaluate import rank_targets
from shoprec.evaluation.splits import EvalSet, Split, leave_one_out, temporal_split
from shoprec.models.base import Recommender as Model
from shoprec.models.baselines import BuyAgain, Markov1, MostPop
from shoprec.training.data import ItemVocab, build_sequences, build_vocab

FIRST_RUN_BASELINES = ("mostpop", "markov1")


# --- the evaluation window ---------------------------------------------------------------
@dataclass(frozen=True)
class GateWindow:
    """The newest evaluation window, in item ids: user i saw `histories[i]` (oldest first), then
    `targets[i]`. `train` holds the sequences before the window (to fit first-run baselines)."""

    users: tuple[str, ...]
    histories: tuple[tuple[str, ...], ...]
    targets: tuple[str, ...]
    train: tuple[tuple[str, ...], ...] = ()
    kind: str = ""

    def __len__(self) -> int:
        return len(self.targets)

    def history_lengths(self) -> np.ndarray:
        return np.array([len(h) for h in self.histories], dtype=np.int64)

    def short_history(self, max_items: int | None = None) -> tuple[np.ndarray, int]:
        """(bool [U] mask, threshold): users with at most `max_items` history items (default:
        the shortest quartile of this window, as the evaluator's segment)."""
        lengths = self.history_lengths()
        threshold = max_items if max_items is not None else (
            int(np.quantile(lengths, 0.25)) if len(lengths) else 0)
        return lengths <= threshold, threshold

    @staticmethod
    def from_split(split: Split, vocab: ItemVocab) -> "GateWindow":
        """The split's test set (and its training sequences) in item ids."""
        test = split.test
        return GateWindow(
            users=tuple(str(u) for u in test.users),
            histories=tuple(tuple(vocab.item_ids(h)) for h in test.histories),
            targets=tuple(vocab.item_ids(test.targets)),
            train=tuple(tuple(vocab.item_ids(s)) for s in split.train),
            kind=split.kind,
        )

    def write(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(asdict(self)))
        return Path(path)

    @staticmethod
    def read(path: str | Path) -> "GateWindow":
        data = json.loads(Path(path).read_text())
        return GateWindow(
            tuple(data["users"]), tuple(tuple(h) for h in data["histories"]),
            tuple(data["targets"]), tuple(tuple(s) for s in data.get("train", ())), data.get("kind", ""),
        )


def newest_window(events: pd.DataFrame, items: pd.DataFrame | None, split_kind: str) -> GateWindow:
    """The evaluation window matching how the candidate was trained: for a temporal split
    ("temporal@<cutoff>", as bundles record it) every user's first item at or after the cutoff;
    otherwise the leave-one-out test set (each user's newest item)."""
    vocab = build_vocab(events, items)
    if split_kind.startswith("temporal@"):
        split = temporal_split(events, vocab, pd.Timestamp(split_kind.split("@", 1)[1]))
    else:
        split = leave_one_out(build_sequences(events, vocab))
    if len(split.test) == 0:
        raise GateError(f"the evaluation window ({split.kind}) holds no users")
    return GateWindow.from_split(split, vocab)


# --- scoring a model on the window ----------------------------------------------------------
@dataclass(frozen=True)
class GateScores:
    """One model on one window: per-user NDCG@k (aligned with `users`) and catalogue coverage."""

    name: str
    users: tuple[str, ...]
    ndcg: np.ndarray  # [U]
    coverage: float
    k: int = 10

    @property
    def mean_ndcg(self) -> float:
        return float(self.ndcg.mean()) if len(self.ndcg) else float("nan")


def score_model(model: Model, vocab: ItemVocab, exclude_seen: bool, window: GateWindow,
                k: int = 10, name: str | None = None) -> GateScores:
    """Rank every window target with the evaluator's `rank_targets` (full catalogue, the model's
    seen-items policy). A target outside the model's vocabulary cannot be ranked: it counts as a miss."""
    histories = []
    for history in window.histories:
        index = vocab.index(list(history))
        histories.append(index[index > 0])
    targets = vocab.index(list(window.targets))
    known = targets > 0
    # Unknown targets get a stand-in (item 1) so every user still gets a list for coverage.
    eval_set = EvalSet(np.asarray(window.users, dtype=object), histories, np.where(known, targets, 1))
    ranks, lists = rank_targets(model, eval_set, exclude_seen, k)
    ranks = np.where(known, ranks, model.n_items)
    return GateScores(name or model.kind, window.users, M.ndcg_at_k(ranks, k),
                      M.catalog_coverage(lists, model.n_items), k)


def score_bundle(bundle_dir: str | Path, window: GateWindow, k: int = 10,
                 name: str | None = None) -> GateScores:
    """Load a bundle (sha256 checked) and score it on the window with its own seen-items policy."""
    bundle = load_bundle(bundle_dir)
    return score_model(bundle.model, bundle.vocab, bundle.exclude_seen, window, k,
                       name or bundle.config.get("kind"))


def baseline_scores(window: GateWindow, exclude_seen: bool, k: int = 10) -> dict[str, GateScores]:
    """MostPop and Markov-1 - and on repeat-purchase data (past items kept) "buy again", the
    strongest simple model there - fit on the window's training sequences and scored on it."""
    if not window.train:
        raise GateError("the window carries no training sequences to fit the first-run baselines on")
    vocab = ItemVocab(tuple(sorted({i for s in window.train for i in s} |
                                   {i for h in window.histories for i in h} | set(window.targets))))
    train = [vocab.index(list(s)) for s in window.train]
    scores = {}
    models: list[Model] = [MostPop(vocab.n_items), Markov1(vocab.n_items)]
    if not exclude_seen:
        models.append(BuyAgain(vocab.n_items))
    for model in models:
        scores[model.kind] = score_model(model.fit(train), vocab, exclude_seen, window, k)
    return scores


# --- the decision ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    """The gate's settings. Margins and tolerances are absolute (NDCG and coverage are in 0..1)."""

    k: int = 10
    min_improvement: float = 0.0  # NDCG@k must rise (above zero) by at least this much ...
    confidence: float = 0.95  # ... and the lower bound of this paired interval must be > 0
    bootstrap: int = 1000
    seed: int = 0
    coverage_tolerance: float = 0.02  # the largest allowed drop in catalogue coverage
    short_history_tolerance: float = 0.01  # ... and in short-history users' NDCG@k
    short_history_max: int | None = None  # None: the window's shortest quartile
    require_all_baselines: bool = False  # first run: must "buy again" (repeat data) be beaten too?

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One rule: passed or not, a sentence saying why, and the numbers behind it."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    blocking: bool = True  # False: reported (WARN when failed), never stops a promotion


@dataclass(frozen=True)
class Decision:
    """promote = every check passed. `reasons` are the checks' sentences, failures first."""

    candidate: str
    champion: str | None
    checks: tuple[Check, ...]
    policy: Policy
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks if c.blocking)

    @property
    def reasons(self) -> list[str]:
        ordered = [c for c in self.checks if not c.passed] + [c for c in self.checks if c.passed]
        return [f"{_verdict(c)} {c.name}: {c.detail}" for c in ordered]

    def with_check(self, check: Check) -> "Decision":
        return replace(self, checks=(*self.checks, check))

    def to_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote, "candidate": self.candidate, "champion": self.champion,
            "reasons": self.reasons, "checks": [asdict(c) for c in self.checks],
            "policy": self.policy.to_dict(), "metrics": self.metrics,
        }

    def to_markdown(self) -> str:
        verdict = "PROMOTE" if self.promote else "REJECT"
        beaten = [n.removesuffix(" NDCG@" + str(self.policy.k)) for n in self.metrics
                  if n.endswith(f" NDCG@{self.policy.k}") and not n.startswith(("candidate", "champion"))]
        against = self.champion or f"baselines ({', '.join(beaten or FIRST_RUN_BASELINES)}): no champion yet"
        lines = [f"# Promotion decision: {verdict}", "",
                 f"- candidate: {self.candidate}", f"- compared with: {against}", "",
                 "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c.name} | {_verdict(c).lower() if c.passed else f'**{_verdict(c)}**'} | {c.detail} |"
                  for c in self.checks]
        if self.metrics:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {name} | {_fmt(value)} |" for name, value in self.metrics.items()]
        return "\n".join(lines) + "\n"

    def write(self, json_path: str | Path, markdown_path: str | Path | None = None) -> None:
        Path(json_path).write_text(json.dumps(self.to_dict(), indent=2, default=float))
        if markdown_path is not None:
            Path(markdown_path).write_text(self.to_markdown())


def paired_bootstrap(candidate: np.ndarray, champion: np.ndarray, n_resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean difference, low, high): the percentile bootstrap of mean(candidate - champion) that
    resamples users, each resample taking both models' values of the same users."""
    candidate, champion = np.asarray(candidate, float), np.asarray(champion, float)
    if candidate.shape != champion.shape:
        raise GateError(f"paired bootstrap needs the same users: {candidate.shape} vs {champion.shape}")
    diff = candidate - champion  # resampling the per-user differences IS the paired bootstrap
    low, high = M.bootstrap_interval(diff, n_resamples, confidence, seed)
    return float(diff.mean()) if len(diff) else float("nan"), low, high


def _verdict(check: Check) -> str:
    return "PASS" if check.passed else ("FAIL" if check.blocking else "WARN")


def _improvement_checks(candidate: GateScores, other: GateScores, policy: Policy,
                        label: str) -> tuple[list[Check], dict[str, float]]:
    k = policy.k
    delta, low, high = paired_bootstrap(candidate.ndcg, other.ndcg, policy.bootstrap,
                                        policy.confidence, policy.seed)
    values = {"candidate": candidate.mean_ndcg, label: other.mean_ndcg, "delta": delta,
              "low": low, "high": high}
    # "Improves": strictly above zero even when the configured margin is zero.
    improves = delta > 0 and delta >= policy.min_improvement
    margin = Check(
        f"NDCG@{k} margin vs {label}", improves,
        f"{candidate.mean_ndcg:.4f} vs {other.mean_ndcg:.4f}: {delta:+.4f} "
        f"({'meets' if improves else 'misses'} the required improvement of at least "
        f"{policy.min_improvement:+.4f}, above zero)",
        values)
    pct = round(policy.confidence * 100)
    significant = Check(
        f"NDCG@{k} significance vs {label}", low > 0,
        f"paired bootstrap {pct}% interval of the difference [{low:+.4f}, {high:+.4f}] "
        f"({'lower bound above zero' if low > 0 else 'lower bound not above zero'}; {len(candidate.ndcg)} users)",
        values)
    return [margin, significant], values


def decide(candidate: GateScores, champion: GateScores | None, *, short_history: np.ndarray,
           policy: Policy = Policy(), baselines: dict[str, GateScores] | None = None) -> Decision:
    """The gate. All scores must come from the same window (same users, same order);
    `short_history` marks that window's short-history users. Without a champion, `baselines`
    must hold MostPop and Markov-1 scores."""
    k = policy.k
    others = [champion] if champion is not None else list((baselines or {}).values())
    for other in others:
        if tuple(other.users) != tuple(candidate.users):
            raise GateError(f"{candidate.name} and {other.name} were not scored on the same window "
                            f"({len(candidate.users)} vs {len(other.users)} users, or another order)")
    short = np.asarray(short_history, dtype=bool)
    if short.shape != candidate.ndcg.shape:
        raise GateError(f"short_history mask has {short.shape} entries for {candidate.ndcg.shape} users")
    checks: list[Check] = []
    metrics: dict[str, Any] = {f"candidate NDCG@{k}": candidate.mean_ndcg,
                               "candidate coverage": candidate.coverage, "users": len(candidate.ndcg)}
    if champion is None:
        given = baselines or {}
        missing = [b for b in FIRST_RUN_BASELINES if b not in given]
        if missing:
            raise GateError(f"no champion yet, so the gate needs baseline scores for {missing}")
        # The required baselines must be beaten; others given ("buy again" where the data set
        # keeps past items, see baseline_scores) are compared too, and block only when
        # `policy.require_all_baselines` says so: a shop may still want a personal model that
        # trails "buy again" on this metric, but it must see that it does.
        for name in [*FIRST_RUN_BASELINES, *sorted(set(given) - set(FIRST_RUN_BASELINES))]:
            found, values = _improvement_checks(candidate, given[name], policy, name)
            if name not in FIRST_RUN_BASELINES and not policy.require_all_baselines:
                found = [replace(c, blocking=False) for c in found]
            checks += found
            metrics[f"{name} NDCG@{k}"] = values[name]
            metrics[f"delta vs {name}"] = values["delta"]
        return Decision(candidate.name, None, tuple(checks), policy, metrics)

    found, values = _improvement_checks(candidate, champion, policy, "champion")
    checks += found
    metrics.update({f"champion NDCG@{k}": champion.mean_ndcg, "champion coverage": champion.coverage,
                    f"delta NDCG@{k}": values["delta"], "delta low": values["low"],
                    "delta high": values["high"]})
    drop = champion.coverage - candidate.coverage
    checks.append(Check(
        "coverage guard", drop <= policy.coverage_tolerance,
        f"{candidate.coverage:.4f} vs {champion.coverage:.4f}: drop {drop:+.4f} "
        f"({'within' if drop <= policy.coverage_tolerance else 'beyond'} tolerance {policy.coverage_tolerance:.4f})",
        {"candidate": candidate.coverage, "champion": champion.coverage, "drop": drop}))
    if short.any():
        cand_short, champ_short = float(candidate.ndcg[short].mean()), float(champion.ndcg[short].mean())
        drop = champ_short - cand_short
        ok = drop <= policy.short_history_tolerance
        detail = (f"{cand_short:.4f} vs {champ_short:.4f} on {int(short.sum())} short-history users: "
                  f"drop {drop:+.4f} ({'within' if ok else 'beyond'} tolerance {policy.short_history_tolerance:.4f})")
        values = {"candidate": cand_short, "champion": champ_short, "drop": drop, "users": int(short.sum())}
        metrics.update({f"candidate short-history NDCG@{k}": cand_short,
                        f"champion short-history NDCG@{k}": champ_short})
    else:
        ok, detail, values = True, "no short-history users in this window", {"users": 0}
    checks.append(Check(f"short-history NDCG@{k} guard", ok, detail, values))
    return Decision(candidate.name, champion.name, tuple(checks), policy, metrics)


def gate_bundle(candidate_dir: str | Path, window: GateWindow, champion_dir: str | Path | None,
                policy: Policy = Policy(), champion_name: str | None = None) -> Decision:
    """Score the candidate bundle and the champion bundle (or, with none, the first-run
    baselines) on the same window and decide."""
    candidate_bundle = load_bundle(candidate_dir)
    candidate = score_model(candidate_bundle.model, candidate_bundle.vocab,
                            candidate_bundle.exclude_seen, window, policy.k,
                            f"candidate ({candidate_bundle.config.get('kind')})")
    short, threshold = window.short_history(policy.short_history_max)
    if champion_dir is None:
        decision = decide(candidate, None, short_history=short, policy=policy,
                          baselines=baseline_scores(window, candidate_bundle.exclude_seen, policy.k))
    else:
        champion = score_bundle(champion_dir, window, policy.k, champion_name or "champion")
        decision = decide(candidate, champion, short_history=short, policy=policy)
    return replace(decision, metrics={**decision.metrics, "window": window.kind,
                                      "short-history threshold (items)": threshold})


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# --- the pipeline's promote step ---------------------------------------------------------------
@dataclass(frozen=True)
class PromotionOutcome:
    """The decision (gate + infra check) and the registry version the candidate was recorded as."""

    decision: Decision
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self.decision.to_dict()}


def run_promotion(candidate_dir: str | Path, data_dir: str | Path, registry: Any,
                  policy: Policy = Policy(), *, infra_timeout_s: float = 60.0) -> PromotionOutcome:
    """The `promote` step: build the newest evaluation window from the data set (the split the
    candidate was trained with, as its bundle records), score the candidate against the
    registry's production version (or the first-run baselines), run the infra check, and
    register the candidate as a new version whatever the verdict (so a person can still promote
    it by hand). The alias is not moved here: that is `deploy`'s job."""
    from shoprec.data.dataset import EventData
    from shoprec.infra_check import check_bundle

    candidate_dir = Path(candidate_dir)
    config = load_bundle(candidate_dir).config  # refuses a bundle whose weights fail their sha256
    data = EventData.read(data_dir)
    window = newest_window(data.events, data.items, str(config.get("training", {}).get("split", "")))
    champion = registry.production()
    champion_dir = registry.bundle_dir(champion) if champion else None
    decision = gate_bundle(candidate_dir, window, champion_dir, policy,
                           champion_name=f"champion {champion}" if champion else None)
    decision = decision.with_check(check_bundle(candidate_dir, timeout_s=infra_timeout_s).as_check())
    metrics = {name: value for name, value in (
        (f"NDCG@{policy.k}", decision.metrics.get(f"candidate NDCG@{policy.k}")),
        ("coverage", decision.metrics.get("candidate coverage")),
        (f"short-history NDCG@{policy.k}", decision.metrics.get(f"candidate short-history NDCG@{policy.k}")),
    ) if value is not None}
    version = registry.register(candidate_dir, metrics={**metrics, "window": window.kind},
                                note=f"gate: {'promote' if decision.promote else 'reject'}")
    return PromotionOutcome(decision, version.version)
