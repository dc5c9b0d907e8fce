"""The prediction log cannot take serving down: queued writes, failures and stalls counted (never
raised, never waited for), one file set per pod and process, retention for logs and job folders.
Real files, a real unwritable path and a real stalled write (a FIFO nobody reads)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from shoprec.retention import DAY_S, Retention, prune
from shoprec.serving.prediction_log import PredictionLog, PredictionRecord, default_writer_id, read_predictions


def record(n: int) -> PredictionRecord:
    return PredictionRecord(request_id=f"r{n}", user_hash="h", kind="user", model_version="v1",
                            fallback=None, items=["a"], scores=[0.5])


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_submitted_records_are_written_by_the_background_writer_to_this_processes_own_file(tmp_path):
    log = PredictionLog(tmp_path)
    assert all(log.submit(record(n)) for n in range(20))
    assert log.flush(timeout=10)
    assert log.stats.written == 20 and log.stats.failed == log.stats.dropped == 0
    files = list(tmp_path.glob("predictions-*.jsonl"))
    assert len(files) == 1 and f"-{default_writer_id()}-000.jsonl" in files[0].name
    assert sorted(read_predictions(tmp_path)["request_id"]) == sorted(f"r{n}" for n in range(20))
    log.close()


def test_replicas_sharing_a_volume_never_write_to_the_same_file(tmp_path):
    pods = [PredictionLog(tmp_path, writer_id=w) for w in ("shoprec-7f9c-abcde_1", "shoprec-7f9c-fghij_1")]
    for n in range(10):
        for pod in pods:
            pod.append(record(n))
    names = sorted(p.name for p in tmp_path.glob("predictions-*.jsonl"))
    assert len(names) == 2 and "abcde_1" in names[0] and "fghij_1" in names[1]
    assert all(len(p.read_text().splitlines()) == 10 for p in tmp_path.glob("*.jsonl"))
    assert len(read_predictions(tmp_path)) == 20


def test_failed_writes_are_counted_and_never_raise(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    log = PredictionLog(blocker / "predictions")  # every open fails (NotADirectoryError)
    started = time.monotonic()
    assert all(log.submit(record(n)) for n in range(50))
    assert time.monotonic() - started < 1.0
    assert log.flush(timeout=10)
    assert log.stats.failed == 50 and log.stats.written == 0
    log.close()


def test_a_stalled_volume_never_stalls_submit_and_the_drops_are_counted(tmp_path):
    """A FIFO nobody reads at the log file's name: opening it for writing blocks, as a hung NFS
    write does. Submitting stays instant; records beyond the queue are dropped and counted."""
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    fifo = tmp_path / f"predictions-{day}-stuck_1-000.jsonl"
    os.mkfifo(fifo)
    log = PredictionLog(tmp_path, writer_id="stuck_1", queue_size=5, slow_write_s=0.2)
    started = time.monotonic()
    accepted = [log.submit(record(n)) for n in range(200)]
    assert time.monotonic() - started < 1.0  # never waited for the disk
    # Accepted: the queue's 5 plus the batch the writer took before its write blocked, whose
    # size depends on when its thread ran (one record, or a few queue-fulls taken meanwhile on
    # a loaded machine): a handful, never the 200; every other record is dropped and counted.
    assert accepted.count(True) <= 25 and log.stats.dropped == accepted.count(False)
    assert not log.flush(timeout=0.3)  # the writer is stuck, the caller is not
    # The volume comes back (a reader appears): the stuck batch ends, counted as a slow write.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        wait_until(lambda: log.stats.slow >= 1)
    finally:
        os.close(reader)
    log.close(timeout=2)


def test_retention_prunes_old_and_surplus_log_files_but_never_the_open_one(tmp_path):
    now = time.time()
    for n in range(6):
        old = tmp_path / f"predictions-20200101-other_1-{n:03d}.jsonl"
        old.write_text("{}\n")
        os.utime(old, (now - (40 - n) * DAY_S, now - (40 - n) * DAY_S))  # 35..40 days old
    recent = [tmp_path / f"predictions-20990101-other_2-{n:03d}.jsonl" for n in range(4)]
    for n, path in enumerate(recent):
        path.write_text("{}\n")
        os.utime(path, (now - n * 60, now - n * 60))
    (tmp_path / "notes.txt").write_text("not a log file")

    log = PredictionLog(tmp_path, retention=Retention(max_age_s=30 * DAY_S, max_count=4))
    written = log.append(record(0))  # opening a file prunes

    left = sorted(p.name for p in tmp_path.iterdir())
    assert written.name in left and "notes.txt" in left
    assert not any("20200101" in name for name in left)  # older than 30 days
    assert len([n for n in left if n.startswith("predictions-")]) == 4  # the newest four, ours among them
    assert recent[-1].name not in left


def test_job_folders_are_pruned_by_age_and_count(tmp_path):
    now = time.time()
    for n in range(5):
        folder = tmp_path / f"shoprec-train-{n}" / "data"
        folder.mkdir(parents=True)
        (folder / "events.parquet").write_bytes(b"x")
        os.utime(folder.parent, (now - n * DAY_S, now - n * DAY_S))
    removed = prune(tmp_path, Retention(max_age_s=3.5 * DAY_S, max_count=3), keep=[tmp_path / "shoprec-train-3"])
    assert sorted(p.name for p in removed) == ["shoprec-train-4"]  # too old; 3 is surplus but kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"shoprec-train-{n}" for n in range(4)]
    removed = prune(tmp_path, Retention(max_age_s=None, max_count=2))
    assert sorted(p.name for p in removed) == ["shoprec-train-2", "shoprec-train-3"]


def test_retention_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SHOPREC_PREDICTION_LOG_RETENTION_DAYS", "7")
    monkeypatch.setenv("SHOPREC_PREDICTION_LOG_MAX_FILES", "0")
    found = Retention.from_env("SHOPREC_PREDICTION_LOG", Retention(30 * DAY_S, 100))
    assert found == Retention(max_age_s=7 * DAY_S, max_count=None)
