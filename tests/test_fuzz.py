"""Seeded byte-level fuzzing (see tests/fuzzing.py): a few hundred mutants of a small
tagged MLP and of a model with an If, a Loop and a local function, through load,
validate, analyze, run and extract. bench/bench_fuzz.py runs the same over thousands."""

from __future__ import annotations

import collections

import onnx
import pytest
from fuzzing import fuzz, mutate, summarize
from onnx_builders import tagged_mlp
from reliability_models import control_flow_model

import graphtag

MUTANTS_PER_MODEL = 150


def seed_models(folder) -> dict[str, tuple[bytes, str]]:
    """name -> (the saved model's bytes, a module of it to extract)."""
    seeds = {}
    for name, model in (("mlp", tagged_mlp()), ("control-flow", control_flow_model())):
        path = graphtag.save(model, folder / f"{name}.onnx")
        onnx.checker.check_model(str(path), full_check=True)
        module = max(sorted(_tags(path)), key=lambda t: (t.count("/"), t))  # deepest
        seeds[name] = (path.read_bytes(), module)
    return seeds


def _tags(path) -> set[str]:
    from graphtag.core import metadata
    from graphtag.core.graphs import iter_all_nodes

    return {
        metadata.node_tag(n) for n in iter_all_nodes(graphtag.load(path)) if metadata.node_tag(n)
    }


def test_mutations_are_seeded_and_varied():
    import numpy as np

    data = bytes(range(256)) * 4
    a = [mutate(data, np.random.default_rng(3)) for _ in range(1)]
    b = [mutate(data, np.random.default_rng(3)) for _ in range(1)]
    assert a == b
    rng = np.random.default_rng(0)
    kinds = collections.Counter(mutate(data, rng)[0] for _ in range(300))
    assert set(kinds) == {"flip", "set", "insert", "delete", "duplicate", "truncate"}


@pytest.mark.slow
def test_no_mutant_causes_an_internal_error(tmp_path):
    seeds = seed_models(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    outcomes = fuzz(seeds, MUTANTS_PER_MODEL, work, seed=13)
    problems = [o for o in outcomes if o.problem]
    assert not problems, "\n".join(f"{o.edit} {o.step}: {o.problem}" for o in problems[:20])
    counts = summarize(outcomes)
    # The harness really exercised both sides: mutants refused (exit 2), mutants that
    # still load and run (exit 0), and validate-clean mutants round-tripped by save.
    assert counts["run"].get("exit 2", 0) > 0 and counts["run"].get("exit 0", 0) > 0
    assert counts["validate"].get("exit 1", 0) + counts["validate"].get("exit 2", 0) > 0
    assert counts["save"]["ok"] > 0
    assert sum(counts["load"].values()) == 2 * MUTANTS_PER_MODEL


# Mutants bench/bench_fuzz.py (seed 0) found internal errors in, fixed since: ONNX
# Runtime's symbolic shape inference giving up (returns None), and a flipped name that
# wires a subgraph's value into the main graph (onnx_ir refuses to clone it).
FOUND_BY_THE_LONG_RUN = {
    1305: ("mlp", "duplicate"),
    2847: ("control-flow", "flip"),
    2887: ("control-flow", "flip"),
    3238: ("control-flow", "flip"),
    3544: ("control-flow", "set"),
    4518: ("control-flow", "set"),
    4798: ("control-flow", "flip"),
}


def test_mutants_found_by_the_long_run(tmp_path):
    import numpy as np
    from fuzzing import check_mutant

    seeds = seed_models(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(0)  # replay bench_fuzz.py's sequence (2500 per model)
    index = 0
    checked = 0
    for name, (data, module) in seeds.items():
        for _ in range(2500):
            edit, mutant = mutate(data, rng)
            if index in FOUND_BY_THE_LONG_RUN:
                assert (name, edit) == FOUND_BY_THE_LONG_RUN[index]
                path = work / f"m{index}.onnx"
                path.write_bytes(mutant)
                outcomes = list(check_mutant(index, edit, path, module, work))
                assert not [o for o in outcomes if o.problem], outcomes
                checked += 1
            index += 1
    assert checked == len(FOUND_BY_THE_LONG_RUN)
