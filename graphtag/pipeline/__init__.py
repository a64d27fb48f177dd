"""Pass registry, pipeline parsing and the instrumented pipeline runner."""

from graphtag.pipeline.manager import PassRecord, Pipeline, PipelineReport
from graphtag.pipeline.parse import PassInvocation, load_pipeline_toml, parse_pipeline
from graphtag.pipeline.registry import (
    ENTRY_POINT_GROUP,
    OptionSpec,
    PassRegistry,
    PassSpec,
    registry,
)
from graphtag.pipeline.scoped import Scoped, ScopedPassError

__all__ = [
    "ENTRY_POINT_GROUP",
    "OptionSpec",
    "PassInvocation",
    "PassRecord",
    "PassRegistry",
    "PassSpec",
    "Pipeline",
    "PipelineReport",
    "Scoped",
    "ScopedPassError",
    "load_pipeline_toml",
    "parse_pipeline",
    "registry",
]
