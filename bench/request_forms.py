"""Server CPU to read and check one Predict request, rows (Structs) against columns, by size.

    .venv/bin/python bench/request_forms.py

In process, pinned to core 0: parse the serialized PredictRequest, convert it
(server.transport.convert.predict_query, then reading its values) and validate it against
delivery_eta 1.1.0's schema, for 1 to 64 orders of the bench rows. This is the part
of a request whose cost depends on its form; scoring, the answer and gRPC come on top.
"""

from __future__ import annotations

import timeit

import benchlib as bl

SIZES = (1, 2, 4, 8, 16, 64)


def main() -> None:
    from waybill.v1 import prediction_pb2 as pb

    from models.loaded import LoadedVersion
    from server.transport import convert

    bl.pin_self({0})
    version = LoadedVersion.load(bl.ROOT / "models", bl.MODEL_NAME, bl.MODEL_VERSION)
    rows = bl.load_rows()

    def cost(payload: bytes) -> float:
        def one() -> None:
            query = convert.predict_query(pb.PredictRequest.FromString(payload), [])
            version.validate(query.read())

        one()
        calls = 300
        return min(timeit.repeat(one, number=calls, repeat=5)) / calls * 1e6

    print(f"{'orders':>6}  {'rows µs':>8}  {'columns µs':>10}  {'columns/rows':>12}")
    for size in SIZES:
        chunk = rows[:size]
        by_row = cost(bl.waybill_request_bytes(chunk))
        by_column = cost(bl.waybill_columns_request_bytes(chunk))
        print(f"{size:>6}  {by_row:>8.1f}  {by_column:>10.1f}  {by_column / by_row:>12.2f}")


if __name__ == "__main__":
    main()
