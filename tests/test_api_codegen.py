"""The committed gRPC code in appliance/api must describe exactly what proto/ says."""

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from appliance.api import pb

ROOT = Path(__file__).resolve().parent.parent


def test_committed_code_matches_the_proto(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (test extra) compiles the proto")
    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--descriptor_set_out={out}",
                        str(ROOT / "proto/scanside/v1/appliance.proto")]) == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    for message in fresh.message_type:  # protoc adds derived JSON names to descriptor sets, not to gencode
        for field in message.field:
            field.ClearField("json_name")
    assert committed == fresh, "appliance/api is stale: run `python tools/gen_proto.py`"
