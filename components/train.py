"""Pipeline step `train`: the SASRec+ transformer and the baselines, on a GPU when the
cluster gives one (the pipeline sets `.set_accelerator_type('nvidia.com/gpu')` and
`.set_accelerator_limit(1)` on this task; kfp.local ignores them and it trains on CPU).
With `workers` > 0 it trains on a Kubeflow PyTorchJob instead (pipelines/training_job.py)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def train(
    clean: Input[Dataset],
    feature_store: Input[Artifact],
    home: str,
    use_feature_store: bool,
    split: str,
    cutoff: str,
    max_epochs: int,
    budget_minutes: float,
    learning_rate: float,
    hidden: int,
    max_len: int,
    dropout: float,
    model: Output[Model],
    metrics: Output[Metrics],
    model_card: Output[Markdown],
    workers: int = 0,
    repeat_head: bool = True,
    validate_on_openings: bool = True,
    test_sessions: int = 1,
) -> None:
    """Train on the point-in-time training set from Feast (or on the clean events when
    `use_feature_store` is false) and write the model bundle. The training set joins only the
    service features training reads (`features.training_set.TRAINING_FEATURES`: none while the
    models read item ids only), never the whole service with its `recent_items` lists.

    split: "temporal" (production: a global time cut at `cutoff`, '' = the 90% time
    quantile) or "leave-one-out" (benchmarks). budget_minutes: 0 = no time limit.
    repeat_head: on repeat-purchase data, also fit the learned repeat head and keep it where
    validation on each user's newest session opening prefers it to the repeat bonus (the model
    card says which); serving then sends each history's session openings from Feast's
    `user_history`. A PyTorchJob (`workers` > 0) does the same on its master.
    validate_on_openings: a temporal split validates on each user's newest session opening
    before the cut (that session held out of training), not on their newest item: the test
    target, the first item after the cut, opens a session; the transformer's early stopping,
    its repeat side and the baselines' settings are all chosen on it (`SplitSpec.validation`).
    Leave-one-out splits ignore it; a PyTorchJob (`workers` > 0) follows it.
    test_sessions: a temporal split tests each user on the first item after the cut and on the
    first item of each later session, up to this many targets (`SplitSpec.test_sessions`; the
    bundle records it, so the evaluate and promote steps score the same targets). Leave-one-out
    splits ignore it.
    workers: 0 = train in this pod; N > 0 = launch a PyTorchJob (1 master + N workers, NCCL,
    `torchrun -m shoprec.training.ddp` on the same Feast training set, built here and handed
    over as Parquet on the shared home, with the same split), wait for it, and take the bundle
    its master wrote.
    The bundle (model.path) holds model.safetensors, weights.sha256, config.json, items.json,
    metrics.json and MODEL_CARD.md; its sha256 and lineage go into the artifact metadata.
    """
    import dataclasses
    import json
    import os
    import shutil

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from shoprec.components._runtime import log_peak_memory
    from shoprec import schema as S
    from shoprec.data.dataset import EventData
    from shoprec.evaluation.splits import SplitSpec
    from shoprec.home import Home
    from shoprec.training.fit import FitConfig, fit_and_evaluate, save_outcome
    from shoprec.training.loop import TrainConfig

    with open(feature_store.path, encoding="utf-8") as handle:
        store_record = json.load(handle)
    service = store_record.get("feature_service", "recommender_v1")
    # Only what training reads (the Feast examples and the split: user, item, time; the
    # session ids where the log has them, which the repeat head's session openings follow).
    data = EventData.read(clean.path, columns=(S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.SESSION_ID))
    training_set = None
    if use_feature_store:
        from shoprec.features.settings import FeatureStoreSettings
        from shoprec.features.store import open_store
        from shoprec.features.training_set import TRAINING_FEATURES, build_training_set, next_item_examples

        store = open_store(FeatureStoreSettings.from_env(home or None))
        # Only the features training reads (TRAINING_FEATURES), never the whole service: its
        # recent_items lists alone took the join on the Instacart sample from 8 to 20 GB.
        training_set = build_training_set(store, next_item_examples(data.events), service=service,
                                          features=TRAINING_FEATURES)
        # The training set carries user, item and time, and replaces the events from here on:
        # let the events frame go rather than hold the log twice.
        data = dataclasses.replace(data, events=data.events.iloc[0:0])

    from shoprec.config import DEFAULT_HISTORY_LEN
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.tables import features_history_len

    # The repeat side reads as many newest items as the published features keep per user
    # (`user_history`): what serving will send it.
    features_dir = FeatureStoreSettings.from_env(home or None).features_dir
    history_len = features_history_len(features_dir) or DEFAULT_HISTORY_LEN
    validation = "opening" if validate_on_openings and split == "temporal" else "newest"
    tested = test_sessions if split == "temporal" else 1
    if workers > 0:
        from shoprec.kfp.training_job import bundle_summary, ddp_args, job_timeout_s, train_with_pytorch_job

        bundle = train_with_pytorch_job(
            clean.path, workers=workers, timeout_s=job_timeout_s(budget_minutes),
            train_args=ddp_args(max_epochs=max_epochs, learning_rate=learning_rate, hidden=hidden,
                                max_len=max_len, dropout=dropout, budget_minutes=budget_minutes,
                                split=split, cutoff=cutoff, feature_service=service, validation=validation,
                                repeat_head=repeat_head, repeat_history=history_len, test_sessions=tested),
            training_set=training_set)
        shutil.copytree(bundle, model.path, dirs_exist_ok=True)
        shutil.copyfile(os.path.join(model.path, "MODEL_CARD.md"), model_card.path)
        logged, metadata = bundle_summary(model.path)
        for name, value in logged.items():
            metrics.log_metric(name, value)
        model.metadata.update({**metadata, "feature_service": service, "workers": workers,
                               "training_rows": int(len(training_set)) if training_set is not None else 0})
        log_peak_memory(metrics)
        return

    config = FitConfig(
        model={"hidden": hidden, "max_len": max_len, "dropout": dropout, "repeat_history": history_len},
        train=TrainConfig(max_epochs=max_epochs, learning_rate=learning_rate,
                          budget_minutes=budget_minutes or None),
        split=SplitSpec(split, cutoff, validation=validation, test_sessions=tested),
        repeat_head=repeat_head,
        # Titles embedded by earlier runs on this home are not embedded again.
        embedding_cache=Home.at(home or None).embeddings,
    )
    outcome = fit_and_evaluate(data, config, training_set=training_set)
    snapshot = data.info.get("snapshot_id")
    save_outcome(outcome, model.path, source=data.source, snapshot_id=snapshot, feature_service=service)
    shutil.copyfile(os.path.join(model.path, "MODEL_CARD.md"), model_card.path)
    for row in outcome.comparison():
        for name in ("HR@10", "NDCG@10"):
            metrics.log_metric(f"{row['model']}_{name.replace('@', '_at_')}", round(row["metrics"][name], 6))
    result = outcome.train_result
    metrics.log_metric("train_seconds", round(result.seconds, 1))
    metrics.log_metric("best_epoch", result.best_epoch)
    with open(os.path.join(model.path, "config.json"), encoding="utf-8") as handle:
        bundle_config = json.load(handle)
    model.metadata.update({
        "framework": "pytorch", "kind": "sasrec", "weights_sha256": bundle_config["weights_sha256"],
        "snapshot_id": snapshot, "feature_service": service, "device": result.device,
        "split": outcome.split.kind, "training_rows": int(len(training_set)) if training_set is not None else 0,
    })
    log_peak_memory(metrics)
