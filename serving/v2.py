"""The Open Inference Protocol answer both servers build (the predictor's and the transformer's
V2 infer): one function, so both honour what the client asked for the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse
from kserve.errors import InvalidInput

from shoprec.serving.requests import bounded, shown

# (name, datatype, shape, flat data): what `shoprec.serving.predictor.v2_outputs` and
# `shoprec.serving.transformer.v2_outputs` return.
Output = tuple[str, str, list[int], list[Any]]


def infer_response(request: InferRequest, request_id: str, model_name: str, outputs: Sequence[Output],
                   answer: dict[str, Any], hint: str = "") -> InferResponse:
    """The V2 response to `request`: the outputs it names in `outputs` (each as binary data
    where its `binary_data` parameter says so, as tritonclient's InferRequestedOutput sends
    it), in the order asked; without `outputs`, every output, as binary data when the request
    sets `binary_data_output`. `answer` gives the model version and the lineage (the
    response's parameters).

    InvalidInput (a 400) names an output the answer does not have, listing those it has, and
    one asked for twice (KServe itself would fail only while encoding the response); `hint`
    ends the first message (e.g. which input an output comes with)."""
    available = [name for name, *_ in outputs]
    requested = request.request_outputs or None
    seen: set[str] = set()
    for wanted in requested or ():
        if wanted.name not in available:
            raise InvalidInput(bounded(f"unknown output {shown(wanted.name)}; this answer's outputs are "
                                       f"{', '.join(available)}{hint}"))
        if wanted.name in seen:
            raise InvalidInput(f"output '{wanted.name}' is asked for twice")
        seen.add(wanted.name)
    return InferResponse(request_id, model_name,
                         [InferOutput(name, shape, datatype, data) for name, datatype, shape, data in outputs],
                         model_version=answer["model_version"],
                         parameters={k: str(v) for k, v in answer["lineage"].items() if v is not None},
                         use_binary_outputs=request.use_binary_outputs, requested_outputs=requested)
