"""Serving results: the gRPC API (servicers, access control, page tokens) and its client."""
