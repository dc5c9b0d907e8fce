"""A small pipeline wiring promote -> dsl.If -> deploy as the training pipeline will (imported
bundle and data stand in for the train / validate outputs). KFP needs it in a .py file."""

from kfp import dsl

from shoprec.components.deploy import deploy
from shoprec.components.promote import promote


@dsl.pipeline(name="shoprec-gate-test")
def gate_pipeline(candidate_uri: str, data_uri: str, registry_uri: str,
                  min_improvement: float = 0.0) -> None:
    candidate = dsl.importer(artifact_uri=candidate_uri, artifact_class=dsl.Model)
    data = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset)
    gate = promote(candidate=candidate.output, data=data.output, registry_uri=registry_uri,
                   min_improvement=min_improvement, coverage_tolerance=0.02,
                   short_history_tolerance=0.01)
    gate.set_caching_options(enable_caching=False)
    # The verdict is the step's return value ("Output"): kfp.local resolves a condition on it.
    with dsl.If(gate.outputs["Output"] == True):  # noqa: E712 (a KFP condition, not Python)
        step = deploy(registry_uri=registry_uri,
                      decision=gate.outputs["decision"], target="local", namespace="shoprec",
                      canary_traffic_percent=100)
        step.set_caching_options(enable_caching=False)
