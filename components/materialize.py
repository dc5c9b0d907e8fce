"""Pipeline step `materialize`: publish the feature tables, `feast apply`, load the online store."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def materialize(
    features: Input[Dataset],
    home: str,
    feature_store: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """Copy the tables into the home's features folder, apply the Feast repo, materialize.

    `home` ('' = $SHOPREC_HOME or ./shoprec-home) is the home whose store is loaded;
    the stores themselves come from the environment (SHOPREC_FEAST_ONLINE_STORE, SHOPREC_REDIS,
    SHOPREC_FEAST_REGISTRY, or SHOPREC_FEAST_YAML), SQLite under the home by default.
    """
    import json

    from shoprec.components._runtime import log_peak_memory
    from shoprec.features.settings import FeatureStoreSettings
    from shoprec.features.store import publish_and_materialize

    settings = FeatureStoreSettings.from_env(home or None)
    summary = publish_and_materialize(features.path, settings)
    metrics.log_metric("materialize_seconds", round(summary.seconds, 3))
    record = {
        "store": summary.store, "features_dir": str(settings.features_dir),
        "start": summary.start.isoformat(), "end": summary.end.isoformat(),
        "views": summary.views, "feature_service": "recommender_v1",
    }
    with open(feature_store.path, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=2)
    feature_store.metadata.update(record)
    log_peak_memory(metrics)
