"""Layer sensitivity and accuracy-controlled INT8 on the exported ONNX model.

Each quantizable layer (Conv, Gemm, MatMul) is scored twice, like AIMET's quant analyzer: the
accuracy when it *alone* is left in float (all others INT8), and when it alone is quantized.
Accuracy control then returns layers to float, most sensitive first, until the drop against fp32
is within the limit; it always keeps the best model it found.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgeslim.core.progress import log, progress

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantizable_layers(model) -> list[tuple[str, str]]:
    """(node name, op type) of each layer NNCF may quantize, in graph order."""
    return [(node.name, node.op_type) for node in model.graph.node if node.op_type in QUANTIZABLE_OPS]


def evaluate_proto(model, batches: list, input_names: list[str], metric) -> float:
    """The metric of an in-memory ONNX model on (inputs, labels) batches, through onnxruntime."""
    import onnxruntime as ort

    from edgeslim.core.axes import output_batch_axes
    from edgeslim.core.data import feed_for
    from edgeslim.core.evaluate import evaluate

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def predict(inputs):  # by name, so a metric that names outputs gets them here as everywhere
        return dict(zip(names, session.run(None, feed_for(inputs, input_names))))

    axes = output_batch_axes(predict, batches[0][0]) if batches else {}
    return evaluate(predict, batches, metric, batch_axis=axes)


class Quantizer:
    """NNCF PTQ of one fp32 ONNX model with a chosen set of layers kept in float, and its score."""

    def __init__(self, model, samples: list[dict], config, ctx):
        from edgeslim.compress.int8_forms import int8_settings, resolved

        if config.overflow_fix == "auto":  # the target's instruction set decides the weight range
            config = resolved(config, int8_settings(ctx.target, config.overflow_fix))
        self.model, self.samples, self.config, self.ctx = model, samples, config, ctx
        self.layers = quantizable_layers(model)
        self.val = ctx.data.need("val", "accuracy-controlled quantization")
        self.fp32_accuracy = self.score(model)
        self.runs = 0

    def quantize(self, in_float: list[str]):
        from edgeslim.compress.quantize import nncf_ptq

        self.runs += 1
        return nncf_ptq(self.model, self.samples, self.config, in_float)

    def score(self, model) -> float:
        return evaluate_proto(model, self.val, self.ctx.input_names, self.ctx.metric)


def sensitivity_table(quantizer: Quantizer, all_int8: float, both: bool = True) -> list[dict]:
    """Per layer: accuracy with it alone in float, and (if `both`) with it alone quantized.

    `all_int8` is the score with every layer quantized, which the caller has already measured.
    """
    names = [name for name, _ in quantizer.layers]
    rows = []
    with progress("sensitivity", total=len(names), unit="layers") as advance:
        for index, (name, op) in enumerate(quantizer.layers, 1):
            row = _sensitivity_row(quantizer, name, op, all_int8, both)
            rows.append(row)
            log(f"sensitivity {index}/{len(names)}: {name} ({op}) in float {row['alone_in_float']:.2f}"
                + (f", alone quantized {row['alone_quantized']:.2f}" if both else ""))
            advance()
    rows.sort(key=lambda r: (-r["gain_in_float"], -r.get("drop_quantized", 0.0)))
    return rows


def _sensitivity_row(quantizer: Quantizer, name: str, op: str, all_int8: float, both: bool) -> dict:
    row = {"layer": name, "op": op, "alone_in_float": quantizer.score(quantizer.quantize([name]))}
    row["gain_in_float"] = row["alone_in_float"] - all_int8
    if both:
        others = [layer for layer, _ in quantizer.layers if layer != name]
        row["alone_quantized"] = quantizer.score(quantizer.quantize(others))
        row["drop_quantized"] = quantizer.fp32_accuracy - row["alone_quantized"]
    return row


@dataclass
class ControlResult:
    model: object
    accuracy: float
    in_float: list
    met: bool


def allowed_drop(limit: float, relative: bool, fp32_accuracy: float) -> float:
    return limit * abs(fp32_accuracy) if relative else limit


def accuracy_controlled(quantizer: Quantizer, limit: float, relative: bool) -> tuple[ControlResult, list[dict]]:
    """Return layers to float, most sensitive first, until the drop is within `limit`."""
    allowed = allowed_drop(limit, relative, quantizer.fp32_accuracy)
    model = quantizer.quantize([])
    best = ControlResult(model, quantizer.score(model), [], False)
    log(f"accuracy control: fp32 {quantizer.fp32_accuracy:.2f}, all INT8 {best.accuracy:.2f}, "
        f"allowed drop {allowed:.3g}")
    table: list[dict] = []
    if quantizer.fp32_accuracy - best.accuracy <= allowed:
        best.met = True
        return best, table
    table = sensitivity_table(quantizer, best.accuracy, both=False)
    in_float: list[str] = []
    for row in table:
        in_float.append(row["layer"])
        model = quantizer.quantize(in_float)
        accuracy = quantizer.score(model)
        log(f"accuracy control: {len(in_float)} layer(s) in float -> {accuracy:.2f}")
        if accuracy > best.accuracy:
            best = ControlResult(model, accuracy, list(in_float), False)
        if quantizer.fp32_accuracy - accuracy <= allowed:
            best = ControlResult(model, accuracy, list(in_float), True)
            break
    return best, table
