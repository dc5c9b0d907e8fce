"""Request parsing and its bounds, for both servers: the predictor's V1 instances (`parse_v1`:
item ids, `k`, `exclude`, `category`, `reasons`, `sponsored` or `campaign`, `sponsored_slots`,
`diversity`) and its Open Inference Protocol tensors (`parse_v2`: the histories as a BYTES
`items` input), and the transformer's requests (`parse_request_v1`: `user_id` or `items`, the
same list options plus a new user's `preferences`; `parse_request_v2`: tensors). Both V2 parsers
take `exclude` and `category` (`v2_filters`) and the list options (`v2_list_options`) alike. Every fault is an
InvalidRequest naming the field at fault; sizes are bounded so one call cannot exhaust memory:
the body (`MAX_BODY_BYTES`, checked by the servers before they read it), the instances, the ids
in all (`MAX_TOTAL_IDS`) and each history (`history_limit`: the model's window). Messages never
echo a client's value unbounded (`shown`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoprec.errors import InvalidRequest
from shoprec.models.inference import MAX_HISTORY, MAX_K
from shoprec.ranking.sponsored import DEFAULT_SLOTS, Candidate
from shoprec.serving.cold_start import Preferences, preferences_from
from shoprec.serving.sponsored import candidates_from

MAX_INSTANCES = 256  # users per request: bounds memory and latency of one call
MAX_ITEM_ID_CHARS = 256
MAX_EXCLUDE = 1_000
# Every id of a request together (user ids, history and exclude items): without it 256 instances
# of 1,000 excluded ids each would pass every per-field bound. 256 users with a 200-item window
# fit with room for their exclude lists.
MAX_TOTAL_IDS = 100_000
# The largest body a server reads (413 above it, from Content-Length before reading): the
# largest valid request (MAX_TOTAL_IDS ids of a few dozen characters) fits.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_SHOWN_CHARS = 60  # how much of a client's value an error message repeats
MAX_MESSAGE_CHARS = 500  # the longest error message a server answers


def shown(value: Any) -> str:
    """A client's value as an error message may repeat it: its repr, cut to MAX_SHOWN_CHARS."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "...(cut)"


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """An error message cut to `limit` characters (one line)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit] + "...(cut)"


def under(where: str, exc: ValueError) -> str:
    """A library ValueError about a field ("'sponsored'[0].bid must be ...") as a request error
    naming the instance ("instances[0].sponsored[0].bid must be ..."), bounded."""
    return bounded(re.sub(r"^'([\w.]+)'", lambda m: f"{where}.{m.group(1)}", str(exc), count=1))


def history_limit(model_window: int | None, features_window: int | None = None) -> int:
    """How many history items one instance may carry: the model reads only its newest
    `model_window` items (`BundleRecommender.history_read`: its repeat side may read more than
    its window), so longer histories are refused rather than read and dropped; the
    feature tables may keep a longer window than the model reads (the predictor refuses the
    opposite), and the transformer forwards what they hold, so their window is accepted too.
    Models reading whole histories (None: baselines, a whole-history repeat side) take up to
    MAX_HISTORY."""
    windows = [w for w in (model_window, features_window) if w]
    return min(max(windows), MAX_HISTORY) if windows else MAX_HISTORY

# The list options both servers take: paid candidates (listed, or a campaign the predictor's
# campaigns table names: `shoprec.serving.campaigns`), how many may be placed, MMR re-ranking.
LIST_FIELDS = ("sponsored", "campaign", "sponsored_slots", "diversity")
INSTANCE_FIELDS = ("items", "session_starts", "k", "exclude", "category", "reasons", *LIST_FIELDS)


@dataclass(frozen=True)
class Query:
    """One V1 instance: a user's item ids (oldest first) and how many items to return.

    sponsored: paid candidates (placed only above the server's relevance floor, which a client
    cannot set); campaign: a campaign of the server's table whose active items are the
    candidates instead (the predictor resolves it into `sponsored`); sponsored_slots: at most
    this many placed (0..k); diversity: MMR weight in [0, 1], 0 keeps the model's order."""

    history: tuple[str, ...]
    k: int = 10
    exclude: tuple[str, ...] = ()
    category: str | None = None
    reasons: bool = False
    sponsored: tuple[Candidate, ...] = ()
    sponsored_slots: int = DEFAULT_SLOTS
    diversity: float = 0.0
    campaign: str | None = None
    session_starts: tuple[bool, ...] | None = None  # per history item; None: one session

    @property
    def plain(self) -> bool:
        """No filter, no sponsored candidates, no re-ranking: answered by
        `BundleRecommender.recommend_batch` itself."""
        return (not self.exclude and self.category is None and not self.sponsored and self.campaign is None
                and self.diversity == 0.0)


