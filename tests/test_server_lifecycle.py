"""Start-up refusals, health (both ports), reflection v1 and v1alpha, default deadline,
SIGTERM drain."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto, FileDescriptorSet
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waybill.v1 import prediction_pb2 as pb
from waybill.v1 import prediction_pb2_grpc as pb_grpc

from models.artifact import sha256_file
from tests.harness import ServerProcess
from tests.routing_fixtures import routing_text, split
from tests.test_server_predict import struct_rows

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, "-plaintext", *args[:-1], target, args[-1]] if args else [],
                          capture_output=True, text=True, timeout=30, check=False)


def test_grpcurl_lists_describes_and_calls_without_proto_files(
    server: ServerProcess, rows: list[dict[str, object]]
) -> None:
    listed = grpcurl(server.target, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"waybill.v1.PredictionService", "grpc.health.v1.Health"} <= services
    described = grpcurl(server.target, "describe")
    assert "rpc Predict ( .waybill.v1.PredictRequest )" in described.stdout
    body = json.dumps({"model": "delivery_eta", "rows": rows[:1]})
    called = grpcurl(server.target, "-d", body, "waybill.v1.PredictionService/Predict")
    assert called.returncode == 0, called.stderr
    answer = json.loads(called.stdout)
    assert answer["version"] == "1.1.0"
    assert answer["route_reason"] == "ROUTE_REASON_DEFAULT"
    assert answer["predictions"][0]["delivery_date"]
    health = grpcurl(server.target, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"


# grpc/reflection/v1/reflection.proto, the published v1 protocol, compiled here into a pool of
# its own: the v1 stub a newer tool would use, independent of how the server builds its v1.
V1_REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest)
      returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    ExtensionRequest file_containing_extension = 5;
    string all_extension_numbers_of_type = 6;
    string list_services = 7;
  }
}
message ExtensionRequest {
  string containing_type = 1;
  int32 extension_number = 2;
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ExtensionNumberResponse all_extension_numbers_response = 5;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ExtensionNumberResponse {
  string base_type_name = 1;
  repeated int32 extension_number = 2;
}
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse {
  int32 error_code = 1;
  string error_message = 2;
}
"""


@pytest.fixture(scope="module")
def v1_reflection(tmp_path_factory: pytest.TempPathFactory) -> FileDescriptorProto:
    from grpc_tools import protoc

    root = tmp_path_factory.mktemp("v1")
    source = root / "grpc" / "reflection" / "v1" / "reflection.proto"
    source.parent.mkdir(parents=True)
    source.write_text(V1_REFLECTION_PROTO)
    out = root / "v1.pb"
    assert protoc.main(["protoc", f"-I{root}", f"--descriptor_set_out={out}",
                        "grpc/reflection/v1/reflection.proto"]) == 0
    (proto,) = FileDescriptorSet.FromString(out.read_bytes()).file
    return proto


def _reflect_v1(target: str, proto: FileDescriptorProto,
                **asks: str) -> list[Any]:
    """One ServerReflectionInfo v1 stream: a request per ``field=value``, the answers."""
    pool = DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    request, answer = (GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))
                       for name in ("ServerReflectionRequest", "ServerReflectionResponse"))
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=answer.FromString,
        )
        return list(call(iter([request(**{k: v}) for k, v in asks.items()]), timeout=10))


def _shape(proto: FileDescriptorProto) -> list[tuple[object, ...]]:
    return sorted((m.name, f.name, f.number, f.type, f.label, f.type_name,
                   f.oneof_index if f.HasField("oneof_index") else None)
                  for m in proto.message_type for f in m.field)


