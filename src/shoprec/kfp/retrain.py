"""`python -m shoprec.kfp.retrain REQUEST_JSON`: one training run through kfp.local, started
by `LocalLauncher` in a fresh process; prints one JSON line with the run folder and outcome.

REQUEST_JSON: {"pipeline": "module:function", "arguments": {...}, "root": DIR, "report_id": ID}.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from shoprec.kfp.launchers import pipeline_parameters, with_lineage
from shoprec.kfp.local import run_locally
from shoprec.monitoring.trigger import LINEAGE_FILE


def main(argv: list[str] | None = None) -> None:
    request = json.loads((argv if argv is not None else sys.argv[1:])[0])
    module, _, name = request["pipeline"].partition(":")
    pipeline = getattr(importlib.import_module(module), name or "training_pipeline")
    arguments = with_lineage(request["arguments"], request["report_id"], pipeline_parameters(pipeline))
    result = run_locally(pipeline, arguments, Path(request["root"]))
    (result.root / LINEAGE_FILE).write_text(json.dumps(
        {"triggered_by": request["report_id"], "arguments": arguments}, indent=2, default=str))
    print(json.dumps({"mode": "local", "run_folder": str(result.root), "succeeded": result.succeeded,
                      "error": result.error}))


if __name__ == "__main__":
    main()
