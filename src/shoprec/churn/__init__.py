"""Churn (retention) risk: a second model family on the platform's data, features and registry.

A user is *churned* as of a snapshot time `s` when they had activity at or before `s` and made
no purchase in the next `horizon_days` (N, default 30). Features are `user_stats` from Feast,
as they stood at each snapshot (historical retrieval, never `now()`); a small torch classifier
is measured against recency and frequency baselines, gated on PR-AUC, bundled as safetensors
and registered under its own model name, `shoprec-churn`.

    labels    snapshot times and point-in-time labels
    features  user_stats rows as of each snapshot, the churn Feast home, historical retrieval
    metrics   ROC-AUC, PR-AUC, Brier, reliability table, paired bootstrap (numpy, no sklearn)
    model     the classifier (standardisation inside the module, so the weights carry it)
    fit       training loop (GPU when present)
    evaluate  baselines, metric table with paired intervals, the gate
    report    markdown and HTML report with a reliability plot (inline SVG)
    bundle    save / load (safetensors + sha256), register under `shoprec-churn`
    scoring   probability and drivers for users (offline rows or the online store)
    train     the whole run: events -> labels -> Feast -> fit -> evaluate -> bundle -> registry
"""