def test_reflection_v1_and_v1alpha(server: ServerProcess,
                                   v1_reflection: FileDescriptorProto) -> None:
    # grpcurl 1.8.6 speaks v1alpha: both reflection services are listed.
    listed = grpcurl(server.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(listed.stdout.split())
    # A v1 client: list, describe a service, and describe reflection v1 itself.
    listing, service, itself = _reflect_v1(
        server.target, v1_reflection, list_services="",
        file_containing_symbol="waybill.v1.PredictionService",
    ) + _reflect_v1(server.target, v1_reflection,
                    file_containing_symbol="grpc.reflection.v1.ServerReflection")
    names = {s.name for s in listing.list_services_response.service}
    assert {"waybill.v1.PredictionService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"} <= names
    files = [FileDescriptorProto.FromString(b)
             for b in service.file_descriptor_response.file_descriptor_proto]
    assert any(s.name == "PredictionService" for f in files for s in f.service)
    (served,) = [FileDescriptorProto.FromString(b)
                 for b in itself.file_descriptor_response.file_descriptor_proto]
    # What the server describes as v1 is the published v1 protocol, field for field.
    assert served.package == "grpc.reflection.v1"
    assert _shape(served) == _shape(v1_reflection)
    assert [(m.name, m.input_type, m.output_type) for m in served.service[0].method] == [
        (m.name, m.input_type, m.output_type) for m in v1_reflection.service[0].method]


def test_admin_port_has_health_and_both_reflections(tmp_path: Path, registry: Path,
                                                    v1_reflection: FileDescriptorProto) -> None:
    with ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                       env={"WAYBILL_ADMIN_TOKEN": "adm1n"}) as server:
        # grpcurl reads the service through reflection, which needs the admin token.
        health = grpcurl(server.admin_target, "-H", "authorization: Bearer adm1n",
                         "grpc.health.v1.Health/Check")
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout)["status"] == "SERVING"
        # Health itself needs no token (probes carry none), as on the public port.
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.admin_target))
        for service in ("", "waybill.v1.AdminService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:  # not served on this port
            stub.Check(health_pb2.HealthCheckRequest(service="waybill.v1.PredictionService"),
                       timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        # Everything else on the admin port still needs the token: reflection too.
        refused = grpcurl(server.admin_target, "list")
        assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
        listed = grpcurl(server.admin_target, "-H", "authorization: Bearer adm1n", "list")
        assert listed.returncode == 0, listed.stderr
        assert set(listed.stdout.split()) == {
            "waybill.v1.AdminService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


def test_health_turns_not_serving_on_drain_on_both_ports(tmp_path: Path,
                                                         registry: Path) -> None:
    server = ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                           env={"WAYBILL_ADMIN_TOKEN": "adm1n"})
    with server:
        watched = [(target, service)
                   for target, services in ((server.target, ("", "waybill.v1.PredictionService")),
                                            (server.admin_target, ("", "waybill.v1.AdminService")))
                   for service in services]
        channels = [grpc.insecure_channel(target) for target, _ in watched]
        try:
            watches = [iter(health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=service), timeout=30))
                for channel, (_, service) in zip(channels, watched, strict=True)]
            assert [next(w).status for w in watches] == [health_pb2.HealthCheckResponse.SERVING] * 4
            server.signal(signal.SIGTERM)
            assert [next(w).status for w in watches] == [
                health_pb2.HealthCheckResponse.NOT_SERVING] * 4
        finally:
            for channel in channels:
                channel.close()
        assert server.wait(30) == 0


def test_health_overall_and_per_service(server: ServerProcess) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel())
    # waybill.store: the prediction log's database (an SQLite file here) answers.
    for service in ("", "waybill.v1.PredictionService", "waybill.store"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


class _RunsCode:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pickle ran"))  # type: ignore[return-value]


def _rewrite_digest(version_dir: Path) -> None:
    manifest = json.loads((version_dir / "model.json").read_text())
    manifest["sha256"] = sha256_file(version_dir / "model.cbm")
    manifest["size_bytes"] = (version_dir / "model.cbm").stat().st_size
    (version_dir / "model.json").write_text(json.dumps(manifest))


def test_broken_versions_are_refused_and_the_good_one_serves(
    registry: Path, rows: list[dict[str, object]], tmp_path: Path
) -> None:
    root = tmp_path / "registry"
    shutil.copytree(registry, root)
    model = root / "delivery_eta"
    # 1.0.0: one flipped byte, manifest untouched -> digest mismatch.
    cbm = model / "1.0.0" / "model.cbm"
    data = bytearray(cbm.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cbm.write_bytes(bytes(data))
    # 1.2.0: a pickle renamed to model.cbm, with a matching digest -> refused unread.
    marker = tmp_path / "pickle-ran"
    shutil.copytree(model / "1.1.0", model / "1.2.0")
    (model / "1.2.0" / "model.cbm").write_bytes(pickle.dumps(_RunsCode(marker)))
    manifest = json.loads((model / "1.2.0" / "model.json").read_text())
    manifest["version"] = "1.2.0"
    (model / "1.2.0" / "model.json").write_text(json.dumps(manifest))
    _rewrite_digest(model / "1.2.0")
    # 2.0.0: a symlink escaping the registry root.
    outside = tmp_path / "outside" / "2.0.0"
    shutil.copytree(model / "1.1.0", outside)
    manifest["version"] = "2.0.0"
    (outside / "model.json").write_text(json.dumps(manifest))
    _rewrite_digest(outside)
    os.symlink(outside, model / "2.0.0")

    with ServerProcess(tmp_path, "--registry", str(root), "--no-routing") as server:
        refused = {e["version"]: e["reason"] for e in server.log_events()
                   if e.get("event") == "version refused"}
        stub = pb_grpc.PredictionServiceStub(server.channel())
        listing = stub.ListModels(pb.ListModelsRequest(), timeout=5)
        served = [v.version for v in listing.models[0].versions]
        response = stub.Predict(pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:1])),
                                timeout=5)
    assert "sha256" in refused["1.0.0"]
    assert "not a CatBoost native model" in refused["1.2.0"]
    assert "outside the registry root" in refused["2.0.0"]
    assert served == ["1.1.0"]
    assert response.version == "1.1.0"
    assert not marker.exists()


