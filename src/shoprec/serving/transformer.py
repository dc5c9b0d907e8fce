"""The library half of the transformer (serving/transformer only adapts it to KServe).

Per request: parse (V1 dicts or V2 tensors: `shoprec.serving.requests`) -> read the users'
online features from Feast with a timeout (`shoprec.serving.feature_sources`) -> plan each
instance (model, or which cold-start fallback) -> the predictor payload -> merge the
predictor's answer with fallbacks, item metadata, reasons and lineage -> append the
prediction log. A Feast that is slow or down never fails a request: after `timeout_s` the
users get fallback answers with `fallback: "features_unavailable"`.

Instance fields (V1): exactly one of `user_id` (a shopper: history from Feast) or `items` (a
cart or an anonymous session: "bought together"); optional `k` (1..1000, default 10),
`exclude` (item ids), `category` (only items of it), `sponsored` or `campaign` /
`sponsored_slots` / `diversity` (forwarded to the predictor, which holds the campaigns table
and the floor and applies them to the model's answer: a cold-start answer has no model
relevance to hold a paid item to, so it never shows one, its campaign is not looked up, and
it is not re-ranked) and `preferences` (what a new user stated: a cold-start answer then comes from
`cold_start.onboarding_items` and names it in "onboarding", beside "fallback", which still
says why the user is cold; a `category` filter wins over it, as over every fallback).
Every item says whether it is `sponsored`, and so does the prediction log (with the campaign).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from shoprec import schema as S
from shoprec.serving.catalog import TITLE, ItemCatalog
from shoprec.errors import InvalidRequest
from shoprec.ranking.onboarding import OnboardingPopularity
from shoprec.serving.cold_start import (EMPTY_HISTORY, FEATURES_UNAVAILABLE, UNKNOWN_USER, FallbackItem,
                                        check_preferences, fallback_items, onboarding_items)
from shoprec.features import names as N
from shoprec.features.online import MISSING_FLAG
from shoprec.models.inference import MAX_HISTORY
from shoprec.serving.feature_sources import FeatureSource, read_features
from shoprec.serving.prediction_log import PredictionLog, PredictionRecord, hash_user
from shoprec.serving.requests import UserQuery, bounded

logger = logging.getLogger(__name__)

DEFAULT_FEATURE_TIMEOUT_S = 0.050
HEADER_PREFIX = "x-shoprec-"
SPONSORED_REASON = "sponsored"  # a paid placement: the model did not pick it, so no "because"


@dataclass
class Plan:
    """How one instance will be answered."""

    query: UserQuery
    history: tuple[str, ...] = ()
    session_starts: tuple[bool, ...] | None = None  # aligned with history; None: one session
    fallback: str | None = None  # set before the predictor call, or after it (empty_history)
    recent_category: str | None = None
    features_used: list[str] = field(default_factory=list)
    slot: int | None = None  # position among the predictor's instances


@dataclass
class Pending:
    """A request between preprocess and postprocess."""

    plans: list[Plan]
    request_id: str
    protocol: str = "v1"
    started: float = field(default_factory=time.perf_counter)
    feature_error: str | None = None


class TransformerCore:
    """Everything the transformer does, with no KServe in sight."""

    def __init__(self, catalog: ItemCatalog, source: FeatureSource | None, *,
                 timeout_s: float = DEFAULT_FEATURE_TIMEOUT_S, log: PredictionLog | None = None,
                 max_history: int = MAX_HISTORY, onboarding: OnboardingPopularity | None = None) -> None:
        """max_history: the most history items forwarded per instance (and a cart may hold):
        the feature tables' window (`shoprec.serving.requests.history_limit`). onboarding:
        popularity per category and user segment for new users' stated preferences (built at
        start from a dataset); without it, preferences use the catalogue's categories only."""
        self.catalog, self.source, self.timeout_s, self.log = catalog, source, timeout_s, log
        self.max_history = max_history
        self.onboarding = onboarding
        self.lineage: dict[str, Any] = {}  # from the latest predictor answer

    def check(self, queries: list[UserQuery], protocol: str = "v1") -> None:
        """InvalidRequest naming stated preferences this server cannot use (an unknown category
        or attribute): checked before any store read, for warm and cold users alike. The
        field is named as the protocol sent it (V1 instances, the V2 `preferences` input)."""
        for n, query in enumerate(queries):
            if query.preferences is not None:
                try:
                    check_preferences(query.preferences, table=self.onboarding, catalog=self.catalog)
                except ValueError as exc:
                    where = f"instances[{n}].preferences" if protocol == "v1" else f"input preferences (user_id[{n}])"
                    raise InvalidRequest(bounded(f"{where}: {exc}")) from exc

    async def prepare(self, queries: list[UserQuery], request_id: str | None = None,
                      protocol: str = "v1") -> Pending:
        """Read the users' features (one store call, with the timeout) and plan each instance."""
        pending = Pending([Plan(q) for q in queries], request_id or str(uuid.uuid4()), protocol)
        users = list(dict.fromkeys(q.user_id for q in queries if q.user_id is not None))
        features = None
        if users:
            features, pending.feature_error = await read_features(self.source, users, self.timeout_s)
            if pending.feature_error:
                logger.warning("online features unavailable (%s): answering %d user(s) from the fallback",
                               pending.feature_error, len(users))
        rows = {row[S.USER_ID]: row for row in features or []}
        used = [c for c in (features[0] if features else {}) if c not in (S.USER_ID, MISSING_FLAG)]
        slot = 0
        for plan in pending.plans:
            query = plan.query
            if query.items is not None:
                plan.history = query.items
            elif features is None:
                plan.fallback = FEATURES_UNAVAILABLE
            else:
                row = rows[query.user_id]
                plan.features_used = used
                category = row.get(N.TOP_CATEGORY)
                plan.recent_category = category if category and category != N.UNKNOWN_CATEGORY else None
                if row[MISSING_FLAG]:
                    plan.fallback = UNKNOWN_USER
                else:
                    # The user's history (its tail is the window); a store without one yet
                    # (a repo applied before `user_history`) has the recent items only.
                    history = row.get(N.HISTORY_ITEMS) or row.get(N.RECENT_ITEMS) or ()
                    plan.history = tuple(str(i) for i in history)[-self.max_history:]
                    # Where each history item opens a session (a repeat head reads it), cut
                    # with the items; a store without the flags sends none (one session).
                    opens = row.get(N.HISTORY_SESSION_STARTS) if row.get(N.HISTORY_ITEMS) else None
                    if opens is not None and len(opens) == len(history) and len(history):
                        plan.session_starts = tuple(bool(f) for f in opens)[-self.max_history:]
                    if not plan.history:
                        plan.fallback = EMPTY_HISTORY
            if plan.fallback is None:
                plan.slot, slot = slot, slot + 1
        return pending

    @staticmethod
    def predictor_payload(pending: Pending) -> dict[str, Any]:
        """The V1 predictor request for the instances the model answers ({} when none)."""
        instances = []
        for plan in pending.plans:
            if plan.slot is None:
                continue
            instance: dict[str, Any] = {"items": list(plan.history), "k": plan.query.k, "reasons": True}
            if plan.session_starts is not None:
                instance["session_starts"] = list(plan.session_starts)
            if plan.query.exclude:
                instance["exclude"] = list(plan.query.exclude)
            if plan.query.category is not None:
                instance["category"] = plan.query.category
            options = plan.query.options
            if options.sponsored:
                instance["sponsored"] = [{"item_id": c.item, "bid": c.bid} for c in options.sponsored]
            if options.campaign is not None:
                instance["campaign"] = options.campaign
            if options.sponsored or options.campaign is not None:
                instance["sponsored_slots"] = options.sponsored_slots
            if options.diversity > 0.0:
                instance["diversity"] = options.diversity
            instances.append(instance)
        return {"instances": instances} if instances else {}

    def finish(self, pending: Pending, predictor_body: dict[str, Any] | None) -> dict[str, Any]:
        """The client's answer: one prediction per instance, lineage, model version."""
        predictions = (predictor_body or {}).get("predictions", [])
        if predictor_body and predictor_body.get("lineage"):
            self.lineage = dict(predictor_body["lineage"])
        out = []
        for plan in pending.plans:
            model_answer = predictions[plan.slot] if plan.slot is not None else None
            if model_answer is not None and model_answer.get("history_used", 1) == 0:
                plan.fallback = EMPTY_HISTORY  # nothing in the history is known to the model
            onboarding = None
            if plan.fallback is None and model_answer is not None:
                n = len(model_answer["items"])
                items = [self._item(i, s, SPONSORED_REASON if paid else self._reason(plan, r), r, paid)
                         for i, s, r, paid in zip(model_answer["items"], model_answer["scores"],
                                                  model_answer.get("reasons") or [None] * n,
                                                  model_answer.get("sponsored") or [False] * n)]
            else:
                onboarding, fallback = self._cold_start(plan)
                items = [self._item(f.item_id, f.score, f.reason, None) for f in fallback]
            prediction: dict[str, Any] = {"items": items, "fallback": plan.fallback,
                                          "model_version": self.lineage.get("model_version")}
            if onboarding is not None:
                prediction["onboarding"] = onboarding
            if model_answer is not None and plan.fallback is None:
                # The re-ranked list's intra-list diversity ("diversity@k", k as the model capped it).
                measured = [v for key, v in model_answer.items() if key.startswith("diversity@")]
                if measured:
                    prediction["intra_list_diversity"] = measured[0]
            if plan.query.user_id is not None:
                prediction = {"user_id": plan.query.user_id, **prediction}
            out.append(prediction)
        return {"predictions": out, "model_version": self.lineage.get("model_version"),
                "lineage": self.lineage_body()}

    def _cold_start(self, plan: Plan) -> tuple[str | None, list[FallbackItem]]:
        """(the onboarding fallback used or None, the items) for an instance the model does not
        answer: stated preferences when there are some and no category filter, else the
        category / recent-category / trending fallback."""
        exclude = set(plan.query.exclude) | set(plan.history)
        preferences = plan.query.preferences
        if preferences is not None and plan.query.category is None:
            try:
                return onboarding_items(plan.query.k, preferences, table=self.onboarding,
                                        catalog=self.catalog, exclude=exclude)
            except ValueError as exc:  # `check` runs first; this keeps a 400 a 400 regardless
                raise InvalidRequest(bounded(f"preferences: {exc}")) from exc
        return None, fallback_items(self.catalog, plan.query.k, recent_category=plan.recent_category,
                                    category=plan.query.category, exclude=exclude)

    def lineage_body(self) -> dict[str, Any]:
        return {"model_version": self.lineage.get("model_version"),
                "feature_service": self.lineage.get("feature_service") or N.FEATURE_SERVICE,
                "data_snapshot": self.lineage.get("data_snapshot")}

    def lineage_headers(self, answer: dict[str, Any]) -> dict[str, str]:
        """Lineage (and which fallbacks answered) as response headers."""
        lineage = answer["lineage"]
        fallbacks = sorted({p["fallback"] for p in answer["predictions"] if p["fallback"]})
        return {f"{HEADER_PREFIX}model-version": str(lineage["model_version"] or ""),
                f"{HEADER_PREFIX}feature-service": str(lineage["feature_service"] or ""),
                f"{HEADER_PREFIX}data-snapshot": str(lineage["data_snapshot"] or ""),
                f"{HEADER_PREFIX}fallback": ",".join(fallbacks) or "none"}

    def _item(self, item_id: str, score: float, reason: str, reason_item: str | None,
              sponsored: bool = False) -> dict[str, Any]:
        return {"item_id": item_id, "score": float(score), **self.catalog.metadata(item_id),
                "reason": reason, "reason_item_id": reason_item, "sponsored": bool(sponsored)}

    def _reason(self, plan: Plan, reason_item: str | None) -> str:
        if reason_item is None:
            return "a top pick for your history as a whole"
        name = self.catalog.metadata(reason_item).get(TITLE, reason_item)
        if plan.query.kind == "items":
            return f"goes with {name} in your cart"
        return f"because you bought {name}"

    def record(self, pending: Pending, answer: dict[str, Any]) -> list[PredictionRecord]:
        """Prediction-log records of an answer (user ids hashed), appended when a log is set."""
        latency_ms = (time.perf_counter() - pending.started) * 1000
        records = []
        for plan, prediction in zip(pending.plans, answer["predictions"]):
            records.append(PredictionRecord(
                request_id=pending.request_id,
                user_hash=hash_user(plan.query.user_id) if plan.query.user_id is not None else "",
                kind=plan.query.kind,
                model_version=prediction["model_version"],
                fallback=prediction["fallback"],
                items=[i["item_id"] for i in prediction["items"]],
                scores=[i["score"] for i in prediction["items"]],
                history_length=len(plan.history),
                features_used=plan.features_used,
                categories=[i.get(S.CATEGORY) for i in prediction["items"]],
                latency_ms=round(latency_ms, 3),
                sponsored=[bool(i.get("sponsored", False)) for i in prediction["items"]],
                campaign=plan.query.options.campaign,
            ))
        if self.log is not None:
            for record in records:
                self.log.submit(record)  # queued: a failing log volume never fails the answer
        return records


def v2_outputs(answer: dict[str, Any]) -> list[tuple[str, str, list[int], list[Any]]]:
    """The answer as Open Inference Protocol outputs (name, datatype, shape, flat data):
    item_id BYTES [n, k], score FP32 [n, k], reason BYTES [n, k], sponsored BOOL [n, k],
    fallback BYTES [n]; rows shorter than the longest are padded with "", 0.0 and false."""
    rows = answer["predictions"]
    width = max((len(p["items"]) for p in rows), default=0)
    ids, scores, reasons, sponsored = [], [], [], []
    for p in rows:
        pad = width - len(p["items"])
        ids += [i["item_id"] for i in p["items"]] + [""] * pad
        scores += [i["score"] for i in p["items"]] + [0.0] * pad
        reasons += [i["reason"] for i in p["items"]] + [""] * pad
        sponsored += [bool(i.get("sponsored", False)) for i in p["items"]] + [False] * pad
    shape = [len(rows), width]
    return [("item_id", "BYTES", shape, ids), ("score", "FP32", shape, scores),
            ("reason", "BYTES", shape, reasons), ("sponsored", "BOOL", shape, sponsored),
            ("fallback", "BYTES", [len(rows)], [p["fallback"] or "" for p in rows])]
