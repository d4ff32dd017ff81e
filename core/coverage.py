"""Reading an int8_coverage document (a manifest's metric): counts and names as text.

The counting itself lives in edgeslim.export.kernels; the report, the CLI and the pipeline read
the dict it wrote, which may come from a manifest on disk, so every field is checked.
"""
from __future__ import annotations

FAMILIES = ("conv", "matmul", "gemm", "attention")   # the order every summary uses


def _families(cov: dict) -> list[tuple[str, dict]]:
    """The families of a coverage dict (maybe read from a manifest) that have well-formed counts."""
    families = cov.get("families") if isinstance(cov, dict) else None
    if not isinstance(families, dict):
        return []
    return [(family, families[family]) for family in FAMILIES
            if isinstance(families.get(family), dict)
            and all(isinstance(families[family].get(key), int) for key in ("int8", "float"))]


def kernel_counts_text(cov: dict) -> str:
    """'37/37 conv, 1/1 gemm': integer kernels out of all nodes, per family present."""
    parts = [f"{entry['int8']}/{entry['int8'] + entry['float']} {family}" for family, entry in _families(cov)]
    return ", ".join(parts) if parts else "no " + ", ".join(FAMILIES[:-1]) + f" or {FAMILIES[-1]} nodes"


def coverage_text(cov: dict) -> str:
    """'int8 kernels: 37/37 conv, 1/1 gemm'."""
    return "int8 kernels: " + kernel_counts_text(cov)


def float_node_names(cov: dict) -> list[str]:
    """The names of the nodes left in float, family by family."""
    names = [entry.get("float_nodes") for _, entry in _families(cov)]
    return [str(name) for listed in names if isinstance(listed, list) for name in listed]


def mostly_float(cov: dict) -> bool:
    """Whether fewer than half of the quantizable nodes run as integer kernels (False if none)."""
    int8 = sum(entry["int8"] for _, entry in _families(cov))
    total = int8 + sum(entry["float"] for _, entry in _families(cov))
    return 2 * int8 < total


def provider_label(cov: dict) -> str:
    """'cpu' for CPUExecutionProvider, 'cuda' for CUDAExecutionProvider, ..."""
    provider = str(cov.get("provider") or "?") if isinstance(cov, dict) else "?"
    return provider.removesuffix("ExecutionProvider").lower()
