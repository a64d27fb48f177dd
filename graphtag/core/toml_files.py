"""Reading the TOML files users hand graphtag (pipelines, zoos): one error wording."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from graphtag.core.errors import GraphtagError


def read_toml(
    path: str | os.PathLike, what: str, error: type[GraphtagError] = GraphtagError
) -> dict[str, Any]:
    """The parsed file; a missing or unreadable one is ``error`` naming ``what`` it should be."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{path}: not a readable {what} TOML ({exc})") from None
