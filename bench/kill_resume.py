"""Kill -9 at every journal point (and a seeded sample of double kills), resume, and compare with
the uninterrupted run: the figures of the README's "Long steps, Ctrl-C, kill -9 and resume".

    python bench/kill_resume.py [--every N] [--doubles N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from killresume import differences, run_trial  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="try every N-th journal point (default: all)")
    parser.add_argument("--doubles", type=int, default=10, help="seeded double kills to add (default 10)")
    args = parser.parse_args()
    started = time.monotonic()
    baseline = run_trial([]).ending
    plans = [[k] for k in range(1, baseline.events, args.every)]
    rng = random.Random(2026)
    plans += [[rng.randint(3, baseline.events - 3), rng.randint(3, 40)] for _ in range(args.doubles)]
    kinds: Counter[str] = Counter()
    matching = 0
    for kills in plans:
        trial = run_trial(kills)
        found = differences(trial.ending, baseline)
        matching += not found
        for line in found:
            kinds[line.split(": ", 1)[-1].split(" ", 1)[-1] if ": " in line else line] += 1
            print(f"  kill at {kills}: {line}", flush=True)
    print(f"journal points in the uninterrupted run: {baseline.events}")
    print(f"kill moments tried: {len(plans)} ({len(plans) - args.doubles} single, {args.doubles} double)")
    print(f"resumed runs ending as the uninterrupted one: {matching}/{len(plans)}")
    for kind in ("extra restart(s)", "detached step(s) run again", "session(s) left open", "left paused or disabled"):
        print(f"runs with {kind}: {sum(n for k, n in kinds.items() if kind in k)}")
    print(f"runs with restores left owed: {sum(n for k, n in kinds.items() if k.startswith('owes') or 'owes' in k)}")
    print(f"wall: {time.monotonic() - started:.0f} s")
    return 0 if matching == len(plans) else 1


if __name__ == "__main__":
    sys.exit(main())
