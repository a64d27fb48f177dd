"""Architecture sweep: export, validate and verify every model of SWEEP.toml.

    python bench/sweep/run.py -j 2                      # every model, 2 at a time
    python bench/sweep/run.py --only bert,llama,t5      # some
    python bench/sweep/run.py --markdown out/sweep.md   # also write the results table

SWEEP.toml is an ordinary ``graphtag zoo`` file (``graphtag zoo check`` reads it too);
its sources are factories in models.py. Each model runs in its own process (a crash or
a hang costs that model only) and goes through:

1. the rungs of ``graphtag export``'s default ``auto`` ladder, each measured on its own
   with the library's exporters: ``dynamo`` (the model as given), ``switches`` (dynamo
   with the config's implementation switches set to traceable variants), ``torchscript``;
   the route is the first that works (``auto``: some rung works);
2. nodes and tag coverage of the first export that worked, and ``graphtag validate``'s
   rules on it (saved and loaded back, as the command does);
3. ``graphtag verify``'s checks (optimize=False) on the export of the rung the ladder
   takes, as ``graphtag verify`` does: dynamo on the model as given, dynamo with the
   switches, or TorchScript;
4. three injected faults (faults.py), each checked on the modules it must break.

Results go to stdout as a table and to ``--json`` (default out/sweep.json).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_TOML = HERE / "SWEEP.toml"
# ---------------------------------------------------------------------------- one model


def run_model(name: str, toml: Path = DEFAULT_TOML, *, faults: bool = True) -> dict[str, Any]:
    """Everything the sweep measures for one model of ``toml`` (in this process)."""
    from graphtag.exporter.zoo import load_zoo

    entry = next((e for e in load_zoo(toml) if e.name == name), None)
    if entry is None:
        raise SystemExit(f"{toml}: no model named {name}")
    sys.path.insert(0, str(HERE))
    import models  # the sweep's own table: families and third-party helpers

    row: dict[str, Any] = {"name": name, "family": models.family(name)}
    started = time.perf_counter()
    with contextlib.chdir(toml.parent):
        try:
            _run(entry, row, faults)
        except Exception as exc:  # the model could not even be built or fed
            row["error"] = _line(exc)
            row["trace"] = traceback.format_exc(limit=-3)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _run(entry, row: dict[str, Any], faults: bool) -> None:
    from graphtag.exporter.example_inputs import check_inputs_fit, make_example_inputs
    from graphtag.exporter.sources import load_model

    loaded = load_model(entry.source)
    module = loaded.module
    inputs = loaded.example_inputs or make_example_inputs(module, loaded.config)
    check_inputs_fit(module, inputs)
    row["inputs"] = {k: _describe(v) for k, v in inputs.kwargs.items()} or {
        f"arg{i}": _describe(v) for i, v in enumerate(inputs.args)
    }

    result, route = _export_ladder(module, inputs, row)
    row["route"] = route
    row["auto"] = (
        route != "none"
    )  # graphtag export's default ladder takes the first rung that works
    if result is not None:
        row["nodes"] = result.stats.nodes
        row["tagged"] = round(result.stats.tagged_share, 4)
        row["validate"] = _validate(result)
    if route == "none":
        row["verify"] = {"skipped": "no export"}
        return
    from graphtag.exporter.exporters import DynamoExporter, TorchScriptExporter

    exporter = (  # the rung graphtag export's ladder takes, as graphtag verify does
        TorchScriptExporter()
        if route == "torchscript"
        else DynamoExporter(traceable=route == "switches")
    )
    row["verify"], state = _verify(module, inputs, exporter)
    if faults:
        row["faults"] = _faults(module, inputs, state)


def _export_ladder(module, inputs, row) -> tuple[Any, str]:
    """Each rung of graphtag's ``auto`` ladder on its own (graphtag.exporter.exporters),
    so the table shows which routes work; the route is the first that does."""
    from graphtag.exporter.exporters import DynamoExporter, TorchScriptExporter
    from graphtag.exporter.tagged_export import export

    def attempt(key: str, exporter: Any) -> Any:
        start = time.perf_counter()
        try:
            with _quiet():
                result = export(
                    module, inputs.args, inputs.kwargs, exporter=exporter, verbose=False
                )
        except Exception as exc:
            row[key] = _line(exc)
            return None
        finally:
            row[f"{key}_seconds"] = round(time.perf_counter() - start, 1)
        row[key] = "ok"
        return result

    first = attempt("dynamo", DynamoExporter())
    if first is not None:
        return first, "dynamo"
    switched = attempt("switches", DynamoExporter(traceable=True))
    if switched is not None:
        row["switched"] = sorted(switched.switches.items())
    scripted = attempt("torchscript", TorchScriptExporter())
    if switched is not None:
        return switched, "switches"
    if scripted is not None:
        return scripted, "torchscript"
    return None, "none"


def _validate(result) -> str:
    from graphtag.checks.validation import validate
    from graphtag.core.io import load

    with tempfile.TemporaryDirectory(prefix="graphtag-sweep-") as folder:
        path = Path(folder) / "model.onnx"
        result.save(path)
        report = validate(load(path), path=path)
    failed = [f"{r.rule}: {r.detail}" for r in report.results if r.status == "FAIL"]
    return "PASS" if report.passed else "FAIL " + "; ".join(failed)


def _verify(module, inputs, exporter: Any) -> tuple[dict[str, Any], Any]:
    from graphtag.exporter.switches import implementation_switches
    from graphtag.exporter.tagged_export import export
    from graphtag.exporter.verify import capture_calls, check_export

    start = time.perf_counter()
    with _quiet():
        result = export(
            module, inputs.args, inputs.kwargs, exporter=exporter, optimize=False, verbose=False
        )
    names = {info.tag: info.name for info in result.hierarchy}
    with implementation_switches(module, result.switches):  # PyTorch as the export ran
        captured = capture_calls(module, inputs, names)
    checks = check_export(result, module, inputs, captured=captured)
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    rel = [c.max_rel_diff for c in checks if c.max_rel_diff is not None]
    absolute = [c.max_abs_diff for c in checks if c.max_abs_diff is not None]
    summary = {
        "counts": counts,
        "max_rel_diff": max(rel, default=None),
        "max_abs_diff": max(absolute, default=None),
        "internal": sum(c.internal for c in checks),
        "problems": [
            f"{c.tag}: {c.status_text() if c.status != 'MISMATCH' else c.reason}"
            for c in checks
            if c.status not in ("OK", "NOT-EXECUTED")
        ],
        "seconds": round(time.perf_counter() - start, 1),
    }
    return summary, SimpleNamespace(result=result, captured=captured)


def _faults(module, inputs, state) -> dict[str, Any]:
    import faults as injectors

    from graphtag.exporter.verify import compare_modules, graph_feeds, run_all_values

    found: dict[str, Any] = {}
    hierarchy = list(state.result.hierarchy)
    clean = state.result.model
    feeds = graph_feeds(clean, module, inputs)
    clean_values = run_all_values(clean, feeds)
    for kind, inject in injectors.INJECTORS.items():
        visible = False
        for skip in range(_MAX_TRIES if kind in ("initializer", "node") else 1):
            model = injectors.copy_model(clean)
            fault = inject(model, skip) if skip else inject(model)
            if fault is None:
                break
            try:
                values = {**run_all_values(model, feeds), **feeds}
            except Exception as exc:  # the whole model no longer runs: caught everywhere
                values, visible = exc, True
                break
            if kind == "initializer":
                visible = _ort_sees(clean, fault.modules, clean_values, values)
            elif kind == "node":  # the dropped node's output is gone: any value downstream
                visible = _differs(clean_values, values)
            else:
                visible = True
            if visible:
                break
        if fault is None or not visible:
            why = "no candidate" if fault is None else f"ORT sees none of {_MAX_TRIES} candidates"
            found[kind] = {"caught": None, "detail": why}
            continue
        if isinstance(values, Exception):
            found[kind] = {"caught": True, "detail": fault.detail, "statuses": _line(values)}
            continue
        wanted = [info for info in hierarchy if info.tag in fault.modules]
        checks = compare_modules(model, wanted, state.captured, values)
        statuses = {c.tag: c.status for c in checks}
        caught = bool(checks) and all(c.failed for c in checks)
        found[kind] = {"caught": caught, "detail": fault.detail, "statuses": statuses}
    return found


_MAX_TRIES = 10  # weights (nodes) tried until ONNX Runtime itself sees the fault


def _ort_sees(model, tags, clean: dict[str, Any], faulty: dict[str, Any]) -> bool:
    """Whether a module output differs between the clean and faulted graphs in ORT.

    The same tolerance verify uses by default (rtol 1e-3, atol 1e-4 scaled by the largest
    clean magnitude): independent of verify's code, so a fault kept here is one the
    model can see, and verify missing it is verify's failure.
    """
    from graphtag.analysis.boundaries import compute_boundaries

    boundaries = compute_boundaries(model)
    for tag in tags:
        for value in boundaries[tag].outputs if tag in boundaries else ():
            a, b = clean.get(value.name), faulty.get(value.name)
            if a is not None and b is not None and _beyond_tolerance(a, b):
                return True
    return False


def _differs(clean: dict[str, Any], faulty: dict[str, Any]) -> bool:
    """Whether any floating-point value of both runs differs (verify's default tolerance)."""
    return any(_beyond_tolerance(a, faulty[name]) for name, a in clean.items() if name in faulty)


def _beyond_tolerance(a: Any, b: Any) -> bool:
    import numpy as np

    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):  # ONNX sequences
        same_kind = isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
        if not same_kind or len(a) != len(b):
            return True
        return any(_beyond_tolerance(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    if not np.issubdtype(a.dtype, np.floating):
        return False
    if a.shape != b.shape:
        return True
    atol = 1e-4 * max(float(np.abs(a).max(initial=0.0)), 1.0)
    return not np.allclose(b, a, rtol=1e-3, atol=atol, equal_nan=True)


@contextlib.contextmanager
def _quiet():
    """torch's progress output and warnings stay out of the worker's log."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is None:
        return repr(value)
    return f"{str(value.dtype).removeprefix('torch.')}{list(shape)}"


def _line(exc: BaseException, limit: int = 240) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------- the sweep


def sweep(
    toml: Path,
    names: list[str],
    *,
    jobs: int,
    faults: bool,
    timeout: float,
    log=print,
    partial: Path | None = None,
) -> list[dict[str, Any]]:
    """Run ``names`` in worker processes, ``jobs`` at once; rows in ``names`` order.

    ``partial``: a JSON-lines file that gets each row as it completes.
    """
    rows: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_worker, toml, n, faults, timeout, jobs): n for n in names}
        for done, future in enumerate(as_completed(futures), 1):
            row = future.result()
            rows[row["name"]] = row
            if partial is not None:
                with partial.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            verdict = row.get("error") or _verify_text(row)
            log(
                f"[{done}/{len(names)}] {row['name']}: {row.get('route', '-')} {verdict} "
                f"({row.get('seconds', '?')} s)"
            )
    return [rows[n] for n in names]


def _worker(toml: Path, name: str, faults: bool, timeout: float, jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="graphtag-sweep-") as folder:
        out = Path(folder) / "row.json"
        cmd = [sys.executable, str(HERE / "run.py"), "--worker", name, "--toml", str(toml)]
        cmd += ["--row", str(out)] + ([] if faults else ["--no-faults"])
        # One share of the cores per worker: -j N workers with N threads each would
        # only fight over them.
        threads = str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": threads}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"name": name, "error": f"timeout after {timeout:.0f} s", "seconds": timeout}
        if out.exists():
            return json.loads(out.read_text())
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {
            "name": name,
            "error": f"worker exited {proc.returncode}: {tail}",
            "seconds": round(time.perf_counter() - start, 1),
        }


def _verify_text(row: dict[str, Any]) -> str:
    verify = row.get("verify") or {}
    if "counts" not in verify:
        return verify.get("skipped", "-")
    return " ".join(f"{n} {s}" for s, n in sorted(verify["counts"].items()))


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table."""
    head = (
        "| model | family | dynamo | switches | auto | route | nodes | tagged "
        "| validate | verify | max rel diff | faults caught |\n"
        "|---|---|---|---|---|---|---:|---:|---|---|---:|---|\n"
    )
    lines = []
    for row in rows:
        verify = row.get("verify") or {}
        faults = row.get("faults") or {}
        caught = [f for f in faults.values() if f.get("caught") is not None]
        lines.append(
            "| "
            + " | ".join(
                [
                    row["name"],
                    row.get("family", ""),
                    _yes(row.get("dynamo")),
                    "-" if row.get("switches") is None else _yes(row["switches"]),
                    _yes("ok" if row.get("auto") else "no"),
                    row.get("route", "-"),
                    str(row.get("nodes", "-")),
                    f"{row['tagged']:.1%}" if "tagged" in row else "-",
                    (row.get("validate") or "-").split(" ")[0],
                    _verify_text(row) if not row.get("error") else "error",
                    f"{verify['max_rel_diff']:.1e}" if verify.get("max_rel_diff") else "-",
                    f"{sum(bool(f['caught']) for f in caught)}/{len(caught)}" if caught else "-",
                ]
            )
            + " |"
        )
    return head + "\n".join(lines) + "\n"


def _yes(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value == "ok" else "no"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    total = len(rows)

    def share(count: int) -> str:
        return f"{count}/{total} ({count / total:.0%})" if total else "0/0"

    dynamo = sum(r.get("dynamo") == "ok" for r in rows)
    switches = sum(r.get("route") in ("dynamo", "switches") for r in rows)
    auto = sum(bool(r.get("auto")) for r in rows)
    anyway = sum(r.get("route") not in (None, "none") for r in rows)
    verified = [r for r in rows if "counts" in (r.get("verify") or {})]
    modules = sum(sum(r["verify"]["counts"].values()) for r in verified)
    executed = sum(
        n for r in verified for s, n in r["verify"]["counts"].items() if s != "NOT-EXECUTED"
    )
    good = sum(
        n
        for r in verified
        for s, n in r["verify"]["counts"].items()
        if s in ("OK", "UNUSED", "CONSTANT", "REORDERED", "TRANSPOSED")
    )
    random = sum(n for r in verified for s, n in r["verify"]["counts"].items() if s == "RANDOM")
    faults = [
        f for r in rows for f in (r.get("faults") or {}).values() if f.get("caught") is not None
    ]
    return [
        f"models: {total}",
        f"export with dynamo as given: {share(dynamo)}",
        f"export with dynamo, with switches where needed: {share(switches)}",
        f"export with auto (the ladder: dynamo, switches, TorchScript): {share(auto)}",
        f"export by some route: {share(anyway)}",
        f"verified models: {len(verified)}; modules: {modules}, executed: {executed}, "
        f"OK, UNUSED, CONSTANT, REORDERED or TRANSPOSED: {good} ({good / executed:.1%})"
        + (f"; RANDOM (PyTorch itself does not repeat them): {random}" if random else "")
        if executed
        else "verified: 0",
        f"injected faults caught: {sum(bool(f['caught']) for f in faults)}/{len(faults)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toml", type=Path, default=DEFAULT_TOML)
    parser.add_argument("-j", "--jobs", type=int, default=1)
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--no-faults", action="store_true", help="skip the injected faults")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per model")
    parser.add_argument("--json", type=Path, default=Path("out/sweep.json"))
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--row", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    toml = args.toml.resolve()

    if args.worker:
        row = run_model(args.worker, toml, faults=not args.no_faults)
        args.row.write_text(json.dumps(row, indent=1))
        return 0

    from graphtag.exporter.zoo import load_zoo

    names = [e.name for e in load_zoo(toml)]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"not in {toml.name}: {', '.join(unknown)}")
        names = [n for n in names if n in wanted]
    sys.path.insert(0, str(HERE))
    import thirdparty

    if not thirdparty.available():
        skipped = [n for n in names if n.startswith(("tv-", "timm-"))]
        if skipped:
            print(
                f"skipping {len(skipped)} torchvision/timm models: not importable "
                f"(see bench/sweep/thirdparty.py)",
                file=sys.stderr,
            )
        names = [n for n in names if n not in skipped]
    started = time.perf_counter()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    partial = args.json.with_suffix(".partial.jsonl")
    partial.unlink(missing_ok=True)
    rows = sweep(
        toml,
        names,
        jobs=args.jobs,
        faults=not args.no_faults,
        timeout=args.timeout,
        log=lambda text: print(text, file=sys.stderr, flush=True),
        partial=partial,
    )
    elapsed = time.perf_counter() - started
    args.json.write_text(
        json.dumps({"seconds": round(elapsed, 1), "jobs": args.jobs, "rows": rows}, indent=1)
    )
    table = markdown(rows)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    for line in summary(rows):
        print(line)
    print(f"wall time: {elapsed:.0f} s with -j {args.jobs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
