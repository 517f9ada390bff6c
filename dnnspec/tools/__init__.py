"""Tools over specs, runs and ONNX files: the formatter, inspect, export, plots."""
