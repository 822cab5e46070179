"""Open Inference Protocol (KServe V2) <-> domain conversion, as pure functions.

A ModelInfer becomes the same :class:`PredictQuery` a columnar waybill.v1 Predict does,
so what answers it (routing, validation, scoring, metrics, drift, shadow, the prediction
log) is the same. How the protocol's tensors carry Waybill's rows:

- **Inputs**: one tensor per feature, named like the feature, shape ``[N]`` or ``[N, 1]``
  (every input the same N). A feature's datatype follows its type (:data:`DATATYPES`):
  numbers FP64, FP32, INT64 or INT32; booleans BOOL; categories and dates BYTES (UTF-8,
  dates as YYYY-MM-DD). Values come in ``contents`` (the datatype's repeated field) or,
  for every input at once, in ``raw_input_contents`` (little-endian; a BYTES element is
  a 4-byte little-endian length and then its bytes), never both.
- **Missing values** of an optional feature: leave the tensor out (every row misses
  it); NaN in an FP32/FP64 tensor (that row misses it); or the input parameter
  ``missing``, a string of comma-separated row indices whose elements are placeholders
  (any datatype). A required feature refuses each of them as it refuses a missing
  value in waybill.v1: ``inputs.distance_km[3]: is required``. Infinity is refused.
- **Names** the model's served versions do not know are refused as waybill.v1 refuses
  an unknown column, by the chosen version's validator; a feature of a sibling version
  is accepted and ignored.
- **Parameters**: ``routing_key`` (string) on the request, as waybill.v1's routing_key
  field; ``model_version`` pins a version or a label. The answer's ``model_version`` is
  the version that served and its parameter ``route_reason`` says why. Other request,
  input and output parameters are ignored, except the classification extension's, which
  is refused.
- **Outputs**: those of :data:`OUTPUTS` the version's kind answers (waybill.v1's columns:
  ``prediction_id``; ``value`` for regression kinds, ``lower``/``upper`` with an interval;
  ``label`` and ``probabilities`` for classifiers, ``probabilities`` of shape
  ``[N, classes]`` with its parameter ``classes`` naming them; ``transit_days`` and the
  dates for delivery models), shape ``[N]``; all of them unless the request names some (a
  name no served version answers is refused before anything is scored). The answer is
  raw (``raw_output_contents``) when the request was.

Every refusal is a :class:`BadRequest` (INVALID_ARGUMENT) naming the input (or field)
and the rule.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from inference import open_inference_grpc_pb2 as pb

from models.artifact import FeatureType, ModelKind, OutputSpec
from models.loaded import LoadedVersion
from models.validation import Columns, Values
from server.serving.errors import BadRequest
from server.serving.predictor import PredictOutcome, PredictQuery

PLATFORM = "catboost_cbm"  # "<project>_<format>", as the protocol names platforms
ROUTING_KEY = "routing_key"  # request parameter
ROUTE_REASON = "route_reason"  # answer parameter
MISSING = "missing"  # input parameter: comma-separated row indices
INPUTS = "inputs"  # the request field of the rows, in messages

# The datatypes a feature's tensor may have; ModelMetadata advertises the first.
DATATYPES: Mapping[FeatureType, tuple[str, ...]] = {
    FeatureType.NUMERIC: ("FP64", "FP32", "INT64", "INT32"),
    FeatureType.INTEGER: ("INT64", "INT32", "FP64", "FP32"),
    FeatureType.BOOLEAN: ("BOOL",),
    FeatureType.CATEGORICAL: ("BYTES",),
    FeatureType.DATE: ("BYTES",),
}
# A datatype's InferTensorContents field and, for raw contents, its little-endian
# element type (None: BYTES, length-prefixed elements).
_FORMATS: Mapping[str, tuple[str, np.dtype[Any] | None]] = {
    "BOOL": ("bool_contents", np.dtype("u1")),
    "INT32": ("int_contents", np.dtype("<i4")),
    "INT64": ("int64_contents", np.dtype("<i8")),
    "FP32": ("fp32_contents", np.dtype("<f4")),
    "FP64": ("fp64_contents", np.dtype("<f8")),
    "BYTES": ("bytes_contents", None),
}
_FLOATS = frozenset({"FP32", "FP64"})
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


@dataclass(frozen=True, slots=True)
class Output:
    """One output tensor: its name and datatype, whether a version answers it (by its
    manifest's output), and its values in an answer: one per row (probabilities: rows x
    classes)."""

    name: str
    datatype: str
    answered: Callable[[OutputSpec], bool]
    values: Callable[[PredictOutcome], Any]


def _always(output: OutputSpec) -> bool:
    return True


def _regression(output: OutputSpec) -> bool:
    return output.kind is not ModelKind.CLASSIFICATION


def _interval(output: OutputSpec) -> bool:
    return output.interval_coverage is not None


def _classifier(output: OutputSpec) -> bool:
    return output.kind is ModelKind.CLASSIFICATION


def _delivery(output: OutputSpec) -> bool:
    return output.date_field is not None


# The one table from a PredictOutcome to output tensors, in the order an answer lists
# them; the same outputs as waybill.v1's columns. A new kind of answer is a row here.
OUTPUTS: tuple[Output, ...] = (
    Output("prediction_id", "BYTES", _always, lambda a: a.prediction_ids),
    Output("value", "FP64", _regression, lambda a: a.values),
    Output("transit_days", "FP64", _delivery, lambda a: a.values),  # value, in days
    Output("lower", "FP64", _interval, lambda a: a.lower),
    Output("upper", "FP64", _interval, lambda a: a.upper),
    Output("label", "BYTES", _classifier, lambda a: a.labels),
    Output("probabilities", "FP64", _classifier, lambda a: a.probabilities),
    Output("delivery_date", "BYTES", _delivery, lambda a: a.delivery_dates),
    Output("latest_delivery_date", "BYTES", _delivery, lambda a: a.latest_delivery_dates),
)
PROBABILITIES = "probabilities"  # shape [N, classes]; its parameter CLASSES names them
CLASSES = "classes"  # a JSON array of the class names, in column order


def outputs_of(output: OutputSpec) -> tuple[Output, ...]:
    """The outputs a version answers."""
    return tuple(o for o in OUTPUTS if o.answered(output))


def _shape(output: Output, spec: OutputSpec, n_rows: int) -> list[int]:
    return [n_rows, len(spec.classes)] if output.name == PROBABILITIES else [n_rows]


# ------------------------------------------------------------------------- metadata
@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a ModelInfer is checked against before anything is scored, from every served
    version of its model: each feature's types, and the outputs answered."""

    types: Mapping[str, frozenset[FeatureType]]
    outputs: tuple[str, ...]  # in OUTPUTS order
    # feature -> the datatypes its tensor may have (those of DATATYPES for its types)
    accepts: Mapping[str, frozenset[str]]


