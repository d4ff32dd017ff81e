"""Find every external-data file an ONNX model names, without the onnx package.

A device may have only numpy and onnxruntime, so the SDK reads ModelProto's protobuf wire format
itself. It walks only the messages that can hold a TensorProto and, from each tensor, takes the
`location` of its external_data: the files onnxruntime will read besides model.onnx. Field
numbers are those of onnx/onnx.proto (ONNX IR, proto2).

The walk errs towards finding more: it visits every place a TensorProto may sit (training
graphs and sparse tensors included, which onnx's own external_data_helper skips), keeps
repeated occurrences of singular messages (which protobuf would merge), and refuses what it
cannot parse rather than skip it.
"""
from __future__ import annotations

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

# For each message kind on the way to a TensorProto: field number -> kind of the nested message.
# Fields absent here (names, dims, raw_data, ...) are skipped without being parsed.
_NESTED = {
    "model": {7: "graph", 20: "training_info", 25: "function"},        # ModelProto
    "training_info": {1: "graph", 2: "graph"},                           # initialization, algorithm
    "function": {7: "node", 11: "attribute"},                            # FunctionProto node, attribute_proto
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},             # node, initializer, sparse_initializer
    "node": {5: "attribute"},                                            # NodeProto.attribute
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph",    # t, g, tensors, graphs,
                  22: "sparse_tensor", 23: "sparse_tensor"},             # sparse_tensor, sparse_tensors
    "sparse_tensor": {1: "tensor", 2: "tensor"},                         # values, indices
}
# The steps that stay in the main graph: ModelProto.graph, its initializers and nodes, their
# attributes and the attributes' tensors. Any other step (a subgraph, a function, a sparse or
# training tensor) leaves it.
_MAIN_GRAPH_PATH = {"model": {"graph"}, "graph": {"node", "tensor"}, "node": {"attribute"},
                    "attribute": {"tensor"}}
_TENSOR_EXTERNAL_DATA = 13       # TensorProto.external_data: repeated StringStringEntryProto
_ENTRY_KEY, _ENTRY_VALUE = 1, 2  # StringStringEntryProto


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def external_data_locations(model: bytes) -> set[str]:
    """The `location` of every external-data entry of every TensorProto in a serialized ModelProto."""
    return set(external_data_references(model))


def external_data_references(model: bytes) -> dict[str, bool]:
    """Each external-data location in a serialized ModelProto, mapped to whether every tensor
    naming it lies in the main graph (an initializer or a node attribute there).

    onnxruntime takes only those main-graph tensors from buffers given in memory; it reads the
    others (subgraphs, functions, sparse and training tensors) from disk, so the caller needs
    to tell them apart. Iterative (an explicit stack), so a hostile model nested thousands of
    subgraphs deep cannot exhaust Python's recursion limit. Raises WireError for bytes that are
    not valid protobuf.
    """
    found: dict[str, bool] = {}
    pending = [("model", True, memoryview(model))]
    while pending:
        kind, main, message = pending.pop()
        if kind == "tensor":
            for location in _tensor_locations(message):
                found[location] = found.get(location, True) and main
            continue
        nested = _NESTED[kind]
        for field, wire, value in _fields(message):
            # A field whose wire type is not length-delimited is not that message: protobuf
            # parsers keep it as an unknown field, so it holds nothing onnxruntime reads.
            if wire == _LENGTH and field in nested:
                child = nested[field]
                pending.append((child, main and child in _MAIN_GRAPH_PATH.get(kind, ()), value))
    return found


def has_graph(model: bytes) -> bool:
    """Whether a serialized ModelProto holds a graph (an empty or foreign message holds none)."""
    return any(field == 7 and wire == _LENGTH for field, wire, _ in _fields(memoryview(model)))


def _tensor_locations(tensor: memoryview) -> list[str]:
    """The locations named by one TensorProto's external_data entries."""
    locations = []
    for field, wire, value in _fields(tensor):
        if field != _TENSOR_EXTERNAL_DATA or wire != _LENGTH:
            continue
        key = text = None
        for entry_field, entry_wire, entry_value in _fields(value):
            # A singular field seen twice takes its last value, as protobuf parsers do.
            if entry_wire == _LENGTH and entry_field == _ENTRY_KEY:
                key = bytes(entry_value)
            elif entry_wire == _LENGTH and entry_field == _ENTRY_VALUE:
                text = bytes(entry_value)
        if key == b"location":
            try:
                locations.append((text or b"").decode("utf-8"))
            except UnicodeDecodeError:
                raise WireError("an external-data location is not UTF-8") from None
    return locations


def _fields(message: memoryview):
    """Yield (field number, wire type, value) for each field of one message.

    The value is a memoryview for length-delimited fields (no copy) and None otherwise: the walk
    needs no number, only to step over it.
    """
    position, end = 0, len(message)
    while position < end:
        tag, position = _varint(message, position)
        field, wire = tag >> 3, tag & 7
        value = None
        if wire == _VARINT:
            _, position = _varint(message, position)
        elif wire == _FIXED64:
            position += 8
        elif wire == _FIXED32:
            position += 4
        elif wire == _LENGTH:
            size, position = _varint(message, position)
            value = message[position:position + size]
            position += size
        else:
            # Groups (3, 4) are deprecated and never written by onnx; refusing them keeps the
            # walk simple and can only turn away a model, never let a file through unseen.
            raise WireError(f"wire type {wire} of field {field} is not used by ONNX")
        if field == 0:
            raise WireError("a field has the number 0, which protobuf does not allow")
        if position > end:
            raise WireError("a field runs past the end of its message")
        yield field, wire, value


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    """Decode one base-128 varint at `position`; return it and the position after it."""
    result = shift = 0
    end = min(len(data), position + 10)  # a 64-bit varint takes at most 10 bytes
    while position < end:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
    raise WireError("a varint is truncated or longer than 10 bytes")
