"""Monitoring: Evidently drift reports (drift.py, frames.py, run.py), the saved training
window they compare against (reference.py), the recommendation-quality report (quality.py),
the check's settings (settings.py), the report index (index.py) and the retraining trigger
(trigger.py)."""
