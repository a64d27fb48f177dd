"""Start-up time of the ``graphtag`` command, against ``python -c "import onnx"``.

    python bench/bench_startup.py --repeat 15

Each command runs as its own process (``python -m graphtag ...``), interleaved with the
baseline in every round so that load on the machine hits both alike; the figure is the
median wall time per command. Goals: ``--version``, ``--help`` and ``COMMAND --help`` in
<= 0.3 s; ``validate``, ``analyze`` and ``run`` on a small tagged model (tests/reliability_models.py: If, Loop, a function) in <= 1.2x the
time of ``import onnx``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _time(argv: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    from reliability_models import control_flow_model

    import graphtag

    py = [sys.executable]
    gt = [*py, "-m", "graphtag"]
    with tempfile.TemporaryDirectory(prefix="graphtag-startup-") as folder:
        model = str(graphtag.save(control_flow_model(), Path(folder) / "small.onnx"))
        out = str(Path(folder) / "out.onnx")
        cases = {
            'python -c "import onnx"': [*py, "-c", "import onnx"],
            "graphtag --version": [*gt, "--version"],
            "graphtag --help": [*gt, "--help"],
            "graphtag run --help": [*gt, "run", "--help"],
            "graphtag export --help": [*gt, "export", "--help"],
            "graphtag validate SMALL": [*gt, "validate", model],
            "graphtag analyze SMALL": [*gt, "analyze", model],
            "graphtag run SMALL -p toposort": [*gt, "run", model, "-p", "toposort", "-o", out],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for argv in cases.values():  # one warm-up each (page cache, .pyc files)
            _time(argv)
        for _ in range(args.repeat):
            for name, argv in cases.items():
                times[name].append(_time(argv))
    base = statistics.median(times['python -c "import onnx"'])
    load = os.getloadavg()[0]
    print(f"medians of {args.repeat} runs, interleaved; load average {load:.2f} at the end")
    print("| command | median s | / import onnx |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {median / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
