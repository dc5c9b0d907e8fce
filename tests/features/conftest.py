"""Fixtures for the feature tests: a hand-built event timeline, homes, real stores.

Redis: the tests find the server in $SHOPREC_TEST_REDIS ("host:port"), else in
tests/.services.env written by `bash tests/services.sh start` (what `make test` runs). Without
one they skip, unless $SHOPREC_REQUIRE_REDIS=1 (set by `make test`), where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from shoprec import schema as S

SERVICES_ENV = Path(__file__).resolve().parents[1] / ".services.env"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# The timeline (user u1 mostly; u2 once). t3 and t4 share one second, and one event comes
# after AS_OF so that the build must leave it out.
T1, T2, T3, T5 = ts("2024-01-01 10:00"), ts("2024-01-03 10:00"), ts("2024-01-20 10:00"), ts("2024-02-15 10:00")
T_U2 = ts("2024-01-10 10:00")
AS_OF = ts("2024-02-20 00:00")
AFTER = ts("2024-03-01 00:00")


@pytest.fixture
def timeline() -> tuple[pd.DataFrame, pd.DataFrame]:
    events = pd.DataFrame(
        [
            ("u1", "A", S.VIEW, T1, None),
            ("u1", "B", S.PURCHASE, T2, 10.0),
            ("u2", "C", S.VIEW, T_U2, None),
            ("u1", "B", S.VIEW, T3, None),
            ("u1", "C", S.CART, T3, None),
            ("u1", "A", S.PURCHASE, T5, 20.0),
            ("u1", "D", S.PURCHASE, AFTER, 99.0),  # after AS_OF: never in any feature
        ],
        columns=[S.USER_ID, S.ITEM_ID, S.EVENT_TYPE, S.TIMESTAMP, S.PRICE],
    )
    items = pd.DataFrame({S.ITEM_ID: ["A", "B", "C", "D"], S.CATEGORY: ["toys", "books", "toys", "food"]})
    return events, items


@pytest.fixture(scope="session")
def redis_address() -> str:
    address = os.environ.get("SHOPREC_TEST_REDIS")
    if not address and SERVICES_ENV.is_file():
        for line in SERVICES_ENV.read_text().splitlines():
            if line.startswith("SHOPREC_TEST_REDIS="):
                address = line.split("=", 1)[1].strip()
    if not address:
        if os.environ.get("SHOPREC_REQUIRE_REDIS") == "1":
            pytest.fail("no test Redis: run `bash tests/services.sh start` (make test does)")
        pytest.skip("no test Redis (SHOPREC_TEST_REDIS unset; `bash tests/services.sh start`)")
    return address


@pytest.fixture
def clean_redis(redis_address: str) -> str:
    """The test Redis, emptied: each test starts with no keys."""
    import redis

    host, port = redis_address.split(":")
    redis.Redis(host=host, port=int(port)).flushall()
    return redis_address
