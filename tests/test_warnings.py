"""The warnings policy: edgeslim's own use of a deprecated API fails the tests (pyproject.toml's
filterwarnings), and export hides torch's notices about its exporter, not the user's warnings."""
import warnings

import pytest


def test_a_deprecation_warning_from_edgeslim_is_an_error_in_the_tests():
    import edgeslim.core.progress

    code = compile("import warnings\nwarnings.warn('an old API', DeprecationWarning)", edgeslim.core.progress.__file__,
                   "exec")
    with pytest.raises(DeprecationWarning, match="an old API"):
        exec(code, {"__name__": "edgeslim.core.progress"})
    with warnings.catch_warnings(record=True) as caught:  # another package's: a warning, not an error
        exec(code, {"__name__": "some_library.module"})
    assert [str(w.message) for w in caught] == ["an old API"]


def test_export_hides_torch_s_exporter_notices_but_not_the_user_s_warnings():
    import torch

    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    class Loud(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            warnings.warn("from the user's model", UserWarning, stacklevel=1)
            return self.linear(x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(Loud(), torch.zeros(3, 4), ExportConfig())
    messages = [str(w.message) for w in caught]
    assert "from the user's model" in messages
    assert not [m for m in messages if "TorchScript-based ONNX export" in m or "will be removed" in m], messages
