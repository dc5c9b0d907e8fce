"""The transformer's online feature sources: each reads the users' features of `recommender_v1`
(`USER_FEATURE_REFS`) as one dict per user with the `missing` flag, from the Feast SDK over an
online store (`FeastSDKSource`) or a Feast feature server over HTTP (`FeastHTTPSource`).
`read_features` bounds a read by a timeout and turns any store failure into a reason, never an
exception, so a slow or broken store only sends users to the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from shoprec import schema as S
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N
from shoprec.features.settings import FeatureStoreSettings

logger = logging.getLogger(__name__)

# The user features of `recommender_v1` that serving reads (the item view is keyed by item).
USER_FEATURE_REFS: tuple[str, ...] = tuple(
    [f"{N.USER_STATS}:{name}" for name in N.USER_STATS_FEATURES]
    + [f"{N.USER_RECENT_ITEMS}:{N.RECENT_ITEMS}", f"{N.USER_HISTORY}:{N.HISTORY_ITEMS}",
       f"{N.USER_HISTORY}:{N.HISTORY_SESSION_STARTS}"]
)


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

        from shoprec.features.online import online_user_rows

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
        from shoprec.features.online import online_user_rows

        return await asyncio.to_thread(online_user_rows, self.store, user_ids,
                                       list(USER_FEATURE_REFS), self.settings)


class FeastHTTPSource:
    """A Feast feature server (`feast serve`) over HTTP, with an async client."""

    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/") + "/get-online-features"
        self.client = httpx.AsyncClient()

    async def read(self, user_ids: list[str]) -> list[dict[str, Any]]:
        from shoprec.features.online import user_rows

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
