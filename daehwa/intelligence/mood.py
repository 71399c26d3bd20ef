"""The mood of a user's message: positive / neutral / negative with a confidence.

The classifier is a multinomial logistic regression over the message's multilingual-e5-small vector, the same
``turn.query_vector`` the context engine computed for recall (so mood costs one 3x384 matrix product, not a second
embedding). Its weights (``data/mood.npz``, ~3 KB) are trained by ``benchmarks/train_mood.py`` on
``data/mood_rows.tsv`` (chat messages written for daehwa) and a public sample of KOTE (Korean comments with emotion
labels, MIT, ``benchmarks/data/kote``); both held-out accuracies are stored in the file and shown by
``benchmarks/bench_intelligence.py``.

Without a vector (no embedding model installed) a small keyword list answers instead, with a low confidence and
``method = "keywords"``: a fallback, never the main classifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABELS = ("negative", "neutral", "positive")
DATA_DIR = Path(__file__).parent / "data"
WEIGHTS = DATA_DIR / "mood.npz"
ROWS = DATA_DIR / "mood_rows.tsv"


@dataclass(frozen=True, slots=True)
class Mood:
    label: str  # one of LABELS
    confidence: float  # 0..1, the classifier's probability of ``label``
    method: str = "model"  # "model" (embedding classifier) or "keywords" (fallback)

    def as_meta(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": round(self.confidence, 3), "method": self.method}


class MoodModel:
    """Softmax regression ``p = softmax(W x + b)`` over a unit-length embedding ``x``."""

    def __init__(
        self,
        weights: Any,
        bias: Any,
        labels: Sequence[str],
        *,
        accuracy: float | None = None,
        public_accuracy: float | None = None,
    ) -> None:
        import numpy as np

        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.labels = tuple(labels)
        self.accuracy = accuracy  # held-out accuracy on daehwa's own chat rows
        self.public_accuracy = public_accuracy  # held-out accuracy on the public KOTE sample
        if self.weights.shape != (len(self.labels), self.bias.shape[0]) and self.weights.shape[0] != len(self.labels):
            raise ValueError("mood weights do not match their labels: retrain with benchmarks/train_mood.py")

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> MoodModel:
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            accuracy = float(data["accuracy"]) if "accuracy" in data else None
            public = float(data["public_accuracy"]) if "public_accuracy" in data else None
            labels = [str(x) for x in data["labels"]]
            return cls(data["weights"], data["bias"], labels, accuracy=accuracy, public_accuracy=public)

    def save(self, path: Path, **extra: Any) -> None:
        import numpy as np

        np.savez_compressed(
            path, weights=self.weights.astype(np.float16), bias=self.bias, labels=np.array(self.labels), **extra
        )

    def probabilities(self, vector: Sequence[float]) -> Any:
        import numpy as np

        x = np.asarray(vector, dtype=np.float32)
        if x.shape != (self.dim,):
            raise ValueError(f"mood needs a {self.dim}-dim vector (multilingual-e5-small), got shape {x.shape}")
        z = self.weights @ x + self.bias
        z = np.exp(z - z.max())
        return z / z.sum()

    def classify(self, vector: Sequence[float]) -> Mood:
        p = self.probabilities(vector)
        i = int(p.argmax())
        return Mood(self.labels[i], float(p[i]))


# -- the fallback ----------------------------------------------------------------------------------------------------
_NEGATIVE = re.compile(
    r"슬프|속상|우울|짜증|화나|화가|힘들|외롭|불안|걱정|최악|실망|망했|망쳤|괴롭|아파|아프|눈물|무서|두려|지쳤|지쳐|억울|"
    r"\b(sad|angry|upset|depressed|lonely|anxious|worried|terrible|awful|worst|hate|frustrat\w*|annoy\w*|"
    r"disappoint\w*|scared|tired|exhausted|heartbroken|devastated)\b",
    re.IGNORECASE,
)
_POSITIVE = re.compile(
    r"기뻐|기쁘|행복|좋아요|최고|신나|신난|감사|고마|뿌듯|설레|즐거|합격|축하|다행|"
    r"\b(happy|glad|great|awesome|amazing|thanks|thank you|love|excited|wonderful|fantastic|proud|delighted)\b",
    re.IGNORECASE,
)


def keyword_mood(text: str) -> Mood:
    """The fallback when there is no embedding: counts a few feeling words (confidence at most 0.6)."""
    neg = len(_NEGATIVE.findall(text))
    pos = len(_POSITIVE.findall(text))
    if neg == pos:
        return Mood("neutral", 0.5, "keywords")
    return Mood("negative" if neg > pos else "positive", 0.6, "keywords")


def load_model(path: Path = WEIGHTS) -> MoodModel | None:
    """The shipped classifier, or None when numpy or the weights file is missing (the keyword fallback is used)."""
    try:
        return MoodModel.load(path)
    except (ImportError, OSError, KeyError, ValueError):
        return None


def read_rows(path: Path = ROWS) -> list[tuple[str, str, str]]:
    """The labelled rows ``(label, lang, text)`` of the training file."""
    rows: list[tuple[str, str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, lang, text = line.split("\t", 2)
        if label not in LABELS:
            raise ValueError(f"{path}: unknown mood label {label!r} (use one of {', '.join(LABELS)})")
        rows.append((label, lang, text))
    return rows
