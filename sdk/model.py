"""A loaded, verified bundle: checked inputs, predict, benchmark."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeslim.errors import InputError
from edgeslim.sdk.bundle import MODEL_FILE, TensorSpec, read_manifest, verify_files
from edgeslim.sdk.providers import provider_chain, resolve_provider
from edgeslim.sdk.stats import summarize


class Model:
    """One bundle in one onnxruntime session. `predict` is safe to call from many threads."""

    def __init__(self, bundle_dir: str | Path, device: str = "cpu", threads: int | None = None,
                 verify: bool = True):
        import onnxruntime as ort

        self.path = Path(bundle_dir)
        self.manifest = read_manifest(self.path)
        if verify:
            verify_files(self.path, self.manifest)
        self.name = self.manifest["name"]
        self.inputs = [TensorSpec.from_dict(spec) for spec in self.manifest["inputs"]]
        self.outputs = [TensorSpec.from_dict(spec) for spec in self.manifest["outputs"]]
        self.device = device
        self.provider = resolve_provider(device)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        started = time.perf_counter()
        self.session = ort.InferenceSession(str(self.path / MODEL_FILE), options,
                                            providers=provider_chain(self.provider))
        self.load_ms = (time.perf_counter() - started) * 1000.0
        self._output_names = [spec.name for spec in self.outputs]

    def __repr__(self) -> str:
        return f"Model({self.name!r}, device={self.device!r}, inputs={[s.name for s in self.inputs]})"

    # -- inputs ---------------------------------------------------------------------------------
    def _feed(self, x) -> dict:
        """Map what the caller passed onto input names, checking names, ranks, dims and dtypes."""
        if isinstance(x, dict):
            missing = [spec.name for spec in self.inputs if spec.name not in x]
            extra = sorted(set(x) - {spec.name for spec in self.inputs})
            if missing or extra:
                raise InputError(f"model '{self.name}' takes inputs {[s.name for s in self.inputs]}; "
                                 f"missing {missing}, unexpected {extra}")
            return {spec.name: _checked(spec, x[spec.name]) for spec in self.inputs}
        values = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(values) != len(self.inputs):
            raise InputError(f"model '{self.name}' takes {len(self.inputs)} inputs "
                             f"{[s.name for s in self.inputs]}; got {len(values)}; pass a dict by name")
        return {spec.name: _checked(spec, value) for spec, value in zip(self.inputs, values)}

    def predict(self, x):
        """numpy in, numpy out; a dict by name (or a sequence in order) for several inputs.

        Returns one array for a one-output model, else a dict of arrays by output name.
        """
        results = self.session.run(self._output_names, self._feed(x))
        if len(results) == 1:
            return results[0]
        return dict(zip(self._output_names, results))

    def sample_inputs(self, batch: int = 1, seed: int = 0) -> dict:
        """Random inputs of the declared shapes; symbolic dims take `batch` (the first) or 1."""
        rng = np.random.default_rng(seed)
        feed = {}
        for spec in self.inputs:
            shape = [batch if (isinstance(d, str) or d is None) and i == 0 else
                     (1 if isinstance(d, str) or d is None else int(d)) for i, d in enumerate(spec.shape)]
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                feed[spec.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind == "b":
                feed[spec.name] = rng.integers(0, 2, shape).astype(dtype)
            else:
                feed[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        return feed

    def benchmark(self, runs: int = 100, warmup: int = 10, batch: int = 1, inputs=None) -> dict:
        """Steady-state latency after `warmup` calls; the first call is timed and reported apart."""
        if runs < 1 or warmup < 0:
            raise InputError(f"benchmark needs runs >= 1 and warmup >= 0; got runs={runs}, warmup={warmup}")
        feed = self._feed(inputs) if inputs is not None else self.sample_inputs(batch)
        started = time.perf_counter()
        self.session.run(self._output_names, feed)
        first_run_ms = (time.perf_counter() - started) * 1000.0
        for _ in range(max(warmup - 1, 0)):
            self.session.run(self._output_names, feed)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            self.session.run(self._output_names, feed)
            times.append((time.perf_counter() - started) * 1000.0)
        stats = summarize(times, batch)
        stats.update({"warmup": warmup, "first_run_ms": first_run_ms, "load_ms": self.load_ms})
        return stats


def _checked(spec: TensorSpec, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, converted without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype != np.dtype(spec.dtype):
        raise InputError(f"input '{spec.name}' must be {spec.dtype}, got {array.dtype}; "
                         f"convert it with .astype(np.{spec.dtype})")
    if array.ndim != len(spec.shape):
        raise InputError(f"input '{spec.name}' must have shape {_shape_text(spec.shape)} "
                         f"({len(spec.shape)} dims), got {tuple(array.shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if isinstance(want, int) and want != got:
            raise InputError(f"input '{spec.name}' must have shape {_shape_text(spec.shape)}, "
                             f"got {tuple(array.shape)} (dim {axis} should be {want})")
    return array


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
