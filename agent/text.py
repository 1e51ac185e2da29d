"""Text helpers shared by every layer: one way to cut, flatten and show untrusted text.

Untrusted text (alert labels and annotations, model output, peer answers) is cut to a
limit with one marker, ``…[+N chars]``, flattened to one line before it goes on a wire, and
shown to a terminal with its control characters escaped, so that a label can neither flood
a log line nor repaint an operator's screen.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
_ESCAPE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def encodable(text: str) -> str:
    """Text that UTF-8 can encode: each lone surrogate (JSON can carry them) becomes U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the marker ``…[+N chars]`` included,
    where N is how many characters were cut."""
    if len(text) <= limit:
        return text
    keep = limit
    for _ in range(3):  # the marker's own length depends on N; it settles within two rounds
        marker = f"…[+{len(text) - keep} chars]"
        keep = max(0, limit - len(marker))
    marker = f"…[+{len(text) - keep} chars]"
    return (text[:keep] + marker)[:limit] if keep else marker[:limit]


def one_line(text: str, limit: int) -> str:
    """Control characters replaced by spaces, whitespace folded, then clipped."""
    return clip(_SPACES.sub(" ", _CONTROL.sub(" ", text)).strip(), limit)


def printable(text: str) -> str:
    """Text safe for a terminal: control and bidi-override characters shown as escapes."""
    return _ESCAPE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def in_block(text: str) -> str:
    """Text to put inside a delimited data block of a prompt (``<finding-data>``, tool
    results, logs): ``<`` written as ``\\u003c``, so the text cannot close its block."""
    return text.replace("<", "\\u003c")


def from_block(text: str) -> str:
    """The text ``in_block`` was given back (what a human or a case file keeps)."""
    return text.replace("\\u003c", "<")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and summaries."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def public_url(url: str) -> str:
    """The URL without user name and password, for naming a peer in messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url.rstrip("/")
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
