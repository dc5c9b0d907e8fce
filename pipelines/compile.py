"""Compile every shoprec pipeline to KFP IR YAML (`shoprec compile`, `make compile`)."""

from __future__ import annotations

from pathlib import Path

from shoprec.kfp.local import compile_pipeline

# The compiled YAML ships beside the pipeline definitions (and inside the installed package).
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def compile_all(output_dir: Path = COMPILED_DIR, image: str | None = None) -> list[Path]:
    """Compile every shoprec pipeline into `output_dir` (see `compile_pipeline` for `image`)."""
    from shoprec.pipelines.monitoring import monitoring_pipeline
    from shoprec.pipelines.training import training_pipeline

    return [compile_pipeline(training_pipeline, output_dir / "training_pipeline.yaml", image),
            compile_pipeline(monitoring_pipeline, output_dir / "monitoring_pipeline.yaml", image)]
