"""The user-context input of the transformer: numeric `user_stats` features -> one vector.

One transform for training and serving (no skew): training applies it to the point-in-time
`user_stats` row of every training example (as of strictly before the example's time,
`training_set.build_training_set`), serving to the online `user_stats` row the KServe
transformer reads from the same feature service. The statistics it standardizes with are fit
on the training rows once and travel in the model bundle (`UserContextTransform.to_dict`).

Each feature is log1p of its value (counts, days, prices are all >= 0 and heavy-tailed),
missing values (a user without any earlier event, a log without prices) count as 0, then
(x - mean) / std over the training rows, clipped to +-`CLIP`. Features constant over the
training rows (a purchase-only log's view counts) are left out when the transform is fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shoprec import schema as S
from shoprec.errors import FeatureStoreError
from shoprec.features import names as N

# The numeric user_stats features a model may read (top_category is text: not a model input).
USER_CONTEXT_FEATURES: tuple[str, ...] = N.USER_COUNT_FEATURES + (
    N.DISTINCT_ITEMS, N.DAYS_SINCE_LAST_EVENT, N.MEAN_PRICE,
)
CLIP = 5.0  # standardized values beyond +-5 are outliers the model should not extrapolate on


def feature_refs(columns: Sequence[str] = USER_CONTEXT_FEATURES) -> list[str]:
    """The "view:feature" references of `columns` in the feature service (for the join)."""
    return [f"{N.USER_STATS}:{name}" for name in columns]


def _raw(rows: pd.DataFrame | Sequence[Mapping[str, Any]], columns: Sequence[str]) -> np.ndarray:
    """[B, F] float64 log1p of the columns' values, missing (absent, None, NaN) as 0."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    out = np.zeros((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        if name in frame:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            out[:, j] = np.log1p(np.clip(np.nan_to_num(values, nan=0.0), 0.0, None))
    return out


@dataclass(frozen=True)
class UserContextTransform:
    """columns: the user_stats features read, in order; mean / std: of their log1p values over
    the training rows. `apply` turns user_stats rows into the model's [B, F] input."""

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def width(self) -> int:
        return len(self.columns)

    @staticmethod
    def fit(rows: pd.DataFrame, columns: Sequence[str] = USER_CONTEXT_FEATURES) -> "UserContextTransform":
        """Statistics from the training rows (the point-in-time joined training set); columns
        that do not vary there are left out. Raises FeatureStoreError when none varies."""
        unknown = [c for c in columns if c not in USER_CONTEXT_FEATURES]
        if unknown:
            raise FeatureStoreError(f"not numeric user_stats features: {unknown}; "
                                    f"choose among {list(USER_CONTEXT_FEATURES)}")
        absent = [c for c in columns if c not in rows]
        if absent:
            raise FeatureStoreError(f"the training set lacks the user_stats column(s) {absent} "
                                    f"(join them with build_training_set(features=feature_refs(...)))")
        raw = _raw(rows, columns)
        mean, std = raw.mean(0), raw.std(0)
        kept = [j for j in range(len(columns)) if std[j] > 1e-9]
        if not kept:
            raise FeatureStoreError(f"no user_stats feature of {list(columns)} varies over the training rows")
        return UserContextTransform(tuple(columns[j] for j in kept), tuple(float(mean[j]) for j in kept),
                                    tuple(float(std[j]) for j in kept))

    def apply(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """[B, F] float32 model input from user_stats rows (a frame, or the online rows as
        dicts); a row without a feature (a user unknown to the store) reads as no history."""
        raw = _raw(rows, self.columns)
        z = (raw - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -CLIP, CLIP).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(value: Mapping[str, Any]) -> "UserContextTransform":
        return UserContextTransform(tuple(value["columns"]), tuple(float(v) for v in value["mean"]),
                                    tuple(float(v) for v in value["std"]))


def join_user_stats_asof(examples: pd.DataFrame, user_stats: pd.DataFrame,
                         columns: Sequence[str] = USER_CONTEXT_FEATURES) -> pd.DataFrame:
    """`examples` (user_id, timestamp, ...) in their order with the user_stats `columns` as of
    strictly before each row's time, from an in-memory user_stats table (`tables.
    build_feature_tables`): the same values Feast's point-in-time join through
    `build_training_set` gives (a test compares them), for the benchmark, which has no store.
    A row with no earlier user_stats row gets missing values."""
    left = pd.DataFrame({S.USER_ID: examples[S.USER_ID].astype(str).to_numpy(),
                         "_t": pd.to_datetime(examples[S.TIMESTAMP], utc=True).dt.as_unit("ns").to_numpy(),
                         "_row": np.arange(len(examples))})
    right = pd.DataFrame({S.USER_ID: user_stats[S.USER_ID].astype(str).to_numpy(),
                          "_t": pd.to_datetime(user_stats[N.FEATURE_TIMESTAMP], utc=True).dt.as_unit("ns").to_numpy()})
    for name in columns:
        right[name] = user_stats[name].to_numpy()
    joined = pd.merge_asof(left.sort_values("_t", kind="stable"), right.sort_values("_t", kind="stable"),
                           on="_t", by=S.USER_ID, allow_exact_matches=False, direction="backward")
    joined = joined.sort_values("_row", kind="stable")
    out = examples.reset_index(drop=True).copy()
    for name in columns:
        out[name] = joined[name].to_numpy()
    return out
