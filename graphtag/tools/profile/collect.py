"""Profile an ONNX file in ONNX Runtime and attribute every kernel to a module.

Steps: ONNX Runtime builds a profiling session that saves its optimized graph
(session.py) while the model, the tagged reference, loads; unnamed or same-named nodes
get unique names on an in-memory copy that is profiled instead (the profiler identifies
kernels by node name only); during the warm-up runs the optimized graph is loaded and
retagged against the reference (graphtag.passes.retag: fused and rewritten nodes get
the lowest common ancestor of the modules they replaced, inserted nodes an inferred
tag); then the measured runs, and every kernel event of them goes to its node's module.
A kernel whose node has no tag, or is not in the saved graph, is counted in the root
module and reported, so the modules' self times always add up to the run's kernel time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy
from graphtag.core.io import load, save
from graphtag.tools.profile.inputs import make_feeds
from graphtag.tools.profile.series import RunSeries, median_run
from graphtag.tools.profile.session import ProfiledSession, RunSettings
from graphtag.tools.profile.trace import MAX_EVENTS, Run, Trace, TraceFollower, read_trace
from graphtag.tools.profile.tree import SYNTHETIC_ROOT

UNMATCHED = "unmatched"  # match kind of kernels whose node has no tag or is unknown
_NS_PER_US = 1000
_LISTED = 5  # unknown node names quoted in a note
# From this many kernel events (about 0.1 s of reading) the trace is read by a helper
# process while ONNX Runtime writes it (trace.TraceFollower). Its start-up slows the
# session's creation by some 0.05 s, so below this it costs more than it saves (GPT-2 24L,
# 13,500 events: 0.85 s with it, 0.80 s without; 103,000 events: 3.77 s against 4.04 s).
_FOLLOW_EVENTS = 30_000


@dataclasses.dataclass
class OrtMeasurement:
    """What the ONNX Runtime side measured, attributed to module tags.

    A kernel that has no module is recorded under ``""`` (placed in the root).
    """

    model: str  # the profiled file, as given
    series: RunSeries  # per measured run: tag -> self ns (exclusive kernel time), calls
    ops: dict[str, dict[str, int]]  # median run: tag -> op type -> ns
    nodes: dict[str, int]  # nodes of the optimized graph per tag ("" untagged)
    match_ns: dict[str, int]  # median run: kernel time per retag match kind
    kernel_events: int  # in the measured runs
    mapped_events: int  # of which on a tagged node of the optimized graph
    tagged: bool  # the reference carries module tags
    order_hint: list[str]  # module order of the stored hierarchy (pre-order)
    reference_tags: list[str]  # tags on the profiled model's nodes, in graph order (some may
    # have no node left after ONNX Runtime's optimizations)
    fused_into: dict[str, str]  # module without nodes of its own -> the tag of a node it
    # was fused into (from the optimized graph's ``fused`` contexts)
    settings: RunSettings
    providers: list[str]
    ort_version: str
    notes: list[str]


def collect_ort(
    model_path: str | Path,
    settings: RunSettings,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    input_specs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
    save_optimized: str | Path | None = None,
    save_trace: str | Path | None = None,
) -> OrtMeasurement:
    """Run ``model_path`` under ONNX Runtime's profiler and attribute its kernels.

    ``feeds`` (arrays by input name) win over ``input_specs`` (validated spec entries,
    graphtag.core.input_specs), which win over inputs made from the input types.
    ``save_optimized`` writes the retagged optimized graph, ``save_trace`` ONNX
    Runtime's own profile file. ``model_path`` is never modified.
    """
    say = progress or (lambda _text: None)
    model_path = Path(model_path)
    if not model_path.is_file():
        load(model_path)  # the usual one-line error for a missing path or a folder
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="graphtag-profile-") as tmp:
        work = Path(tmp)
        say(f"optimizing {model_path.name} in ONNX Runtime")
        # ONNX Runtime builds the session (and later writes its trace) without holding
        # Python's lock: the graphs load meanwhile, never during the measured runs.
        # (Loading the reference after the session instead: GPT-2 24L at 10 runs took
        # 1.17x as long, medians of 15 pairs; a 0.5 ms lock switch interval, 1.11x.)
        with ThreadPoolExecutor(max_workers=1) as pool, contextlib.ExitStack() as stack:
            loading = pool.submit(_read_reference, model_path, settings)
            session, refused = _session(model_path, settings, work / "given")
            reference, renamed, reference_tags, hierarchy, follower = loading.result()
            if follower is not None:
                stack.enter_context(follower)
            if renamed:
                # Kernels are known by node name only (and ONNX Runtime refuses repeated
                # names): profile a copy with unique names.
                notes.append(
                    f"{renamed} unnamed or same-named nodes were given unique names for the "
                    "profile (ONNX Runtime's profiler knows kernels by node name)"
                )
                if session is not None:
                    session.finish()
                copy = save(reference, work / "model.onnx")
                session = ProfiledSession(copy, settings, work / "renamed")
            elif session is None:
                raise refused
            if feeds is None:
                feeds = make_feeds(reference, input_specs)
            tagged = bool(reference_tags)
            say(f"running {settings.warmup} warm-up and {settings.runs} measured inferences")
            # The optimized graph is retagged during the warm-up, which is not measured;
            # the measured runs start once that work is done.
            graph = pool.submit(_read_optimized, reference, session.optimized, tagged)
            session.warm_up(feeds, say)
            optimized, kinds, tags, nodes, fused_into = graph.result()
            following = follower is not None and follower.wait_ready()
            session.measure(feeds, say)
            if following:
                follower.follow(session.trace_file())
            trace_path = session.finish()
            trace = follower.result(trace_path) if following else read_trace(trace_path)
        if save_trace is not None:
            _copy_atomic(trace_path, Path(save_trace))
        if save_optimized is not None:
            save(optimized, save_optimized)
    if not tagged:
        notes.insert(
            0,
            f"{model_path.name} has no module tags ({metadata.MODULE}): every kernel is "
            "counted in the root; export the model with graphtag to see its modules",
        )
    order_hint = [info.tag for info in hierarchy] if hierarchy is not None else []
    recorded, wall_us = measured_runs(trace, settings, notes)
    measured = _attribute(recorded, wall_us, tags, kinds)
    if measured.unknown:
        names = sorted(measured.unknown)
        shown = ", ".join(names[:_LISTED]) + (" ..." if len(names) > _LISTED else "")
        notes.append(
            f"{len(names)} profiled node(s) are not in the saved optimized graph and are "
            f"counted in the root: {shown}"
        )
    if tagged and measured.untagged_events:
        notes.append(
            f"{measured.untagged_events} kernel events ran nodes retag left untagged; they "
            "are counted in the root"
        )
    return OrtMeasurement(
        model=str(model_path),
        series=measured.series,
        ops=measured.ops,
        nodes=dict(nodes),
        match_ns=measured.match_ns,
        kernel_events=measured.events,
        mapped_events=measured.events - measured.untagged_events - measured.unknown_events,
        tagged=tagged,
        order_hint=order_hint,
        reference_tags=reference_tags,
        fused_into={m: t for m, t in fused_into.items() if not nodes.get(m)},
        settings=settings,
        providers=session.providers,
        ort_version=session.version,
        notes=notes,
    )


def measured_runs(trace: Trace, settings: RunSettings, notes: list[str]):
    """The measured runs' kernels and wall times: the warm-up runs are the first ones.

    ONNX Runtime's profiler stops recording at :data:`MAX_EVENTS`; the runs it completed
    are used (with a note), none at all is an error.
    """
    expected = settings.warmup + settings.runs
    recorded = trace.runs[settings.warmup :]
    if len(trace.runs) < expected:
        if not recorded:
            raise GraphtagError(
                f"ONNX Runtime's profiler recorded {len(trace.runs)} of {expected} inferences "
                f"(it stops at {MAX_EVENTS:,} events): use fewer --warmup/--runs"
            )
        notes.append(
            f"ONNX Runtime's profiler stopped at its limit of {MAX_EVENTS:,} events: "
            f"{len(recorded)} of {settings.runs} measured runs were recorded and are used"
        )
    if trace.outside:
        notes.append(f"{trace.outside} kernel events outside any inference were ignored")
    return recorded, trace.wall_us[settings.warmup :]


def _read_reference(path: Path, settings: RunSettings):
    """The profiled model with unique node names (:func:`_unique_node_names`, how many
    changed), its module tags in graph order, its stored hierarchy, and a
    :class:`TraceFollower` when the trace will be long: read, and the helper started,
    while ONNX Runtime builds its session."""
    reference = load(path)
    renamed = _unique_node_names(reference)
    nodes = 0
    tags: dict[str, None] = {}
    for node in iter_all_nodes(reference):
        nodes += 1
        if tag := metadata.node_tag(node):
            tags[tag] = None
    events = nodes * (settings.warmup + settings.runs)
    follower = TraceFollower() if events >= _FOLLOW_EVENTS else None
    return reference, renamed, list(tags), Hierarchy.from_model(reference), follower


def _unique_node_names(model: ir.Model) -> int:
    """Name every unnamed node and rename repeated names; returns how many changed.

    Covers the main graph and subgraphs (ONNX Runtime profiles both by name); function
    bodies are inlined by ONNX Runtime under new names, so they are left alone.
    """
    nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
    taken = Counter(node.name for node in nodes if node.name)
    if all(node.name for node in nodes) and all(n == 1 for n in taken.values()):
        return 0
    used = set(taken)
    changed = 0
    seen: set[str] = set()
    for node in nodes:
        name = node.name
        if name and name not in seen:
            seen.add(name)
            continue
        base = name or node.op_type
        suffix = 1
        while f"{base}__{suffix}" in used:
            suffix += 1
        node.name = f"{base}__{suffix}"
        used.add(node.name)
        seen.add(node.name)
        changed += 1
    return changed


def _session(model_path: Path, settings: RunSettings, work: Path):
    """(session, None), or (None, the error) when ONNX Runtime refuses the file."""
    try:
        return ProfiledSession(model_path, settings, work), None
    except GraphtagError as exc:
        return None, exc


def _read_optimized(reference: ir.Model, path: Path, tagged: bool):
    """The optimized graph, retagged against ``reference`` when it has tags: the model,
    node id -> how retag matched it, node name -> (tag, op type, node id), nodes per tag,
    module -> tag of a node fused from it."""
    optimized = load(path)
    kinds: dict[int, str] = {}
    if tagged:
        from graphtag.passes.retag import retag

        # Made from this very reference by ONNX Runtime: no match-rate guard needed.
        report = retag(reference, optimized, force=True, reference_name="the profiled model")
        kinds = report.kinds
    tags, nodes = _tags_by_name(optimized)
    fused_into: dict[str, str] = {}
    for node in iter_all_nodes(optimized):
        for entry in metadata.contexts(node):
            if entry["role"] == metadata.FUSED_ROLE:
                fused_into.setdefault(entry["module"], metadata.node_tag(node) or "")
    return optimized, kinds, tags, nodes, fused_into


def _tags_by_name(model: ir.Model) -> tuple[_RuntimeNames, Counter[str]]:
    """Node name -> (tag or "" untagged, op type, node id), the main graph winning over
    bodies, with the unnamed nodes per op type (:class:`_RuntimeNames`); and the node
    count per tag. One walk."""
    found: dict[str, tuple[str, str, int]] = {}
    unnamed: dict[str, tuple[str, str, int] | None] = {}
    nodes: Counter[str] = Counter()
    for node in iter_all_nodes(model):
        tag = node.metadata_props.get(metadata.MODULE) or ""
        nodes[tag] += 1
        entry = (tag, node.op_type, id(node))
        if not node.name:
            known = unnamed.setdefault(node.op_type, entry)
            if known is not None and known[0] != tag:
                unnamed[node.op_type] = None  # unnamed nodes of this type in two modules
        elif node.name not in found:
            found[node.name] = entry
    return _RuntimeNames(found, unnamed), nodes


class _RuntimeNames(dict):
    """Node name -> (tag, op type, node id), also for the names ONNX Runtime gives nodes
    it created without one (``<op type>_<node index>``, e.g. a ``Cast`` from a ``CastLike``
    it expanded in a loop body): the saved graph has them unnamed, so such a kernel is
    placed by its op type when every unnamed node of that type has one module, and stays
    unknown otherwise."""

    def __init__(
        self,
        tags: dict[str, tuple[str, str, int]],
        unnamed: dict[str, tuple[str, str, int] | None],
    ) -> None:
        """``unnamed``: op type -> the entry of its unnamed nodes when they all carry one
        tag, None when their tags differ."""
        super().__init__(tags)
        self.unnamed = unnamed

    def __missing__(self, name: str):
        match = _RUNTIME_NAME.match(name)
        entry = self.unnamed.get(match["op"]) if match else None
        if entry is None:
            raise KeyError(name)
        self[name] = entry
        return entry

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default


_RUNTIME_NAME = re.compile(r"^(?P<op>[A-Za-z]\w*)_\d+$")


def _kind(kind: str | None) -> str:
    if kind is None:
        return UNMATCHED
    return "inferred" if kind.startswith("inferred") else kind


@dataclasses.dataclass
class _Attributed:
    series: RunSeries
    ops: dict[str, dict[str, int]]
    match_ns: dict[str, int]
    events: int
    untagged_events: int
    unknown_events: int
    unknown: set[str]


def _attribute(
    runs: list[Run], wall_us, tags: dict[str, tuple[str, str, int]], kinds: dict[int, str]
):
    """Every kernel's exclusive time onto its node's module, per run: the module of each
    distinct node name is looked up once, then summed per run in numpy."""
    missing = (None, "", 0)
    tag_list: list[str] = []  # kernels of unknown or untagged nodes go to the root
    position: dict[str, int] = {}
    lookups: dict[int, tuple] = {}  # per name table (one per trace): its arrays

    def lookup(names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = lookups.get(id(names))
        if found is None:
            entries = [tags.get(name, missing)[0] for name in names]
            keys = [tag or SYNTHETIC_ROOT for tag in entries]
            for key in keys:
                if key not in position:
                    position[key] = len(tag_list)
                    tag_list.append(key)
            found = lookups[id(names)] = (
                np.array([position[key] for key in keys], np.intp),
                np.array([tag is None for tag in entries], bool),
                np.array([tag == "" for tag in entries], bool),
            )
        return found

    self_ns: list[dict[str, int]] = []
    calls: list[dict[str, int]] = []
    events = untagged = unknown_events = 0
    unknown: set[str] = set()
    for run in runs:
        tag_of, is_unknown, is_untagged = lookup(run.names)
        index = tag_of[run.node]
        # Modules in the order their first kernel ran.
        present, first = np.unique(index, return_index=True)
        present = present[np.argsort(first, kind="stable")].tolist()
        times = np.bincount(index, weights=run.exclusive_us, minlength=len(tag_list))
        counts = np.bincount(index, minlength=len(tag_list))
        # Sums of integer µs, exact in float64 below 2**53.
        self_ns.append({tag_list[i]: int(times[i]) * _NS_PER_US for i in present})
        calls.append({tag_list[i]: int(counts[i]) for i in present})
        events += len(run)
        missed = is_unknown[run.node]
        if missed.any():
            unknown_events += int(np.count_nonzero(missed))
            unknown.update(run.names[i] for i in np.unique(run.node[missed]).tolist())
        untagged += int(np.count_nonzero(is_untagged[run.node]))
    series = RunSeries(self_ns, calls, [us * _NS_PER_US for us in wall_us])
    ops: dict[str, dict[str, int]] = {}
    match_ns: dict[str, int] = {}
    for node, exclusive in runs[median_run(series.busy_ns())]:
        tag, op, key = tags.get(node, missing)
        op = op or "(unknown)"
        ns = exclusive * _NS_PER_US
        per_tag = ops.setdefault(tag or SYNTHETIC_ROOT, {})
        per_tag[op] = per_tag.get(op, 0) + ns
        kind = _kind(kinds.get(key)) if tag else UNMATCHED
        match_ns[kind] = match_ns.get(kind, 0) + ns
    return _Attributed(series, ops, match_ns, events, untagged, unknown_events, unknown)


def _copy_atomic(source: Path, target: Path) -> None:
    import shutil

    from graphtag.core.io import atomic_output

    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)
