"""The library half of the predictor server (serving/predictor/ only adapts it to KServe):
answers to V1 requests (parsed and bounded by `shoprec.serving.requests`) through
`shoprec.models.inference.BundleRecommender`, and a `LiveModel` that serves a fixed bundle or
follows a registry alias.

An instance may also carry `exclude` (item ids never to return), `category` (only items of it;
needs an item catalogue), `reasons` (true: each item also gets the history item that
contributed most, and the answer says how many history items the model knew), `diversity`
(0..1: MMR re-ranking over the catalogue's categories, `shoprec.serving.diversity`; the answer
gains "diversity@k") and `sponsored` candidates with `sponsored_slots` (placed by
`shoprec.serving.sponsored` above the server's relevance floor, `sponsored_floor`, which no
request can lower; the answer gains "sponsored", one flag per item) or, instead of listing
them, a `campaign` of the server's campaigns table (`shoprec.serving.campaigns`: its rows
active now, less the items the served model does not know; the answer also names the
campaign). V2 requests (`parse_v2`: the histories as a BYTES `items` input) get the same
answers as tensors (`v2_outputs`). A plain instance is
answered by `BundleRecommender.recommend_batch`, exactly as the evaluator ranks; the others
from one masked score row, in this order: diversity re-ranks it, reasons explain the list,
sponsored items are placed into it (a paid item has no reason: the model did not choose it).

Following an alias is `shoprec.serving.alias_follower.AliasFollower`'s: a background thread
reads the alias pointer every `poll_seconds`; when it names another version, the new bundle is
loaded and verified completely, then one reference (version, recommender) is swapped. Requests
always read that one reference, so each is answered wholly by the old model or wholly by the
new one, none waits for a load, and a version that fails to load is logged once (one line) and
never served (the old one keeps answering); it is tried again after a back-off that doubles up
to `MAX_RETRY_SECONDS`, not at every poll (a load reads and hashes the whole weights file).

Scoring is CPU work: `ScoringPool` runs it in worker threads, at most `concurrency` requests at
once and at most `max_waiting` more queued (beyond: `ServerBusy`), so the server's event loop
keeps answering health probes and other requests while a large one is scored.

The window check: given the window of the feature tables the histories come from
(`features_max_len`, from their features.json), a bundle whose model reads a longer window is
refused at load (BundleError): the online store would only ever hand it the newest
`features_max_len` items, so it would silently answer from shorter histories than it was
trained on. So is a model whose repeat side reads a longer history than the tables'
`user_history` keeps (`features_history_len`); requests may carry histories that long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from shoprec.serving.catalog import ItemCatalog
from shoprec.errors import BundleError, InvalidRequest
from shoprec.models.inference import BundleRecommender
from shoprec.models.base import mask_seen
from shoprec.ranking.sponsored import DEFAULT_FLOOR
from shoprec.serving.diversity import catalog_categories, diversified
from shoprec.serving.reasons import reason_indices
from shoprec.serving.campaigns import CAMPAIGNS_ENV, Campaigns
from shoprec.serving.requests import Query, TensorInput, bounded, history_limit, parse_v1, parse_v2, shown
from shoprec.serving.sponsored import with_sponsored
from shoprec.lifecycle.registry import PRODUCTION, Registry
from shoprec.serving.alias_follower import AliasFollower, ServingUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServerBusy(ServingUnavailable):
    """Every scoring slot is taken and the queue is full: retry shortly."""


class ScoringPool:
    """Runs scoring functions in `concurrency` worker threads, never on the caller's event loop.

    A bounded semaphore admits `concurrency` calls; up to `max_waiting` more wait for a slot
    (each holds only its parsed request); beyond that `run` raises ServerBusy at once, so a
    flood cannot queue unbounded work or memory."""

    def __init__(self, concurrency: int = 1, max_waiting: int = 64) -> None:
        if concurrency < 1 or max_waiting < 0:
            raise ValueError("concurrency must be >= 1 and max_waiting >= 0")
        self.concurrency, self.max_waiting = concurrency, max_waiting
        self._executor = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="shoprec-scoring")
        self._slots: asyncio.BoundedSemaphore | None = None  # made on the loop that uses it
        self._waiting = 0

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in a worker thread once a slot is free; ServerBusy when the queue is full."""
        if self._slots is None:
            self._slots = asyncio.BoundedSemaphore(self.concurrency)
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise ServerBusy(f"the predictor is busy: {self.concurrency} request(s) scoring and "
                             f"{self._waiting} waiting; retry shortly")
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop the worker threads once the calls in flight are done."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def answer(recommender: BundleRecommender, queries: Sequence[Query],
           catalog: ItemCatalog | None = None, *, features: np.ndarray | None = None,
           sponsored_floor: float = DEFAULT_FLOOR) -> list[dict[str, Any]]:
    """One {"items": [...], "scores": [...]} per query, best first (one batch per distinct k).

    Plain queries go through `recommend_batch`; the others through `filtered_topk` (the same
    scores and order, minus the excluded and off-category items), then, in this order, MMR
    re-ranking (`diversity`), reasons, sponsored placement. With `reasons`, each answer also
    has "reasons" (history item id or None per item) and "history_used".

    features: [N+1] category code per vocabulary index (`catalog_categories`, built once per
    loaded bundle); without it a `diversity` query is ServingUnavailable (the server's set-up
    is at fault). sponsored_floor: the server's relevance floor. Unknown sponsored items or
    bad bids are InvalidRequest."""
    out: list[dict[str, Any] | None] = [None] * len(queries)
    rows_of: dict[int, torch.Tensor] = {}  # the masked score row each non-plain answer came from
    plain = [n for n, q in enumerate(queries) if q.plain]
    for k in sorted({queries[n].k for n in plain}):
        rows = [n for n in plain if queries[n].k == k]
        try:
            found = recommender.recommend_batch([queries[n].history for n in rows], k,
                                                starts=[queries[n].session_starts for n in rows])
        except ValueError as exc:  # openings that do not align with the items: the request's fault
            raise InvalidRequest(bounded(f"session_starts: {exc}")) from exc
        for n, recs in zip(rows, found):
            out[n] = {"items": [r.item_id for r in recs], "scores": [r.score for r in recs]}
    vocab = recommender.bundle.vocab
    for n, query in enumerate(queries):
        if query.plain:
            continue
        out[n], rows_of[n] = filtered_topk(recommender, query, catalog)
        if query.diversity > 0.0:
            if features is None:
                raise ServingUnavailable("diversity re-ranking is unavailable: this predictor was started "
                                         "without an item catalogue to take categories from (operator: "
                                         "start it with --catalog FEATURES_DIR or --items ITEMS)")
            out[n] = diversified(rows_of[n], vocab, features, k=min(query.k, recommender.bundle.model.n_items),
                                 diversity=query.diversity)
    explained = [n for n, q in enumerate(queries) if q.reasons]
    if explained:
        add_reasons(recommender, [queries[n] for n in explained], [out[n] for n in explained])  # type: ignore[misc]
    for n, query in enumerate(queries):
        if query.sponsored or query.campaign is not None:  # a campaign's answer is flagged even when nothing is placed
            try:
                out[n] = with_sponsored(out[n], rows_of[n], vocab, query.sponsored,  # type: ignore[arg-type]
                                        k=min(query.k, recommender.bundle.model.n_items),
                                        slots=query.sponsored_slots, floor=sponsored_floor)
            except ValueError as exc:  # unknown items, repeats: the request's fault
                raise InvalidRequest(bounded(f"instances[{n}]: {exc}")) from exc
            if query.campaign is not None:
                out[n]["campaign"] = query.campaign  # type: ignore[index]
    return out  # type: ignore[return-value]


