"""Build the user's torch model from its spec and load weights into it."""
from __future__ import annotations

from pathlib import Path

from edgeslim.core.errors import SpecError
from edgeslim.core.specs import call_factory


def load_model(spec: str, weights: str | None = None):
    import torch

    model = call_factory(spec, "model")
    if not isinstance(model, torch.nn.Module):
        raise SpecError(f"model factory {spec!r} returned a {type(model).__name__}; it must return a torch.nn.Module")
    if weights:
        load_weights(model, weights)
    return model.eval()


def read_state_dict(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in (".pt", ".pth", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise SpecError(f"weights file {path} must end in .pt, .pth or .safetensors")
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"weights file {path} could not be read ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpecError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(model, path: str | Path) -> None:
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    wrong_shape = [f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
                   for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} of another shape (first: {wrong_shape[0]})")
    if problems:
        raise SpecError(f"weights {path} do not fit the model: keys {'; '.join(problems)}; "
                        "check that the weights belong to this model factory")
    model.load_state_dict(state)


def to_args(inputs, device=None):
    """One batch's inputs as (args, kwargs) of torch tensors for model(*args, **kwargs)."""
    import torch

    def tensor(value):
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        return value.to(device) if device is not None else value

    if isinstance(inputs, dict):
        return (), {key: tensor(value) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(tensor(value) for value in inputs), {}
    return (tensor(inputs),), {}


def run_model(model, inputs, device=None):
    args, kwargs = to_args(inputs, device)
    return model(*args, **kwargs)


def training_device(wanted: str = "auto"):
    """cuda when asked for or, with "auto", when a GPU is there; else the CPU."""
    import torch

    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        from edgeslim.core.errors import ConfigError

        raise ConfigError(f"training device {wanted!r} asked for, but torch sees no CUDA GPU; use 'cpu' or 'auto'")
    return torch.device(wanted)


def count_params(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def state_digest(model) -> str:
    """sha256 of a model's weights and buffers: names, dtypes, shapes and bytes (bfloat16 too)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        # as bytes: numpy has no bfloat16
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
