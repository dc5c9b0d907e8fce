"""The library half of the transformer (serving/transformer only adapts it to KServe).

Per request: parse (V1 dicts or V2 tensors) -> read the users' online features from Feast with
a timeout -> plan each instance (model, or which cold-start fallback) -> the predictor payload
-> merge the predictor's answer with fallbacks, item metadata, reasons and lineage -> append
the prediction log. A Feast that is slow or down never fails a request: after `timeout_s` the
users get fallback answers with `fallback: "features_unavailable"`.

Instance fields (V1): exactly one of `user_id` (a shopper: history from Feast) or `items` (a
cart or an anonymous session: "bought together"); optional `k` (1..1000, default 10),
`exclude` (item ids) and `category` (only items of it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shoprec import schema as S
from shoprec.serving.catalog import TITLE, ItemCatalog
from shoprec.serving.cold_start import EMPTY_HISTORY, FEATURES_UNAVAILABLE, UNKNOWN_USER, fallback_items
from shoprec.errors import FeatureStoreError, InvalidRequest
from shoprec.features import names as N
from shoprec.features.store import MISSING_FLAG, FeatureStoreSettings
from shoprec.models.inference import MAX_HISTORY, MAX_K
from shoprec.serving.prediction_log import PredictionLog, PredictionRecord, hash_user
from shoprec.serving.predictor import (MAX_EXCLUDE, MAX_INSTANCES, MAX_ITEM_ID_CHARS, item_id_list,
                             optional_category, v1_instances)

logger = logging.getLogger(__name__)

DEFAULT_FEATURE_TIMEOUT_S = 0.050
REQUEST_FIELDS = ("user_id", "items", "k", "exclude", "category")
# The user features of `recommender_v1` that serving reads (the item view is keyed by item).
USER_FEATURE_REFS: tuple[str, ...] = tuple(
    [f"{N.USER_STATS}:{name}" for name in N.USER_STATS_FEATURES]
    + [f"{N.USER_RECENT_ITEMS}:{N.RECENT_ITEMS}"]
)
HEADER_PREFIX = "x-shoprec-"


@dataclass(frozen=True)
class UserQuery:
    """One request instance: a user (history from Feast) or a list of items (a cart)."""

    user_id: str | None
    items: tuple[str, ...] | None
    k: int = 10
    exclude: tuple[str, ...] = ()
    category: str | None = None

    @property
    def kind(self) -> str:
        return "user" if self.user_id is not None else "items"


# --- parsing ----------------------------------------------------------------------------------


def _user_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise InvalidRequest(f"{where} must be a non-empty string or integer user id, got {value!r}")
    if len(str(value)) > MAX_ITEM_ID_CHARS:
        raise InvalidRequest(f"{where} is longer than {MAX_ITEM_ID_CHARS} characters")
    return str(value)


def _k(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise InvalidRequest(f"{where} must be an integer between 1 and {MAX_K}, got {value!r}")
    return value


def parse_request_v1(payload: Any) -> list[UserQuery]:
    """`{"instances": [{"user_id": "u1", "k": 10}, {"items": ["i1"], "exclude": [...]}]}`."""
    queries = []
    for where, instance in v1_instances(payload, '{"user_id": "u1", "k": 10}', REQUEST_FIELDS,
                                        strict_top_level=True):
        if ("user_id" in instance) == ("items" in instance):
            raise InvalidRequest(f"{where} needs exactly one of user_id (a shopper) or items (a cart)")
        user = _user_id(instance["user_id"], f"{where}.user_id") if "user_id" in instance else None
        items = item_id_list(instance["items"], f"{where}.items", MAX_HISTORY) if "items" in instance else None
        queries.append(UserQuery(
            user, items, _k(instance.get("k", 10), f"{where}.k"),
            item_id_list(instance.get("exclude", []), f"{where}.exclude", MAX_EXCLUDE),
            optional_category(instance.get("category"), f"{where}.category"),
        ))
    return queries


@dataclass(frozen=True)
class TensorInput:
    """A V2 input as plain values (the adapter converts KServe's InferInput)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


def parse_request_v2(inputs: Sequence[TensorInput]) -> list[UserQuery]:
    """Open Inference Protocol inputs `user_id` (BYTES, [n]) and optional `k` (INT32, [1] or [n])."""
    by_name: dict[str, TensorInput] = {}
    for tensor in inputs:
        if tensor.name not in ("user_id", "k"):
            raise InvalidRequest(f"unknown input '{tensor.name}'; inputs are user_id (BYTES) and k (INT32)")
        by_name[tensor.name] = tensor
    if "user_id" not in by_name:
        raise InvalidRequest("input 'user_id' (BYTES, shape [n]) is required")
    users_in = by_name["user_id"]
    if users_in.datatype != "BYTES":
        raise InvalidRequest(f"input 'user_id' must have datatype BYTES, got {users_in.datatype}")
    users = [u.decode() if isinstance(u, bytes) else u for u in _flat(users_in.data)]
    if not users:
        raise InvalidRequest("input 'user_id' holds no user ids")
    if len(users) > MAX_INSTANCES:
        raise InvalidRequest(f"input 'user_id' holds {len(users)} ids; at most {MAX_INSTANCES} per request")
    ks: list[Any] = [10] * len(users)
    if "k" in by_name:
        k_in = by_name["k"]
        if k_in.datatype not in ("INT32", "INT64"):
            raise InvalidRequest(f"input 'k' must have datatype INT32, got {k_in.datatype}")
        values = _flat(k_in.data)
        if len(values) == 1:
            ks = values * len(users)
        elif len(values) == len(users):
            ks = values
        else:
            raise InvalidRequest(f"input 'k' must hold 1 value or one per user ({len(users)}), got {len(values)}")
    return [UserQuery(_user_id(u, f"user_id[{n}]"), None, _k(int(k) if isinstance(k, float) and k.is_integer() else k, f"k[{n}]"))
            for n, (u, k) in enumerate(zip(users, ks))]


def _flat(data: Any) -> list[Any]:
    if hasattr(data, "tolist"):
        data = data.tolist()
    out: list[Any] = []
    for value in data if isinstance(data, list) else [data]:
        out.extend(_flat(value) if isinstance(value, list) else [value])
    return out


# --- features ---------------------------------------------------------------------------------


class FeatureSource(Protocol):
    """Online user features: one dict per user id (in order), with the `missing` flag."""

    async def read(self, user_ids: list[str]) -> list[dict[str, Any]]: ...


class FeastSDKSource:
    """The Feast SDK over the local (or the settings') online store; reads run in a worker
    thread so a slow store never blocks the event loop."""

    def __init__(self, settings: FeatureStoreSettings) -> None:
        from shoprec.features.store import open_store

        self.settings = settings
        self.store = open_store(settings)

    def warm_up(self, timeout_s: float = 10.0) -> bool:
        """One read at start-up, so the first request does not pay for loading the registry.
        A store that is down or hangs is not fatal: requests get the fallback until it answers."""
        import concurrent.futures

        from shoprec.features.store import online_user_rows

        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="shoprec-feast-warm-up")
        future = pool.submit(online_user_rows, self.store, ["__shoprec_warm_up__"],
                             list(USER_FEATURE_REFS), self.settings)
        pool.shutdown(wait=False)
        try:
            future.result(timeout=timeout_s)
            return True
        except Exception as exc:
            logger.warning("feature store warm-up failed (%s); answering from the fallback until it answers",
                           f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return False

    async def read(self, user_ids: list[str]) -> list[dict[str, Any]]:
        from shoprec.features.store import online_user_rows

        return await asyncio.to_thread(online_user_rows, self.store, user_ids,
                                       list(USER_FEATURE_REFS), self.settings)


class FeastHTTPSource:
    """A Feast feature server (`feast serve`) over HTTP, with an async client."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/") + "/get-online-features"
        self.client = httpx.AsyncClient()

    async def read(self, user_ids: list[str]) -> list[dict[str, Any]]:
        from shoprec.features.store import user_rows

        response = await self.client.post(self.url, json={
            "features": list(USER_FEATURE_REFS), "entities": {S.USER_ID: user_ids}})
        response.raise_for_status()
        body = response.json()
        names = [n.split(":", 1)[-1].split("__", 1)[-1] for n in body["metadata"]["feature_names"]]
        columns = {name: result["values"] for name, result in zip(names, body["results"])}
        return user_rows(user_ids, [ref.split(":", 1)[1] for ref in USER_FEATURE_REFS], columns)

    async def close(self) -> None:
        await self.client.aclose()


async def read_features(source: FeatureSource | None, user_ids: list[str],
                        timeout_s: float) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(features, None) or (None, why) when the store is slow, down or not configured."""
    if source is None:
        return None, "no feature store configured"
    try:
        return await asyncio.wait_for(source.read(user_ids), timeout_s), None
    except asyncio.TimeoutError:
        return None, f"no answer within {timeout_s * 1000:.0f} ms"
    except (FeatureStoreError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # any store failure is a fallback, never a 500
        return None, f"{type(exc).__name__}: {exc}"


# --- planning and answers ---------------------------------------------------------------------


@dataclass
class Plan:
    """How one instance will be answered."""

    query: UserQuery
    history: tuple[str, ...] = ()
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
                 timeout_s: float = DEFAULT_FEATURE_TIMEOUT_S, log: PredictionLog | None = None) -> None:
        self.catalog, self.source, self.timeout_s, self.log = catalog, source, timeout_s, log
        self.lineage: dict[str, Any] = {}  # from the latest predictor answer

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
                    plan.history = tuple(str(i) for i in row.get(N.RECENT_ITEMS) or ())[-MAX_HISTORY:]
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
            if plan.query.exclude:
                instance["exclude"] = list(plan.query.exclude)
            if plan.query.category is not None:
                instance["category"] = plan.query.category
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
            if plan.fallback is None and model_answer is not None:
                items = [self._item(i, s, self._reason(plan, r), r)
                         for i, s, r in zip(model_answer["items"], model_answer["scores"],
                                            model_answer.get("reasons") or [None] * len(model_answer["items"]))]
            else:
                exclude = set(plan.query.exclude) | set(plan.history)
                items = [self._item(f.item_id, f.score, f.reason, None) for f in fallback_items(
                    self.catalog, plan.query.k, recent_category=plan.recent_category,
                    category=plan.query.category, exclude=exclude)]
            prediction: dict[str, Any] = {"items": items, "fallback": plan.fallback,
                                          "model_version": self.lineage.get("model_version")}
            if plan.query.user_id is not None:
                prediction = {"user_id": plan.query.user_id, **prediction}
            out.append(prediction)
        return {"predictions": out, "model_version": self.lineage.get("model_version"),
                "lineage": self.lineage_body()}

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

    def _item(self, item_id: str, score: float, reason: str, reason_item: str | None) -> dict[str, Any]:
        return {"item_id": item_id, "score": float(score), **self.catalog.metadata(item_id),
                "reason": reason, "reason_item_id": reason_item}

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
            ))
        if self.log is not None:
            for record in records:
                self.log.append(record)
        return records


def v2_outputs(answer: dict[str, Any]) -> list[tuple[str, str, list[int], list[Any]]]:
    """The answer as Open Inference Protocol outputs (name, datatype, shape, flat data):
    item_id BYTES [n, k], score FP32 [n, k], reason BYTES [n, k], fallback BYTES [n]; rows
    shorter than the longest are padded with "" and 0.0."""
    rows = answer["predictions"]
    width = max((len(p["items"]) for p in rows), default=0)
    ids, scores, reasons = [], [], []
    for p in rows:
        pad = width - len(p["items"])
        ids += [i["item_id"] for i in p["items"]] + [""] * pad
        scores += [i["score"] for i in p["items"]] + [0.0] * pad
        reasons += [i["reason"] for i in p["items"]] + [""] * pad
    shape = [len(rows), width]
    return [("item_id", "BYTES", shape, ids), ("score", "FP32", shape, scores),
            ("reason", "BYTES", shape, reasons),
            ("fallback", "BYTES", [len(rows)], [p["fallback"] or "" for p in rows])]