MAX_NAMED_CAMPAIGNS = 5  # campaign names an "unknown campaign" message lists


def with_campaigns(queries: Sequence[Query], campaigns: Campaigns | None, recommender: BundleRecommender,
                   fields: Callable[[int], str] = lambda n: f"instances[{n}].campaign") -> list[Query]:
    """The queries with each named `campaign` resolved into its sponsored candidates: the
    campaign's rows active now whose items the served model knows (a campaign outlives model
    versions, so an item the model lacks is left out, not a client error).

    InvalidRequest names the field (`fields(n)`) and the unknown campaign;
    ServingUnavailable when a campaign is named and the server has no campaigns table."""
    out = list(queries)
    for n, query in enumerate(queries):
        if query.campaign is None:
            continue
        if campaigns is None:  # the server's set-up is at fault, not the request
            raise ServingUnavailable("campaigns are unavailable: this predictor was started without a "
                                     f"campaigns table (operator: start it with --campaigns PATH or "
                                     f"${CAMPAIGNS_ENV})")
        if query.campaign not in campaigns:
            names = ", ".join(repr(c) for c in campaigns.names[:MAX_NAMED_CAMPAIGNS])
            more = f" and {len(campaigns) - MAX_NAMED_CAMPAIGNS} more" if len(campaigns) > MAX_NAMED_CAMPAIGNS else ""
            raise InvalidRequest(bounded(f"{fields(n)}: unknown campaign {shown(query.campaign)}; this "
                                         f"server's campaigns: {names or 'none'}{more}"))
        candidates = campaigns.candidates(query.campaign)
        known = recommender.bundle.vocab.index([c.item for c in candidates]) if candidates else []
        out[n] = replace(query, sponsored=tuple(c for c, i in zip(candidates, known) if i > 0))
    return out


