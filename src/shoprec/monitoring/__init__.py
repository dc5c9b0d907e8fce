"""Monitoring: Evidently drift reports (drift.py, frames.py, run.py), the report index
(index.py) and the retraining trigger (trigger.py)."""
