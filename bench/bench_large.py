"""Benchmark graphtag at scale: multi-GB weights and 100k-node graphs.

Usage::

    python bench/bench_large.py --workdir DIR [--models weights,nodes,nodes-10k]
                                [--only export,commands,extract] [--json OUT.json]
                                [--export-repeat 3] [--max-load 3 --max-wait 900]

Models (bench/large_models.py, built from configs, random weights): ``weights`` (a
Llama-shaped decoder of 0.66 B parameters, 2.6 GB of float32 weights), ``nodes`` (550 thin
layers, about 100k nodes) and ``nodes-10k`` (53 layers, for the scaling ratios);
``tiny-weights``/``tiny-nodes`` try the whole benchmark in a minute.

Stages (``--only`` picks some; the saved models are cached in DIR, so each stage can be
rerun alone later):

* ``export``: plain ``torch.onnx.export`` and ``graphtag.export`` with the same options,
  each in its own process (which builds the model, then times the export call alone);
  the graphtag file is kept as ``DIR/<model>/model.onnx`` (+ ``.data``) for the other
  stages. ``--export-repeat N`` runs N pairs in alternating order, each side after a
  ``sync`` (the other side's weights written back first), and compares medians. Goal:
  time ratio <= 1.05, peak RSS <= plain's + 10%.
* ``commands``: on the saved file, ``analyze``, ``validate``, ``snapshot``, ``dag``, the
  default pipeline (``run -p tag-propagation,multi-consumer,residual-resolution``) writing
  beside the source and into another folder, and the pipeline / ``onnx_ir.load`` ratio
  (in one process, medians). Goals: commands that need no weight value peak below 25% of
  the weight bytes; pipeline / load <= 1.0; a save beside the source writes no weight.
* ``extract``: ``extract --module`` of one decoder layer, ``extract --all``, and
  ``function-outlining`` of every decoder layer (``run -p``). Goals: one layer peaks at
  <= 2x its weight bytes plus the graph, and its data file holds its tensors only.

Every command runs as ``graphtag`` in a child process (through a probe that times
``graphtag.cli.main`` after the interpreter and onnx/onnx_ir are imported: ``s``; the
child's whole life is ``wall s``). The parent reads the child's peak RSS (``wait4``) and
its I/O counters (``/proc/PID/io`` of the exited, not yet reaped child), and measures the
bytes of the source's data file the command read: the file is dropped from the page
cache before (``posix_fadvise(DONTNEED)``) and its resident pages counted after
(``mincore``). One process runs at a time; ``--max-load`` waits (up to ``--max-wait``
seconds) for the 1-minute load average to drop below it before each step, and every
step records the load it started with.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_PIPELINE = "tag-propagation,multi-consumer,residual-resolution"
OUTLINE = "function-outlining{pattern=*/LlamaDecoderLayer.*}"
STAGES = ("export", "commands", "extract")


# -- page cache and process measurements ------------------------------------------------


def _median_row(rows: list[dict]) -> dict:
    """The run with the median export time, its peak RSS the median peak, all kept."""
    ordered = sorted(rows, key=lambda row: row["export_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["peak_rss"] = statistics.median(r["peak_rss"] for r in rows)
    row["export_s_all"] = [r["export_s"] for r in rows]
    row["peak_rss_all"] = [r["peak_rss"] for r in rows]
    return row


def evict(path: Path) -> None:
    """Drop ``path`` from the page cache (written back first), so reads show up."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_bytes(path: Path) -> int:
    """Bytes of ``path`` in the page cache (mincore over a read-only mapping)."""
    size = path.stat().st_size if path.exists() else 0
    if not size:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    pages = (size + page - 1) // page
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
        vec = (ctypes.c_ubyte * pages)()
        view = np.frombuffer(mm, dtype=np.uint8)  # read-only: only its address is used
        status = libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), vec)
        del view  # an exported buffer would keep the mapping from closing
        if status != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        resident = int(np.count_nonzero(np.frombuffer(vec, dtype=np.uint8) & 1))
    return resident * page


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Wait until the 1-minute load is below ``max_load`` (at most ``max_wait`` s)."""
    deadline = time.monotonic() + max_wait
    while load_average() >= max_load and time.monotonic() < deadline:
        time.sleep(15)
    return load_average()


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def run_child(argv: list[str], log: Path) -> dict:
    """Run ``argv``; its peak RSS, I/O counters and wall time (it must not fork workers)."""
    start = time.perf_counter()
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        io = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{child.pid}/io").read_text().splitlines():
                key, _, value = line.partition(":")
                io[key] = int(value)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": child.returncode,
        "wall_s": wall,
        "peak_rss": usage.ru_maxrss * 1024,
        "rchar": io.get("rchar"),
        "wchar": io.get("wchar"),
        "read_bytes": io.get("read_bytes"),
        "write_bytes": io.get("write_bytes"),
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.workdir: Path = args.workdir.resolve()
        self.max_load = args.max_load
        self.max_wait = args.max_wait
        self.repeat = args.repeat
        self.export_repeat = args.export_repeat
        self.results: dict = _read_json(args.json) if args.json and args.json.exists() else {}
        self.json_path: Path | None = args.json

    def folder(self, model: str) -> Path:
        path = self.workdir / model
        path.mkdir(parents=True, exist_ok=True)
        return path

    def saved(self, model: str) -> Path:
        return self.folder(model) / "model.onnx"

    def record(self, model: str, step: str, row: dict) -> None:
        self.results.setdefault(model, {})[step] = row
        print(f"  {model} {step}: {_brief(row)}", file=sys.stderr, flush=True)
        if self.json_path is not None:
            self.json_path.write_text(json.dumps(self.results, indent=1, sort_keys=True) + "\n")

    def measure(self, model: str, step: str, argv: list[str], *, data: Path | None = None) -> dict:
        """Run one command (graphtag CLI through the probe, or a worker) and record it."""
        load = wait_for_quiet(self.max_load, self.max_wait)
        available = mem_available_gb()
        if data is not None:
            evict(data)
        logs = self.folder(model) / "logs"
        logs.mkdir(exist_ok=True)
        probe = logs / f"{step}.json"
        probe.unlink(missing_ok=True)
        row = run_child([sys.executable, __file__, "_probe", str(probe), *argv], logs / step)
        row["load_before"] = load
        row["load_after"] = load_average()
        row["mem_available_gb_before"] = available
        if probe.exists():
            row.update(_read_json(probe))
            # The child's own high-water mark: wait4's ru_maxrss also counts the parent's
            # pages a fork shares before exec.
            row["peak_rss"] = row.pop("vm_hwm")
        if data is not None:
            row["data_file_read"] = resident_bytes(data)
            row["data_file_size"] = data.stat().st_size
        if row["rc"] not in (0, 1):
            err = (logs / f"{step}.err").read_text()[-2000:]
            raise SystemExit(f"{model} {step} failed (exit {row['rc']}):\n{err}")
        self.record(model, step, row)
        return row

    # -- stages --------------------------------------------------------------------------

    def export(self, model: str) -> None:
        """Plain and graphtag exports in separate processes, ``--export-repeat`` pairs in
        alternating order (ABBA...), each after ``sync``: a side never starts while the
        other's weights are still being written back, which would charge it for that
        disk time. The ratio is of the medians."""
        folder = self.folder(model)
        plain = folder / "plain" / "model.onnx"
        plain.parent.mkdir(exist_ok=True)
        sides = [("plain", plain), ("graphtag", self.saved(model))]
        runs: dict[str, list[dict]] = {"plain": [], "graphtag": []}
        for index in range(self.export_repeat):
            for side, out in sides if index % 2 == 0 else sides[::-1]:
                print(
                    f"{model}: export ({side}, run {index + 1}/{self.export_repeat}), "
                    f"{mem_available_gb():.1f} GB available",
                    file=sys.stderr,
                )
                os.sync()
                step = f"export-{side}" if self.export_repeat == 1 else f"export-{side}-{index + 1}"
                runs[side].append(self.measure(model, step, ["_export", side, model, str(out)]))
        shutil.rmtree(plain.parent, ignore_errors=True)  # only the tagged file is used later
        if self.export_repeat > 1:
            for side, rows in runs.items():
                self.record(model, f"export-{side}", _median_row(rows))
        rows = self.results[model]
        p, g = rows["export-plain"], rows["export-graphtag"]
        self.record(
            model,
            "export-ratio",
            {
                "time_ratio": g["export_s"] / p["export_s"],
                "peak_rss_ratio": g["peak_rss"] / p["peak_rss"],
                "nodes_plain": p["nodes"],
                "nodes_graphtag": g["nodes"],
            },
        )

    def ensure_saved(self, model: str) -> Path:
        path = self.saved(model)
        if not path.exists():
            print(f"{model}: no saved model in {path.parent}: exporting it", file=sys.stderr)
            self.measure(model, "export-graphtag", ["_export", "graphtag", model, str(path)])
        return path

    def facts(self, model: str) -> dict:
        """Nodes, weight bytes, the extracted layer's weight bytes (one child process)."""
        path = self.ensure_saved(model)
        row = self.measure(model, "facts", ["_facts", model, str(path)])
        return row

    def commands(self, model: str) -> None:
        path = self.ensure_saved(model)
        data = Path(f"{path}.data")
        self.facts(model)
        folder = path.parent
        cli = ["_cli"]
        self.measure(model, "analyze", [*cli, "analyze", str(path)], data=data)
        self.measure(model, "validate", [*cli, "validate", str(path)], data=data)
        self.measure(model, "snapshot", [*cli, "snapshot", str(path)], data=data)
        dag = folder / "dag.json"
        self.measure(model, "dag", [*cli, "dag", str(path), "-o", str(dag)], data=data)
        dag.unlink(missing_ok=True)
        beside = folder / "pipeline.onnx"
        self._clear(beside)
        row = self.measure(
            model,
            "pipeline-beside",
            [*cli, "run", str(path), "-p", DEFAULT_PIPELINE, "-o", str(beside)],
            data=data,
        )
        row["new_files"] = _new_files(folder, beside.name)
        self.record(model, "pipeline-beside", row)
        self._clear(beside)
        elsewhere = folder / "elsewhere" / "pipeline.onnx"
        elsewhere.parent.mkdir(exist_ok=True)
        row = self.measure(
            model,
            "pipeline-elsewhere",
            [*cli, "run", str(path), "-p", DEFAULT_PIPELINE, "-o", str(elsewhere)],
            data=data,
        )
        row["new_files"] = _new_files(elsewhere.parent, elsewhere.name)
        self.record(model, "pipeline-elsewhere", row)
        shutil.rmtree(elsewhere.parent, ignore_errors=True)
        self.measure(model, "pipeline-vs-load", ["_pipeline", str(path), str(self.repeat)])

    def extract(self, model: str) -> None:
        from large_models import SPECS

        path = self.ensure_saved(model)
        data = Path(f"{path}.data")
        folder = path.parent
        if "facts" not in self.results.get(model, {}):
            self.facts(model)
        layer = folder / "layer.onnx"
        self._clear(layer)
        row = self.measure(
            model,
            "extract-layer",
            ["_cli", "extract", str(path), "--module", SPECS[model].layer, "-o", str(layer)],
            data=data,
        )
        row["new_files"] = _new_files(folder, layer.name)
        self.record(model, "extract-layer", row)
        self._clear(layer)
        out = folder / "modules"
        shutil.rmtree(out, ignore_errors=True)
        row = self.measure(
            model, "extract-all", ["_cli", "extract", str(path), "--all", "-o", str(out)], data=data
        )
        row["modules"] = len(_read_json(out / "index.json"))
        row["bytes_written"] = sum(p.stat().st_size for p in out.iterdir())
        self.record(model, "extract-all", row)
        shutil.rmtree(out, ignore_errors=True)
        outlined = folder / "outlined.onnx"
        self._clear(outlined)
        self.measure(
            model,
            "outline-layers",
            ["_cli", "run", str(path), "-p", OUTLINE, "-o", str(outlined)],
            data=data,
        )
        self._clear(outlined)

    @staticmethod
    def _clear(path: Path) -> None:
        for stale in path.parent.glob(f"{path.name}*"):
            stale.unlink()