NOT_ASKED = -1  # `history_used` of a V2 user whose reasons were not asked for


def v2_outputs(predictions: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[int], list[Any]]]:
    """The predictor's answers as Open Inference Protocol outputs (name, datatype, shape, flat
    data): item_id BYTES [n, k], score FP32 [n, k], sponsored BOOL [n, k]; rows shorter than
    the longest are padded with "", 0.0 and false. When reasons were asked for (any user),
    also reason_item_id BYTES [n, k] (the history item that contributed most; "" for none, a
    paid item or a user who did not ask) and history_used INT32 [n] (`NOT_ASKED` for such a
    user), V1's "reasons" and "history_used"."""
    width = max((len(p["items"]) for p in predictions), default=0)
    ids: list[str] = []
    scores: list[float] = []
    sponsored: list[bool] = []
    reasons: list[str] = []
    for p in predictions:
        pad, n = width - len(p["items"]), len(p["items"])
        ids += [str(i) for i in p["items"]] + [""] * pad
        scores += [float(v) for v in p["scores"]] + [0.0] * pad
        sponsored += [bool(f) for f in p.get("sponsored") or [False] * n] + [False] * pad
        reasons += [r or "" for r in p.get("reasons") or [None] * n] + [""] * pad
    shape = [len(predictions), width]
    outputs = [("item_id", "BYTES", shape, ids), ("score", "FP32", shape, scores),
               ("sponsored", "BOOL", shape, sponsored)]
    if any("reasons" in p for p in predictions):
        outputs += [("reason_item_id", "BYTES", shape, reasons),
                    ("history_used", "INT32", [len(predictions)],
                     [int(p.get("history_used", NOT_ASKED)) for p in predictions])]
    return outputs


def _indexed(recommender: BundleRecommender, query: Query) -> tuple[np.ndarray, np.ndarray | None]:
    """A query's history -> (known item indices, their session openings or None), as
    `recommend_batch` builds them; InvalidRequest when the openings do not align."""
    try:
        return recommender.indexed(query.history, query.session_starts)
    except ValueError as exc:
        raise InvalidRequest(bounded(f"session_starts: {exc}")) from exc


