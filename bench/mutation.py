"""Mutation testing of the modules that carry graphtag's guarantees (a small AST mutator).

Each mutant changes one operator or constant in one module (comparison flipped or
negated, ``and``/``or`` swapped, a ``not`` dropped, ``+``/``-`` swapped, an integer
constant off by one, ``True``/``False`` swapped, ``break``/``continue`` swapped), is
written into a scratch copy of the checkout (never into the checkout itself), and
the module's test files run against it (``pytest -x``: the first failing test kills the
mutant). The tests run in two stages: those that took under a second unmutated first,
then the slow rest, so a mutant a quick test kills costs seconds. A mutant that no test
kills *survives*; a mutant that makes a stage run past three times the module's
unmutated test time plus 30 s counts as killed (an infinite loop is caught). Logging
calls are not mutated (they change no result).

    python bench/mutation.py [--modules hierarchy,compare] [--sample N] [--seed 0]
                             [--json out.json] [--list]
                             [--mutants hierarchy#2,compare#12]

``MODULES`` maps each module to the test files that exercise it; ``--sample`` runs a
random sample of each module's mutants (all when omitted). Prints every survivor with
its line and the mutated source line.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module file -> the test files that exercise it (kept small: each mutant runs them all)
MODULES: dict[str, tuple[str, list[str]]] = {
    "hierarchy": (
        "graphtag/core/hierarchy.py",
        ["tests/test_hierarchy.py", "tests/test_tag_propagation.py"],
    ),
    "attribution": (
        "graphtag/analysis/attribution.py",
        ["tests/test_module_tree.py", "tests/test_export_zoo.py"],
    ),
    "tag-propagation": (
        "passes/tag_propagation.py",
        [
            "tests/test_tag_propagation.py",
            "tests/test_tag_pass_properties.py",
            "tests/test_scoped.py",  # the pass's scoped mode (call_scoped)
            "tests/test_export_zoo.py",
        ],
    ),
    "compare": ("graphtag/checks/compare.py", ["tests/test_compare.py"]),
    "boundaries": ("graphtag/analysis/boundaries.py", ["tests/test_boundaries.py"]),
    "extraction": ("graphtag/surgery/extraction.py", ["tests/test_extraction.py"]),
    "verify": ("graphtag/exporter/verify.py", ["tests/test_verify.py"]),
}

SWAP_COMPARE = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add}


@dataclasses.dataclass
class Mutant:
    module: str
    index: int  # position in the module's mutation order
    line: int
    what: str
    source: str = ""


def _is_logging_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in {"logger", "logging", "_log", "log"}
    )


def _sites(tree: ast.Module) -> list[tuple[ast.AST, str]]:
    """Every mutable (node, description) in source order, logging calls and annotations
    excluded."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if _is_logging_call(node):
            skip |= {id(n) for n in ast.walk(node)}
        for field in ("annotation", "returns"):
            sub = getattr(node, field, None)
            if isinstance(sub, ast.AST):
                skip |= {id(n) for n in ast.walk(sub)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAP_COMPARE:
                    found.append((node, f"compare:{i}"))
        elif isinstance(node, ast.BoolOp):
            found.append((node, "boolop"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append((node, "not"))
        elif isinstance(node, ast.BinOp) and type(node.op) in SWAP_BINOP:
            found.append((node, "binop"))
        elif isinstance(node, ast.Constant) and type(node.value) in (bool, int):
            found.append((node, "const"))
        elif isinstance(node, ast.Break | ast.Continue):
            found.append((node, "loopjump"))
    return sorted(found, key=lambda s: (s[0].lineno, s[0].col_offset, s[1]))


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST, kind: str) -> None:
        self.target, self.kind, self.what = target, kind, ""

    def visit(self, node: ast.AST) -> ast.AST:
        if node is not self.target:
            return self.generic_visit(node)
        kind = self.kind
        if kind.startswith("compare:"):
            i = int(kind.split(":")[1])
            old = node.ops[i]
            node.ops[i] = SWAP_COMPARE[type(old)]()
            self.what = f"{type(old).__name__} -> {type(node.ops[i]).__name__}"
            return node
        if kind == "boolop":
            old = node.op
            node.op = ast.Or() if isinstance(old, ast.And) else ast.And()
            self.what = f"{type(old).__name__} -> {type(node.op).__name__}"
            return node
        if kind == "not":
            self.what = "not x -> x"
            return node.operand
        if kind == "binop":
            old = node.op
            node.op = SWAP_BINOP[type(old)]()
            self.what = f"{type(old).__name__} -> {type(node.op).__name__}"
            return node
        if kind == "const":
            value = node.value
            new = (not value) if isinstance(value, bool) else value + 1
            self.what = f"{value!r} -> {new!r}"
            return ast.copy_location(ast.Constant(new), node)
        if kind == "loopjump":
            new = ast.Continue() if isinstance(node, ast.Break) else ast.Break()
            self.what = f"{type(node).__name__.lower()} -> {type(new).__name__.lower()}"
            return ast.copy_location(new, node)
        raise AssertionError(kind)


def mutants(module: str) -> list[Mutant]:
    path = ROOT / MODULES[module][0]
    tree = ast.parse(path.read_text())
    found = []
    for index, (_, kind) in enumerate(_sites(tree)):
        mutated = copy.deepcopy(tree)
        node, kind = _sites(mutated)[index]
        applier = _Apply(node, kind)
        line = node.lineno
        new_tree = applier.visit(mutated)
        ast.fix_missing_locations(new_tree)
        found.append(Mutant(module, index, line, applier.what, ast.unparse(new_tree)))
    return found


def _scratch() -> Path:
    """A copy of the checkout's tracked files (symlinks kept), caches left out."""
    folder = Path(tempfile.mkdtemp(prefix="graphtag-mutants-"))
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source, target = ROOT / name.decode(), folder / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return folder


_PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0"]
_DURATION = re.compile(r"^\s*([0-9.]+)s (?:setup|call|teardown)\s+(\S+)")
FAST = 1.0  # seconds: tests quicker than this unmutated run first (stage 1)


def _env(scratch: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}


def _baseline(scratch: Path, tests: list[str]) -> tuple[float, list[str], list[str]]:
    """Run the unmutated tests once: (seconds, fast node ids, slow node ids).

    Splitting by measured duration lets a mutant that any quick test kills die in seconds;
    only the mutants that survive the quick tests pay for the slow ones.
    """
    env = _env(scratch)
    listed = subprocess.run(
        [sys.executable, *_PYTEST, "--collect-only", *tests],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    ids = [ln.strip() for ln in listed if "::" in ln and not ln.startswith(" ")]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *_PYTEST, "-vv", "--durations=0", *tests],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        failed = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")), "")
        raise SystemExit(f"the unmutated tests fail in the scratch copy: {failed}")
    spent: dict[str, float] = {}
    for ln in proc.stdout.splitlines():
        if m := _DURATION.match(ln):
            spent[m[2]] = spent.get(m[2], 0.0) + float(m[1])
    fast = [i for i in ids if spent.get(i, 0.0) < FAST]
    slow = sorted((i for i in ids if spent.get(i, 0.0) >= FAST), key=lambda i: spent[i])
    return seconds, fast, slow


def _run_tests(scratch: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """('killed' | 'survived' | 'timeout', seconds, first failing test).

    pytest runs in a child forked from this process, which has imported torch,
    transformers, onnx and the rest once (``_preload``) but never graphtag or the tests:
    the child imports those fresh from the scratch copy, the mutant included. This saves
    the ~10-20 s of imports a new interpreter pays per mutant.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        pid = os.fork()
        if pid == 0:  # the child: pytest on the scratch copy, output to the log
            code = 3
            try:
                os.chdir(scratch)
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                import pytest

                code = int(pytest.main([*_PYTEST[2:], "-x", *tests]))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        code = None
        while time.perf_counter() - start < timeout:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        if code is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", elapsed, ""
        log.seek(0)
        lines = log.read().splitlines()
    failed = next((ln for ln in lines if ln.startswith(("FAILED", "ERROR"))), "")
    if code not in (0, 1) and not failed:
        # a crash at import or collection (exit 2-4, a signal) kills the mutant too
        failed = f"exit {code}: {(lines or ['(no output)'])[-1]}"
    return ("survived" if code == 0 else "killed"), elapsed, failed


def _preload(scratch: Path) -> None:
    """Import the heavy libraries once, before any fork (never graphtag itself)."""
    os.environ.update(_env(scratch))
    sys.path.insert(0, str(scratch))
    sys.dont_write_bytecode = True  # a mutant must never be read back from a stale .pyc
    import hypothesis  # noqa: F401
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnx_ir  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    assert not any(name.split(".")[0] == "graphtag" for name in sys.modules)


def _run_staged(scratch: Path, stages: list[list[str]], baseline: float) -> tuple[str, float, str]:
    """Run the stages in order; the first that fails kills the mutant."""
    total = 0.0
    for stage in filter(None, stages):
        status, seconds, failed = _run_tests(scratch, stage, timeout=3 * baseline + 30)
        total += seconds
        if status != "survived":
            return status, total, failed
    return "survived", total, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--sample", type=int, default=0, help="mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--mutants", help="only these, e.g. hierarchy#2,compare#12 (a re-run)")
    args = parser.parse_args()
    picked = set(args.mutants.split(",")) if args.mutants else None
    if picked:
        args.modules = ",".join(dict.fromkeys(m.split("#")[0] for m in picked))
    names = args.modules.split(",")
    chosen: list[Mutant] = []
    for name in names:
        found = mutants(name)
        if picked:
            found = [m for m in found if f"{name}#{m.index}" in picked]
        elif args.sample and len(found) > args.sample:
            found = sorted(
                random.Random(args.seed).sample(found, args.sample), key=lambda m: m.index
            )
        print(f"{name}: {len(mutants(name))} mutants, running {len(found)}", flush=True)
        chosen += found
    if args.list:
        for m in chosen:
            print(f"{m.module}#{m.index} line {m.line}: {m.what}")
        return
    scratch = _scratch()
    _preload(scratch)
    results = []
    try:
        baselines = {}
        for name in names:
            seconds, fast, slow = _baseline(scratch, MODULES[name][1])
            baselines[name] = (seconds, [fast, slow])
            print(
                f"{name}: tests pass unmutated in {seconds:.0f} s "
                f"({len(fast)} quick tests first, then {len(slow)} slow)",
                flush=True,
            )
        started = time.perf_counter()
        for m in chosen:
            relative, _ = MODULES[m.module]
            target = scratch / relative
            original = target.read_text()
            target.write_text(m.source + "\n")
            try:
                seconds_unmutated, stages = baselines[m.module]
                status, seconds, failed = _run_staged(scratch, stages, seconds_unmutated)
            finally:
                target.write_text(original)
            line = original.splitlines()[m.line - 1].strip()
            results.append(
                {
                    **dataclasses.asdict(m),
                    "source": line,
                    "status": status,
                    "seconds": round(seconds, 1),
                    "killed_by": failed,
                }
            )
            print(
                f"{m.module}#{m.index} line {m.line} {m.what:<22} {status:<8} "
                f"{seconds:5.0f} s  {failed or line}",
                flush=True,
            )
        total = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    for name in names:
        mine = [r for r in results if r["module"] == name]
        killed = sum(r["status"] != "survived" for r in mine)
        if mine:
            print(f"{name}: {killed}/{len(mine)} killed ({100 * killed / len(mine):.0f}%)")
    killed = sum(r["status"] != "survived" for r in results)
    if results:
        print(
            f"all: {killed}/{len(results)} killed ({100 * killed / len(results):.0f}%), "
            f"{total:.0f} s"
        )
    for r in results:
        if r["status"] == "survived":
            print(
                f"SURVIVED {r['module']}#{r['index']} line {r['line']}: {r['what']}: {r['source']}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
