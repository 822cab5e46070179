"""MLServer runtime serving a Waybill delivery model version over MLServer's own Open
Inference Protocol (V2) endpoint, with the tensors Waybill's GRPCInferenceService takes and
answers: one input per feature (NaN: a missing number), and the outputs prediction_id,
value, transit_days, lower, upper, delivery_date and latest_delivery_date.

The model code is Waybill's own (``models``, importable in MLServer's venv: catboost, numpy
and pydantic only; the repository root goes on PYTHONPATH): the same validation, the same
CatBoost scoring and the same delivery-date rule, so the two servers must give the same
numbers. What differs is only the server around it (bench/oip_mlserver.py compares them).
Model settings: ``parameters.uri`` is the version's directory, ``parameters.version`` its
version. Only the delivery kind (a MultiQuantile regression counted from order_date) is
answered, which is what the committed models are.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel, types
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import MLServerError
from mlserver.utils import get_model_uri

from models.loaded import LoadedVersion, delivery_dates
from models.validation import Columns, ValidationFailed

OUTPUTS = ("prediction_id", "value", "transit_days", "lower", "upper", "delivery_date",
           "latest_delivery_date")
BYTES_OUTPUTS = frozenset({"prediction_id", "delivery_date", "latest_delivery_date"})


class WaybillV2Runtime(MLModel):
    async def load(self) -> bool:
        path = Path(await get_model_uri(self._settings))
        self._version = LoadedVersion.load(path.parent.parent, path.parent.name, path.name)
        # As Waybill does: a feature of a sibling version (here: every version in the
        # registry, all of which the bench serves) is accepted and ignored.
        self._also_known = frozenset(
            feature["name"] for manifest in path.parent.glob("*/model.json")
            for feature in json.loads(manifest.read_text())["features"])
        self.ready = True
        return self.ready

    def _values(self, tensor: types.RequestInput) -> list[Any] | np.ndarray:
        if tensor.datatype == "BYTES":
            return [v.decode() if isinstance(v, bytes) else str(v)
                    for v in StringCodec.decode_input(tensor)]
        array = np.asarray(NumpyCodec.decode_input(tensor)).ravel()
        if tensor.datatype == "BOOL":
            return [bool(v) for v in array.tolist()]
        array = array.astype(np.float64)
        if np.isnan(array).any():
            return [None if math.isnan(v) else v for v in array.tolist()]
        return array

    async def predict(self, payload: types.InferenceRequest) -> types.InferenceResponse:
        values = {tensor.name: self._values(tensor) for tensor in payload.inputs}
        n_rows = len(next(iter(values.values()))) if values else 0
        wanted = [o.name for o in payload.outputs or ()] or list(OUTPUTS)
        unknown = [name for name in wanted if name not in OUTPUTS]
        if unknown:
            raise MLServerError(f"outputs.{unknown[0]}: not an output", status_code=400)
        try:
            validated = self._version.validate(
                Columns(n_rows, values, by_row=False, prefix="inputs"), self._also_known)
        except ValidationFailed as err:
            raise MLServerError(str(err), status_code=400) from None
        scored = self._version.score(validated.matrix)
        median = scored.value.tolist()
        upper = scored.upper.tolist() if scored.upper is not None else median
        lower = scored.lower.tolist() if scored.lower is not None else median
        days = validated.dates if validated.dates is not None else [None] * n_rows
        expected, latest = delivery_dates(days, median, upper)
        answers: dict[str, list[Any]] = {
            "prediction_id": [uuid.uuid4().hex for _ in range(n_rows)],
            "value": median, "transit_days": median, "lower": lower, "upper": upper,
            "delivery_date": expected, "latest_delivery_date": latest}
        outputs = []
        for name in wanted:
            if name in BYTES_OUTPUTS:
                output = StringCodec.encode_output(name, answers[name])
                output.shape = [n_rows]
            else:
                output = types.ResponseOutput(name=name, datatype="FP64", shape=[n_rows],
                                              data=answers[name])
            outputs.append(output)
        return types.InferenceResponse(model_name=self.name, model_version=self.version,
                                       outputs=outputs)