@dataclass(frozen=True)
class ListOptions:
    """The parsed `LIST_FIELDS` of one instance."""

    sponsored: tuple[Candidate, ...] = ()
    sponsored_slots: int = DEFAULT_SLOTS
    diversity: float = 0.0
    campaign: str | None = None


def list_options(instance: dict[str, Any], where: str, k: int) -> ListOptions:
    """`sponsored` or `campaign`, `sponsored_slots` (0..k) and `diversity` (0..1) of an
    instance; InvalidRequest names the field (the candidates' own faults come from
    `candidates_from`). Listing candidates and naming a campaign at once is a fault: which
    bid would stand for an item in both is the client's to decide, not the server's."""
    if "sponsored" in instance and "campaign" in instance:
        raise InvalidRequest(f"{where} has both 'sponsored' and 'campaign': give the sponsored "
                             f"candidates or name a campaign, not both")
    sponsored: tuple[Candidate, ...] = ()
    if "sponsored" in instance:
        try:
            sponsored = tuple(candidates_from(instance["sponsored"]))
        except ValueError as exc:
            raise InvalidRequest(under(where, exc)) from exc
    campaign = _campaign(instance["campaign"], f"{where}.campaign") if "campaign" in instance else None
    # Unset, the default is capped at k: a k=1 list has room for one, and asking for none is no fault.
    return ListOptions(sponsored, _slots(instance.get("sponsored_slots", min(DEFAULT_SLOTS, k)), f"{where}.sponsored_slots", k),
                       _diversity(instance.get("diversity", 0.0), f"{where}.diversity"), campaign)