def _new_files(folder: Path, name: str) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.glob(f"{name}*")}


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _brief(row: dict) -> str:
    parts = []
    for key in ("s", "export_s", "wall_s", "peak_rss", "data_file_read", "time_ratio"):
        if row.get(key) is not None:
            value = row[key]
            parts.append(f"{key}={_gb(value) if 'rss' in key or 'read' in key else f'{value:.2f}'}")
    return " ".join(parts)


def _gb(value: float) -> str:
    return f"{value / 1e9:.3f}GB"


# -- child processes --------------------------------------------------------------------


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def probe(out: str, argv: list[str]) -> int:
    """Run a worker or the graphtag command line; write its timing to ``out``."""
    import onnx  # noqa: F401  (imported before timing: every command needs them)
    import onnx_ir  # noqa: F401

    if argv[0] == "_cli":
        from graphtag.cli import main

        start = time.perf_counter()
        rc = main(argv[1:])
        result = {"s": time.perf_counter() - start}
    else:
        rc, result = 0, WORKERS[argv[0]](*argv[1:])
    result["vm_hwm"] = _vm("VmHWM")
    Path(out).write_text(json.dumps(result) + "\n")
    return rc


def worker_export(side: str, model_name: str, out: str) -> dict:
    """Build the model, warm up (a 2-layer export of the same family, same side: imports
    and first-call costs), then time one export of the model into ``out``."""
    import logging
    import tempfile
    import warnings

    from large_models import SPECS, build

    warnings.simplefilter("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    options = {"verbose": False, **SPECS[model_name].options}
    with tempfile.TemporaryDirectory() as tmp:
        small, small_inputs = build("tiny-nodes", layers=2)
        _export_side(side, small, small_inputs, str(Path(tmp) / "warm-up.onnx"), options)
        del small
    gc.collect()
    start = time.perf_counter()
    model, inputs = build(model_name)
    built = time.perf_counter() - start
    rss_built, hwm_built = _vm("VmRSS"), _vm("VmHWM")
    gc.collect()
    start = time.perf_counter()
    nodes = _export_side(side, model, inputs, out, options)
    seconds = time.perf_counter() - start
    return {
        "export_s": seconds,
        "build_s": built,
        "rss_after_build": rss_built,
        "hwm_after_build": hwm_built,
        "nodes": nodes,
        "file_bytes": sum(p.stat().st_size for p in Path(out).parent.glob(Path(out).name + "*")),
    }


def _export_side(side: str, model, inputs, out: str, options: dict) -> int:
    """Export as torch does (plain) or as graphtag does; the number of nodes made."""
    import torch

    import graphtag

    if side == "plain":
        program = torch.onnx.export(
            model, inputs.args, out, kwargs=inputs.kwargs, dynamo=True, **options
        )
        return sum(1 for _ in program.model.graph.all_nodes())
    return graphtag.export(model, inputs.args, inputs.kwargs, out, **options).stats.nodes


def worker_facts(model_name: str, path: str) -> dict:
    from large_models import SPECS, parameter_count

    import graphtag
    from graphtag.analysis.boundaries import compute_boundaries
    from graphtag.core.graphs import iter_all_nodes, iter_initializers

    model = graphtag.load(path)
    tag = SPECS[model_name].layer
    boundary = compute_boundaries(model, [tag])[tag]
    layer = [v for v in boundary.constants if v.is_initializer()]
    return {
        "nodes": sum(1 for _ in iter_all_nodes(model)),
        "parameters": parameter_count(model_name),
        "weight_bytes": sum(v.const_value.nbytes for v in iter_initializers(model)),
        "layer": tag,
        "layer_nodes": len(boundary.nodes),
        "layer_weight_bytes": sum(v.const_value.nbytes for v in layer),
        "model_file_bytes": Path(path).stat().st_size,
    }


def worker_pipeline(path: str, repeat: str) -> dict:
    """``onnx_ir.load`` against the default pipeline on a fresh load (bench_passes' method)."""
    import onnx_ir as ir

    from graphtag.pipeline import Pipeline

    loads, runs = [], []
    for _ in range(int(repeat)):
        gc.collect()
        start = time.perf_counter()
        model = ir.load(path)
        loads.append(time.perf_counter() - start)
        pipeline = Pipeline.from_text(DEFAULT_PIPELINE)
        gc.collect()
        start = time.perf_counter()
        pipeline(model)
        runs.append(time.perf_counter() - start)
        del model
    load, run = statistics.median(loads), statistics.median(runs)
    return {"load_s": load, "pipeline_s": run, "ratio": run / load, "loads": loads, "runs": runs}


WORKERS = {"_export": worker_export, "_facts": worker_facts, "_pipeline": worker_pipeline}


# -- report -----------------------------------------------------------------------------


def markdown(results: dict) -> str:
    lines = []
    for model, rows in results.items():
        facts = rows.get("facts", {})
        title = model
        if facts:
            title += (
                f": {facts['parameters'] / 1e9:.2f} B parameters, {facts['nodes']:,} nodes, "
                f"weights {_gb(facts['weight_bytes'])}, layer {facts['layer_weight_bytes'] / 1e6:.1f} MB"
            )
        lines += [f"**{title}**", ""]
        lines += [
            "| step | s | wall s | peak RSS | data file read | load | note |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        # The JSON file sorts its keys: list the steps in the order they run.
        for step, row in sorted(rows.items(), key=lambda item: _step_order(item[0])):
            if step in ("facts", "export-ratio"):
                continue
            seconds = row.get("s", row.get("export_s"))
            note = _note(step, row, rows)
            read = row.get("data_file_read")
            lines.append(
                f"| {step} | {_num(seconds)} | {_num(row.get('wall_s'))} | "
                f"{_gb(row['peak_rss']) if 'peak_rss' in row else '-'} | "
                f"{_gb(read) if read is not None else '-'} | "
                f"{row.get('load_before', float('nan')):.1f} | {note} |"
            )
        lines.append("")
    return "\n".join(lines)


STEP_ORDER = (
    "export-plain",
    "export-graphtag",
    "analyze",
    "validate",
    "snapshot",
    "dag",
    "pipeline-beside",
    "pipeline-elsewhere",
    "pipeline-vs-load",
    "extract-layer",
    "extract-all",
    "outline-layers",
)


def _step_order(step: str) -> int:
    return STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER)


def _note(step: str, row: dict, rows: dict) -> str:
    if step == "export-graphtag" and "export-ratio" in rows:
        ratio = rows["export-ratio"]
        return f"time x{ratio['time_ratio']:.3f}, peak RSS x{ratio['peak_rss_ratio']:.3f} of plain"
    if step == "pipeline-vs-load":
        return f"load {row['load_s']:.2f} s, pipeline {row['pipeline_s']:.2f} s, ratio {row['ratio']:.2f}"
    if "new_files" in row:
        return "wrote " + ", ".join(f"{n} {_gb(s)}" for n, s in sorted(row["new_files"].items()))
    if step == "extract-all":
        return f"{row['modules']} modules, {_gb(row['bytes_written'])} written"
    return ""


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_probe":
        sys.path.insert(0, str(HERE))
        return probe(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="saved models and logs")
    parser.add_argument("--models", default="weights,nodes,nodes-10k")
    parser.add_argument("--only", default=",".join(STAGES), help="export,commands,extract")
    parser.add_argument("--json", type=Path, help="results (merged with an existing file)")
    parser.add_argument("--repeat", type=int, default=3, help="pipeline / load repeats")
    parser.add_argument(
        "--export-repeat", type=int, default=1, help="export pairs (medians; ABBA order)"
    )
    parser.add_argument("--max-load", type=float, default=1e9, help="wait for a quieter machine")
    parser.add_argument("--max-wait", type=float, default=900.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {STAGES}")
    bench = Bench(args)
    start = time.perf_counter()
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for stage in stages:
            getattr(bench, stage)(model)
    total = time.perf_counter() - start
    print(markdown(bench.results))
    print(f"benchmark time: {total / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
