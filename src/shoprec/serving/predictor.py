"""The library half of the predictor server (serving/predictor/ only adapts it to KServe):
answers to V1 requests (parsed and bounded by `shoprec.serving.requests`) through
`shoprec.models.inference.BundleRecommender`, and a `LiveModel` that serves a fixed bundle or
follows a registry alias.

An instance may also carry `exclude` (item ids never to return), `category` (only items of it;
needs an item catalogue) and `reasons` (true: each item also gets the history item that
contributed most, and the answer says how many history items the model knew). A plain
instance is answered by `BundleRecommender.recommend_batch`, exactly as the evaluator ranks.

Following an alias: a background thread reads the alias pointer every `poll_seconds`; when it
names another version, the new bundle is loaded and verified completely, then one reference
(version, recommender) is swapped. Requests always read that one reference, so each is answered
wholly by the old model or wholly by the new one, none waits for a load, and a version that
fails to load is logged and never served (the old one keeps answering).

The window check: given the window of the feature tables the histories come from
(`features_max_len`, from their features.json), a bundle whose model reads a longer window is
refused at load (BundleError): the online store would only ever hand it the newest
`features_max_len` items, so it would silently answer from shorter histories than it was
trained on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shoprec.serving.catalog import ItemCatalog
from shoprec.errors import BundleError, InvalidRequest, RegistryError
from shoprec.models.inference import MAX_HISTORY, BundleRecommender
from shoprec.models.base import mask_seen
from shoprec.serving.reasons import reason_indices
from shoprec.serving.requests import Query, parse_v1
from shoprec.lifecycle.registry import PRODUCTION, Registry

logger = logging.getLogger(__name__)


def answer(recommender: BundleRecommender, queries: Sequence[Query],
           catalog: ItemCatalog | None = None) -> list[dict[str, Any]]:
    """One {"items": [...], "scores": [...]} per query, best first (one batch per distinct k).

    Plain queries go through `recommend_batch`; filtered ones through `filtered_topk` (the same
    scores and order, minus the excluded and off-category items). With `reasons`, each answer
    also has "reasons" (history item id or None per item) and "history_used"."""
    out: list[dict[str, Any] | None] = [None] * len(queries)
    plain = [n for n, q in enumerate(queries) if q.plain]
    for k in sorted({queries[n].k for n in plain}):
        rows = [n for n in plain if queries[n].k == k]
        for n, recs in zip(rows, recommender.recommend_batch([queries[n].history for n in rows], k)):
            out[n] = {"items": [r.item_id for r in recs], "scores": [r.score for r in recs]}
    for n, query in enumerate(queries):
        if not query.plain:
            out[n] = filtered_topk(recommender, query, catalog)
    explained = [n for n, q in enumerate(queries) if q.reasons]
    if explained:
        add_reasons(recommender, [queries[n] for n in explained], [out[n] for n in explained])  # type: ignore[misc]
    return out  # type: ignore[return-value]


def _indexed(recommender: BundleRecommender, history: Sequence[str]) -> np.ndarray:
    """History item ids -> known item indices (as `recommend_batch` builds them)."""
    index = recommender.bundle.vocab.index(list(history)[-MAX_HISTORY:])
    return index[index > 0].astype(np.int64)


def filtered_topk(recommender: BundleRecommender, query: Query, catalog: ItemCatalog | None) -> dict[str, Any]:
    """Top-k of the bundle's model with the seen-items policy, never an excluded item and, with
    a category, only items of it (ties broken as `Model.topk` does: stable, by index)."""
    bundle = recommender.bundle
    history = _indexed(recommender, query.history)
    scores = bundle.model.score_all([history]).float()  # [1, N+1]
    if bundle.exclude_seen:
        mask_seen(scores, [history])
    banned = bundle.vocab.index(list(query.exclude)) if query.exclude else np.zeros(0, dtype=np.int64)
    banned = banned[banned > 0]
    if len(banned):
        scores[0, torch.as_tensor(banned)] = float("-inf")
    if query.category is not None:
        if catalog is None:
            raise InvalidRequest("category filter: this predictor has no item catalogue (start it with --catalog)")
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
    return {"items": items, "scores": values}


def add_reasons(recommender: BundleRecommender, queries: Sequence[Query], answers: Sequence[dict[str, Any]]) -> None:
    """Add "reasons" and "history_used" to each answer in place (one scoring batch for all)."""
    vocab = recommender.bundle.vocab
    histories = [_indexed(recommender, q.history) for q in queries]
    recommended = [vocab.index(a["items"]) for a in answers]
    found = reason_indices(recommender.bundle.model, histories, recommended)
    for answer_, history, reasons in zip(answers, histories, found):
        answer_["reasons"] = [vocab.ids[r - 1] if r else None for r in reasons]
        answer_["history_used"] = int(len(history))


def lineage(recommender: BundleRecommender, version: str) -> dict[str, Any]:
    """Model version, feature service and training-data snapshot of the served bundle."""
    config = recommender.bundle.config
    return {"model_version": version, "feature_service": config.get("feature_service"),
            "data_snapshot": config.get("snapshot_id"), "model_kind": config.get("kind")}


class LiveModel:
    """The (version, recommender) a server answers with."""

    def __init__(self, *, bundle_dir: str | Path | None = None, registry: Registry | None = None,
                 alias: str = PRODUCTION, poll_seconds: float = 1.0,
                 catalog: ItemCatalog | None = None, features_max_len: int | None = None) -> None:
        """features_max_len: the window of the feature tables the users' histories come from
        (`shoprec.features.tables.features_max_len`); a bundle reading a longer one is refused."""
        if (bundle_dir is None) == (registry is None):
            raise ValueError("give exactly one of bundle_dir (a fixed bundle) or registry (follow an alias)")
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        self.registry, self.alias, self.poll_seconds = registry, alias, poll_seconds
        self.catalog = catalog
        self.features_max_len = features_max_len
        self._current: tuple[str, BundleRecommender] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> str:
        """Load the bundle (or the alias's version) now; returns the version served."""
        if self.bundle_dir is not None:
            recommender = self.check_window(BundleRecommender.from_bundle(self.bundle_dir), str(self.bundle_dir))
            self._current = (self.bundle_dir.name, recommender)
        else:
            self.refresh()
            if self._current is None:
                assert self.registry is not None
                raise RegistryError(f"registry {self.registry.uri} has no {self.alias} version to serve")
        return self._current[0]

    @property
    def version(self) -> str | None:
        return self._current[0] if self._current else None

    def refresh(self) -> bool:
        """Follow the alias once: True when a new version was loaded and swapped in."""
        if self.registry is None:
            return False
        pointer = self.registry.alias(self.alias)
        if pointer is None or (self._current is not None and pointer.version == self._current[0]):
            return False
        recommender = self.registry.load(pointer.version)  # fully loaded and verified first
        self.check_window(recommender, f"{self.alias} version {pointer.version}")
        self._current = (pointer.version, recommender)  # one reference swap: atomic for readers
        logger.info("now serving %s version %s", self.alias, pointer.version)
        return True

    def check_window(self, recommender: BundleRecommender, what: str) -> BundleRecommender:
        """The recommender, unless its model reads a longer window than the feature tables keep:
        then BundleError saying both windows and what to do."""
        model_len, features_len = recommender.bundle.max_len, self.features_max_len
        if model_len is not None and features_len is not None and model_len > features_len:
            raise BundleError(
                f"model bundle {what} reads the newest max_len={model_len} history items, but the "
                f"feature tables keep only max_len={features_len} recent items per user: rebuild the "
                f"features with max_len={model_len}, or train the model with max_len={features_len}; "
                f"refusing to serve it")
        return recommender

    def start_polling(self) -> None:
        """Follow the alias in a daemon thread (no-op for a fixed bundle)."""
        if self.registry is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="shoprec-alias-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # a broken new version must not take the server down
                logger.exception("could not load the new %s version; still serving %s",
                                 self.alias, self.version)

    def predict_v1(self, payload: Any) -> dict[str, Any]:
        """A V1 answer: {"predictions": [...], "model_version": ..., "lineage": {...}}."""
        queries = parse_v1(payload)
        if self._current is None:
            raise RuntimeError("the model is not loaded")
        version, recommender = self._current  # read once: the whole request uses one model
        return {"predictions": answer(recommender, queries, self.catalog), "model_version": version,
                "lineage": lineage(recommender, version)}
