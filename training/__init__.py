"""Offline tools that build engine bundles. Imports the appliance's preprocessing so training sees what the
appliance sees; may use dev-only dependencies (onnx) that the appliance runtime must not."""
