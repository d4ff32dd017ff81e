"""The report shows, per quantized candidate, how many layers onnxruntime runs as integer kernels."""
from edgeslim.report.html import render_html
from edgeslim.report.markdown import render_markdown


def _entry(name, size, coverage=None):
    stats = {"p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.3, "mean_ms": 1.0, "throughput": 1000.0}
    entry = {"name": name, "bundle": f"out/{name}", "size_bytes": size, "params": 1000, "accuracy": 98.0,
             "latency": {"cpu": stats}, "compression": [], "gates": {}, "passed": True}
    if coverage is not None:
        entry["int8_coverage"] = coverage
    return entry


def _coverage(conv, gemm):
    return {"provider": "CPUExecutionProvider", "int8": conv[0] + gemm[0],
            "float": conv[1] + gemm[1] - conv[0] - gemm[0],
            "weights_dequantized_per_run": 0,
            "families": {"conv": {"int8": conv[0], "float": conv[1] - conv[0], "float_nodes": []},
                         "gemm": {"int8": gemm[0], "float": gemm[1] - gemm[0], "float_nodes": []}}}


def _report(*entries):
    return {"format": "edgeslim-report/1", "baseline": "fp32", "candidates": list(entries),
            "settings": {"metric": "top1", "bench": {"runs": 10, "warmup": 2, "batch": 1}}}


def test_quantized_candidates_show_their_integer_kernels():
    report = _report(_entry("fp32", 4000), _entry("int8", 1000, _coverage((21, 21), (1, 1))),
                     _entry("int8-nncf", 1100, _coverage((3, 21), (0, 1))))
    text = render_markdown(report)
    assert "- int8 kernels (cpu): `int8`: 21/21 conv, 1/1 gemm\n" in text
    assert "- int8 kernels (cpu): `int8-nncf`: 3/21 conv, 0/1 gemm (**mostly float**" in text
    assert "`fp32`: " not in text  # the baseline measured nothing
    assert "21/21 conv, 1/1 gemm" in render_html(report)


def test_reports_without_coverage_render_as_before():
    text = render_markdown(_report(_entry("fp32", 4000), _entry("int8", 1000)))
    assert "int8 kernels" not in text and "| `int8` |" in text


def test_a_malformed_coverage_does_not_break_the_report():
    odd = {"provider": None, "families": {"conv": {"int8": "many"}, "gemm": []}}
    text = render_markdown(_report(_entry("fp32", 4000), _entry("int8", 1000, odd)))
    assert "- int8 kernels (?): `int8`: no conv, matmul, gemm or attention nodes" in text


def test_blocks_are_one_blank_line_apart_whatever_the_report_leaves_out():
    """A report like the demo's: kernel lines, then no kept-whole, slower or per-device sections, then latency."""
    report = _report(_entry("fp32", 4000), _entry("int8", 1000, _coverage((21, 21), (1, 1))))
    text = render_markdown(report)
    assert "\n\n\n" not in text, text
    assert "- int8 kernels (cpu): `int8`: 21/21 conv, 1/1 gemm\n\n## Latency\n" in text
    assert "\n\n\n" not in render_markdown(_report(_entry("fp32", 4000)))