def filtered_topk(recommender: BundleRecommender, query: Query,
                  catalog: ItemCatalog | None) -> tuple[dict[str, Any], torch.Tensor]:
    """Top-k of the bundle's model with the seen-items policy, never an excluded item and, with
    a category, only items of it (ties broken as `Model.topk` does: stable, by index); and the
    masked [1, N+1] score row it came from (-inf: never to be shown), which the re-ranking and
    the sponsored relevance read, so neither can bring back an excluded item."""
    bundle = recommender.bundle
    history, opened = _indexed(recommender, query)
    if opened is None:
        scores = bundle.model.score_all([history]).float()  # [1, N+1]
    else:
        scores = bundle.model.score_all([history], starts=[opened]).float()  # type: ignore[call-arg]
    if bundle.exclude_seen:
        mask_seen(scores, [history])
    banned = bundle.vocab.index(list(query.exclude)) if query.exclude else np.zeros(0, dtype=np.int64)
    banned = banned[banned > 0]
    if len(banned):
        scores[0, torch.as_tensor(banned)] = float("-inf")
    if query.category is not None:
        if catalog is None:  # the server's configuration is at fault, not the request
            raise ServingUnavailable("the category filter is unavailable: this predictor was started "
                                     "without an item catalogue (operator: start it with --catalog "
                                     "FEATURES_DIR or --items ITEMS)")
        allowed = bundle.vocab.index(catalog.items_in(query.category))
        keep = torch.zeros(scores.shape[1], dtype=torch.bool)
        keep[torch.as_tensor(allowed[allowed > 0], dtype=torch.long)] = True
        scores[0, ~keep] = float("-inf")
    k = min(query.k, bundle.model.n_items)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[0, :k]
    picked = scores[0, order]
    items, values = [], []
    for index, score in zip(order.tolist(), picked.tolist()):
        if index > 0 and np.isfinite(score):
            items.append(bundle.vocab.ids[index - 1])
            values.append(float(score))
    return {"items": items, "scores": values}, scores


def add_reasons(recommender: BundleRecommender, queries: Sequence[Query], answers: Sequence[dict[str, Any]]) -> None:
    """Add "reasons" and "history_used" to each answer in place (one scoring batch for all)."""
    vocab = recommender.bundle.vocab
    pairs = [_indexed(recommender, q) for q in queries]
    histories = [history for history, _ in pairs]
    recommended = [vocab.index(a["items"]) for a in answers]
    found = reason_indices(recommender.bundle.model, histories, recommended,
                           starts=[opened for _, opened in pairs] if recommender.needs_sessions else None)
    for answer_, history, reasons in zip(answers, histories, found):
        answer_["reasons"] = [vocab.ids[r - 1] if r else None for r in reasons]
        answer_["history_used"] = int(len(history))


def lineage(recommender: BundleRecommender, version: str) -> dict[str, Any]:
    """Model version, feature service and training-data snapshot of the served bundle."""
    config = recommender.bundle.config
    return {"model_version": version, "feature_service": config.get("feature_service"),
            "data_snapshot": config.get("snapshot_id"), "model_kind": config.get("kind")}


