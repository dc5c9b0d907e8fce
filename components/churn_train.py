"""Pipeline step `churn_train`: validated events -> point-in-time churn training set (the churn
Feast home) -> the classifier, evaluated against the recency and frequency baselines on the
latest snapshot -> the churn bundle with its report. Nothing is registered here (`churn_register`).

A small MLP on a few thousand rows: it runs on CPU on a cluster too (no GPU node asked for)."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def churn_train(
    clean: Input[Dataset],
    feature_store: Input[Artifact],
    home: str,
    horizon_days: int,
    snapshots: int,
    step_days: int,
    hidden: int,
    dropout: float,
    epochs: int,
    learning_rate: float,
    patience: int,
    resamples: int,
    seed: int,
    model: Output[Model],
    model_card: Output[Markdown],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> None:
    """Train the churn model on the clean events (home: '' = $SHOPREC_HOME or ./shoprec-home;
    its `churn/` folder holds the churn training store). `feature_store` is the materialize
    step's record of the platform's online store, the one serving reads: kept as lineage.
    step_days: days between snapshots, 0 = the horizon (label windows side by side)."""
    import json
    import os
    import shutil

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from shoprec.churn.bundle import REPORT_FILE
    from shoprec.churn.fit import FitConfig
    from shoprec.churn.steps import train_from_clean
    from shoprec.churn.train import ChurnConfig
    from shoprec.components._runtime import log_peak_memory

    config = ChurnConfig(horizon_days=horizon_days, snapshots=snapshots, step_days=step_days or None,
                         resamples=resamples, seed=seed,
                         fit=FitConfig(hidden=hidden, dropout=dropout, epochs=epochs, lr=learning_rate,
                                       patience=patience, seed=seed))
    outcome = train_from_clean(clean.path, home, model.path, config)
    shutil.copyfile(os.path.join(model.path, "MODEL_CARD.md"), model_card.path)
    shutil.copyfile(os.path.join(model.path, REPORT_FILE), report.path)
    for name, row in outcome.evaluation["models"].items():
        for metric in ("roc_auc", "pr_auc", "brier"):
            metrics.log_metric(f"{name}_{metric}", round(float(row[metric]), 6))
    metrics.log_metric("gate_pr_auc_delta_low", round(outcome.gate["low"], 6))
    with open(feature_store.path, encoding="utf-8") as handle:
        store = json.load(handle)
    with open(os.path.join(model.path, "config.json"), encoding="utf-8") as handle:
        bundle_config = json.load(handle)
    model.metadata.update({
        "framework": "pytorch", "kind": bundle_config["kind"], "model_name": bundle_config["model_name"],
        "weights_sha256": bundle_config["weights_sha256"], "device": outcome.facts["device"],
        "test_snapshot": outcome.facts["test_snapshot"], "gate_passed": outcome.gate["passed"],
        "online_store": store.get("store", ""),
    })
    log_peak_memory(metrics)
