"""Word filter quality on labelled Korean comments: precision and recall of "blocked" (hate/offensive vs none).

    python benchmarks/filter_quality.py [--split dev|train] [--show 10]

Runs several configurations, so each part's effect is visible: the shared public lists alone, the product's own
list alone, and both together. Prints the false positives (ordinary comments blocked) as they are what to fix.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

from daehwa.moderation import WordFilter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LISTS = [SHARED / "wordlists" / n for n in ("doublems_korean_bad_words.txt", "ldnoobw_ko.txt", "ldnoobw_en.txt")]


def load(split: str) -> list[tuple[str, bool]]:
    with (SHARED / "eval" / f"kocohub_beep_{split}.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row["comments"], row["hate"] != "none") for row in rows]


def score(filt: WordFilter, rows: list[tuple[str, bool]]) -> tuple[float, float, int, list[str]]:
    tp = fp = fn = 0
    false_alarms = []
    for text, bad in rows:
        result = filt.check(text)
        if result.hit and bad:
            tp += 1
        elif result.hit:
            fp += 1
            false_alarms.append(f"{text}  <- {', '.join(text[m.start : m.end] for m in result.matches)}")
        elif bad:
            fn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, tp + fp, false_alarms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev", choices=["dev", "train"])
    parser.add_argument("--show", type=int, default=10, help="false positives to print per configuration")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = load(args.split)
    positives = sum(bad for _, bad in rows)
    print(f"{args.split}: {len(rows)} comments, {positives} hate/offensive, {len(rows) - positives} none")
    configs = {
        "shared lists only": WordFilter(LISTS, builtin=False),
        "product list only": WordFilter(),
        "shared + product lists": WordFilter(LISTS),
    }
    print(f"{'configuration':<26} {'precision':>9} {'recall':>7} {'blocked':>8}")
    for name, filt in configs.items():
        precision, recall, blocked, false_alarms = score(filt, rows)
        print(f"{name:<26} {precision:>9.3f} {recall:>7.3f} {blocked:>8}")
        for line in false_alarms[: args.show]:
            print(f"    false positive: {line}")


if __name__ == "__main__":
    main()
