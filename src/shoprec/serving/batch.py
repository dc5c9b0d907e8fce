"""Batch scoring: top-k for many users through the serving code itself (the transformer's
features, plans and fallbacks, the predictor's `answer`), in process, chunk by chunk; for
e-mail campaigns and precomputed pages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from shoprec import schema as S
from shoprec.errors import DataSourceError
from shoprec.models.inference import BundleRecommender
from shoprec.serving.predictor import answer, lineage
from shoprec.serving.requests import MAX_INSTANCES, UserQuery, parse_v1
from shoprec.serving.transformer import TransformerCore

COLUMNS = [S.USER_ID, "rank", S.ITEM_ID, "score", "reason", "fallback", "model_version"]


def read_users(path: str | Path) -> list[str]:
    """User ids from a text file (one per line), or a CSV / Parquet file with a user_id column."""
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"users file {path} not found")
    if path.suffix in (".parquet", ".csv"):
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
        if S.USER_ID not in frame:
            raise DataSourceError(f"users file {path} has no '{S.USER_ID}' column: {list(frame.columns)}")
        users = frame[S.USER_ID].dropna().astype(str).tolist()
    else:
        users = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(users))


def recommend_users(users: Sequence[str], recommender: BundleRecommender, version: str, core: TransformerCore,
                    k: int = 10, chunk: int = MAX_INSTANCES,
                    on_progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """One row per (user, rank): the same answers the endpoint gives, without HTTP."""
    rows: list[tuple] = []
    for start in range(0, len(users), chunk):
        part = list(users[start:start + chunk])
        pending = asyncio.run(core.prepare([UserQuery(u, None, k) for u in part]))
        payload = core.predictor_payload(pending)
        body = None
        if payload:
            body = {"predictions": answer(recommender, parse_v1(payload), core.catalog),
                    "model_version": version, "lineage": lineage(recommender, version)}
        result = core.finish(pending, body)
        for prediction in result["predictions"]:
            for rank, item in enumerate(prediction["items"], start=1):
                rows.append((prediction["user_id"], rank, item["item_id"], item["score"], item["reason"],
                             prediction["fallback"], prediction["model_version"] or version))
        if on_progress is not None:
            on_progress(len(part))
    return pd.DataFrame(rows, columns=COLUMNS)