NO_FACTS = ModelFacts({}, (), {})  # a model the server does not have: the predictor says so


def model_facts(versions: Iterable[LoadedVersion]) -> ModelFacts:
    types: dict[str, set[FeatureType]] = {}
    answered: set[str] = set()
    for version in versions:
        manifest = version.manifest
        for feature in manifest.features:
            types.setdefault(feature.name, set()).add(feature.type)
        answered.update(o.name for o in outputs_of(manifest.output))
    return ModelFacts(
        {name: frozenset(kinds) for name, kinds in types.items()},
        tuple(o.name for o in OUTPUTS if o.name in answered),
        {name: frozenset(d for kind in kinds for d in DATATYPES[kind])
         for name, kinds in types.items()})


def model_metadata(loaded: LoadedVersion, versions: Sequence[str],
                   ) -> pb.ModelMetadataResponse:
    manifest = loaded.manifest
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=manifest.name,
        versions=list(versions),
        platform=PLATFORM,
        inputs=[tensor(name=f.name, datatype=DATATYPES[f.type][0], shape=[-1])
                for f in manifest.features],
        outputs=[tensor(name=o.name, datatype=o.datatype, shape=_shape(o, manifest.output, -1))
                 for o in outputs_of(manifest.output)],
    )


# ------------------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class InferPlan:
    """What the answer to one ModelInfer needs from its request."""

    request_id: str
    outputs: tuple[str, ...] | None  # the outputs asked for; None: all the version has
    raw: bool  # the request had raw_input_contents: so does the answer


