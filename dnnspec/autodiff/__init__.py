"""Reverse-mode autodiff over ONNX graphs with per-op VJP rules in standard ONNX ops."""

from dnnspec.autodiff.context import AutodiffError, VjpContext
from dnnspec.autodiff.engine import gradients
from dnnspec.autodiff.rules import VJP, VjpRule

__all__ = ["VJP", "AutodiffError", "VjpContext", "VjpRule", "gradients"]
