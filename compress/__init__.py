"""Compression steps: structured pruning, distillation, quantization, transformer graph optimization.

Importing this package registers every step; torch, nncf and torch-pruning are imported lazily
inside the handlers, so configs can be parsed on a machine without them.
"""
from edgeslim.compress import distill, graph_optimize, int4, prune, qat, quantize  # noqa: F401  (registration)
from edgeslim.compress.registry import StepConfig, apply_step, check_order, make_step, register_step, step_names

__all__ = ["StepConfig", "apply_step", "check_order", "make_step", "register_step", "step_names"]
