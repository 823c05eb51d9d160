"""`PredictionsRequest` decoded by protobuf's C runtime (upb) for the unary predict RPCs.

betterproto2 parses in pure Python (33 us a request, against upb's 0.4 us). The class is built
at import from a descriptor written out here, field for field the message in
proto/inference.proto (tests/grpc/test_grpc.py checks that both read any such message the same way).
It has the attributes `InferenceService` reads: model_name, model_version, input (key/value
entries in wire order; `inputs` makes them a dict like the generated class's) and sequence_id
("" when unset, where the generated class has None).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "org.pytorch.serve.grpc.inference.upb"
_F = descriptor_pb2.FieldDescriptorProto


def _request_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="serve_upb_inference.proto", package=_PACKAGE, syntax="proto3"
    )
    message = file.message_type.add(name="PredictionsRequest")
    # `input` is a map on the wire, which is a repeated key/value message: declared as the
    # repeated message it keeps the wire order (upb's maps iterate in hash order, and a
    # handler reads its inputs in the order the client sent them)
    entry = message.nested_type.add(name="InputEntry")
    entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_BYTES)
    message.field.add(name="model_name", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    message.field.add(name="model_version", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
    message.field.add(
        name="input",
        number=3,
        label=_F.LABEL_REPEATED,
        type=_F.TYPE_MESSAGE,
        type_name=f".{_PACKAGE}.PredictionsRequest.InputEntry",
    )
    message.oneof_decl.add(name="_sequence_id")  # proto3 `optional` is a one-field oneof
    message.field.add(
        name="sequence_id",
        number=4,
        label=_F.LABEL_OPTIONAL,
        type=_F.TYPE_STRING,
        oneof_index=0,
        proto3_optional=True,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.PredictionsRequest")
    )


FastPredictionsRequest: Any = _request_class()


def inputs(message: Any) -> dict[str, bytes]:
    """A request's `input` as a dict (a later duplicate key wins, as in the generated class)."""
    found = message.input
    if isinstance(found, dict):
        return found
    return {entry.key: entry.value for entry in found}
