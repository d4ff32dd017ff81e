"""Child process that loads one bundle and benchmarks it; prints one JSON line (protocol.py).

Run apart from the parent so that load time, first run and peak memory are this bundle's alone.
An EdgeslimError becomes an error line and exit status 2; anything else is a crash (a traceback).
`python -m edgeslim.devices.worker BUNDLE --device cpu --threads 2 --runs 200 --warmup 20`
"""
from __future__ import annotations

import argparse
import os
import resource
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--cores", type=int, default=0)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--io", choices=("host", "device"), default="host")
    parser.add_argument("--predict", metavar="IN.npz", help="Predict each array set in IN.npz instead of timing.")
    parser.add_argument("--save", metavar="OUT.npz", help="Where --predict writes the outputs.")
    parser.add_argument("--output", action="append", default=[], metavar="NAME",
                        help="With --predict, keep this output (repeatable; keys BATCH:POSITION); without it, "
                             "each batch's first output (key BATCH).")
    args = parser.parse_args(argv)
    if args.cores and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[:args.cores])

    from edgeslim.core.errors import EdgeslimError
    from edgeslim.devices.protocol import error_reply, reply
    from edgeslim.sdk import load

    if args.predict:
        return _predict_file(args, load)
    try:
        before_kb = _status_kb("VmRSS")
        model = load(args.bundle, device=args.provider, threads=args.threads or None)
        stats = model.benchmark(runs=args.runs, warmup=args.warmup, batch=args.batch, io=args.io)
    except EdgeslimError as exc:
        print(error_reply(exc))
        return 2
    stats["peak_rss_mb"] = _peak_rss_kb() / 1024.0
    stats["model_rss_mb"] = max(_status_kb("VmRSS") - before_kb, 0) / 1024.0
    stats["threads"] = args.threads or None
    stats["provider"] = model.provider
    print(reply(stats))
    return 0


def _predict_file(args, load) -> int:
    """The accuracy pass of a remote device: batches in (keys 'BATCH:INPUT'), outputs out: each batch's first
    output (key 'BATCH'), or the outputs named by --output (keys 'BATCH:POSITION', in the order asked)."""
    import numpy as np

    from edgeslim.core.errors import EdgeslimError, InputError, SpecError
    from edgeslim.core.evaluate import first_output
    from edgeslim.devices.protocol import error_reply, reply

    try:
        model = load(args.bundle, device=args.provider, threads=args.threads or None)
        names = [spec.name for spec in model.outputs]
        missing = [name for name in args.output if name not in names]
        if missing:
            raise SpecError(f"bundle '{model.name}' has no output {', '.join(missing)}; its outputs are "
                            f"{', '.join(names)}")
        with np.load(args.predict) as arrays:
            batches: dict[int, dict] = {}
            for key in arrays.files:
                index, _, name = key.partition(":")
                batches.setdefault(int(index), {})[name] = arrays[key]
        outputs = {}
        for index in sorted(batches):
            try:
                result = model.predict(batches[index])
            except InputError as exc:
                raise InputError(f"the data's val batch {index} does not match bundle '{model.name}': {exc}") from None
            if not args.output:
                outputs[str(index)] = first_output(result)
            by_name = result if isinstance(result, dict) else {names[0]: result}
            outputs.update({f"{index}:{position}": by_name[name] for position, name in enumerate(args.output)})
        np.savez(args.save, **outputs)
    except EdgeslimError as exc:
        print(error_reply(exc))
        return 2
    print(reply({"batches": len(batches), "provider": model.provider}))
    return 0


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _peak_rss_kb() -> int:
    """This process's peak resident memory. Linux keeps ru_maxrss across exec, so a child of a
    large parent (torch) would report the parent's peak; VmHWM belongs to the new address space."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    sys.exit(main())
