"""The train and evaluate components are thin: called with real artifacts on a small data
set they write a loadable bundle, metrics and a report; compiled for a cluster, the train
task asks for a GPU."""

# No `from __future__ import annotations`: KFP reads the pipeline signature at definition.
import json
from pathlib import Path

import yaml
from kfp import compiler, dsl

from shoprec.components.evaluate import evaluate
from shoprec.components.train import train
from shoprec.models.bundle import load_bundle


def test_train_then_evaluate_components(planted, tmp_path: Path):
    clean = dsl.Dataset(name="clean", uri=str(planted.write(tmp_path / "clean")))
    store = dsl.Artifact(name="feature_store", uri=str(tmp_path / "store.json"))
    Path(store.path).write_text(json.dumps({"feature_service": "recommender_v1"}))
    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    card = dsl.Markdown(name="card", uri=str(tmp_path / "card.md"))
    train.python_func(
        clean=clean, feature_store=store, home="", use_feature_store=False,
        split="leave-one-out", cutoff="", max_epochs=30, budget_minutes=0.0, learning_rate=5e-3,
        hidden=32, max_len=20, dropout=0.1, model=model, metrics=metrics, model_card=card,
    )
    bundle = load_bundle(model.path)
    assert model.metadata["weights_sha256"] == bundle.config["weights_sha256"]
    assert model.metadata["snapshot_id"] == bundle.config["snapshot_id"] is not None
    assert metrics.metadata["sasrec_NDCG_at_10"] > 3 * metrics.metadata["mostpop_NDCG_at_10"]
    assert Path(card.path).read_text().startswith("# Model card")

    scores = dsl.Metrics(name="scores", uri=str(tmp_path / "scores"))
    report = dsl.Markdown(name="report", uri=str(tmp_path / "report.md"))
    evaluate.python_func(clean=clean, model=model, metrics=scores, report=report)
    # The evaluate step reproduces the train step's figure for the same bundle and split.
    assert abs(scores.metadata["sasrec_NDCG_at_10"] - metrics.metadata["sasrec_NDCG_at_10"]) < 1e-6
    text = Path(report.path).read_text()
    assert "| sasrec |" in text and "| markov1 |" in text and "long-tail targets" in text


def _gpu_pipeline(clean_uri: str = "") -> None:
    clean = dsl.importer(artifact_uri="gs://bucket/clean", artifact_class=dsl.Dataset)
    store = dsl.importer(artifact_uri="gs://bucket/store.json", artifact_class=dsl.Artifact)
    task = train(
        clean=clean.output, feature_store=store.output, home="", use_feature_store=True,
        split="temporal", cutoff="", max_epochs=200, budget_minutes=0.0, learning_rate=1e-3,
        hidden=64, max_len=200, dropout=0.2,
    )
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    evaluate(clean=clean.output, model=task.outputs["model"])


def test_train_task_requests_a_gpu_when_compiled(tmp_path: Path):
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(dsl.pipeline(name="train-on-gpu")(_gpu_pipeline), str(path))
    spec = yaml.safe_load(path.read_text())
    executors = spec["deploymentSpec"]["executors"]
    accelerators = [e["container"].get("resources", {}).get("accelerator")
                    for e in executors.values() if "container" in e]
    gpu = [a for a in accelerators if a]
    assert len(gpu) == 1  # the train task only; evaluate runs on CPU
    assert gpu[0]["resourceType"] == "nvidia.com/gpu" and gpu[0]["resourceCount"] == "1"
