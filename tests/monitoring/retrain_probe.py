"""A one-step stand-in for the training pipeline in the monitoring-pipeline test: the real
training pipeline trains a model (minutes); this one records the arguments it was started
with, including `triggered_by`, so the test sees exactly what the trigger launched."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def record_arguments(dataset: str, triggered_by: str, record: Output[Artifact]) -> None:
    import json

    with open(record.path, "w", encoding="utf-8") as out:
        json.dump({"dataset": dataset, "triggered_by": triggered_by}, out)


@dsl.pipeline(name="retrain-probe")
def retrain_probe(dataset: str = "instacart", triggered_by: str = "") -> None:
    record_arguments(dataset=dataset, triggered_by=triggered_by)
