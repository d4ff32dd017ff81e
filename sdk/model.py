"""A loaded, verified bundle: checked inputs, predict, benchmark."""
from __future__ import annotations

import numbers
import os
import time
from pathlib import Path

import numpy as np

from edgeslim.core.errors import BundleError, ConfigError, InputError
from edgeslim.core.limits import host_cores
from edgeslim.sdk.bundle import TensorSpec, read_manifest, read_verified
from edgeslim.sdk.providers import provider_chain, resolve_provider
from edgeslim.sdk.stats import summarize

# Providers whose memory is not the host's: predict goes through I/O binding there.
_BINDING_DEVICES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
                    "ROCMExecutionProvider": "cuda", "MIGraphXExecutionProvider": "cuda"}

# Where onnxruntime would look for external data the session was not given in memory: a path
# below /dev/null can never exist, so such a read fails instead of finding a file in the cwd.
_NO_EXTERNAL_DATA_DIR = os.path.join(os.devnull, "edgeslim-external-data")

# A symbolic dim other than the batch (a sequence length), where the manifest records no example: what
# a benchmark times it at. Sentence encoders on a device see queries of about this many tokens.
SYMBOLIC_DIM = 64


class Model:
    """One bundle in one onnxruntime session. `predict` is safe to call from many threads."""

    def __init__(self, bundle_dir: str | Path, device: str = "cpu", threads: int | None = None,
                 verify: bool = True):
        import onnxruntime as ort

        threads = _check_threads(threads)
        self.path = Path(bundle_dir)
        self.manifest = read_manifest(self.path)
        # The session is built from these bytes: what was checked is what runs.
        files = read_verified(self.path, self.manifest, check=verify)
        self.name = self.manifest["name"]
        self.inputs = [TensorSpec.from_dict(spec) for spec in self.manifest["inputs"]]
        self.outputs = [TensorSpec.from_dict(spec) for spec in self.manifest["outputs"]]
        self.device = device
        self.provider = resolve_provider(device)
        options = _session_options(ort, files.external)
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        started = time.perf_counter()
        self.session = _session(ort, files.model, options, self.provider, self.path)
        del files  # onnxruntime holds its own copy of the weights now
        self.load_ms = (time.perf_counter() - started) * 1000.0
        _check_active(self.session, self.provider, device)
        _check_declared(self.path, "inputs", self.inputs, self.session.get_inputs())
        _check_declared(self.path, "outputs", self.outputs, self.session.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]
        self._checks = [_InputCheck(spec) for spec in self.inputs]
        # On a GPU, I/O binding lets onnxruntime copy each input to the device once and each output
        # back once, straight from and into numpy memory, with no staging copies in between.
        self._binding_device = _BINDING_DEVICES.get(self.provider)

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
            return {check.name: check(x[check.name]) for check in self._checks}
        if not isinstance(x, (list, tuple)):
            if len(self._checks) == 1:
                return {self._checks[0].name: self._checks[0](x)}
            x = [x]
        if len(x) != len(self.inputs):
            raise InputError(f"model '{self.name}' takes {len(self.inputs)} inputs "
                             f"{[s.name for s in self.inputs]}; got {len(x)}; pass a dict by name")
        return {check.name: check(value) for check, value in zip(self._checks, x)}

    def predict(self, x, batch_size: int | None = None):
        """numpy in, numpy out; a dict by name (or a sequence in order) for several inputs.

        Returns one array for a one-output model, else a dict of arrays by output name. With
        `batch_size`, the first axis is cut into batches of that size and the results joined along each
        output's batch axis.
        Safe to call from many threads on one Model: each call has its own binding.
        """
        feed = self._feed(x)
        if batch_size:
            results = self._run_batched(feed, int(batch_size))
        else:
            results = self._run(feed)
        if len(results) == 1:
            return results[0]
        return dict(zip(self._output_names, results))

    def _run(self, feed: dict) -> list:
        if self._binding_device is None:
            return self.session.run(self._output_names, feed)
        binding = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _run_batched(self, feed: dict, batch_size: int) -> list:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        rows = {value.shape[0] for value in feed.values()}
        if len(rows) != 1:
            raise InputError(f"batched predict needs every input to have the same first dim, got {sorted(rows)}")
        total = rows.pop()
        parts = [self._run({name: value[start:start + batch_size] for name, value in feed.items()})
                 for start in range(0, total, batch_size)]
        return [np.concatenate([part[index] for part in parts], axis=spec.batch_axis)
                for index, spec in enumerate(self.outputs)]

    def sample_inputs(self, batch: int = 1, seed: int = 0, shape: dict | None = None) -> dict:
        """Random inputs of the declared shapes, for timing.

        The batch dim takes `batch`. Another symbolic dim (a sequence) takes its size in the example the
        bundle was exported with, where the manifest records it (`example_shape`), else SYMBOLIC_DIM (64):
        a sequence model timed at length 1 would say nothing. `shape` overrides both: by symbolic dim name
        (`{"sequence": 128}`, for every input that has it) or by input name (`{"input_ids": (1, 128)}`,
        the whole shape, whose batch dim must be `batch`).
        """
        whole, sizes = self._shape_overrides(shape or {}, batch)
        sizes = {**_example_sizes(self.inputs), **sizes}
        rng = np.random.default_rng(seed)
        feed = {}
        for spec in self.inputs:
            dims = whole.get(spec.name) or _sample_shape(spec, batch, sizes)
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                feed[spec.name] = rng.standard_normal(dims).astype(dtype)
            else:  # ids, masks and flags: 0 and 1 are valid for each
                feed[spec.name] = rng.integers(0, 2, dims).astype(dtype)
        return feed

    def _shape_overrides(self, shape: dict, batch: int) -> tuple[dict, dict]:
        """`shape` checked and split: whole shapes by input name, sizes by symbolic dim name."""
        inputs = {spec.name: spec for spec in self.inputs}
        symbols = sorted({dim for spec in self.inputs for axis, dim in enumerate(spec.shape)
                          if isinstance(dim, str) and axis != spec.batch_axis})
        if not isinstance(shape, dict):
            raise InputError(f"shape must be a dict of input names or symbolic dim names, got {type(shape).__name__}")
        whole, sizes = {}, {}
        for key, value in shape.items():
            if key in inputs:
                spec = inputs[key]
                dims = tuple(value) if isinstance(value, (tuple, list)) else None
                if dims is None or not all(_is_size(d) for d in dims) or len(dims) != len(spec.shape) \
                        or (spec.batch_axis < len(dims) and dims[spec.batch_axis] != batch):
                    raise InputError(f"shape for input '{key}' must be {len(spec.shape)} positive whole numbers "
                                     f"like {_shape_text(spec.shape)} with {batch} (the batch) at axis "
                                     f"{spec.batch_axis}, got {value!r}")
                whole[key] = dims
            elif key in symbols:
                if not _is_size(value):
                    raise InputError(f"shape {key!r} must be a positive whole number, got {value!r}")
                sizes[key] = int(value)
            else:
                raise InputError(f"shape names {key!r}, which is neither an input ({', '.join(inputs)}) nor a "
                                 f"symbolic dim ({', '.join(symbols) or 'none'}) of model '{self.name}'")
        return whole, sizes

    def benchmark(self, runs: int = 100, warmup: int = 10, batch: int = 1, inputs=None,
                  io: str = "host", shape: dict | None = None) -> dict:
        """Steady-state latency after `warmup` calls; the first call is timed and reported apart.

        Without `inputs`, random ones from `sample_inputs(batch, shape=shape)`: a sequence is as long as
        the example the bundle was exported with (else 64, or what `shape` says); the shapes timed are
        in the result's `shapes`.
        io="host" times what an app sees: numpy in, numpy out, copies included. On a GPU,
        io="device" keeps inputs and outputs in device memory and times the model alone.
        """
        if runs < 1 or warmup < 0:
            raise InputError(f"benchmark needs runs >= 1 and warmup >= 0; got runs={runs}, warmup={warmup}")
        if io not in ("host", "device"):
            raise InputError(f"benchmark io must be 'host' or 'device', got {io!r}")
        feed = self._feed(inputs if inputs is not None else self.sample_inputs(batch, shape=shape))
        call = self._device_call(feed) if io == "device" and self._binding_device else (lambda: self._run(feed))
        started = time.perf_counter()
        call()
        first_run_ms = (time.perf_counter() - started) * 1000.0
        for _ in range(max(warmup - 1, 0)):
            call()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000.0)
        stats = summarize(times, batch)
        stats.update({"warmup": warmup, "first_run_ms": first_run_ms, "load_ms": self.load_ms,
                      "io": io if self._binding_device else "host",
                      "shapes": {name: list(value.shape) for name, value in feed.items()}})
        return stats

    def _device_call(self, feed: dict):
        """A call whose inputs and outputs stay on the device (bound once, reused every run)."""
        import onnxruntime as ort

        device, index = self._binding_device, 0
        binding = self.session.io_binding()
        for name, array in feed.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, index)
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, device, index)

        def call():
            binding.synchronize_inputs()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return call


