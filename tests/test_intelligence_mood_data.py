"""The mood classifier's training data and its public part (benchmarks/train_mood.py, benchmarks/data/kote)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daehwa.intelligence.mood import LABELS, load_model, read_rows

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

train_mood = pytest.importorskip("train_mood")


def test_kote_emotions_map_to_a_polarity_and_mixed_rows_are_left_out() -> None:
    polarity = train_mood.kote_polarity
    assert len(train_mood.KOTE_EMOTIONS) == 44
    assert polarity(["없음", "깨달음", "당황/난처"]) == "neutral"  # "none" with at most three polar emotions
    assert polarity(["기쁨", "행복", "즐거움/신남", "어이없음"]) == "positive"  # 3 of 4 polar ones positive
    assert polarity(["슬픔", "절망", "서러움"]) == "negative"
    assert polarity(["기쁨", "행복", "슬픔", "짜증"]) is None  # mixed: not trained on, not scored
    assert polarity(["놀람", "신기함/관심"]) is None  # only emotions that count for neither side
    # every emotion is on exactly one side or counted for neither
    sides = (train_mood.POSITIVE_EMOTIONS, train_mood.NEGATIVE_EMOTIONS, train_mood.NEUTRAL_EMOTIONS)
    assert sum(len(s) for s in sides) == 44 and set().union(*sides) == set(train_mood.KOTE_EMOTIONS)


def test_the_kote_sample_keeps_its_licence_and_format() -> None:
    folder = train_mood.KOTE.parent
    assert "MIT License" in (folder / "LICENSE").read_text() and "Jeon Duyoung" in (folder / "LICENSE").read_text()
    assert "searle-j/KOTE" in (folder / "README.md").read_text()
    lines = train_mood.KOTE.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 766
    ids = set()
    for line in lines:
        row_id, text, labels = line.split("\t")
        ids.add(row_id)
        assert text.strip() and len(text) <= 70
        assert all(0 <= int(i) < 44 for i in labels.split(","))
    assert len(ids) == len(lines)
    rows = train_mood.read_kote()
    counts = {label: sum(r[0] == label for r in rows) for label in LABELS}
    assert counts == {"negative": 420, "neutral": 30, "positive": 268}


def test_held_out_rows_are_never_trained_on() -> None:
    for rows in (read_rows(), train_mood.read_kote()):
        train, held = train_mood.split(rows)
        assert len(train) + len(held) == len(rows)
        assert len(set(rows)) == len(rows) and not set(held) & set(train)
        # every (label, language) group is represented in the held-out split
        assert {(r[0], r[1]) for r in held} == {(r[0], r[1]) for r in rows}


def test_the_shipped_weights_record_both_held_out_accuracies() -> None:
    model = load_model()
    assert model is not None and model.dim == 384
    assert model.accuracy is not None and model.accuracy >= 0.9  # daehwa's own chat rows (0.971 when trained)
    assert model.public_accuracy is not None and model.public_accuracy >= 0.75  # KOTE sample (0.793 when trained)