def test_server_refuses_to_start_without_a_servable_version(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "server.runtime.cli", "serve", "--port", "0", "--registry",
         str(empty), "--no-routing"],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "no servable model version" in proc.stderr


def _refused_start(*args: str) -> list[str]:
    """Start `waybill serve` expecting a refusal; its stderr lines that are not JSON logs."""
    proc = subprocess.run(
        [sys.executable, "-m", "server.runtime.cli", "serve", "--host", "127.0.0.1",
         "--port", "0", "--admin-port", "0", "--metrics-port", "0", "--no-database", *args],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return [line for line in proc.stderr.splitlines() if not line.startswith("{")]


@pytest.mark.parametrize("setting", ["tls_key", "tls_cert", "tls_client_ca"])
def test_a_tls_file_that_cannot_be_read_is_one_line_naming_it(
    registry: Path, tmp_path: Path, setting: str
) -> None:
    files = {"tls_key": tmp_path / "server.key", "tls_cert": tmp_path / "server.pem",
             "tls_client_ca": tmp_path / "ca.pem"}
    for path in files.values():
        path.write_text("-----BEGIN NOTHING-----\n")
    if setting == "tls_client_ca":
        files[setting].unlink()
        files[setting].mkdir()  # there, but not a file that can be read
        why = "Is a directory"
    else:
        files[setting].unlink()
        why = "No such file or directory"
    flags = [a for name, path in files.items()
             for a in (f"--{name.replace('_', '-')}", str(path))]
    lines = _refused_start("--registry", str(registry), "--no-routing", *flags)
    assert lines == [f"waybill: cannot start: {setting} {files[setting]}: {why}"]


@pytest.mark.parametrize(("flag", "what"), [("--port", ""), ("--admin-port", "admin "),
                                            ("--metrics-port", "metrics ")])
def test_a_taken_port_is_one_line_and_exit_code_one(
    registry: Path, flag: str, what: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = _refused_start("--registry", str(registry), "--no-routing", flag, str(port))
        assert lines == [f"waybill: cannot start: cannot bind {what}127.0.0.1:{port}: "
                         "Address already in use"]
        # The supervisor of --workers reserves the ports itself, and says the same.
        if flag != "--metrics-port":
            lines = _refused_start("--registry", str(registry), "--no-routing",
                                   "--workers", "2", flag, str(port))
            assert lines == [f"waybill: cannot start: cannot bind {what}127.0.0.1:{port}: "
                             "Address already in use"]


def test_the_server_writes_only_json_lines(
    registry: Path, rows: list[dict[str, object]], tmp_path: Path
) -> None:
    # Two versions and a shadow scored at once on two threads: CatBoost calls overlap.
    config = tmp_path / "routing.toml"
    config.write_text(routing_text(split(50), shadow=("1.1.0", 1.0)))
    with ServerProcess(tmp_path, "--registry", str(registry), "--routing", str(config),
                       "--access-log", "all") as server, ThreadPoolExecutor(8) as pool:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        request = pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:64]))
        calls = [pool.submit(stub.Predict, request, timeout=30,
                             metadata=(("x-model-version", version),))
                 for _ in range(100) for version in ("1.0.0", "1.1.0")]
        assert {len(c.result().predictions) for c in calls} == {64}
    lines = server.log_text().splitlines()  # stdout and stderr, the server stopped

    def is_json_object(line: str) -> bool:
        try:
            return isinstance(json.loads(line), dict)
        except ValueError:
            return False

    assert len(lines) > 200
    assert [line for line in lines if not is_json_object(line)] == []


