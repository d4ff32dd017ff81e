"""Execution providers by the names users give them."""
from __future__ import annotations

from edgeslim.core.errors import DeviceError

# Short names users type, mapped to onnxruntime's provider names.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_provider(device: str) -> str:
    """Turn 'cpu', 'cuda', 'tensorrt', … or a full provider name into an available provider name."""
    wanted = PROVIDER_ALIASES.get(device.lower(), device)
    available = available_providers()
    if wanted not in available:
        raise DeviceError(
            f"device '{device}' needs {wanted}, which this onnxruntime does not offer "
            f"(available: {', '.join(available)}); install an onnxruntime build with it or pick another device")
    return wanted


def provider_chain(provider: str) -> list[str]:
    """The provider asked for, with the CPU behind it for the operators it does not cover."""
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
