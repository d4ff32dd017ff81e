"""Distillation throughput, run alone or under torchrun by bench/scale.py.

A ResNet-18 student learns from a ResNet-18 teacher on synthetic 3x32x32 images (throughput needs no real
data). Alone it takes batches of ROWS rows; under N ranks each rank takes batches of ROWS / N rows, so
every step trains on the same effective batch. Rank 0 writes {samples_per_s, epoch_s, ranks, threads}.

    python bench/scale_fit.py OUT.json SAMPLES ROWS EPOCHS
    torchrun --standalone --nproc_per_node 2 bench/scale_fit.py OUT.json SAMPLES ROWS EPOCHS
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
from resnet import ResNet18  # noqa: E402

from edgeslim.compress import distributed  # noqa: E402
from edgeslim.compress.train import FitOptions, fit  # noqa: E402


def main(out: str, samples: int, rows: int, epochs: int) -> None:
    ranks = distributed.world_size()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (samples,), generator=generator)
    per_rank = rows // ranks
    batches = [(images[i:i + per_rank], labels[i:i + per_rank]) for i in range(0, samples, per_rank)]
    torch.manual_seed(0)
    teacher, student = ResNet18(channels=3).eval(), ResNet18(channels=3)
    history = []
    fit(student, batches, FitOptions(epochs=epochs, lr=1e-3, teacher_cache="off", device="cpu"), "scale",
        teacher=teacher, history=history)
    if distributed.is_writer():
        epoch_s = min(row["seconds"] for row in history)  # the first may pay for warm-up
        Path(out).write_text(json.dumps({"samples_per_s": samples / epoch_s, "epoch_s": epoch_s, "ranks": ranks,
                                         "threads": torch.get_num_threads(), "samples": samples,
                                         "effective_batch": rows}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
