"""What comes back from a DataLoader worker that raised: torch re-raises the worker's exception in the main
process as ``type(err)(message)``, the message being ``Caught <Type> in DataLoader worker process N.`` plus
the worker's whole traceback (``torch._utils.ExceptionWrapper``). :func:`worker_message` recovers the
original one-line message, for the one-line errors of the command-line tools and for exception types that
keep their own message when rebuilt that way."""

from __future__ import annotations

import re

WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def worker_message(text: str) -> str | None:
    """The original one-line message of an exception a DataLoader worker raised (the last line of the
    worker's traceback, ``module.Type: message``, without the type), or None for any other text."""
    found = WORKER_ERROR.match(text)
    if found is None:
        return None
    lines = text.rstrip().splitlines()
    for line in reversed(lines):
        head, sep, rest = line.partition(": ")
        if sep and not line.startswith(" ") and head.rsplit(".", 1)[-1] == found.group(1):
            return rest
    return lines[-1].strip()
