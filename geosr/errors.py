"""Exceptions that carry a message meant for the user, and the one way to put a message on one line.

Library code raises these with a one-line message that names the file, the value and the remedy, and, where the error
is about one setting, that setting's command-line name in ``option`` (``"--overlap"``), so that a caller can point at
it without reading the message. The command line turns them into an error line and an exit code without a
traceback: 2 for an ``OptionError`` (a value wrong in itself, found before any file is opened), 1 for the others.
"""

from __future__ import annotations

import re

OUT_OF_MEMORY = "out of memory; use a smaller --tile-size or --batch-size, or a machine with more memory"


class GeosrError(Exception):
    """An error caused by the user's input, with a message that says how to fix it.

    option: the command-line name of the setting the error is about (e.g. ``"--bands"``), or None.
    """

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class OptionError(GeosrError, ValueError):
    """A setting whose value is wrong in itself, whatever the files: out of range, unparsable, or excluded by another
    setting. A usage error (exit 2 on the command line); ``option`` names the setting."""


class ModelFileError(GeosrError):
    """A model file that cannot be read: wrong format, corrupt, or with an invalid model card."""


class RasterError(GeosrError):
    """A raster that cannot be processed as asked."""


class DataError(GeosrError):
    """A training or evaluation data set that cannot be used as asked."""


class WriteError(GeosrError):
    """A file that could not be written (disk full, no permission, ...); what was there before is left intact."""


class OutputExistsError(WriteError):
    """An output file exists and was not to be replaced (or appeared meanwhile, written by another process)."""


class NotEnoughMemory(GeosrError):
    """The model (or a buffer) needed more memory than the device has; ``option`` names the setting to lower."""


# Characters that must not reach a terminal or a file's tags as they are: C0 and C1 controls (ANSI escape
# sequences start with ESC), DEL, and the invisible marks that reorder text (bidirectional overrides).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, newlines, bidirectional overrides) written as Python
    escapes (``\\x1b``, ``\\n``, ``\\u202e``), so that text from a file shows as what it is and cannot drive a
    terminal."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def one_line(exc: BaseException, max_chars: int | None = None) -> str:
    """The message of ``exc`` on one line (its type's name when it has none), control characters escaped.

    An error raised in a DataLoader worker process comes back with the worker's traceback in its message; only the
    original message (the traceback's last line, without the exception's type) is kept. max_chars: keep the
    message's whole sentences that fit (at least the first one, never cut inside a sentence).
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = printable(" ".join(text.split())) or type(exc).__name__
    if max_chars is not None and len(text) > max_chars:
        sentences = re.split(r"(?<=[.!?])\s+", text)
        kept = sentences[0]
        for sentence in sentences[1:]:
            if len(kept) + 1 + len(sentence) > max_chars:
                break
            kept += " " + sentence
        text = kept if kept == text else kept + " [...]"
    return text