def _campaign(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ITEM_ID_CHARS:
        raise InvalidRequest(f"{where} must be a campaign name (a non-empty string of at most "
                             f"{MAX_ITEM_ID_CHARS} characters), got {shown(value)}")
    return value


def _slots(value: Any, where: str, k: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= k:
        raise InvalidRequest(f"{where} must be an integer between 0 and k ({k}), got {shown(value)}")
    return value


def _diversity(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"{where} must be a number between 0 and 1, got {shown(value)}")
    return float(value)


def v1_instances(payload: Any, example: str, fields: Sequence[str],
                 strict_top_level: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The checked `instances` of a V1 body as (where, instance) pairs.

    Checks what every V1 endpoint shares: a JSON object, a non-empty `instances` list of at
    most MAX_INSTANCES objects holding only `fields`. `example` is one instance as the error
    messages show it; InvalidRequest names the fault."""
    if isinstance(payload, (bytes, str)):
        raise InvalidRequest("the body is not JSON: send a JSON object (Content-Type: application/json)")
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
    total = sum(_ids_in(instance) for instance in instances)
    if total > MAX_TOTAL_IDS:
        raise InvalidRequest(f"the request holds {total} ids in all (users, items, exclude); "
                             f"at most {MAX_TOTAL_IDS} per request")
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


def _ids_in(instance: Any) -> int:
    """How many ids an instance carries (a user id counts one), before any field is checked."""
    if not isinstance(instance, dict):
        return 0
    lists = sum(len(instance[f]) for f in ("items", "exclude") if isinstance(instance.get(f), list))
    return lists + ("user_id" in instance)


def parse_v1(payload: Any, max_history: int = MAX_HISTORY) -> list[Query]:
    """`{"instances": [{"items": [...], "k": 10}, ...]}` -> queries; InvalidRequest names the fault.
    max_history: the most items one history may hold (`history_limit` of the served model)."""
    queries = []
    for where, instance in v1_instances(payload, '{"items": ["i1", "i2"], "k": 10}', INSTANCE_FIELDS):
        items = instance.get("items")
        if not isinstance(items, list):
            raise InvalidRequest(f'{where}.items must be a list of item ids')
        if len(items) > max_history:
            raise InvalidRequest(f"{where}.items holds {len(items)} ids; at most {max_history} "
                                 f"(the newest items the model reads)")
        for m, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (str, int)):
                raise InvalidRequest(f"{where}.items[{m}] must be a string or integer item id, "
                                     f"got {type(item).__name__}")
            if len(str(item)) > MAX_ITEM_ID_CHARS:
                raise InvalidRequest(f"{where}.items[{m}] is longer than {MAX_ITEM_ID_CHARS} characters")
        k = instance.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidRequest(f"{where}.k must be an integer between 1 and {MAX_K}, got {shown(k)}")
        exclude = item_id_list(instance.get("exclude", []), f"{where}.exclude", MAX_EXCLUDE)
        category = optional_category(instance.get("category"), f"{where}.category")
        reasons = instance.get("reasons", False)
        if not isinstance(reasons, bool):
            raise InvalidRequest(f"{where}.reasons must be true or false, got {shown(reasons)}")
        options = list_options(instance, where, k)
        starts = _session_starts(instance.get("session_starts"), where, len(items))
        queries.append(Query(tuple(str(i) for i in items), k, exclude, category, reasons,
                             options.sponsored, options.sponsored_slots, options.diversity, options.campaign,
                             starts))
    return queries


def _session_starts(value: Any, where: str, items: int) -> tuple[bool, ...] | None:
    """An instance's `session_starts`: one true / false per history item (true where the item
    opens a session: a new order, a new visit), or None when not sent."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != items:
        got = f"{len(value)} values" if isinstance(value, list) else shown(value)
        raise InvalidRequest(f"{where}.session_starts must be a list of {items} true/false values, one per "
                             f"item of {where}.items (true where the item opens a session), got {got}")
    for m, flag in enumerate(value):
        if not isinstance(flag, bool):
            raise InvalidRequest(f"{where}.session_starts[{m}] must be true or false, got {shown(flag)}")
    return tuple(value)


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
    """A category filter: None, or a non-empty string of at most MAX_ITEM_ID_CHARS."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ITEM_ID_CHARS:
        raise InvalidRequest(f"{where} must be a non-empty string of at most {MAX_ITEM_ID_CHARS} characters")
    return value


# --- transformer requests ---------------------------------------------------------------------

REQUEST_FIELDS = ("user_id", "items", "k", "exclude", "category", *LIST_FIELDS, "preferences")


@dataclass(frozen=True)
class UserQuery:
    """One request instance: a user (history from Feast) or a list of items (a cart), with the
    list options (`ListOptions`) and what a new user stated (`preferences`: used when the
    answer is a cold-start one)."""

    user_id: str | None
    items: tuple[str, ...] | None
    k: int = 10
    exclude: tuple[str, ...] = ()
    category: str | None = None
    options: ListOptions = ListOptions()
    preferences: Preferences | None = None

    @property
    def kind(self) -> str:
        return "user" if self.user_id is not None else "items"



def _user_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise InvalidRequest(f"{where} must be a non-empty string or integer user id, got {shown(value)}")
    if len(str(value)) > MAX_ITEM_ID_CHARS:
        raise InvalidRequest(f"{where} is longer than {MAX_ITEM_ID_CHARS} characters")
    return str(value)


def _k(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise InvalidRequest(f"{where} must be an integer between 1 and {MAX_K}, got {shown(value)}")
    return value


def parse_request_v1(payload: Any, max_history: int = MAX_HISTORY) -> list[UserQuery]:
    """`{"instances": [{"user_id": "u1", "k": 10}, {"items": ["i1"], "exclude": [...]}]}`;
    max_history: the most items a cart (`items`) may hold."""
    queries = []
    for where, instance in v1_instances(payload, '{"user_id": "u1", "k": 10}', REQUEST_FIELDS,
                                        strict_top_level=True):
        if ("user_id" in instance) == ("items" in instance):
            raise InvalidRequest(f"{where} needs exactly one of user_id (a shopper) or items (a cart)")
        user = _user_id(instance["user_id"], f"{where}.user_id") if "user_id" in instance else None
        items = item_id_list(instance["items"], f"{where}.items", max_history) if "items" in instance else None
        k = _k(instance.get("k", 10), f"{where}.k")
        preferences = None
        if "preferences" in instance:
            try:
                preferences = preferences_from(instance["preferences"])
            except ValueError as exc:
                raise InvalidRequest(under(where, exc)) from exc
        queries.append(UserQuery(
            user, items, k,
            item_id_list(instance.get("exclude", []), f"{where}.exclude", MAX_EXCLUDE),
            optional_category(instance.get("category"), f"{where}.category"),
            list_options(instance, where, k), preferences,
        ))
    return queries


@dataclass(frozen=True)
class TensorInput:
    """A V2 input as plain values (the adapter converts KServe's InferInput)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


# The list options as V2 inputs, the same on both servers; each applies to every user of the
# request except diversity ([1] or one per user).
V2_LIST_INPUTS = {"sponsored_item_id": "BYTES", "sponsored_bid": "FP32", "sponsored_slots": "INT32",
                  "diversity": "FP32", "campaign": "BYTES"}
# V1's `exclude` and `category` as V2 inputs, the same on both servers (`v2_filters`).
V2_FILTER_INPUTS = {"exclude": "BYTES", "category": "BYTES"}
V2_INPUTS = {"user_id": "BYTES", "k": "INT32", **V2_FILTER_INPUTS, **V2_LIST_INPUTS, "preferences": "BYTES"}
# The predictor also takes V1's `reasons` (the transformer's answers always carry reasons).
PREDICTOR_V2_INPUTS = {"items": "BYTES", "session_starts": "BOOL", "k": "INT32", **V2_FILTER_INPUTS, "reasons": "BOOL", **V2_LIST_INPUTS}
NUMERIC = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64")
MAX_PREFERENCES_CHARS = 10_000  # one user's `preferences` JSON in a V2 request


def _by_name(inputs: Sequence[TensorInput], allowed: dict[str, str]) -> dict[str, TensorInput]:
    """The inputs by name; InvalidRequest for an unknown or repeated one, listing the inputs."""
    by_name: dict[str, TensorInput] = {}
    for tensor in inputs:
        if tensor.name not in allowed:
            raise InvalidRequest(f"unknown input {shown(tensor.name)}; inputs are "
                                 f"{', '.join(f'{n} ({t})' for n, t in allowed.items())}")
        if tensor.name in by_name:
            raise InvalidRequest(f"input '{tensor.name}' is given twice")
        by_name[tensor.name] = tensor
    return by_name


def _texts(tensor: TensorInput, shape_hint: str) -> list[str]:
    """A BYTES input's values as text, its shape checked against them."""
    if tensor.datatype != "BYTES":
        raise InvalidRequest(f"input '{tensor.name}' must have datatype BYTES ({shape_hint}), "
                             f"got {shown(tensor.datatype)}")
    values = _flat(tensor.data)
    _check_shape(tensor, len(values))
    out = []
    for n, value in enumerate(values):
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a JSON body may send integer ids as BYTES data
        if not isinstance(value, str):
            raise InvalidRequest(f"input '{tensor.name}'[{n}] must be a string, got {type(value).__name__}")
        out.append(value)
    return out


def parse_request_v2(inputs: Sequence[TensorInput]) -> list[UserQuery]:
    """Open Inference Protocol inputs: `user_id` (BYTES, [n]) and optional `k` (INT32, [1] or
    [n]); `exclude` and `category` (`v2_filters`); the list options (`v2_list_options`); and
    `preferences` (BYTES, [1] for every user or [n]: each a JSON object as V1's `preferences`,
    "" for none) for new users."""
    by_name = _by_name(inputs, V2_INPUTS)
    if "user_id" not in by_name:
        raise InvalidRequest("input 'user_id' (BYTES, shape [n]) is required")
    users = _texts(by_name["user_id"], "shape [n]")
    if not users:
        raise InvalidRequest("input 'user_id' holds no user ids")
    if len(users) > MAX_INSTANCES:
        raise InvalidRequest(f"input 'user_id' holds {len(users)} ids; at most {MAX_INSTANCES} per request")
    ks = [_k(int(k) if isinstance(k, float) and k.is_integer() else k, f"k[{n}]")
          for n, k in enumerate(_per_user(by_name.get("k"), len(users), 10, ("INT32", "INT64")))]
    filters = v2_filters(by_name, len(users), len(users))
    options = v2_list_options(by_name, ks)
    stated = _v2_preferences(by_name.get("preferences"), len(users))
    return [UserQuery(_user_id(user, f"user_id[{n}]"), None, k, exclude, category, option, preferences)
            for n, (user, k, (exclude, category), option, preferences)
            in enumerate(zip(users, ks, filters, options, stated))]


def v2_filters(by_name: dict[str, TensorInput], users: int,
               ids_sent: int = 0) -> list[tuple[tuple[str, ...], str | None]]:
    """Each user's (exclude, category) from a V2 request, as V1's `exclude` and `category`:
    `exclude` (BYTES, [E]: the same item ids for every user, or [n, E]: one row per user,
    padded at its end with "") and `category` (BYTES, [1] for every user or [n]; "" for none).
    ids_sent: the ids the request's other inputs hold; with the exclude ids, at most
    MAX_TOTAL_IDS. InvalidRequest names the input."""
    excludes: list[tuple[str, ...]] = [()] * users
    tensor = by_name.get("exclude")
    if tensor is not None:
        shape = list(tensor.shape)
        if len(shape) not in (1, 2):
            raise InvalidRequest(f"input 'exclude' must have shape [E] (the same ids for every user) or "
                                 f"[n, E] (one row per user, padded with \"\"), got {shown(shape)}")
        flat = _texts(tensor, "shape [E] or [n, E]")
        if len(shape) == 2 and shape[0] != users:
            raise InvalidRequest(f"input 'exclude' has shape {shown(shape)}: {shape[0]} rows, but the "
                                 f"request has {users} user(s); send one row per user, or shape [E] for all")
        # A shared [E] list applies to every user: it counts once per user, as V1's per-instance
        # `exclude` would (256 users x 1,000 shared ids would otherwise pass a 100,000-id cap).
        counted = ids_sent + len(flat) * (users if len(shape) == 1 else 1)
        if counted > MAX_TOTAL_IDS:
            raise InvalidRequest(f"the request holds {counted} ids in all (users, items, exclude; a shared "
                                 f"'exclude' counts once per user); at most {MAX_TOTAL_IDS} per request")
        width = shape[-1]
        rows = [flat] if len(shape) == 1 else [flat[n * width:(n + 1) * width] for n in range(users)]
        checked = []
        for n, row in enumerate(rows):
            ids = [i for i in row if i != ""]  # "" pads a short row
            where = "input 'exclude'" if len(shape) == 1 else f"input 'exclude' row {n}"
            if len(ids) > MAX_EXCLUDE:
                raise InvalidRequest(f"{where} holds {len(ids)} ids; at most {MAX_EXCLUDE}")
            if any(len(i) > MAX_ITEM_ID_CHARS for i in ids):
                raise InvalidRequest(f"{where} has an id longer than {MAX_ITEM_ID_CHARS} characters")
            checked.append(tuple(ids))
        excludes = checked * users if len(shape) == 1 else checked
    categories: list[str | None] = [None] * users
    tensor = by_name.get("category")
    if tensor is not None:
        texts = _texts(tensor, "shape [1] or [n]")
        if len(texts) not in (1, users):
            raise InvalidRequest(f"input 'category' must hold 1 value or one per user ({users}), got {len(texts)}")
        named = [optional_category(t or None, f"input category[{n}]") for n, t in enumerate(texts)]
        categories = named * users if len(named) == 1 else named
    return list(zip(excludes, categories))


def _v2_reasons(tensor: TensorInput | None, users: int) -> list[bool]:
    """`reasons` (BOOL, [1] for every user or [n]) as V1's per-instance `reasons`."""
    flags = _per_user(tensor, users, False, ("BOOL",))
    for n, flag in enumerate(flags):
        if not isinstance(flag, bool):
            raise InvalidRequest(f"input reasons[{n}] must be true or false, got {shown(flag)}")
    return flags


def _v2_preferences(tensor: TensorInput | None, users: int) -> list[Preferences | None]:
    """One user's stated preferences per user from the `preferences` input (JSON objects)."""
    if tensor is None:
        return [None] * users
    texts = _texts(tensor, "shape [1] or [n], each a JSON object")
    if len(texts) not in (1, users):
        raise InvalidRequest(f"input 'preferences' must hold 1 value or one per user ({users}), got {len(texts)}")
    parsed: list[Preferences | None] = []
    for n, text in enumerate(texts):
        where = f"input preferences[{n}]"
        if text == "":
            parsed.append(None)
            continue
        if len(text) > MAX_PREFERENCES_CHARS:
            raise InvalidRequest(f"{where} is longer than {MAX_PREFERENCES_CHARS} characters")
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f'{where} is not JSON: send an object such as {{"categories": ["Comedy"]}}, '
                                 f"got {shown(text)}") from exc
        try:
            parsed.append(preferences_from(raw))
        except ValueError as exc:  # "'preferences.categories' must ..." -> "input preferences[0].categories must ..."
            message = re.sub(r"^'preferences([\w.]*)'", lambda m: f"{where}{m.group(1)}", str(exc), count=1)
            raise InvalidRequest(bounded(message)) from exc
    return parsed * users if len(parsed) == 1 else parsed


def v2_list_options(by_name: dict[str, TensorInput], ks: Sequence[int]) -> list[ListOptions]:
    """The list options of a V2 request, one per user (`ks`: each user's checked k): sponsored
    candidates `sponsored_item_id` (BYTES, [m]) with `sponsored_bid` (FP32, [m]), or a
    `campaign` (BYTES, [1]); `sponsored_slots` (INT32, [1]) and `diversity` (FP32, [1] or [n])."""
    diversities = _per_user(by_name.get("diversity"), len(ks), 0.0, NUMERIC)
    sponsored: tuple[Candidate, ...] = ()
    slots: Any = None  # unset: DEFAULT_SLOTS capped at each user's k
    if ("sponsored_item_id" in by_name) != ("sponsored_bid" in by_name):
        raise InvalidRequest("inputs 'sponsored_item_id' (BYTES, [m]) and 'sponsored_bid' (FP32, [m]) go together")
    if "sponsored_item_id" in by_name and "campaign" in by_name:
        raise InvalidRequest("inputs 'sponsored_item_id' / 'sponsored_bid' and 'campaign' are both given: "
                             "give the sponsored candidates or name a campaign, not both")
    if "sponsored_item_id" in by_name:
        ids_in, bids_in = by_name["sponsored_item_id"], by_name["sponsored_bid"]
        ids = _texts(ids_in, "shape [m]")
        if bids_in.datatype not in NUMERIC:
            raise InvalidRequest(f"input 'sponsored_bid' must have a numeric datatype (FP32), got {shown(bids_in.datatype)}")
        bids = _flat(bids_in.data)
        _check_shape(bids_in, len(bids))
        if len(ids) != len(bids):
            raise InvalidRequest(f"inputs 'sponsored_item_id' ({len(ids)} values) and 'sponsored_bid' "
                                 f"({len(bids)}) must hold one bid per item")
        try:
            sponsored = tuple(candidates_from([{"item_id": i, "bid": b} for i, b in zip(ids, bids)]))
        except ValueError as exc:  # "'sponsored'[3].bid ..." -> "input sponsored_bid[3] ...": what was sent
            message = re.sub(r"'sponsored'\[(\d+)\]\.(bid|item_id)", r"input sponsored_\2[\1]", str(exc))
            raise InvalidRequest(bounded(message.replace("'sponsored'", "input sponsored_item_id"))) from exc
    campaign = None
    if "campaign" in by_name:
        names = _texts(by_name["campaign"], "shape [1]")
        if len(names) != 1:
            raise InvalidRequest(f"input 'campaign' must hold 1 value, got {len(names)}")
        campaign = _campaign(names[0], "input campaign[0]")
    if "sponsored_slots" in by_name:
        slots_in = by_name["sponsored_slots"]
        if slots_in.datatype not in ("INT32", "INT64"):
            raise InvalidRequest(f"input 'sponsored_slots' must have datatype INT32, got {shown(slots_in.datatype)}")
        values = _flat(slots_in.data)
        _check_shape(slots_in, len(values))
        if len(values) != 1:
            raise InvalidRequest(f"input 'sponsored_slots' must hold 1 value, got {len(values)}")
        slots = values[0]
    return [ListOptions(sponsored, _slots(min(DEFAULT_SLOTS, k) if slots is None else slots,
                                          f"sponsored_slots (for k[{n}])", k),
                        _diversity(diversity, f"diversity[{n}]"), campaign)
            for n, (k, diversity) in enumerate(zip(ks, diversities))]


def parse_v2(inputs: Sequence[TensorInput], max_history: int = MAX_HISTORY) -> list[Query]:
    """The predictor's Open Inference Protocol inputs: `items` (BYTES, [n, L]: n histories,
    oldest first, each padded at its end with "" to the longest; or [L]: one history), optional
    `session_starts` (BOOL, the shape of `items`: true where an item opens a session), optional
    `k` (INT32, [1] or [n]), `exclude` and `category` (`v2_filters`), `reasons` (BOOL, [1] or
    [n]) and the list options (`v2_list_options`), the filters and options as the transformer
    takes them. max_history: the most items one history may hold, as for V1."""
    by_name = _by_name(inputs, PREDICTOR_V2_INPUTS)
    if "items" not in by_name:
        raise InvalidRequest("input 'items' (BYTES, shape [n, L]: n histories padded with \"\") is required")
    tensor = by_name["items"]
    shape = list(tensor.shape)
    if len(shape) not in (1, 2):
        raise InvalidRequest(f"input 'items' must have shape [n, L] (n histories) or [L] (one), "
                             f"got {shown(shape)}")
    flat = _texts(tensor, "shape [n, L]")
    users, width = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])
    if users < 1:
        raise InvalidRequest("input 'items' holds no histories")
    if users > MAX_INSTANCES:
        raise InvalidRequest(f"input 'items' holds {users} histories; at most {MAX_INSTANCES} per request")
    if len(flat) > MAX_TOTAL_IDS:
        raise InvalidRequest(f"input 'items' holds {len(flat)} values; at most {MAX_TOTAL_IDS} per request")
    opened = _v2_session_starts(by_name.get("session_starts"), shape)
    histories, starts = [], []
    for n in range(users):
        padded = flat[n * width:(n + 1) * width]
        row = [i for i in padded if i != ""]  # "" pads a short history
        if opened is not None:  # a pad's flag goes with it
            starts.append(tuple(f for i, f in zip(padded, opened[n * width:(n + 1) * width]) if i != ""))
        if len(row) > max_history:
            raise InvalidRequest(f"input 'items' row {n} holds {len(row)} ids; at most {max_history} "
                                 f"(the newest items the model reads)")
        if any(len(i) > MAX_ITEM_ID_CHARS for i in row):
            raise InvalidRequest(f"input 'items' row {n} has an id longer than {MAX_ITEM_ID_CHARS} characters")
        histories.append(tuple(row))
    ks = [_k(int(k) if isinstance(k, float) and k.is_integer() else k, f"k[{n}]")
          for n, k in enumerate(_per_user(by_name.get("k"), users, 10, ("INT32", "INT64")))]
    filters = v2_filters(by_name, users, len(flat))
    reasons = _v2_reasons(by_name.get("reasons"), users)
    return [Query(history, k, exclude, category, reason, o.sponsored, o.sponsored_slots, o.diversity, o.campaign,
                  starts[n] if opened is not None else None)
            for n, (history, k, (exclude, category), reason, o)
            in enumerate(zip(histories, ks, filters, reasons, v2_list_options(by_name, ks)))]


