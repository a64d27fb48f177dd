"""How fast ``graphtag report`` builds and how the report behaves in a browser, large model.

Builds :func:`report_model.report_model` (~1,036 modules, ~30k nodes, weights, hierarchy)
and its profile, times ``write_report`` (load + analyses + HTML), then opens the file in
headless Chromium (Debian's, through Playwright) and times: first render (navigation to
tree, details, module graph and chart drawn), a search, clearing it, expand-all (every
module row), selecting the root (its ~200-box module graph) and switching to the
sunburst. Medians of ``--repeat`` runs.

    python bench/bench_report.py --repeat 3
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

from browser import CHROMIUM_ARGS, chromium_path
from report_model import report_model, report_profile

import graphtag
from graphtag.tools.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, default=207)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="graphtag-bench-report-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model = report_model(args.layers)
    source, profile = folder / "big.onnx", folder / "big.json"
    graphtag.save(model, source)
    profile.write_text(json.dumps(report_profile(model)))
    out = folder / "big.html"
    build = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        data = write_report(source, out, profile_path=profile)
        build.append(time.perf_counter() - started)
    print(
        f"model: {data['model']['modules']} modules, {data['model']['nodes']} nodes; "
        f"report {out.stat().st_size / 1e6:.1f} MB"
    )
    print(f"write_report: {statistics.median(build):.2f} s (median of {args.repeat})")

    from playwright.sync_api import sync_playwright

    timings: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for _ in range(args.repeat):
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            frame = "() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
            started = time.perf_counter()
            page.goto(out.resolve().as_uri())
            page.wait_for_selector('body[data-ready="1"]')
            page.wait_for_selector("#chart .main-svg")
            page.evaluate(frame)
            steps = [("open", time.perf_counter() - started)]
            for name, action in [
                ("search op:Softmax", lambda p=page: p.fill("#search", "op:Softmax")),
                ("clear search", lambda p=page: p.fill("#search", "")),
                ("expand all", lambda p=page: p.click("#expand-all")),
                ("select root", lambda p=page: p.click("#tree tbody tr td.name")),
                ("sunburst", lambda p=page: p.select_option("#chart-kind", "sunburst")),
            ]:
                started = time.perf_counter()
                action()
                if name.startswith(("search", "clear")):  # the search waits 120 ms to settle
                    page.wait_for_function(
                        "q => document.body.dataset.query === q",
                        arg="op:Softmax" if name.startswith("search") else "",
                    )
                page.evaluate(frame)
                steps.append((name, time.perf_counter() - started))
            rows = page.eval_on_selector_all("#tree tbody tr", "r => r.length")
            assert rows == data["model"]["modules"], rows
            for name, seconds in steps:
                timings.setdefault(name, []).append(seconds)
            page.close()
        browser.close()
    for name, values in timings.items():
        print(f"browser {name}: {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
