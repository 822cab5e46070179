"""Typed Python client for the Waybill model server (``waybill.v1.PredictionService``).

::

    from waybill_client import WaybillClient

    with WaybillClient("127.0.0.1:50051") as client:
        result = client.predict("delivery_eta", [{"zip_code": "94107", "order_date": "2026-11-26"}])
        print(result.version, result.route_reason, result.predictions[0].delivery_date)
        # Later, once the parcel arrived:
        client.report_outcomes([(result.predictions[0].prediction_id, "2026-11-30")])

Models of other kinds answer through the same results: ``PredictResult.kind`` says which
(``"quantiles"``, ``"regression"``, ``"classification"``); a regressor's
``PredictionResult.value`` (its interval ``None`` when it has none), a classifier's
``label`` and ``probabilities`` (class name -> probability, in ``class_names`` order).
Their outcomes go as ``Outcome(prediction_id, value=...)`` or ``Outcome(prediction_id,
label=...)``.

The generated stubs (the ``waybill-protos`` dependency) are importable as
``waybill.v1.prediction_pb2`` and ``waybill.v1.prediction_pb2_grpc``; ``pin()`` and
``routing_key()`` build their metadata; ``retry_options()`` gives the client's retry policy
as channel options, for a channel you create yourself.
"""

from ._channel import MAX_RETRIES, retry_options
from ._convert import (
    MAX_OUTCOMES,
    METADATA_MODEL_VERSION,
    METADATA_ROUTING_KEY,
    Metadata,
    Outcome,
    OutcomeReport,
    PredictionResult,
    PredictResult,
    pin,
    route_reason_name,
    routing_key,
    row_to_struct,
    rows_to_structs,
)
from .aio import AsyncWaybillClient
from .client import WaybillClient
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    UnexpectedStatus,
    WaybillError,
    from_rpc_error,
)

__version__ = "0.1.0"

__all__ = [
    "MAX_OUTCOMES",
    "MAX_RETRIES",
    "METADATA_MODEL_VERSION",
    "METADATA_ROUTING_KEY",
    "AlreadyExists",
    "AsyncWaybillClient",
    "DeadlineExceeded",
    "FieldViolation",
    "InvalidArgument",
    "Metadata",
    "NotFound",
    "Outcome",
    "OutcomeReport",
    "PermissionDenied",
    "PredictResult",
    "PredictionResult",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedStatus",
    "WaybillClient",
    "WaybillError",
    "__version__",
    "from_rpc_error",
    "pin",
    "retry_options",
    "route_reason_name",
    "routing_key",
    "row_to_struct",
    "rows_to_structs",
]
