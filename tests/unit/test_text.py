"""The shared text helpers: one way to cut, flatten and show untrusted text."""

from __future__ import annotations

import pytest

from agent.text import clip, one_line, printable


@pytest.mark.parametrize("length", [0, 1, 9, 10, 11, 99, 100, 101, 5000, 123456])
@pytest.mark.parametrize("limit", [0, 1, 5, 12, 13, 20, 100, 1000])
def test_clip_never_exceeds_the_limit_and_counts_what_it_cut(length: int, limit: int) -> None:
    """The result is at most ``limit`` characters; when cut, the marker names the cut count."""
    text = "x" * length
    out = clip(text, limit)
    assert len(out) <= limit or out == text
    if length <= limit:
        assert out == text
    elif "]" in out and out.endswith(" chars]"):
        kept = out.index("…")
        assert out == "x" * kept + f"…[+{length - kept} chars]"


def test_one_line_flattens_controls_and_folds_space() -> None:
    """Newlines, NULs and line separators become single spaces."""
    assert one_line("a\n\n b\x00c\u2028d", 100) == "a b c d"


def test_printable_escapes_terminal_controls() -> None:
    """Escape sequences and bidi overrides cannot reach a terminal raw."""
    shown = printable("red \x1b[31mX\x1b[0m \u202eevil\r")
    assert "\x1b" not in shown and "\u202e" not in shown and "\r" not in shown
    assert "\\x1b[31m" in shown and "\\u202e" in shown
    assert printable("plain é ☃") == "plain é ☃"
