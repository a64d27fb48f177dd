"""Fuzz graphtag's commands with byte-level mutants (the long run of tests/test_fuzz.py).

    python bench/bench_fuzz.py --mutants 2500 --seed 0 --json fuzz.json

``--mutants`` per seed model (a small tagged MLP, and a model with an If, a Loop and a
local function: tests/onnx_builders.py, tests/reliability_models.py); each mutant goes
through load, validate, analyze, run, extract --module and extract --all in-process
(tests/fuzzing.py says what is checked). Prints the outcome counts per step and every
problem (exit 3, traceback, escaped exception, hang, file left behind, a
validate-clean mutant that save cannot write); exit status 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from fuzzing import fuzz, summarize  # noqa: E402
from test_fuzz import seed_models  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=2500, help="per seed model (2500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write counts and problems here")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphtag-fuzz-") as folder:
        folder = Path(folder)
        seeds = seed_models(folder)
        work = folder / "work"
        work.mkdir()

        def progress(done: int) -> None:
            if done % 250 == 0:
                print(f"{done} mutants, {time.perf_counter() - started:.0f} s", file=sys.stderr)

        outcomes = fuzz(seeds, args.mutants, work, seed=args.seed, progress=progress)
    seconds = time.perf_counter() - started
    counts = summarize(outcomes)
    problems = [o for o in outcomes if o.problem]
    total = args.mutants * len(seeds)
    print(f"{total} mutants ({args.mutants} per model, seed {args.seed}) in {seconds:.0f} s")
    for step, by_outcome in counts.items():
        print(f"  {step:12} " + ", ".join(f"{k}: {v}" for k, v in by_outcome.items()))
    print(f"problems: {len(problems)}")
    for o in problems[:50]:
        print(f"  mutant {o.mutant} ({o.edit}) {o.step}: {o.problem}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "mutants": total,
                    "seed": args.seed,
                    "seconds": round(seconds, 1),
                    "counts": counts,
                    "problems": [o.__dict__ for o in problems],
                },
                indent=1,
            )
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