def _is_size(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _example_sizes(inputs: list) -> dict:
    """Each symbolic dim's size in the examples the manifest records (the first input recording it), so
    that inputs sharing a dim (input_ids and attention_mask) get one length."""
    sizes = {}
    for spec in inputs:
        example = spec.example_shape
        if example and len(example) == len(spec.shape):
            for axis, (dim, size) in enumerate(zip(spec.shape, example)):
                if isinstance(dim, str) and axis != spec.batch_axis and _is_size(size):
                    sizes.setdefault(dim, int(size))
    return sizes


def _sample_shape(spec: TensorSpec, batch: int, sizes: dict) -> list[int]:
    """One input's shape for timing: fixed dims as declared, the batch dim `batch`, another symbolic dim its
    size in `sizes` (by name), else SYMBOLIC_DIM."""
    return [dim if isinstance(dim, int) else batch if axis == spec.batch_axis else sizes.get(dim, SYMBOLIC_DIM)
            for axis, dim in enumerate(spec.shape)]


def _check_threads(threads) -> int | None:
    """None (onnxruntime's default) or a whole number of threads from 1 to this host's cores.

    Checked before any work: a session asked for thousands of threads takes minutes to start.
    """
    if threads is None:
        return None
    limit = host_cores()
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= threads <= limit:
        raise ConfigError(f"threads={threads!r} is not allowed: it must be a whole number from 1 to {limit} "
                          "(the cores of this host); pass a value in that range, or None for the default")
    return int(threads)


def _session_options(ort, external: dict):
    """Session options that let onnxruntime read nothing from disk: the model comes as bytes and
    its external data from the verified buffers, under the names the model uses for them."""
    options = ort.SessionOptions()
    # Bytes could also be parsed as an ORT-format model, which the external-data check does not read.
    options.add_session_config_entry("session.load_model_format", "ONNX")
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", _NO_EXTERNAL_DATA_DIR)
    if external:
        names = list(external)
        buffers = [external[name] for name in names]
        options.add_external_initializers_from_files_in_memory(names, buffers, [len(b) for b in buffers])
    return options


def _session(ort, model: bytes, options, provider: str, path: Path):
    """An onnxruntime session of the verified bytes; a model onnxruntime refuses is a BundleError."""
    try:
        return ort.InferenceSession(model, options, providers=provider_chain(provider))
    except Exception as exc:  # noqa: BLE001  onnxruntime's own (Fail, InvalidProtobuf, InvalidGraph, ...)
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        reason = " ".join(str(exc).split()).removeprefix("[ONNXRuntimeError] : ")
        raise BundleError(f"onnxruntime cannot load {path / 'model.onnx'} ({reason[:200]}); "
                          "rebuild the bundle") from None


# onnxruntime's element types, as numpy names the manifest uses.
_ORT_DTYPES = {"float": "float32", "double": "float64", "float16": "float16", "bool": "bool",
               **{f"{sign}int{bits}": f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)}}


