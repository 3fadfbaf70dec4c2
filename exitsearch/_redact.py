"""Masking the password of a URL in every message and file that may show it.

Storage URLs (``postgresql://user:password@host/db``) reach error messages, logs and the command
line recorded in result files; the password is replaced by ``***`` wherever it would appear.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# scheme://user:password@host -- a password may hold '@' itself: it ends at the '@' after which
# a host follows up to a '/', a blank or the end of the text.
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>\S*?)"
    r"(?=@[^@\s]*$|@[^@\s/]*[/\s])"
)


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL masked.

    Example:
        >>> redact("cannot open postgresql://ann:s3cret@db/x: refused")
        'cannot open postgresql://ann:***@db/x: refused'
    """
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