def _v2_session_starts(tensor: TensorInput | None, items_shape: list[int]) -> list[bool] | None:
    """`session_starts` (BOOL, the shape of `items`: true where an item opens a session; a
    pad's value is ignored), flat, or None when not sent."""
    if tensor is None:
        return None
    if tensor.datatype != "BOOL":
        raise InvalidRequest(f"input 'session_starts' must have datatype BOOL, got {shown(tensor.datatype)}")
    flags = _flat(tensor.data)
    _check_shape(tensor, len(flags))
    if list(tensor.shape) != items_shape:
        raise InvalidRequest(f"input 'session_starts' has shape {shown(list(tensor.shape))}; it must have the "
                             f"shape of 'items', {shown(items_shape)}: one flag per item")
    for n, flag in enumerate(flags):
        if not isinstance(flag, bool):
            raise InvalidRequest(f"input session_starts[{n}] must be true or false, got {shown(flag)}")
    return flags


def _per_user(tensor: TensorInput | None, users: int, default: Any, datatypes: Sequence[str]) -> list[Any]:
    """One value per user from an optional input of shape [1] (every user) or [n]."""
    if tensor is None:
        return [default] * users
    if tensor.datatype not in datatypes:
        raise InvalidRequest(f"input '{tensor.name}' must have datatype {datatypes[0] if len(datatypes) < 3 else 'FP32'}, "
                             f"got {shown(tensor.datatype)}")
    values = _flat(tensor.data)
    _check_shape(tensor, len(values))
    if len(values) == 1:
        return values * users
    if len(values) == users:
        return values
    raise InvalidRequest(f"input '{tensor.name}' must hold 1 value or one per user ({users}), got {len(values)}")


def _check_shape(tensor: TensorInput, count: int) -> None:
    """The Open Inference Protocol's contract: a tensor holds exactly prod(shape) values. A
    shape that disagrees with the data is a malformed request, never silently reshaped."""
    shape = list(tensor.shape)
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise InvalidRequest(f"input '{tensor.name}' has shape {shown(shape)}: dimensions must be "
                             f"non-negative integers")
    expected = math.prod(shape)
    if expected != count:
        raise InvalidRequest(f"input '{tensor.name}' has shape {shown(shape)} ({expected} values) "
                             f"but its data holds {count}")


def _flat(data: Any) -> list[Any]:
    if hasattr(data, "tolist"):
        data = data.tolist()
    out: list[Any] = []
    for value in data if isinstance(data, list) else [data]:
        out.extend(_flat(value) if isinstance(value, list) else [value])
    return out
