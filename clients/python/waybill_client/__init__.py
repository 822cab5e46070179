"""Typed Python client for the Waybill model server (``waybill.v1.PredictionService``).

::

    from waybill_client import WaybillClient

    with WaybillClient("127.0.0.1:50051") as client:
        result = client.predict("delivery_eta", [{"zip_code": "94107", "order_date": "2026-11-26"}])
        print(result.version, result.route_reason, result.predictions[0].delivery_date)

The generated stubs are importable as ``waybill.v1.prediction_pb2`` and
``waybill.v1.prediction_pb2_grpc``; ``pin()`` and ``routing_key()`` build their metadata.
"""

from ._convert import (
    METADATA_MODEL_VERSION,
    METADATA_ROUTING_KEY,
    Metadata,
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
    "METADATA_MODEL_VERSION",
    "METADATA_ROUTING_KEY",
    "AsyncWaybillClient",
    "DeadlineExceeded",
    "FieldViolation",
    "InvalidArgument",
    "Metadata",
    "NotFound",
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
    "route_reason_name",
    "routing_key",
    "row_to_struct",
    "rows_to_structs",
]
