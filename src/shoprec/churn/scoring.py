"""Churn scoring for serving and campaigns: a probability and the drivers behind it.

Drivers are measured by occlusion: a feature's contribution is how much the probability falls
when that one feature is set to its typical value (the training median). Those that raised the
risk (contribution > 0) are reported, largest first. One forward pass scores a user with every
feature occluded in turn, so a request costs a single small matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shoprec import schema as S
from shoprec.churn.bundle import ChurnBundle
from shoprec.churn.features import feature_refs
from shoprec.features.online import MISSING_FLAG, online_user_rows
from shoprec.features.settings import FeatureStoreSettings

if TYPE_CHECKING:
    from feast import FeatureStore

DEFAULT_DRIVERS = 3


def score_matrix(bundle: ChurnBundle, x: np.ndarray, drivers: int = DEFAULT_DRIVERS) -> list[dict[str, Any]]:
    """Probability and top drivers for raw feature rows x [B, F] (columns in `bundle.features`)."""
    x = np.asarray(x, dtype=np.float64)
    batch, width = x.shape
    reference = bundle.reference  # [F]
    # Row b*(F+1) is user b as is; row b*(F+1)+1+j is user b with feature j at its reference.
    stacked = np.repeat(x, width + 1, axis=0).reshape(batch, width + 1, width)  # [B, F+1, F]
    columns = np.arange(width)
    stacked[:, 1 + columns, columns] = reference
    p = bundle.model.probability(stacked.reshape(-1, width)).reshape(batch, width + 1)  # [B, F+1]
    contribution = p[:, :1] - p[:, 1:]  # [B, F]: how much each feature's actual value adds
    answers = []
    for b in range(batch):
        order = [j for j in np.argsort(-contribution[b], kind="stable") if contribution[b, j] > 0][:drivers]
        answers.append({
            "churn_probability": float(p[b, 0]),
            "drivers": [{"feature": bundle.features[j], "value": float(x[b, j]),
                         "typical": float(reference[j]), "contribution": round(float(contribution[b, j]), 6)}
                        for j in order],
        })
    return answers


def score_rows(bundle: ChurnBundle, rows: Sequence[dict[str, Any]], drivers: int = DEFAULT_DRIVERS) -> list[dict[str, Any]]:
    """Score feature dicts (one per user, as the online store returns them): a row flagged
    `missing` (a user the store does not know: no activity, so no churn question) answers
    churn_probability None and `known` False instead of a guess."""
    known = [i for i, row in enumerate(rows) if not row.get(MISSING_FLAG, False)]
    x = np.asarray([[float(rows[i][name]) for name in bundle.features] for i in known], dtype=np.float64)
    scored = score_matrix(bundle, x.reshape(len(known), len(bundle.features)), drivers) if known else []
    answers: list[dict[str, Any]] = [
        {S.USER_ID: row.get(S.USER_ID), "churn_probability": None, "drivers": [], "known": False} for row in rows
    ]
    for i, answer in zip(known, scored):
        answers[i] = {S.USER_ID: rows[i].get(S.USER_ID), **answer, "known": True}
    return answers


def score_users(
    bundle: ChurnBundle, store: "FeatureStore", user_ids: Sequence[str],
    settings: FeatureStoreSettings | None = None, drivers: int = DEFAULT_DRIVERS,
) -> list[dict[str, Any]]:
    """Read the users' user_stats from the online store (the platform's, materialized as of the
    feature build) and score them, in order."""
    rows = online_user_rows(store, [str(u) for u in user_ids], feature_refs(bundle.features), settings)
    return score_rows(bundle, rows, drivers)
