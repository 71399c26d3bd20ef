"""Form extraction accuracy on Korean answers, and the CPU time of the form step per turn.

    python benchmarks/bench_forms.py [--data benchmarks/data/form_answers.jsonl] [--passes 5]

Each line of the data is one answer to the built-in reservation form (``daehwa/personas/builtin/reservation.toml``):
the field being asked (``asking``; null for a first message), the answer, the day it is read on (``today``) and the
expected values (JSON: dates as YYYY-MM-DD, times as HH:MM). ``{}`` means the answer must give no value (an invalid
one is re-asked). The extraction is the deterministic parsers only (``extract.parse_answer``), then the machine's
validation (``FormMachine.advance``); an answer counts as right when the stored values equal the expected ones
exactly, no more and no fewer. CPU per turn is ``parse_answer`` + ``advance`` over every answer, several passes,
the median per answer of the best pass (``time.process_time``, so waiting for a shared core is not counted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from datetime import date
from pathlib import Path

from daehwa.intelligence.extract import parse_answer
from daehwa.intelligence.forms import FormMachine, FormState
from daehwa.personas import PersonaCatalog

DATA = Path(__file__).resolve().parent / "data" / "form_answers.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="print every wrong answer")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    catalog = PersonaCatalog.load()
    right = 0
    by_field: Counter[str] = Counter()
    by_field_right: Counter[str] = Counter()
    cases = []
    for row in rows:
        spec = catalog.get(row["form"]).form
        assert spec is not None
        machine = FormMachine(spec)
        today = date.fromisoformat(row["today"])
        state = FormState(form=spec.name, asking=row["asking"]) if row["asking"] else machine.start()
        cases.append((spec, machine, state, row["answer"], today))
        step = machine.advance(state, row["answer"], parse_answer(spec, state, row["answer"], today), today)
        got, expected = step.state.values, row["expected"]
        ok = got == expected
        right += ok
        for name in set(expected) | set(got):
            by_field[name] += 1
            by_field_right[name] += got.get(name) == expected.get(name)
        if not ok and args.verbose:
            print(f"  wrong: {row['answer']!r}: got {got}, expected {expected}")
    print(f"answers: {len(rows)}; exactly right: {right}/{len(rows)} = {right / len(rows):.1%}")
    for name in sorted(by_field):
        print(f"  {name:6} {by_field_right[name]}/{by_field[name]}")
    medians = []
    for _ in range(args.passes):
        times = []
        for spec, machine, state, answer, today in cases:
            start = time.process_time()
            machine.advance(state, answer, parse_answer(spec, state, answer, today), today)
            times.append(time.process_time() - start)
        medians.append(statistics.median(times))
    # process_time has a coarse tick on some systems: time a whole pass as well.
    start = time.process_time()
    for spec, machine, state, answer, today in cases:
        machine.advance(state, answer, parse_answer(spec, state, answer, today), today)
    per_answer = (time.process_time() - start) / len(cases)
    print(
        f"CPU per turn (parse + advance): median {min(medians) * 1e6:.0f} µs (best of {args.passes} passes); "
        f"mean over a pass {per_answer * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    main()
