"""Log redaction: no element value, UID or file content reaches a log line.

pydicom and pynetdicom put values into their messages ("Invalid value for VR DA:
'1970-13-45'", a bad UID, a data set dump at DEBUG), and pydicom also warns through
:mod:`warnings`, which writes to stderr, and so to the journal, unless routed to logging. The
node's handlers carry :class:`ValueRedaction`, installed by :func:`install_redaction`:

* records of ``pydicom``, ``pynetdicom`` and ``py.warnings`` below WARNING are dropped (their
  DEBUG/INFO output dumps data sets and PDUs);
* their other records keep their shape, but quoted text, byte strings, and every word holding a
  digit or one of ``^ = @ \\ /`` are replaced by ``…``; tags such as ``(0010,0030)`` stay, they
  name an attribute, not a value;
* an exception attached to any record keeps its traceback frames and type; its message is
  redacted the same way (pydicom's exceptions quote the value they could not read).
"""

from __future__ import annotations

import logging
import re
import traceback

THIRD_PARTY = ("pydicom", "pynetdicom", "py.warnings")
REDACTED = "…"
_TAG = re.compile(r"\([0-9A-Fa-f]{4}, ?[0-9A-Fa-f]{4}\)")
_QUOTED = re.compile(r"b?'[^']*'|b?\"[^\"]*\"")
_WORD = re.compile(r"\S+")
_VALUE_CHARS = re.compile(r"[0-9^=@\\/]")


def redact(text: str) -> str:
    """``text`` with quoted text and every value-like word replaced by ``…``."""
    tags: list[str] = []

    def keep_tag(m: re.Match) -> str:
        tags.append(m.group())
        return f"\x00{len(tags) - 1}\x00"

    text = _TAG.sub(keep_tag, text)
    text = _QUOTED.sub(REDACTED, text)

    def word(m: re.Match) -> str:
        w = m.group()
        if "\x00" in w:
            return w
        return REDACTED if _VALUE_CHARS.search(w) else w

    text = _WORD.sub(word, text)
    return re.sub("\x00(\\d+)\x00", lambda m: tags[int(m.group(1))], text)


def _exception_text(exc_info: tuple) -> str:
    exc_type, exc, tb = exc_info
    name = getattr(exc_type, "__qualname__", str(exc_type))
    lines = ["Traceback (most recent call last):\n", *traceback.format_tb(tb)]
    message = redact(str(exc)) if exc is not None else ""
    lines.append(f"{name}: {message}" if message else name)
    return "".join(lines).rstrip("\n")


def _third_party(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in THIRD_PARTY)


class ValueRedaction(logging.Filter):
    """Drops or redacts log records that can carry element values (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _third_party(record.name):
            if record.levelno < logging.WARNING:
                return False
            record.msg = redact(record.getMessage())
            record.args = ()
            record.stack_info = None
        if record.exc_info and record.exc_info[0] is not None and \
                not getattr(record, "_redacted_exc", False):
            record.exc_text = _exception_text(record.exc_info)
            record._redacted_exc = True
        return True


def install_redaction(handler: logging.Handler) -> logging.Handler:
    """Give ``handler`` the :class:`ValueRedaction` filter and route warnings to logging.

    Returns the handler, so the call fits where the handler is made.
    """
    if not any(isinstance(f, ValueRedaction) for f in handler.filters):
        handler.addFilter(ValueRedaction())
    logging.captureWarnings(True)  # pydicom's warnings.warn would otherwise reach stderr
    return handler