def test_default_deadline_applies_only_without_a_caller_deadline(
    registry: Path, rows: list[dict[str, object]], tmp_path: Path
) -> None:
    big = struct_rows((rows * 40)[:4000])
    with ServerProcess(tmp_path, "--registry", str(registry), "--max-rows", "5000",
                       "--default-deadline", "0.001") as server:
        stub = pb_grpc.PredictionServiceStub(server.channel())
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(pb.PredictRequest(model="delivery_eta", rows=big))
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        answer = stub.Predict(pb.PredictRequest(model="delivery_eta", rows=big), timeout=30)
        assert len(answer.predictions) == 4000


def test_sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_zero(
    registry: Path, rows: list[dict[str, object]], tmp_path: Path
) -> None:
    # Big requests keep calls in flight for a while (each takes well over 100 ms).
    big = pb.PredictRequest(model="delivery_eta", rows=struct_rows((rows * 400)[:40_000]))
    server = ServerProcess(tmp_path, "--registry", str(registry), "--max-rows", "50000",
                           "--grace", "30", "--log-level", "debug",
                           env={"WAYBILL_MAX_MESSAGE_BYTES": str(64 << 20)})
    with server, ThreadPoolExecutor(4) as pool:
        options = [("grpc.max_send_message_length", 64 << 20),
                   ("grpc.max_receive_message_length", 64 << 20)]
        stub = pb_grpc.PredictionServiceStub(grpc.insecure_channel(server.target, options))
        in_flight = [pool.submit(stub.Predict, big, timeout=60) for _ in range(3)]
        _wait_for(lambda: _count(server, "rpc started") >= 3, "calls to reach the server")
        server.signal(signal.SIGTERM)
        _wait_for(lambda: _count(server, "draining") >= 1, "the server to start draining")
        # Calls that slip in before the listener closes still succeed; once it has
        # closed, every new call gets UNAVAILABLE while the big ones are still running.
        small = pb.PredictRequest(model="delivery_eta", rows=struct_rows(rows[:1]))
        refused = _refusals(server.target, small)
        assert refused[-1] == grpc.StatusCode.UNAVAILABLE
        assert set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
        assert not all(f.done() for f in in_flight)
        results = [f.result(timeout=60) for f in in_flight]
        assert [len(r.predictions) for r in results] == [40_000] * 3
        assert server.wait(30) == 0
    assert _count(server, "stopped") == 1


def _refusals(target: str, request: pb.PredictRequest,
              timeout: float = 20.0) -> list[grpc.StatusCode]:
    """Codes of refused new calls, until one is UNAVAILABLE. A call that gRPC core had
    accepted but not yet handed to a handler when the listener closed ends CANCELLED;
    every call a handler sees during the drain is refused UNAVAILABLE."""
    codes: list[grpc.StatusCode] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with grpc.insecure_channel(target) as channel:
            try:
                pb_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
            except grpc.RpcError as err:
                codes.append(err.code())
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    return codes
    raise TimeoutError(f"new calls were never refused with UNAVAILABLE: {codes}")


def _count(server: ServerProcess, event: str) -> int:
    return sum(1 for e in server.log_events() if e.get("event") == event)


def _wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_overload_is_shed_at_once_with_resource_exhausted(
    registry: Path, rows: list[dict[str, object]], tmp_path: Path
) -> None:
    from tests.routing_fixtures import run_calls

    with ServerProcess(tmp_path, "--registry", str(registry), "--no-routing",
                       "--max-inflight", "2", "--batch-delay-us", "20000") as server:
        outcomes = run_calls(server.target, rows[0], [None] * 200, concurrency=16)
    codes = {o for o in outcomes if o.startswith("error:")}
    assert codes == {"error:RESOURCE_EXHAUSTED"}
    assert "1.1.0" in outcomes  # the admitted ones were served