@dataclass(frozen=True, slots=True)
class _Tensor:
    """One input, checked for shape and size; its values are read later."""

    name: str
    datatype: str
    raw: bytes | None
    contents: Sequence[Any]  # the datatype's repeated field, when not raw
    missing: tuple[int, ...]


def infer_query(
    request: pb.ModelInferRequest, metadata: Iterable[tuple[str, str | bytes]] | None,
    facts: ModelFacts,
) -> tuple[PredictQuery, InferPlan]:
    """The query a ModelInfer asks and what its answer needs. ``facts`` are the model's
    (:func:`model_facts`; :data:`NO_FACTS` for a model the server does not have)."""
    headers = {key: value for key, value in (metadata or ()) if isinstance(value, str)}
    plan = InferPlan(request.id, requested_outputs(request.outputs, facts.outputs),
                     raw=bool(request.raw_input_contents))
    n_rows, tensors = _tensors(request, facts)
    query = PredictQuery(
        model=request.model_name,
        n_rows=n_rows,
        read=functools.partial(_columns, n_rows, tensors),  # decoded after routing
        columnar=True,
        pin=request.model_version or None,  # checked against its header twin
        routing_key=_routing_key(request.parameters),
        headers=headers,
        rows_field=INPUTS,
    )
    return query, plan


def requested_outputs(requested: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor],
                      known: Sequence[str]) -> tuple[str, ...] | None:
    """The outputs asked for, each once, in the order asked; None for all. A name no
    served version of the model answers is refused before anything is scored."""
    if not requested:
        return None
    chosen: dict[str, None] = {}
    for index, item in enumerate(requested):
        if not item.name:
            raise BadRequest(f"outputs[{index}].name", "required", "name the output")
        if known and item.name not in known:
            raise BadRequest(f"outputs.{item.name}", "unknown_output",
                             f"not an output of this model; its outputs are "
                             f"{', '.join(known)}")
        if "classification" in item.parameters:
            raise BadRequest(f"outputs.{item.name}.parameters.classification", "unsupported",
                             "the classification extension is not supported")
        chosen[item.name] = None
    return tuple(chosen)


def _string_parameter(parameters: Mapping[str, pb.InferParameter], name: str,
                      field: str, meaning: str) -> str | None:
    if name not in parameters:
        return None
    parameter = parameters[name]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise BadRequest(field, "wrong_type", f"must be a string_param: {meaning}")
    return parameter.string_param


def _routing_key(parameters: Mapping[str, pb.InferParameter]) -> str | None:
    key = _string_parameter(parameters, ROUTING_KEY, f"parameters.{ROUTING_KEY}",
                            "the key that makes the version choice sticky")
    return key or None


def _rows_of(field: str, shape: Sequence[int]) -> int:
    rank = len(shape)
    if (rank == 1 or (rank == 2 and shape[1] == 1)) and shape[0] >= 0:
        return int(shape[0])
    raise BadRequest(f"{field}.shape", "wrong_shape",
                     f"must be [N] or [N, 1], got {list(shape)}")


def _missing_rows(field: str, parameters: Mapping[str, pb.InferParameter],
                  n_rows: int) -> tuple[int, ...]:
    field = f"{field}.parameters.{MISSING}"
    text = _string_parameter(parameters, MISSING, field,
                             'comma-separated row indices, e.g. "0,5"')
    if not text or not text.strip():
        return ()
    try:
        rows = {int(part) for part in text.split(",")}
    except ValueError:
        raise BadRequest(field, "wrong_type",
                         f'{text[:40]!r} is not comma-separated row indices, e.g. "0,5"'
                         ) from None
    past = sorted(row for row in rows if not 0 <= row < n_rows)
    if past:
        raise BadRequest(field, "out_of_range",
                         f"row {past[0]} is not a row of this request (0 to {n_rows - 1})")
    return tuple(sorted(rows))


