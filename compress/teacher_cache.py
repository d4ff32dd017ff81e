"""The teacher's outputs over the training batches, computed once and read back memory-mapped.

Distillation runs the teacher on every batch of every epoch; its outputs never change (the teacher is
frozen, in eval mode, and the batches are fixed lists). Running it once and keeping its outputs on disk
makes every epoch after the first cheaper, and lets a teacher too large to sit beside the student on
the GPU be moved away before the student trains. The outputs are the same numbers either way.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

CACHE_CHOICES = ("auto", "on", "off")


def wanted(choice: str, epochs: int, matches_features: bool) -> bool:
    """Whether to cache: "auto" caches from two epochs on (one epoch gains nothing); feature matching needs
    the teacher's inner activations every step, so it keeps the live teacher."""
    if matches_features:
        return False
    return choice == "on" or (choice == "auto" and epochs >= 2)


class TeacherOutputs:
    """outputs[i]: the teacher's (first) output for batch i, as a tensor on `device`."""

    def __init__(self, folder: Path, device):
        self.folder, self.device = folder, device
        self.index = json.loads((folder / "index.json").read_text())
        self.values = self._open()

    def _open(self):
        import numpy as np

        if not self.index["batches"]:
            return None
        return np.memmap(self.folder / "outputs.bin", dtype=self.index["dtype"], mode="r")

    def __len__(self) -> int:
        return len(self.index["batches"])

    def __getitem__(self, batch: int):
        import numpy as np
        import torch

        offset, shape = self.index["batches"][batch]
        count = int(np.prod(shape))
        values = np.array(self.values[offset:offset + count]).reshape(shape)  # a copy: the map stays read-only
        return torch.from_numpy(values).to(self.device)

    def remove(self) -> None:
        """The fit finished: nothing to resume, so the cache goes (an interrupted fit keeps it)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def teacher_outputs(teacher, batches: list, device, root: Path) -> TeacherOutputs:
    """The cache for this teacher and these batches: found under `root` by their digests, else made."""
    from edgeslim.core.data import data_digest
    from edgeslim.core.model_io import state_digest

    inputs = data_digest([inputs for inputs, _ in batches])  # the teacher's outputs depend on the inputs alone
    key = hashlib.sha256(f"{state_digest(teacher)}:{inputs}".encode()).hexdigest()[:20]
    folder = root / key
    if not (folder / "index.json").is_file():
        _write(teacher, batches, device, folder)
    return TeacherOutputs(folder, device)


def _write(teacher, batches: list, device, folder: Path) -> None:
    """Run the teacher once over `batches` into a temporary folder, then rename it into place."""
    import numpy as np
    import torch

    from edgeslim.compress.train import first_output
    from edgeslim.core.model_io import run_model

    staging = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries, offset, dtype = [], 0, "float32"
    teacher.to(device).eval()
    with open(staging / "outputs.bin", "wb") as sink, torch.no_grad():
        for inputs, _ in batches:
            output = first_output(run_model(teacher, inputs, device)).float().cpu().numpy()
            sink.write(np.ascontiguousarray(output, dtype=dtype).tobytes())
            entries.append([offset, list(output.shape)])
            offset += output.size
    (staging / "index.json").write_text(json.dumps({"dtype": dtype, "batches": entries}))
    try:
        os.replace(staging, folder)
    except OSError:  # another process made it meanwhile: theirs is the same
        shutil.rmtree(staging, ignore_errors=True)