class LiveModel(AliasFollower[tuple[BundleRecommender, "np.ndarray | None"]]):
    """The (version, recommender) a server answers with: an `AliasFollower` whose served thing
    is the recommender with its items' category codes (swapped together, so a request never
    pairs one bundle with another's item features)."""

    def __init__(self, *, bundle_dir: str | Path | None = None, registry: Registry | None = None,
                 alias: str = PRODUCTION, poll_seconds: float = 1.0,
                 catalog: ItemCatalog | None = None, features_max_len: int | None = None,
                 sponsored_floor: float = DEFAULT_FLOOR, campaigns: Campaigns | None = None,
                 features_history_len: int | None = None) -> None:
        """features_max_len: the window of the feature tables the users' histories come from
        (`shoprec.features.tables.features_max_len`); a bundle reading a longer one is refused.
        features_history_len: how long the histories they send are (`features_history_len`;
        default: the window); a bundle whose repeat side reads longer ones is refused.
        sponsored_floor: the relevance percentile a sponsored item must be above (a server
        setting: requests cannot change it). campaigns: the table a request's `campaign`
        names (loaded at start; without it, naming a campaign is ServingUnavailable)."""
        self.campaigns = campaigns
        if not 0.0 <= sponsored_floor <= 1.0:
            raise ValueError(f"sponsored_floor is a relevance percentile in [0, 1], not {sponsored_floor}")
        self.sponsored_floor = sponsored_floor
        super().__init__(bundle_dir=bundle_dir, registry=registry, alias=alias, poll_seconds=poll_seconds)
        self.catalog = catalog
        self.features_max_len = features_max_len
        self.features_history_len = features_history_len or features_max_len

    def open_folder(self, folder: Path) -> tuple[str, tuple[BundleRecommender, np.ndarray | None]]:
        recommender = self.check_window(BundleRecommender.from_bundle(folder), str(folder))
        # The registry version when the folder is a copy of one (/mnt/models on a cluster).
        return recommender.bundle.version or folder.name, (recommender, self._features(recommender))

    def open_version(self, version: str) -> tuple[BundleRecommender, np.ndarray | None]:
        assert self.registry is not None
        recommender = self.check_window(self.registry.load(version), f"{self.alias} version {version}")
        return recommender, self._features(recommender)  # built before the swap

    def _features(self, recommender: BundleRecommender) -> np.ndarray | None:
        """Category codes of the bundle's vocabulary from the catalogue, once per loaded bundle
        (a vocabulary walk: never per request); None without a catalogue."""
        return catalog_categories(self.catalog, recommender.bundle.vocab) if self.catalog is not None else None

    def check_window(self, recommender: BundleRecommender, what: str) -> BundleRecommender:
        """The recommender, unless it cannot be served as trained: its model reads a longer
        window (or repeat history) than the feature tables keep, or reads a user context
        (user_stats) that the serving path does not send yet; then BundleError saying why and
        what to do. A model with a repeat head is served: requests carry `session_starts`."""
        if recommender.bundle.user_context is not None:
            # Scoring without the context would silently answer as for the average user.
            raise BundleError(
                f"model bundle {what} reads a user context ({', '.join(recommender.bundle.user_context.columns)}) "
                f"that the serving path does not send to the predictor yet; train it without "
                f"user_context to serve it; refusing to serve it")
        repeat_len = int(getattr(recommender.bundle.model, "repeat_history", 0) or 0)
        if repeat_len and self.features_history_len is not None and repeat_len > self.features_history_len:
            raise BundleError(
                f"model bundle {what} reads the newest repeat_history={repeat_len} items of a history, "
                f"but the feature tables keep only history_len={self.features_history_len} per user: "
                f"rebuild the features with history_len={repeat_len}, or retrain the model on these "
                f"features (its repeat side then reads their {self.features_history_len}); refusing to serve it")
        model_len, features_len = recommender.bundle.max_len, self.features_max_len
        if model_len is not None and features_len is not None and model_len > features_len:
            raise BundleError(
                f"model bundle {what} reads the newest max_len={model_len} history items, but the "
                f"feature tables keep only max_len={features_len} recent items per user: rebuild the "
                f"features with max_len={model_len}, or train the model with max_len={features_len}; "
                f"refusing to serve it")
        return recommender

    def predict_v1(self, payload: Any) -> dict[str, Any]:
        """A V1 answer: {"predictions": [...], "model_version": ..., "lineage": {...}}."""
        version, (recommender, features) = self.current()  # read once: the whole request uses one model
        queries = parse_v1(payload, history_limit(recommender.history_read, self.features_history_len))
        queries = with_campaigns(queries, self.campaigns, recommender)
        predictions = answer(recommender, queries, self.catalog, features=features,
                             sponsored_floor=self.sponsored_floor)
        return {"predictions": predictions, "model_version": version, "lineage": lineage(recommender, version)}

    def predict_v2(self, inputs: Sequence[TensorInput]) -> dict[str, Any]:
        """The answer to Open Inference Protocol inputs (`parse_v2`), as `predict_v1` returns
        it; `v2_outputs` turns its predictions into tensors."""
        version, (recommender, features) = self.current()
        queries = parse_v2(inputs, history_limit(recommender.history_read, self.features_history_len))
        queries = with_campaigns(queries, self.campaigns, recommender, lambda n: "input campaign[0]")
        predictions = answer(recommender, queries, self.catalog, features=features,
                             sponsored_floor=self.sponsored_floor)
        return {"predictions": predictions, "model_version": version, "lineage": lineage(recommender, version)}
