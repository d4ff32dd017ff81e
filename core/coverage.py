"""Reading an int8_coverage document (a manifest's metric): counts and names as text.

A family counts int8 kernels under `int8` and, where weight-only MatMulNBits ran, INT4 ones under
`int4`: both are integer kernels, named apart in the text.

The counting itself lives in edgeslim.export.kernels; the report, the CLI and the pipeline read
the dict it wrote, which may come from a manifest on disk, so every field is checked.
"""
from __future__ import annotations

FAMILIES = ("conv", "matmul", "gemm", "attention")   # the order every summary uses
LOW_BITS = ("int4", "int2")   # weight-only MatMulNBits, counted apart from int8 kernels


def _families(cov: dict) -> list[tuple[str, dict]]:
    """The families of a coverage dict (maybe read from a manifest) that have well-formed counts."""
    families = cov.get("families") if isinstance(cov, dict) else None
    if not isinstance(families, dict):
        return []
    return [(family, families[family]) for family in FAMILIES
            if isinstance(families.get(family), dict)
            and all(isinstance(families[family].get(key), int) for key in ("int8", "float"))]


def _low_bits(entry: dict) -> dict[str, int]:
    """The weight-only counts of a family entry ({'int4': 36}), well-formed ones only."""
    return {key: entry[key] for key in LOW_BITS if isinstance(entry.get(key), int) and entry[key] > 0}


def _integer(entry: dict) -> int:
    return entry["int8"] + sum(_low_bits(entry).values())


def _family_text(family: str, entry: dict) -> str:
    """'37/37 conv'; with weight-only matmuls '36/40 matmul int4', or '(12 int4)' beside int8 kernels."""
    text = f"{_integer(entry)}/{_integer(entry) + entry['float']} {family}"
    low = _low_bits(entry)
    if low and not entry["int8"] and len(low) == 1:
        return f"{text} {next(iter(low))}"
    return text + (f" ({', '.join(f'{count} {key}' for key, count in low.items())})" if low else "")


def kernel_counts_text(cov: dict) -> str:
    """'37/37 conv, 1/1 gemm': integer kernels out of all nodes, per family present ('36/36 matmul int4'
    where they are weight-only INT4)."""
    parts = [_family_text(family, entry) for family, entry in _families(cov)]
    return ", ".join(parts) if parts else "no " + ", ".join(FAMILIES[:-1]) + f" or {FAMILIES[-1]} nodes"


def coverage_text(cov: dict) -> str:
    """'int8 kernels: 37/37 conv, 1/1 gemm'; 'integer kernels: 36/40 matmul int4' where some are weight-only."""
    weight_only = any(_low_bits(entry) for _, entry in _families(cov))
    return ("integer kernels: " if weight_only else "int8 kernels: ") + kernel_counts_text(cov)


def float_node_names(cov: dict) -> list[str]:
    """The names of the nodes left in float, family by family."""
    names = [entry.get("float_nodes") for _, entry in _families(cov)]
    return [str(name) for listed in names if isinstance(listed, list) for name in listed]


def mostly_float(cov: dict) -> bool:
    """Whether fewer than half of the quantizable nodes run as integer kernels (False if none)."""
    integer = sum(_integer(entry) for _, entry in _families(cov))
    total = integer + sum(entry["float"] for _, entry in _families(cov))
    return 2 * integer < total


def provider_label(cov: dict) -> str:
    """'cpu' for CPUExecutionProvider, 'cuda' for CUDAExecutionProvider, ..."""
    provider = str(cov.get("provider") or "?") if isinstance(cov, dict) else "?"
    return provider.removesuffix("ExecutionProvider").lower()
