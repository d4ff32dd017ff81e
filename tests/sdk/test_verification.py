"""What the SDK verifies is what runs: every file the model reads is listed and checked, no link
leads out of the bundle, hostile manifests and thread counts fail fast, and the session is built
from the checked bytes. Real files, real onnx and real onnxruntime throughout."""
import hashlib
import json
import os
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

from edgeslim.core.errors import ConfigError
from edgeslim.core.limits import MANIFEST_MAX_BYTES, host_cores
from edgeslim.sdk import BUNDLE_FORMAT, BundleError, load, read_manifest, verify_files
from edgeslim.sdk.protowire import WireError, external_data_locations, external_data_references

SIZE = 64
X = np.random.default_rng(0).standard_normal((3, SIZE)).astype(np.float32)


def _weight(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((SIZE, SIZE)).astype(np.float32)


def _io(name: str, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    """y = x @ W, with W a 64x64 initializer."""
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
                              [_io("x", ["batch", SIZE])], [_io("y", ["batch", SIZE])],
                              [numpy_helper.from_array(weight, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _branchy_model() -> onnx.ModelProto:
    """Tensors in every place onnx's external-data helper looks: a main-graph initializer, an
    initializer inside an If branch, a Constant node's tensor attribute in the other branch, and
    a Constant inside a model-local function. z = bias(If(cond, x @ T, x @ C) @ W)."""
    then_branch = helper.make_graph([helper.make_node("MatMul", ["x", "T"], ["t_out"])], "then", [],
                                    [_io("t_out", ["batch", SIZE])], [numpy_helper.from_array(_weight(2), "T")])
    constant = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(_weight(3), "C"))
    else_branch = helper.make_graph([constant, helper.make_node("MatMul", ["x", "c"], ["e_out"])], "else", [],
                                    [_io("e_out", ["batch", SIZE])])
    bias = helper.make_node("Constant", [], ["bias"],
                            value=numpy_helper.from_array(np.arange(SIZE, dtype=np.float32), "B"))
    function = helper.make_function("local", "AddBias", ["a"], ["b"],
                                    [bias, helper.make_node("Add", ["a", "bias"], ["b"])],
                                    [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("If", ["cond"], ["chosen"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("MatMul", ["chosen", "W"], ["m"]),
             helper.make_node("AddBias", ["m"], ["z"], domain="local")]
    graph = helper.make_graph(nodes, "branchy",
                              [_io("x", ["batch", SIZE]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [_io("z", ["batch", SIZE])], [numpy_helper.from_array(_weight(1), "W")])
    return helper.make_model(graph, functions=[function],
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])


def _save(model: onnx.ModelProto, folder, external: bool = False, one_file: bool = True,
          location: str = "model.onnx.data") -> None:
    """onnx.save into folder/model.onnx; external=True puts every tensor in external data."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save moves the weights out of the proto it is given
    onnx.save(copy, folder / "model.onnx", save_as_external_data=external, all_tensors_to_one_file=one_file,
              location=location, size_threshold=0, convert_attribute=True)


def _write_manifest(folder, files=None, inputs=None, outputs=None) -> None:
    """manifest.json listing `files` (default: every file in the folder) with their sha256."""
    files = sorted(p.name for p in folder.iterdir()) if files is None else files
    manifest = {"format": BUNDLE_FORMAT, "name": folder.name,
                "inputs": inputs or [{"name": "x", "dtype": "float32", "shape": ["batch", SIZE]}],
                "outputs": outputs or [{"name": "y", "dtype": "float32", "shape": ["batch", SIZE]}],
                "sha256": {name: _sha(folder / name) for name in files}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _bundle(tmp_path, name="bundle", weight_seed=1, external=True, files=None):
    folder = tmp_path / name
    _save(_matmul_model(_weight(weight_seed)), folder, external=external)
    _write_manifest(folder, files)
    return folder


def _expected(weight_seed=1) -> np.ndarray:
    return X @ _weight(weight_seed)


def _refused(call, fragment: str) -> str:
    with pytest.raises(BundleError) as caught:
        call()
    message = str(caught.value)
    assert fragment in message, message
    return message


# -- (a) and (b): every file the model reads is listed and checked ------------------------------

def test_external_data_the_manifest_does_not_list_is_refused(tmp_path, cli):
    bundle = _bundle(tmp_path, files=["model.onnx"])  # the probe's bundle: weights outside the manifest
    fragment = "reads external data from 'model.onnx.data', which the manifest's sha256 does not list"
    _refused(lambda: load(bundle), fragment)
    _refused(lambda: verify_files(bundle, read_manifest(bundle)), fragment)
    result = cli("inspect", bundle)
    assert result.exit_code == 2 and fragment in result.stderr
    # Whatever the unlisted file holds, no session is ever built from it.
    (bundle / "model.onnx.data").write_bytes(bytes((bundle / "model.onnx.data").stat().st_size))
    _refused(lambda: load(bundle), fragment)
    _refused(lambda: load(bundle, verify=False), fragment)


def test_changed_external_data_is_refused_without_printing_digests(tmp_path):
    bundle = _bundle(tmp_path)
    data = bundle / "model.onnx.data"
    listed = json.loads((bundle / "manifest.json").read_text())["sha256"]["model.onnx.data"]
    data.write_bytes(_weight(7).tobytes())  # same size, other weights
    message = _refused(lambda: load(bundle), f"{data} was changed after the bundle was written")
    assert listed[:8] not in message and _sha(data)[:8] not in message
    # verify=False skips only the hash compare: the changed weights are what runs.
    np.testing.assert_allclose(load(bundle, verify=False).predict(X), X @ _weight(7), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.data", "sub/../../outside.data",
                                      "*/_ORT_MEM_ADDR_/*"])
def test_external_data_outside_the_bundle_is_refused(tmp_path, location):
    bundle = _bundle(tmp_path)
    model = onnx.load(bundle / "model.onnx", load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, bundle / "model.onnx")
    _write_manifest(bundle)
    _refused(lambda: load(bundle), f"reads external data from {location!r}, outside the bundle")


# -- (c): a correct external-data bundle runs, from memory --------------------------------------

def test_external_data_bundle_predicts_like_embedded_weights(tmp_path):
    embedded = load(_bundle(tmp_path, "embedded", external=False)).predict(X)
    external = load(_bundle(tmp_path, "external")).predict(X)
    np.testing.assert_array_equal(external, embedded)
    np.testing.assert_allclose(external, _expected(), rtol=1e-5, atol=1e-4)


def _two_tensor_model() -> onnx.ModelProto:
    """y = (x @ W) @ C with W an initializer and C a Constant node's tensor, both in the main graph."""
    constant = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(_weight(3), "C"))
    graph = helper.make_graph([constant, helper.make_node("MatMul", ["x", "W"], ["m"]),
                               helper.make_node("MatMul", ["m", "c"], ["y"])], "two",
                              [_io("x", ["batch", SIZE])], [_io("y", ["batch", SIZE])],
                              [numpy_helper.from_array(_weight(1), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bundle_written_by_edgeslim_with_external_data_loads(tmp_path, monkeypatch):
    """export.bundle.save_model's external-data layout (used above 1 GiB), forced on a small model."""
    from edgeslim.export import bundle as export_bundle

    monkeypatch.setattr(export_bundle, "EXTERNAL_DATA_BYTES", 0)
    model = _matmul_model(_weight(1))
    files = export_bundle.save_model(model, tmp_path)
    assert files == ["model.onnx", "model.onnx.data"]
    manifest = export_bundle.manifest_for(model, "big", files, tmp_path, [], {})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest, default=str))
    np.testing.assert_allclose(load(tmp_path).predict(X), _expected(), rtol=1e-5, atol=1e-4)


def test_main_graph_tensors_in_many_files_load_from_memory(tmp_path):
    """An initializer and a Constant's tensor, each in its own file, handed over under its own name."""
    _save(_two_tensor_model(), tmp_path / "many", external=True, one_file=False)
    _write_manifest(tmp_path / "many")
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["C", "W", "manifest.json", "model.onnx"]
    _save(_two_tensor_model(), tmp_path / "embedded")
    _write_manifest(tmp_path / "embedded")
    got = load(tmp_path / "many").predict(X)
    np.testing.assert_array_equal(got, load(tmp_path / "embedded").predict(X))
    np.testing.assert_allclose(got, X @ _weight(1) @ _weight(3), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("one_file", [True, False])
def test_external_tensors_outside_the_main_graph_are_refused(tmp_path, one_file):
    """onnxruntime reads subgraph and function tensors from disk, not from the verified buffers:
    such a bundle is refused before a session exists, not run on bytes read after the check."""
    spec = {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", SIZE]},
                       {"name": "cond", "dtype": "bool", "shape": []}],
            "outputs": [{"name": "z", "dtype": "float32", "shape": ["batch", SIZE]}]}
    _save(_branchy_model(), tmp_path / "b", external=True, one_file=one_file)
    _write_manifest(tmp_path / "b", **spec)
    message = _refused(lambda: load(tmp_path / "b"), "keeps tensors of a subgraph, function or sparse initializer")
    assert ("'model.onnx.data'" if one_file else "'B'") in message
    _refused(lambda: verify_files(tmp_path / "b", read_manifest(tmp_path / "b")), "rebuild the bundle with those")
    # The same model with its weights embedded runs.
    _save(_branchy_model(), tmp_path / "embedded")
    _write_manifest(tmp_path / "embedded", **spec)
    got = load(tmp_path / "embedded").predict({"x": X, "cond": np.array(True)})
    np.testing.assert_allclose(got, X @ _weight(2) @ _weight(1) + np.arange(SIZE), rtol=1e-4, atol=1e-3)


# -- (d): symbolic links ------------------------------------------------------------------------

@pytest.fixture(params=["dir_fd", "by path"])
def opener(request, monkeypatch):
    """Each link test runs through both ways of opening: relative to a directory descriptor
    (POSIX) and the by-path check used where the OS has no dir_fd (Windows)."""
    import edgeslim.sdk.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "_OPEN_AT", request.param == "dir_fd" and bundle_module._OPEN_AT)
    return request.param


def test_both_openers_load_a_sound_bundle(tmp_path, opener):
    np.testing.assert_allclose(load(_bundle(tmp_path)).predict(X), _expected(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("listed_digest", ["of the target", "wrong"])
def test_manifest_entry_linking_out_of_the_bundle_is_refused_without_its_digest(tmp_path, opener, listed_digest):
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"root:$6$not-for-you\n")
    bundle = _bundle(tmp_path, external=False)
    (bundle / "extra.bin").symlink_to(secret)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"]["extra.bin"] = _sha(secret) if listed_digest == "of the target" else "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    message = _refused(lambda: load(bundle), f"{bundle / 'extra.bin'} is a symbolic link")
    assert _sha(secret)[:8] not in message
    _refused(lambda: verify_files(bundle, manifest), "is a symbolic link")


def test_directory_link_inside_a_listed_path_is_refused(tmp_path, opener):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "extra.bin").write_bytes(b"elsewhere")
    bundle = _bundle(tmp_path, external=False)
    (bundle / "sub").symlink_to(outside, target_is_directory=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"]["sub/extra.bin"] = _sha(outside / "extra.bin")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _refused(lambda: load(bundle), f"{bundle / 'sub'} is a symbolic link")


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data", "manifest.json"])
def test_bundle_file_that_is_a_link_is_refused(tmp_path, opener, name):
    """The link points at the right bytes, so only the no-follow rule can refuse it."""
    bundle = _bundle(tmp_path)
    moved = tmp_path / f"real-{name}"
    os.rename(bundle / name, moved)
    (bundle / name).symlink_to(moved)
    _refused(lambda: load(bundle), f"{bundle / name} is a symbolic link")


def test_fifo_in_place_of_a_listed_file_is_refused_without_blocking(tmp_path, opener):
    bundle = _bundle(tmp_path, external=False)
    os.mkfifo(bundle / "extra.bin")  # opening a FIFO for reading would wait for a writer forever
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["sha256"]["extra.bin"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _refused(lambda: load(bundle), f"{bundle / 'extra.bin'} is not a regular file")


# -- (e): the wire walker agrees with onnx ------------------------------------------------------

def _onnx_locations(path) -> set:
    model = onnx.load(path, load_external_data=False)
    return {ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)}


@pytest.mark.parametrize("one_file", [True, False])
def test_walker_finds_what_onnx_finds(tmp_path, one_file):
    _save(_branchy_model(), tmp_path, external=True, one_file=one_file, location="weights.bin")
    found = external_data_locations((tmp_path / "model.onnx").read_bytes())
    assert found == _onnx_locations(tmp_path / "model.onnx")
    assert found == ({"weights.bin"} if one_file else {"W", "T", "C", "B"})
    # Only W, a main-graph initializer, is one onnxruntime takes from memory.
    references = external_data_references((tmp_path / "model.onnx").read_bytes())
    assert references == ({"weights.bin": False} if one_file else {"W": True, "T": False, "C": False, "B": False})


def test_walker_also_reads_sparse_and_training_tensors(tmp_path):
    """Places onnx's helper skips but a model may still use: a sparse initializer's values and
    indices, and a training graph's initializer."""
    def external(tensor, location):
        tensor.data_location = TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=location)
        return tensor

    model = _matmul_model(_weight(1))
    values = external(numpy_helper.from_array(np.ones(2, np.float32), "sv"), "sparse_values.bin")
    indices = external(numpy_helper.from_array(np.array([0, 5], np.int64), "si"), "sparse_indices.bin")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [8]))
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], []))
    training.initialization.initializer.append(external(numpy_helper.from_array(_weight(4), "tw"), "train.bin"))
    found = external_data_locations(model.SerializeToString())
    assert found == {"sparse_values.bin", "sparse_indices.bin", "train.bin"}


def _length_delimited(field: int, payload: bytes) -> bytes:
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def test_walker_survives_deep_subgraphs_and_refuses_broken_bytes():
    """5,000 If-in-If levels would exhaust a recursive walk; the innermost tensor is still found."""
    entry = _length_delimited(1, b"location") + _length_delimited(2, b"deep.bin")
    graph = _length_delimited(5, _length_delimited(13, entry))              # initializer with external data
    for _ in range(5000):
        graph = _length_delimited(1, _length_delimited(5, _length_delimited(6, graph)))  # node.attribute.g
    model = _length_delimited(7, graph)
    assert external_data_locations(model) == {"deep.bin"}
    with pytest.raises(WireError):
        external_data_locations(model[:-3])
    with pytest.raises(WireError):
        external_data_locations(b"\x0b\x00")  # a start-group wire type


# -- (f): hostile manifests fail fast -----------------------------------------------------------

def test_deeply_nested_manifest_is_refused(tmp_path):
    bundle = _bundle(tmp_path)
    (bundle / "manifest.json").write_text('{"format": ' + "[" * 200_000 + "]" * 200_000 + "}")
    started = time.perf_counter()
    _refused(lambda: load(bundle), "nested deeper than")
    assert time.perf_counter() - started < 2


def test_oversized_manifest_is_refused_before_reading(tmp_path):
    bundle = _bundle(tmp_path)
    os.truncate(bundle / "manifest.json", 400 << 20)  # sparse: large at once, no disk used
    started = time.perf_counter()
    _refused(lambda: load(bundle), f"over the limit of {MANIFEST_MAX_BYTES:,}")
    assert time.perf_counter() - started < 1


# -- (g): threads -------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [3000, 0, -1, host_cores() + 1, 2.5])
def test_thread_counts_outside_the_host_are_refused_at_once(tmp_path, threads):
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "not-even-a-bundle", threads=threads)  # checked before the bundle is read
    assert time.perf_counter() - started < 0.5
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert f"threads={threads!r} is not allowed" in message and f"from 1 to {host_cores()}" in message


