"""The base every other part of edgeslim may import: errors, progress and logging, data feeds,
model/data/metric specs, bounded reading, safe writing, versions and typed documents.

core imports nothing else of edgeslim; numpy is its only required third-party import (torch and
onnx are imported lazily inside the few functions that need them).
"""
