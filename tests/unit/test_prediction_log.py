"""The prediction log: appends, rolls over, reads back a window, survives a torn line."""

from __future__ import annotations

import pandas as pd

from shoprec.serving.prediction_log import PredictionLog, PredictionRecord, hash_user, read_predictions


def record(n: int, time: str) -> PredictionRecord:
    return PredictionRecord(request_id=f"r{n}", user_hash=hash_user(f"u{n}", salt="s"), kind="user",
                            model_version="v1", fallback=None, items=["a", "b"], scores=[0.9, 0.1],
                            history_length=3, time=time)


def test_records_round_trip_and_window(tmp_path) -> None:
    log = PredictionLog(tmp_path)
    for n, day in enumerate(["2026-01-01", "2026-01-02", "2026-01-03"]):
        log.append(record(n, f"{day}T12:00:00+00:00"))
    frame = read_predictions(tmp_path, start=pd.Timestamp("2026-01-02", tz="UTC"))
    assert list(frame["request_id"]) == ["r1", "r2"]
    assert frame["items"].iloc[0] == ["a", "b"] and frame["fallback"].isna().all()


def test_rolls_over_by_size_and_skips_torn_lines(tmp_path) -> None:
    log = PredictionLog(tmp_path, max_bytes=200)
    paths = {log.append(record(n, "2026-01-01T00:00:00+00:00")) for n in range(5)}
    assert len(paths) > 1  # each file passed 200 bytes after one or two records
    with open(sorted(paths)[-1], "a", encoding="utf-8") as out:
        out.write('{"request_id": "torn"')  # a crash mid-write
    assert len(read_predictions(tmp_path)) == 5


def test_user_ids_are_hashed_with_a_key() -> None:
    assert hash_user("u1", salt="a") != hash_user("u1", salt="b")
    assert hash_user("u1", salt="a") == hash_user("u1", salt="a") != "u1"
