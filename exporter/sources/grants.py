"""What a database user may do beyond reading, from its SHOW GRANTS lines (pure).

A read-only reporter should hold read-only credentials: anything beyond SELECT (and USAGE, which
is no privilege at all) is excess, named with where it applies, e.g. "INSERT ON `app`.*". Only
the privileges and their targets are taken from a line, never what follows TO: on MariaDB that
part can hold the account's password hash.
"""

from __future__ import annotations

from collections.abc import Iterable

_HARMLESS = {"SELECT", "USAGE"}


def _split_top(text: str, separator: str) -> list[str]:
    """Split on `separator` outside backquotes, quotes and parentheses."""
    parts: list[str] = []
    depth, quote, start, i = 0, "", 0, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = ""
        elif char in "`'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            i += len(separator)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def excess_privileges(grants: Iterable[str]) -> tuple[str, ...]:
    """Each privilege beyond SELECT in the lines of SHOW GRANTS, as "PRIVILEGE ON target"."""
    excess: list[str] = []
    for line in grants:
        if not line.upper().startswith("GRANT "):
            continue
        on = _split_top(line[len("GRANT ") :], " ON ")
        if len(on) < 2:
            continue  # a role granted to the user: its privileges are listed when it is active
        privileges, rest = on[0], " ON ".join(on[1:])
        target, *after = _split_top(rest, " TO ")
        for privilege in _split_top(privileges, ","):
            name = privilege.split("(", 1)[0].strip().upper()  # without a column list
            if name not in _HARMLESS:
                excess.append(f"{name} ON {target.strip()}")
        if "GRANT OPTION" in " TO ".join(after).upper():
            excess.append(f"GRANT OPTION ON {target.strip()}")
    return tuple(excess)