def _tensors(request: pb.ModelInferRequest, facts: ModelFacts) -> tuple[int, list[_Tensor]]:
    """The inputs' row count and each input, checked for everything but its values."""
    inputs, raw = request.inputs, request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise BadRequest("raw_input_contents", "length_mismatch",
                         f"has {len(raw)} entries for {len(inputs)} inputs: one per input, "
                         "in the order of inputs")
    n_rows, first = 0, ""
    tensors: list[_Tensor] = []
    seen: set[str] = set()
    accepts, types = facts.accepts, facts.types
    for index, tensor in enumerate(inputs):
        name = tensor.name
        if not name:
            raise BadRequest(f"{INPUTS}[{index}].name", "required",
                             "every input needs its feature name")
        field = f"{INPUTS}.{name}"
        if name in seen:
            raise BadRequest(field, "duplicate", "sent twice")
        seen.add(name)
        datatype = tensor.datatype
        layout = _FORMATS.get(datatype)
        if layout is None:
            raise BadRequest(f"{field}.datatype", "unsupported_datatype",
                             f"{datatype!r} is not one of {', '.join(_FORMATS)}")
        allowed = accepts.get(name)
        if allowed is not None and datatype not in allowed:
            kind = min(types[name])
            raise BadRequest(f"{field}.datatype", "wrong_datatype",
                             f"{datatype} does not fit a {kind.value} feature: send "
                             f"{' or '.join(DATATYPES[kind])}")
        rows = _rows_of(field, tensor.shape)
        if not tensors:
            n_rows, first = rows, name
        elif rows != n_rows:
            raise BadRequest(f"{field}.shape", "shape_mismatch",
                             f"has {rows} rows; {INPUTS}.{first} has {n_rows}")
        contents_field, element = layout
        filled = ([f.name for f, _ in tensor.contents.ListFields()]
                  if tensor.HasField("contents") else [])
        data: bytes | None = None
        contents: Sequence[Any] = ()
        if raw:
            if filled:
                raise BadRequest(f"{field}.contents", "conflict",
                                 "the request has raw_input_contents: no input may have "
                                 "contents too")
            data = raw[index]
            if element is not None and len(data) != rows * element.itemsize:
                raise BadRequest(field, "wrong_size",
                                 f"raw_input_contents[{index}] holds {len(data)} bytes; "
                                 f"{rows} {datatype} elements take {rows * element.itemsize}")
        else:
            wrong = [f for f in filled if f != contents_field]
            if wrong:
                raise BadRequest(f"{field}.contents", "wrong_contents",
                                 f"{datatype} values go in {contents_field}, not {wrong[0]}")
            contents = getattr(tensor.contents, contents_field)
            if len(contents) != rows:
                raise BadRequest(f"{field}.contents", "length_mismatch",
                                 f"{contents_field} has {len(contents)} values; the shape "
                                 f"says {rows}")
        tensors.append(_Tensor(name, datatype, data, contents,
                               _missing_rows(field, tensor.parameters, rows)))
    return n_rows, tensors


# ------------------------------------------------------------------------- values
def _columns(n_rows: int, tensors: Sequence[_Tensor]) -> Columns:
    """The inputs' values as the validator reads them (run once, after routing)."""
    return Columns(n_rows, {t.name: _values(t, n_rows) for t in tensors}, by_row=False,
                   prefix=INPUTS)


def _values(tensor: _Tensor, n_rows: int) -> Values:
    field = f"{INPUTS}.{tensor.name}"
    datatype, raw, missing = tensor.datatype, tensor.raw, tensor.missing
    values: list[Any] | np.ndarray
    if datatype == "BYTES":
        if not missing:
            texts = _fast_texts(tensor, n_rows)
            if texts is not None:
                return texts
        # Missing rows, or something is wrong: the careful path, which names it.
        items = tensor.contents if raw is None else _split(field, raw, n_rows)
        return _texts(field, items, frozenset(missing))
    if datatype == "BOOL":
        if raw is None:
            values = list(tensor.contents)
        else:
            octets = np.frombuffer(raw, dtype=np.uint8)
            if (octets > 1).any():
                row = int(np.argmax(octets > 1))
                raise BadRequest(f"{field}[{row}]", "wrong_value",
                                 f"a BOOL element is one byte, 0 or 1; got {octets[row]}")
            values = (octets == 1).tolist()
    else:
        element = _FORMATS[datatype][1]
        array = (np.asarray(tensor.contents, dtype=np.float64) if raw is None
                 else np.frombuffer(raw, dtype=element).astype(np.float64))
        if datatype in _FLOATS:
            absent = np.isnan(array)
            if absent.any():  # NaN marks a missing value
                values = [None if gone else value
                          for value, gone in zip(array.tolist(), absent.tolist(), strict=True)]
            else:
                values = array
        else:
            values = array
    if missing:
        values = values.tolist() if isinstance(values, np.ndarray) else values
        for row in missing:
            values[row] = None
    return values