def _check_declared(path: Path, kind: str, declared: list, actual: list) -> None:
    """The manifest is not covered by a checksum: its inputs and outputs must be the model's own,
    names in order, dtypes, ranks and fixed dims, or predict would fail inside onnxruntime."""
    names = [spec.name for spec in declared]
    if names != [arg.name for arg in actual]:
        raise BundleError(f"manifest of '{path}' lists {kind} {names!r:.120}, but model.onnx has "
                          f"{[arg.name for arg in actual]!r:.120}; rebuild the bundle")
    for spec, arg in zip(declared, actual):
        dtype = _ORT_DTYPES.get(arg.type.removeprefix("tensor(").removesuffix(")"))
        # Outputs: names and dtypes only (onnxruntime may infer a shape the graph left open).
        shape = list(arg.shape) if kind == "inputs" and isinstance(arg.shape, (list, tuple)) else None
        fixed_match = shape is not None and len(shape) == len(spec.shape) and all(
            (isinstance(want, int) and have == want) or (not isinstance(want, int) and not isinstance(have, int))
            for want, have in zip(spec.shape, shape))
        if (dtype is not None and dtype != spec.dtype) or (shape is not None and not fixed_match):
            raise BundleError(f"manifest of '{path}' declares {kind[:-1]} '{spec.name}' as {spec.dtype} "
                              f"{_shape_text(spec.shape)}, but model.onnx has {dtype or arg.type} "
                              f"{_shape_text(shape or [])}; rebuild the bundle")


def _check_active(session, provider: str, device: str) -> None:
    """onnxruntime falls back to the CPU when a provider's libraries fail to load; a figure
    labelled 'gpu' must not come from the CPU, so refuse instead."""
    from edgeslim.core.errors import DeviceError

    active = session.get_providers()
    if provider not in active:
        raise DeviceError(f"device '{device}' asked for {provider}, but onnxruntime could not start it "
                          f"(active: {', '.join(active)}); check its libraries (CUDA, cuDNN, TensorRT) "
                          "or pick another device")


class _InputCheck:
    """One input's rule, prepared at load so that each predict checks in a few microseconds."""

    def __init__(self, spec: TensorSpec):
        self.spec = spec
        self.name = spec.name
        self.dtype = np.dtype(spec.dtype)
        self.rank = len(spec.shape)
        self.fixed = [(axis, dim) for axis, dim in enumerate(spec.shape) if isinstance(dim, int)]

    def __call__(self, value) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            if hasattr(value, "detach"):  # a torch tensor, converted without importing torch
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
        if value.dtype != self.dtype:
            raise InputError(f"input '{self.name}' must be {self.spec.dtype}, got {value.dtype}; "
                             f"convert it with .astype(np.{self.spec.dtype})")
        shape = value.shape
        if len(shape) != self.rank:
            raise InputError(f"input '{self.name}' must have shape {_shape_text(self.spec.shape)} "
                             f"({self.rank} dims), got {tuple(shape)}")
        for axis, want in self.fixed:
            if shape[axis] != want:
                raise InputError(f"input '{self.name}' must have shape {_shape_text(self.spec.shape)}, "
                                 f"got {tuple(shape)} (dim {axis} should be {want})")
        return value


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
