"""Compile every shoprec pipeline to KFP IR YAML (`shoprec compile`, `make compile`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from shoprec.config import DEFAULT_GPU_IMAGE, resolve_gpu_image
from shoprec.kfp.local import compile_pipeline

# The compiled YAML ships beside the pipeline definitions (and inside the installed package).
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def compile_all(output_dir: Path = COMPILED_DIR, image: str | None = None,
                gpu_image: str | None = None) -> list[Path]:
    """Compile every shoprec pipeline into `output_dir`: CPU steps on `image` (see
    `compile_pipeline`), steps that request a GPU on `gpu_image` (None: $SHOPREC_GPU_IMAGE,
    else the CPU image's -gpu build, the name `make image-gpu` gives it)."""
    from shoprec.pipelines.churn import churn_pipeline
    from shoprec.pipelines.monitoring import monitoring_pipeline
    from shoprec.pipelines.training import training_pipeline

    paths = [compile_pipeline(training_pipeline, output_dir / "training_pipeline.yaml", image),
             compile_pipeline(monitoring_pipeline, output_dir / "monitoring_pipeline.yaml", image),
             compile_pipeline(churn_pipeline, output_dir / "churn_pipeline.yaml", image)]
    chosen = resolve_gpu_image(gpu_image, cpu_image=image)
    for path in paths:
        record_gpu_image(path, chosen)
    return paths


def record_gpu_image(path: Path, gpu_image: str) -> None:
    """Put `gpu_image` on every executor the pipeline definition left on the DEFAULT_GPU_IMAGE
    placeholder (platform.on_gpu_node), so the YAML names the CUDA image that was built."""
    if gpu_image == DEFAULT_GPU_IMAGE:
        return
    documents = list(yaml.safe_load_all(path.read_text()))
    changed = False
    for executor in documents[0]["deploymentSpec"]["executors"].values():
        container = executor.get("container", {})
        if container.get("image") == DEFAULT_GPU_IMAGE:
            container["image"] = gpu_image
            changed = True
    if changed:
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