def test_thread_counts_within_the_host_load(tmp_path):
    bundle = _bundle(tmp_path)
    for threads in (None, 1, host_cores()):
        np.testing.assert_allclose(load(bundle, threads=threads).predict(X), _expected(), rtol=1e-5, atol=1e-4)


# -- (h): the session runs the checked bytes ----------------------------------------------------

def _swapping_session(monkeypatch, bundle, other):
    """Make onnxruntime's constructor first swap the bundle's files for `other`'s: an attacker
    winning the race between the sha256 check and the session's creation."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def swap_then_build(*args, **kwargs):
        for name in ("model.onnx", "model.onnx.data"):
            if (other / name).exists():
                (bundle / name).write_bytes((other / name).read_bytes())
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", swap_then_build)


@pytest.mark.parametrize("external", [False, True])
def test_files_swapped_between_check_and_session_do_not_run(tmp_path, monkeypatch, external):
    bundle = _bundle(tmp_path, "bundle", weight_seed=1, external=external)
    other = _bundle(tmp_path, "other", weight_seed=9, external=external)
    _swapping_session(monkeypatch, bundle, other)
    model = load(bundle)
    assert _sha(bundle / "model.onnx") == _sha(other / "model.onnx")  # the swap did happen
    np.testing.assert_allclose(model.predict(X), _expected(1), rtol=1e-5, atol=1e-4)
    assert not np.allclose(model.predict(X), _expected(9), atol=1e-2)


def test_files_replaced_after_load_do_not_change_predictions(tmp_path):
    bundle = _bundle(tmp_path, "bundle", weight_seed=1)
    other = _bundle(tmp_path, "other", weight_seed=9)
    model = load(bundle)
    for name in ("model.onnx", "model.onnx.data"):
        (bundle / name).write_bytes((other / name).read_bytes())
    np.testing.assert_allclose(model.predict(X), _expected(1), rtol=1e-5, atol=1e-4)
