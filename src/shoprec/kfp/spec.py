"""Reading a pipeline's KFP IR spec (what the compiler would write), without running it."""

from __future__ import annotations

from typing import Any


def step_order(pipeline: Any) -> list[str]:
    """The task names of a `@dsl.pipeline` (or a component) in dependency order.

    Tasks that become ready together are listed by name; a task that is a condition
    (`dsl.If`) shows as its inner tasks, each with a "?" after the name.
    """
    spec = pipeline.pipeline_spec
    tasks = spec.root.dag.tasks
    ordered: list[str] = []
    while len(ordered) < len(tasks):
        ready = [name for name, task in tasks.items() if name not in ordered
                 and all(dep in ordered for dep in task.dependent_tasks)]
        ordered += sorted(ready)
    shown = []
    for name in ordered:
        inner = spec.components[tasks[name].component_ref.name].dag.tasks
        shown += [f"{task}?" for task in inner] if tasks[name].trigger_policy.condition else [name]
    return shown
