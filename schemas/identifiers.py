"""The one rule for identifiers that become path components or file names.

Campaign ids (registry and seed rows, ``--campaign``), model versions (``--version``), and the
names a config gives (the config itself, tasks, modalities, channels, demographic fields,
``import.tables``) all end up as a folder or file name somewhere: ``campaign=<id>``,
``campaign_id=<id>`` (Spark's partition folders), ``<models>/<version>/``, a report's
columns and files. So they all follow one rule:

* 1 to :data:`MAX_LENGTH` characters: far below the 255 bytes a file name may have on
  every common filesystem, with room for the longest prefix the pipeline adds
  (``campaign_id=``) and the suffixes of staging and checksum files;
* ASCII letters, digits, ``_``, ``-`` and ``.`` only: no path separator, no ``=`` (the
  partition key's own separator), no space, no control character and no Unicode
  look-alike;
* starting with a letter or a digit (so never ``.``, ``..``, a hidden ``.name``, a
  ``-flag`` or a ``_name`` that Spark and Hadoop skip as metadata) and not ending with
  ``.`` (Windows strips it);
* not a name Windows reserves for a device (``CON``, ``PRN``, ``AUX``, ``NUL``,
  ``COM0``–``COM9``, ``LPT0``–``LPT9``, in any case, with or without an extension).

The config's own names are further held to lower_snake_case (``config_model.NAME_RE``),
because they also become feature keys and column names; that is a subset of this rule.

A refusal is one line that names the value (escaped by :func:`shown`, so that a newline or
a control character cannot forge a log line), the rule and the fix.
"""
from __future__ import annotations

import re

MAX_LENGTH = 100
RULE = (f"1-{MAX_LENGTH} ASCII letters, digits, '_', '-' or '.', starting with a letter or "
        "digit, not ending with '.', and not a reserved device name (CON, NUL, COM1, ...)")
_ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_SHOWN_LENGTH = 60


class IdentifierError(ValueError):
    """An identifier that breaks the rule; the message is one line."""


def shown(value: object, limit: int = _SHOWN_LENGTH) -> str:
    """``value`` quoted for a message: every control and non-ASCII character escaped (so the
    text is one line of plain ASCII), cut to about ``limit`` characters with its length."""
    if not isinstance(value, str):
        return f"{type(value).__name__} {ascii(value)[:limit]}"
    text = ascii(value[:limit])
    return text if len(value) <= limit else f"{text[:-1]}...' ({len(value)} characters)"


def identifier_problem(value: object) -> str | None:
    """Why ``value`` breaks the identifier rule, or None when it keeps it."""
    if not isinstance(value, str):
        return f"is {'null' if value is None else 'a ' + type(value).__name__}, not a string"
    if not value:
        return "is empty"
    if len(value) > MAX_LENGTH:
        return f"has {len(value)} characters, more than {MAX_LENGTH}"
    bad = sorted({ch for ch in value if not (ch.isascii() and (ch.isalnum() or ch in "_.-"))})
    if bad:
        return f"holds {', '.join(ascii(ch) for ch in bad[:5])}" + (
            f" and {len(bad) - 5} other character(s)" if len(bad) > 5 else "")
    if not _ALLOWED.fullmatch(value):
        return "does not start with a letter or a digit"
    if value.endswith("."):
        return "ends with '.'"
    if _RESERVED.fullmatch(value):
        return "is a reserved device name"
    return None


def check_identifier(value: object, what: str, fix: str = "") -> str:
    """``value`` when it keeps the rule; otherwise an :class:`IdentifierError` whose one-line
    message names ``what`` (e.g. ``"campaign_id"``), the escaped value, the rule and ``fix``."""
    problem = identifier_problem(value)
    if problem is None:
        return value  # type: ignore[return-value]
    raise IdentifierError(refusal(value, what, problem, fix))


def refusal(value: object, what: str, problem: str, fix: str = "") -> str:
    """The one-line refusal for a value that breaks the rule."""
    return (f"{what} {shown(value)} {problem}; an identifier that becomes a file or folder "
            f"name must be {RULE}" + (f"; {fix}" if fix else ""))


def refusals(values, what: str, fix: str = "") -> dict:
    """``{value: its one-line refusal}`` for every value of ``values`` that breaks the rule."""
    problems = {v: identifier_problem(v) for v in values}
    return {v: refusal(v, what, p, fix) for v, p in problems.items() if p is not None}


def within(root: str, path: str) -> bool:
    """Whether ``path`` lies strictly inside ``root`` after resolving ``.`` and ``..``
    segments (string-wise: URIs are not resolved against any filesystem)."""
    import posixpath
    scheme, _, rest = root.partition("://") if "://" in root else ("", "", root)
    p_scheme, _, p_rest = path.partition("://") if "://" in path else ("", "", path)
    if scheme != p_scheme:
        return False
    base = posixpath.normpath(rest.rstrip("/") or "/")
    inner = posixpath.normpath(p_rest)
    return inner != base and inner.startswith(base.rstrip("/") + "/")


def argument(what: str):
    """An argparse ``type=`` that refuses, in argparse's one line, a value breaking the rule."""
    import argparse

    def parse(value: str) -> str:
        problem = identifier_problem(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(refusal(value, what, problem))
        return value

    parse.__name__ = what  # argparse names the type in some of its messages
    return parse
