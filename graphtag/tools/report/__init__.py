"""A self-contained HTML report of a tagged model: module tree, hierarchy chart, module graph.

:func:`build_report` returns one HTML document that works offline from a ``file://``
URL: the data (see :mod:`graphtag.tools.report.data`), the styles, the script and the
charting library (plotly.js, from the ``plotly`` package) are all inline; the page
fetches nothing. :func:`write_report` loads an ONNX file (and optionally a profile, see
:mod:`graphtag.tools.report.profile`) and writes the report atomically. torch-free.
"""

from __future__ import annotations

__all__ = ["SCHEMA", "build_report", "load_profile", "report_data", "write_report"]

import json
import os
from importlib import resources
from pathlib import Path

import onnx_ir as ir

from graphtag.core.errors import GraphtagError
from graphtag.core.io import check_writable, load, write_text_atomic
from graphtag.tools.report.data import SCHEMA, collect
from graphtag.tools.report.profile import Profile, load_profile


def report_data(model: ir.Model, *, title: str = "model", profile: Profile | None = None) -> dict:
    """The JSON-ready data the report shows (also embedded in the HTML)."""
    return collect(model, title=title, profile=profile)


def build_report(model: ir.Model, *, title: str = "model", profile: Profile | None = None) -> str:
    """The report of ``model`` as one HTML document."""
    return render_html(report_data(model, title=title, profile=profile))


def render_html(data: dict) -> str:
    """Fill the template with ``data`` and inline the style, script and plotly.js."""
    package = resources.files(__name__)
    template = (package / "template.html").read_text(encoding="utf-8")
    pieces = {
        "__TITLE__": _html_text(data["title"]),
        "/*__STYLE__*/": (package / "report.css").read_text(encoding="utf-8"),
        "/*__PLOTLY__*/": _script_text(_plotly_js()),
        "/*__APP__*/": _script_text((package / "report.js").read_text(encoding="utf-8")),
        "__DATA__": _json_in_script(data),
    }
    # One pass over the template: a replacement never sees another's text.
    out, rest = [], template
    while rest:
        hits = [(rest.find(k), k) for k in pieces if rest.find(k) >= 0]
        if not hits:
            out.append(rest)
            break
        at, key = min(hits)
        out += [rest[:at], pieces[key]]
        rest = rest[at + len(key) :]
    return "".join(out)


def write_report(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    profile_path: str | os.PathLike | None = None,
    title: str | None = None,
) -> dict:
    """Load ``model_path`` (and the profile), write the report to ``output`` atomically.

    Returns the report data. The output path is checked before any work, so an
    unwritable path fails at once; nothing partial is ever left behind.
    """
    output = Path(output)
    check_writable(output)
    profile = load_profile(profile_path) if profile_path is not None else None
    model = load(model_path)
    data = report_data(model, title=title or Path(model_path).name, profile=profile)
    write_text_atomic(output, render_html(data))
    return data


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:  # a dependency of graphtag: only a broken install lacks it
        raise GraphtagError(f"the report needs the 'plotly' package ({exc})") from None
    return get_plotlyjs()


def _html_text(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _script_text(code: str) -> str:
    """Code safe inside <script>: it must not close the element early."""
    return code.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _json_in_script(data: dict) -> str:
    """JSON that cannot end its <script> element ('<' escaped; still valid JSON)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
