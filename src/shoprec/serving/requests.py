"""Request parsing and its bounds, for both servers: the predictor's V1 instances (`parse_v1`:
item ids, `k`, `exclude`, `category`, `reasons`) and the transformer's requests (`parse_request_v1`:
`user_id` or `items`; `parse_request_v2`: Open Inference Protocol tensors). Every fault is an
InvalidRequest naming the field at fault; sizes are bounded so one call cannot exhaust memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoprec.errors import InvalidRequest
from shoprec.models.inference import MAX_HISTORY, MAX_K

MAX_INSTANCES = 256  # users per request: bounds memory and latency of one call
MAX_ITEM_ID_CHARS = 256
MAX_EXCLUDE = 1_000
INSTANCE_FIELDS = ("items", "k", "exclude", "category", "reasons")


@dataclass(frozen=True)
class Query:
    """One V1 instance: a user's item ids (oldest first) and how many items to return."""

    history: tuple[str, ...]
    k: int = 10
    exclude: tuple[str, ...] = ()
    category: str | None = None
    reasons: bool = False

    @property
    def plain(self) -> bool:
        """No filter: answered by `BundleRecommender.recommend_batch` itself."""
        return not self.exclude and self.category is None


def v1_instances(payload: Any, example: str, fields: Sequence[str],
                 strict_top_level: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The checked `instances` of a V1 body as (where, instance) pairs.

    Checks what every V1 endpoint shares: a JSON object, a non-empty `instances` list of at
    most MAX_INSTANCES objects holding only `fields`. `example` is one instance as the error
    messages show it; InvalidRequest names the fault."""
    if isinstance(payload, (bytes, str)):
        raise InvalidRequest("the body was not read as JSON: send it with Content-Type: application/json")
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidRequest(f'expected a JSON object with "instances": [{example}]')
    unknown = sorted(set(payload) - {"instances"})
    if strict_top_level and unknown:
        raise InvalidRequest(f"unknown top-level field(s) {unknown}; allowed: instances")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest('"instances" must be a non-empty list')
    if len(instances) > MAX_INSTANCES:
        raise InvalidRequest(f'"instances" holds {len(instances)} entries; at most {MAX_INSTANCES} per request')
    checked = []
    for n, instance in enumerate(instances):
        where = f"instances[{n}]"
        if not isinstance(instance, dict):
            raise InvalidRequest(f"{where} must be an object like {example}")
        unknown = sorted(set(instance) - set(fields))
        if unknown:
            raise InvalidRequest(f"{where} has unknown field(s) {unknown}; allowed: {', '.join(fields)}")
        checked.append((where, instance))
    return checked


def parse_v1(payload: Any) -> list[Query]:
    """`{"instances": [{"items": [...], "k": 10}, ...]}` -> queries; InvalidRequest names the fault."""
    queries = []
    for where, instance in v1_instances(payload, '{"items": ["i1", "i2"], "k": 10}', INSTANCE_FIELDS):
        items = instance.get("items")
        if not isinstance(items, list):
            raise InvalidRequest(f'{where}.items must be a list of item ids')
        if len(items) > MAX_HISTORY:
            raise InvalidRequest(f"{where}.items holds {len(items)} ids; at most {MAX_HISTORY}")
        for m, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise InvalidRequest(f"{where}.items[{m}] must be a string or integer item id, "
                                     f"got {type(item).__name__}")
            if len(str(item)) > MAX_ITEM_ID_CHARS:
                raise InvalidRequest(f"{where}.items[{m}] is longer than {MAX_ITEM_ID_CHARS} characters")
        k = instance.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidRequest(f"{where}.k must be an integer between 1 and {MAX_K}, got {k!r}")
        exclude = item_id_list(instance.get("exclude", []), f"{where}.exclude", MAX_EXCLUDE)
        category = optional_category(instance.get("category"), f"{where}.category")
        reasons = instance.get("reasons", False)
        if not isinstance(reasons, bool):
            raise InvalidRequest(f"{where}.reasons must be true or false, got {reasons!r}")
        queries.append(Query(tuple(str(i) for i in items), k, exclude, category, reasons))
    return queries


def item_id_list(value: Any, where: str, limit: int) -> tuple[str, ...]:
    """A list of item ids (strings or integers) of at most `limit` entries, as text."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{where} must be a list of item ids")
    if len(value) > limit:
        raise InvalidRequest(f"{where} holds {len(value)} ids; at most {limit}")
    for m, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InvalidRequest(f"{where}[{m}] must be a string or integer item id, got {type(item).__name__}")
        if len(str(item)) > MAX_ITEM_ID_CHARS:
            raise InvalidRequest(f"{where}[{m}] is longer than {MAX_ITEM_ID_CHARS} characters")
    return tuple(str(i) for i in value)


def optional_category(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ITEM_ID_CHARS:
        raise InvalidRequest(f"{where} must be a non-empty string of at most {MAX_ITEM_ID_CHARS} characters")
    return value


# --- transformer requests ---------------------------------------------------------------------

REQUEST_FIELDS = ("user_id", "items", "k", "exclude", "category")


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
