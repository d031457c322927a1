"""Text that people read (account names, ban reasons, chat): what it may not contain.

Admin consoles, logs and the audit log show these strings. A control character forges a log line or
drives a terminal; a bidirectional override (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066..U+2069 isolates)
or a zero-width character makes "evil" read as "live" to an admin. The admin API and the hub refuse
such text at the door (docs/security.md).
"""

from __future__ import annotations

import unicodedata
from typing import Final

# Unicode general categories refused: controls, format characters (bidi controls, zero-width
# joiners, BOM), surrogates, private use, unassigned, line and paragraph separators.
REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def unsafe_char(text: str, allow: str = "") -> str | None:
    """The first character of `text` an admin must not be shown (outside `allow`), or None."""
    for c in text:
        if c not in allow and unicodedata.category(c) in REFUSED_CATEGORIES:
            return c
    return None
