"""Pipeline step `evaluate`: the trained bundle against the baselines on the same split."""

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from shoprec.components._base import shoprec_component


@shoprec_component
def evaluate(
    clean: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> None:
    """Load the bundle (refused if its weights fail the sha256 check), rank the full catalogue
    for every test user under the bundle's seen-items policy, and emit the scalars plus a
    Markdown comparison table with 95% bootstrap intervals and segment metrics."""
    from shoprec.components._runtime import log_peak_memory
    from shoprec.data.dataset import EventData
    from shoprec.evaluation.report import evaluate_bundle

    outcome = evaluate_bundle(model.path, EventData.read(clean.path))
    for name, value in outcome.scalars.items():
        metrics.log_metric(name.replace("@", "_at_"), round(value, 6))
    with open(report.path, "w", encoding="utf-8") as out:
        out.write(outcome.markdown)
    report.metadata.update({"models": [row["model"] for row in outcome.rows]})
    log_peak_memory(metrics)
