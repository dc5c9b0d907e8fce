"""Run and compile the pipelines: kfp.local on this machine, YAML for a cluster."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

@dataclass(frozen=True)
class LocalRun:
    """Where a local pipeline run left its outputs: `<pipeline_root>/<run>/<task>/<output>`."""

    root: Path
    succeeded: bool
    error: str | None = None

    def output(self, task: str, name: str) -> Path:
        """The path of one task output (it may not exist when the task did not run)."""
        return self.root / task / name

    def ran(self, task: str) -> bool:
        return (self.root / task).is_dir()

    def step_metrics(self, task: str) -> dict[str, float]:
        """The values a finished step logged to its Output[Metrics] (peak_rss_mb among them),
        read from kfp.local's executor_output.json; empty when the step did not run."""
        return step_metrics(self.root / task / "executor_output.json")


def step_metrics(executor_output: Path) -> dict[str, float]:
    """The metadata of every Output[Metrics] artifact in a task's executor output file."""
    if not executor_output.is_file():
        return {}
    found: dict[str, float] = {}
    for entry in json.loads(executor_output.read_text()).get("artifacts", {}).values():
        for artifact in entry.get("artifacts", []):
            if artifact.get("name") == "metrics" or "peak_rss_mb" in artifact.get("metadata", {}):
                found.update(artifact.get("metadata", {}))
    return found


def run_locally(
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    pipeline_root: Path,
    on_task_done: Callable[[str, str], None] | None = None,
    echo: TextIO | None = None,
) -> LocalRun:
    """Run `pipeline` with kfp.local's SubprocessRunner in this Python environment.

    Each task runs as a subprocess of this interpreter (use_venv=False), so the installed
    shoprec is what runs. kfp.local's own log (every task's streamed output) goes to
    `pipeline.log` in the run folder, and to `echo` when given; `on_task_done(task, status)`
    is called as each task ends. A failed task stops the run; the result says so instead of
    raising, so the caller can point at the failed step's report.
    """
    from kfp import local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    before = {p for p in pipeline_root.iterdir() if p.is_dir()}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    error = None
    log_path = pipeline_root / f".pipeline-{os.getpid()}.log"
    with open(log_path, "w", encoding="utf-8") as log_file:
        # kfp.local logs through a handler bound to sys.stdout when the run starts: the tee
        # below takes its place for the run, so the log is kept and task ends are seen.
        tee = _LogTee(log_file, echo, on_task_done)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(tee):
                # kfp.local warns when an image name lacks "python"; ours is a Python image.
                warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
                # Display names and GPU requests are for the cluster; locally they are no-ops.
                warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
                pipeline(**arguments)
        except RuntimeError as exc:
            error = str(exc)
    created = sorted({p for p in pipeline_root.iterdir() if p.is_dir()} - before,
                     key=lambda p: p.stat().st_mtime)
    if not created:
        raise RuntimeError(f"the pipeline left no run folder under {pipeline_root}: {error}")
    os.replace(log_path, created[-1] / "pipeline.log")
    return LocalRun(root=created[-1], succeeded=error is None, error=_plain(error))


class _LogTee(io.TextIOBase):
    """A stdout stand-in: writes to the log file (and `echo`), reports finished tasks."""

    _TASK_DONE = re.compile(r"Task '([^']+)' finished with status (\w+)")

    def __init__(self, log: TextIO, echo: TextIO | None,
                 on_task_done: Callable[[str, str], None] | None) -> None:
        self._log, self._echo, self._on_task_done = log, echo, on_task_done
        self._pending = ""

    def write(self, text: str) -> int:
        self._log.write(_plain(text))
        if self._echo is not None:
            self._echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            found = self._TASK_DONE.search(_plain(line))
            if found and self._on_task_done:
                self._on_task_done(found.group(1), found.group(2))
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        if self._echo is not None:
            self._echo.flush()


def _plain(text: str | None) -> str | None:
    """Text without the ANSI colour codes kfp.local puts in its messages."""
    return None if text is None else re.sub(r"\x1b\[[0-9;]*m", "", text)


def compile_pipeline(pipeline: Callable[..., Any], path: Path, image: str | None = None) -> Path:
    """Compile one pipeline to KFP IR YAML at `path`, every step on `image`.

    image: the image reference the compiled steps run on (None: $SHOPREC_IMAGE, else the
    default the components are declared with), so the YAML records the image that was built.
    """
    import yaml
    from kfp import compiler

    from shoprec.config import DEFAULT_IMAGE, resolve_image

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
    chosen = resolve_image(image)
    if chosen != DEFAULT_IMAGE:
        documents = list(yaml.safe_load_all(path.read_text()))
        for executor in documents[0]["deploymentSpec"]["executors"].values():
            if executor.get("container", {}).get("image") == DEFAULT_IMAGE:
                executor["container"]["image"] = chosen
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path
