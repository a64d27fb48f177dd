"""The five realistic bugs of issue 19, each planted in a scratch copy of the checkout,
and the non-golden tests that catch it (the checkout itself is never touched).

    python bench/planted_bugs.py [--only lca,toposort,matmul,verify,compare]

For each bug: the replacement is applied to one file of a fresh copy (it must apply
exactly once), the bug's test files run there with the golden snapshot tests
deselected (``-m`` cannot tell them apart, so ``-k 'not golden and not snapshot'``),
and the failing tests are listed. A bug no test catches is reported as MISSED.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation import _scratch

# name -> (file, original text, planted text, test files)
BUGS: dict[str, tuple[str, str, str, list[str]]] = {
    "lca": (
        "graphtag/core/hierarchy.py",
        "        del common[size:]\n",
        "        del common[size + 1 :]\n",  # one level too deep
        ["tests/test_tag_propagation.py", "tests/test_tag_pass_properties.py"],
    ),
    "toposort": (
        "passes/toposort.py",
        "        for i, node in enumerate(nodes):\n            if node.attributes.data:",
        "        for i, node in enumerate(nodes[:-1]):\n            if node.attributes.data:",
        ["tests/test_toposort.py"],
    ),
    "matmul": (
        "passes/scope_tagging.py",
        "                scopes = node.metadata_props.get(metadata.TORCH_NAME_SCOPES)\n",
        "                if node.op_type == 'MatMul':\n                    return None\n"
        "                scopes = node.metadata_props.get(metadata.TORCH_NAME_SCOPES)\n",
        ["tests/test_export_zoo.py"],
    ),
    "verify": (
        "graphtag/exporter/verify.py",
        "    _check_tolerance(rtol, atol)\n",
        "    _check_tolerance(rtol, atol)\n    rtol, atol = RTOL, ATOL\n",
        ["tests/test_verify.py"],
    ),
    "compare": (
        "graphtag/analysis/signature.py",
        "attrs = tuple(sorted((k, repr(self.attr(a))) for k, a in node.attributes.items()))",
        "attrs = tuple(sorted((k, '') for k, a in node.attributes.items()))",
        ["tests/test_compare.py"],
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BUGS))
    args = parser.parse_args()
    missed = []
    for name in args.only.split(","):
        relative, old, new, tests = BUGS[name]
        scratch = _scratch()
        try:
            path = scratch / relative
            text = path.read_text()
            count = text.count(old)
            if count < 1:
                sys.exit(f"{name}: the original text is not in {relative}")
            path.write_text(text.replace(old, new))
            env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
            start = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-n",
                    "2",
                    "-k",
                    "not golden and not snapshot",
                    "-rf",
                    *tests,
                ],
                cwd=scratch,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        failed = sorted(
            line.split()[1] for line in proc.stdout.splitlines() if line.startswith("FAILED")
        )
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
        print(f"== {name} ({relative}, {count} site(s), {seconds:.0f} s): {summary}")
        for test in failed:
            print(f"   {test}")
        if not failed:
            missed.append(name)
            print("   MISSED")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
