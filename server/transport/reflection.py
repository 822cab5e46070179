"""Server reflection under both of its names: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection (1.85) implements only ``grpc.reflection.v1alpha.ServerReflection``
(grpc/grpc#38576), while newer tools (grpcurl 1.9+, Postman, grpc-java's own) ask for
``grpc.reflection.v1.ServerReflection`` first. The two protocols are one: v1 is v1alpha's
``reflection.proto`` under the package ``grpc.reflection.v1``, with the same messages, fields
and numbers. So the v1alpha servicer answers v1 callers byte for byte, and this module
registers it under both service names. For reflection to describe itself under v1 too, the
v1 file is added to the default descriptor pool: v1alpha's file, renamed.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["V1ALPHA_SERVICE", "V1_SERVICE", "enable_reflection", "v1_file_proto"]

V1ALPHA_SERVICE: str = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"

_ALPHA_PACKAGE = reflection_pb2.DESCRIPTOR.package
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc_reflection/v1/reflection.proto"
_METHOD = "ServerReflectionInfo"


def v1_file_proto() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto`` as a descriptor, made from v1alpha's."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = _V1_PACKAGE

    alpha = f".{_ALPHA_PACKAGE}."

    def renamed(type_name: str) -> str:
        if not type_name.startswith(alpha):
            return type_name
        return f".{_V1_PACKAGE}.{type_name[len(alpha):]}"

    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = renamed(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = renamed(method.input_type)
            method.output_type = renamed(method.output_type)
    # The options of the published v1 file (v1alpha's say deprecated).
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    return proto


def _add_v1_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file_proto().SerializeToString())


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Reflection v1 and v1alpha on ``server``, listing ``service_names`` and themselves."""
    _add_v1_file()
    names = (*service_names, V1_SERVICE, V1ALPHA_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (V1_SERVICE, V1ALPHA_SERVICE):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {_METHOD: handler}),))
        server.add_registered_method_handlers(service, {_METHOD: handler})
