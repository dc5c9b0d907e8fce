"""Feast's feature server (the app `feast serve` runs) with a `/health` that checks the online
store: Feast's own only lists the registry's projects, so a feature server whose Redis is down
stays "healthy" while every read fails. Here `/health` also reads one (absent) user through the
online store, bounded by a timeout, and answers 503 naming the store (no credentials) when it
cannot.

Run: python -m shoprec.kserve.feature_server [--host 0.0.0.0] [--port 6566] [--home HOME]
(stores from the environment, e.g. SHOPREC_FEAST_YAML=feature_repo/feature_store.production.yaml;
a named yaml's Redis gets the library's connect / read timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from fastapi import Response

from shoprec.features.online import online_user_rows
from shoprec.features.settings import FeatureStoreSettings, one_line
from shoprec.features.store import open_store
from shoprec.serving.feature_sources import USER_FEATURE_REFS

HEALTH_TIMEOUT_S = 3.0  # above the Redis read timeout (1 s, one retry): a hung store is a 503
PROBE_USER = "__shoprec_health__"


def make_app(settings: FeatureStoreSettings) -> Any:
    """Feast's feature-server app over the settings' stores, with the online store in /health."""
    from feast.feature_server import get_app

    store = open_store(settings)
    app = get_app(store)
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/health"]

    @app.get("/health")
    async def health() -> Response:
        try:
            await asyncio.wait_for(asyncio.to_thread(
                online_user_rows, store, [PROBE_USER], list(USER_FEATURE_REFS), settings), HEALTH_TIMEOUT_S)
        except asyncio.TimeoutError:
            return Response(f"online store ({settings.describe()}) did not answer within "
                            f"{HEALTH_TIMEOUT_S:g} s", status_code=503)
        except Exception as exc:  # any store failure: not healthy, say which store and why
            return Response(f"online store ({settings.describe()}): {one_line(exc)[:300]}", status_code=503)
        return Response(status_code=200)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6566)
    parser.add_argument("--home", default=None, help="shoprec home [default: $SHOPREC_HOME].")
    args = parser.parse_args(argv)
    uvicorn.run(make_app(FeatureStoreSettings.from_env(args.home)), host=args.host, port=args.port,
                access_log=False, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
