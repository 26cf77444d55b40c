"""Generated gRPC code for proto/scanside/v1 (see tools/gen_proto.py). Import from here, not from the files."""

from appliance.api.scanside.v1 import appliance_pb2 as pb
from appliance.api.scanside.v1 import appliance_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
