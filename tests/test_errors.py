"""One line per failure: ``first_line`` is how every report turns an exception into text."""

from __future__ import annotations

import pytest

from graphtag.core.errors import clip, first_line


def test_clip_marks_the_cut_and_keeps_short_text() -> None:
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefg", 6) == "abc..."
    assert len(clip("x" * 1000, 300)) == 300


def test_first_line_keeps_the_first_line_of_a_long_message() -> None:
    exc = ValueError("  no kernel for Gemm(13)  \nsupported: " + "A, " * 500)
    assert first_line(exc) == "no kernel for Gemm(13)"
    assert first_line(exc, typed=True) == "ValueError: no kernel for Gemm(13)"


def test_first_line_clips_and_drops_terminal_colours() -> None:
    exc = RuntimeError("\x1b[31m" + "y" * 500 + "\x1b[0m")
    line = first_line(exc, 50)
    assert line == "y" * 47 + "..."
    assert "\x1b" not in first_line(exc, 50, typed=True)


@pytest.mark.parametrize("message", ["", "   ", "\n\n"])
def test_a_message_without_text_gives_the_type(message: str) -> None:
    # Untyped callers put the text after a colon: it must never be empty.
    assert first_line(OSError(message)) == "OSError"
    assert first_line(ValueError(message), 10) == "ValueError"
    assert first_line(OSError(message), typed=True) == "OSError"