def _fast_texts(tensor: _Tensor, n_rows: int) -> list[str] | None:
    """Every element as text, in one pass; None when the contents are not well formed."""
    raw = tensor.raw
    try:
        if raw is None:
            return [item.decode() for item in tensor.contents]
        out: list[str] = []
        append, unpack, at = out.append, _LENGTH.unpack_from, 0
        for _ in range(n_rows):
            end = at + 4 + unpack(raw, at)[0]
            append(raw[at + 4:end].decode())
            at = end
    except (UnicodeDecodeError, struct.error):
        return None
    return out if at == len(raw) else None


def _split(field: str, raw: bytes, n_rows: int) -> list[bytes]:
    """Raw BYTES contents as its elements: each a 4-byte little-endian length, then that
    many bytes."""
    out: list[bytes] = []
    size, at = len(raw), 0
    for row in range(n_rows):
        length = _LENGTH.unpack_from(raw, at)[0] if at + 4 <= size else size
        at += 4
        if at + length > size:
            raise BadRequest(field, "wrong_size",
                             f"raw contents end inside element {row} of {n_rows}: a BYTES "
                             "element is a 4-byte little-endian length, then that many bytes")
        out.append(raw[at:at + length])
        at += length
    if at != size:
        raise BadRequest(field, "wrong_size",
                         f"raw contents hold {size - at} bytes past their {n_rows} elements")
    return out


def _texts(field: str, items: Sequence[bytes], missing: frozenset[int]) -> list[str | None]:
    try:
        if not missing:
            return [item.decode() for item in items]
    except UnicodeDecodeError:
        pass
    out: list[str | None] = []
    for row, item in enumerate(items):
        if row in missing:
            out.append(None)
            continue
        try:
            out.append(item.decode())
        except UnicodeDecodeError:
            raise BadRequest(f"{field}[{row}]", "not_utf8",
                             "BYTES elements of categories and dates must be UTF-8") from None
    return out


# ------------------------------------------------------------------------- answers
def _raw_bytes(datatype: str, values: Any) -> bytes:
    element = _FORMATS[datatype][1]
    if element is not None:
        return np.asarray(values, dtype=element).tobytes()  # row-major, rows x classes
    encoded = [value.encode() for value in values]
    if len(set(map(len, encoded))) == 1:  # ids and dates: one width, so one join
        prefix = _LENGTH.pack(len(encoded[0]))
        return prefix + prefix.join(encoded)
    return b"".join(_LENGTH.pack(len(item)) + item for item in encoded)


def infer_response(outcome: PredictOutcome, plan: InferPlan) -> pb.ModelInferResponse:
    spec = outcome.output
    answered = outputs_of(spec)
    if plan.outputs is None:
        chosen = answered
    else:
        by_name = {o.name: o for o in answered}
        for name in plan.outputs:
            if name not in by_name:  # answered by another served version only
                raise BadRequest(f"outputs.{name}", "not_answered",
                                 f"version {outcome.version} does not answer it; its outputs "
                                 f"are {', '.join(by_name)}")
        chosen = tuple(by_name[name] for name in plan.outputs)
    answer = pb.ModelInferResponse(model_name=outcome.model, model_version=outcome.version,
                                   id=plan.request_id)
    answer.parameters[ROUTE_REASON].string_param = outcome.reason.value
    n_rows = len(outcome.prediction_ids)
    for output in chosen:
        values = output.values(outcome)
        tensor = answer.outputs.add(name=output.name, datatype=output.datatype,
                                    shape=_shape(output, spec, n_rows))
        if output.name == PROBABILITIES:
            tensor.parameters[CLASSES].string_param = json.dumps(list(spec.classes))
        if plan.raw:
            answer.raw_output_contents.append(_raw_bytes(output.datatype, values))
            continue
        contents: Any = getattr(tensor.contents, _FORMATS[output.datatype][0])
        if output.datatype == "BYTES":
            contents.extend([value.encode() for value in values])
        else:
            contents.extend(np.asarray(values, dtype=np.float64).ravel().tolist())
    return answer
