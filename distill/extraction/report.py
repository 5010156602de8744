"""Reading one report file into a ``Report``: decoded text, fingerprint and sections.

``report_<N>.txt`` holds the note as UTF-8 (with or without a BOM) or as
GB18030/GBK Chinese text. ``report_<N>.json`` holds an object whose
``"text"`` or ``"medical_record_content"`` field is the note. Anything else
raises ``BadInput`` with one line naming the file and the reason; the message
never quotes the note, which is protected health data.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from distill.core.config import DEFAULT_MAX_REPORT_BYTES
from distill.core.errors import BadInput
from distill.extraction.sections import Sections, detect_sections

#: A report file name: ``report_<N>.txt`` or ``report_<N>.json`` with N in ASCII decimal digits and no leading
#: zero, so that one number has one name: scanning, claiming and the outputs' ``diagnostic_<N>`` agree.
REPORT_NAME = re.compile(r"report_(0|[1-9][0-9]*)\.(txt|json)", re.ASCII)
REPORT_SUFFIXES = (".txt", ".json")

#: JSON fields that may hold the note, in order of preference.
JSON_TEXT_FIELDS = ("text", "medical_record_content")

# Share of characters that may be control or unassigned before text counts as binary.
_MAX_NONPRINTABLE_SHARE = 0.05
# Share of characters that must be CJK, ASCII or common punctuation for GB18030 to be believed.
_MIN_PLAUSIBLE_CJK_SHARE = 0.95
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class Report:
    """One decoded report. ``text`` is the file's text with the BOM removed and CRLF turned into LF."""

    number: int
    path: Path
    text: str
    sha256: str  # hex digest of the file's bytes
    encoding: str  # "utf-8", "utf-8-sig", "gb18030" or "json"
    sections: Sections


def report_number(path: str | Path) -> int | None:
    """The N of ``report_<N>.txt`` / ``report_<N>.json``; ``None`` for any other file name."""
    m = REPORT_NAME.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def shown_name(name: str) -> str:
    """``name`` fit for one line of a log: control characters and undecodable bytes escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in name)


def unused_name_reason(name: str) -> str | None:
    """Why a file that looks like a report (``report_*.txt`` / ``.json``) is not one; ``None`` for a report name
    and for names that do not look like one at all."""
    if not name.startswith("report_") or not name.endswith(REPORT_SUFFIXES) or REPORT_NAME.fullmatch(name):
        return None
    stem, suffix = name[len("report_"):].rsplit(".", 1)
    if stem.isascii() and stem.isdigit():  # only leading zeros are wrong
        canonical = f"report_{int(stem)}.{suffix}"
        return f"leading zeros in the report number (rename it {canonical})"
    return "the report number must be written in ASCII digits 0-9 (report_<N>.txt or report_<N>.json)"


def read_report(path: str | Path, *, max_bytes: int = DEFAULT_MAX_REPORT_BYTES, follow_symlinks: bool = False,
                inside: Path | None = None) -> Report:
    """Read, decode and section one report file.

    The size is checked on the open file before reading, so a huge file is
    never read whole. Raises ``BadInput`` (one line: file name, then the
    reason) for a missing, unreadable, non-regular, empty, oversized, binary,
    undecodable or malformed file, and for a symbolic link: one is followed
    only with ``follow_symlinks`` and when it stays inside ``inside`` (the
    input folder; the file's own folder by default).
    """
    p = Path(path)
    name = p.name
    number = report_number(p)
    if number is None:
        raise BadInput(f"{name}: not a report file name (expected report_<N>.txt or report_<N>.json)")
    if _is_link(p):
        _check_link(p, follow_symlinks, inside)
    data = _read_bytes(p, max_bytes, follow=follow_symlinks)
    if p.suffix == ".json":
        text, encoding = _text_from_json(data, name=name), "json"
    else:
        text, encoding = decode_report_bytes(data, name=name)
    return Report(
        number=number,
        path=p,
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        encoding=encoding,
        sections=detect_sections(text),
    )


def decode_report_bytes(data: bytes, *, name: str) -> tuple[str, str]:
    """Decode a ``.txt`` report's bytes: ``(text, encoding)``.

    Tries UTF-8 (a leading BOM gives ``"utf-8-sig"``), then GB18030, which is
    accepted only when the result reads as Chinese text. Raises ``BadInput``
    naming ``name`` for empty, whitespace-only, binary or undecodable data.
    """
    if not data:
        raise BadInput(f"{name}: empty file")
    if data.startswith(_UTF16_BOMS):
        raise BadInput(f"{name}: UTF-16 text is not supported; save the note as UTF-8")
    if b"\x00" in data:
        raise BadInput(f"{name}: binary file (contains NUL bytes), not a text note")
    if data.startswith(codecs.BOM_UTF8):
        text, encoding = _decode_utf8(data[len(codecs.BOM_UTF8) :], name), "utf-8-sig"
    else:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            text, encoding = _decode_gb18030(data, name, utf8_error=exc), "gb18030"
    text = _normalize_newlines(text.removeprefix("\ufeff"))
    _check_text(text, name)
    return text, encoding


# --- helpers -----------------------------------------------------------------------


def _is_link(p: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(p).st_mode)
    except OSError:  # missing or unreachable: the open below says which, in one line
        return False


def _check_link(p: Path, follow: bool, inside: Path | None) -> None:
    """A link could send any file the user can read (``/etc/passwd``) to a paid endpoint."""
    try:
        target = os.readlink(p)
    except OSError as exc:
        raise BadInput(f"{p.name}: cannot read the symbolic link: {exc.strerror or exc} ({p})") from None
    if not p.exists():
        raise BadInput(f"{p.name}: broken symbolic link to {target} ({p})")
    if not follow:
        raise BadInput(f"{p.name}: symbolic link to {target}, not followed "
                       f"(start with --follow-symlinks to allow links that stay inside the input folder)")
    root = (inside or p.parent).resolve()
    if not p.resolve().is_relative_to(root):
        raise BadInput(f"{p.name}: symbolic link to {target}, which is outside the input folder {root}")


def _read_bytes(p: Path, max_bytes: int, *, follow: bool = False) -> bytes:
    name = p.name
    # O_NONBLOCK: opening a FIFO named like a report must not hang the worker.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if not follow:  # a link swapped in after the check above is refused by the kernel
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        reason = "broken symbolic link" if p.is_symlink() else "file not found"
        raise BadInput(f"{name}: {reason} ({p})") from None
    except PermissionError:
        raise BadInput(f"{name}: cannot read the file: permission denied ({p})") from None
    except IsADirectoryError:
        raise BadInput(f"{name}: is a directory, not a report file ({p})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and _is_link(p):
            raise BadInput(f"{name}: symbolic link, not followed ({p})") from None
        raise BadInput(f"{name}: cannot open the file: {exc.strerror or exc} ({p})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"{name}: is a directory, not a report file ({p})")
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"{name}: not a regular file (a pipe, socket or device?) ({p})")
        if st.st_size > max_bytes:
            raise BadInput(_too_big(name, st.st_size, max_bytes))
        with os.fdopen(fd, "rb", closefd=False) as f:
            # One byte more than allowed: the file may have grown since fstat().
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise BadInput(f"{name}: cannot read the file: {exc.strerror or exc} ({p})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise BadInput(_too_big(name, len(data), max_bytes, at_least=True))
    return data


def _too_big(name: str, size: int, limit: int, *, at_least: bool = False) -> str:
    qualifier = "at least " if at_least else ""
    return f"{name}: file is {qualifier}{_human_size(size)}, over the {_human_size(limit)} limit (MAX_REPORT_BYTES)"


def _human_size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1_000:
        return f"{n / 1_000:.1f} kB"
    return f"{n} bytes"


def _decode_utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"{name}: starts with a UTF-8 byte-order mark but is not valid UTF-8 (byte {exc.start + 3})"
        ) from None


def _decode_gb18030(data: bytes, name: str, *, utf8_error: UnicodeDecodeError) -> str:
    undecodable = (
        f"{name}: not valid UTF-8 (byte {utf8_error.start}) nor GB18030 Chinese text; binary or unknown encoding"
    )
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        raise BadInput(undecodable) from None
    if not _plausible_chinese(text):
        raise BadInput(undecodable)
    return text


def _plausible_chinese(text: str) -> bool:
    """GB18030 decodes almost any byte string; believe it only for text that reads as Chinese notes do."""
    if not any(_is_cjk(c) for c in text):
        return False
    plausible = 0
    for c in text:
        if c in "\t\n\r" or (" " <= c <= "~") or _is_cjk(c) or _is_common_symbol(c):
            plausible += 1
        elif unicodedata.category(c) in ("Cc", "Co", "Cn", "Cs"):
            return False
    return plausible >= _MIN_PLAUSIBLE_CJK_SHARE * len(text)


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF


def _is_common_symbol(c: str) -> bool:
    o = ord(c)
    # CJK punctuation, full-width forms, Latin-1 symbols, general punctuation, units and arrows.
    return (
        0x3000 <= o <= 0x303F
        or 0xFF00 <= o <= 0xFFEF
        or 0x00A0 <= o <= 0x00FF
        or 0x2010 <= o <= 0x2044
        or 0x2100 <= o <= 0x2199
        or 0x2460 <= o <= 0x24FF  # circled numbers
        or 0x0391 <= o <= 0x03C9  # Greek letters (α, β, γ in lab names)
        or o in (0x2264, 0x2265, 0x00B1, 0x00D7, 0x2236)
    )


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n")


#: Whitespace and separators (never counted as binary); what is left of printable text is ``isprintable()``.
_WHITESPACE = re.compile("[\t\n\r\f\v \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def _check_text(text: str, name: str) -> None:
    if not text.strip():
        raise BadInput(f"{name}: " + ("empty file" if not text else "contains only whitespace"))
    # Printable text once whitespace is gone holds none of those codes: one C-speed pass instead of a per-character loop.
    printable = _WHITESPACE.sub("", text).isprintable()
    bad = 0 if printable else sum(1 for c in text if c not in "\t\n\r\f\v"
                                  and unicodedata.category(c) in ("Cc", "Cn", "Cs", "Co"))
    if bad > _MAX_NONPRINTABLE_SHARE * len(text):
        raise BadInput(f"{name}: binary file ({bad} of {len(text)} characters are control or unassigned codes)")


def _text_from_json(data: bytes, *, name: str) -> str:
    fields = " or ".join(f'"{f}"' for f in JSON_TEXT_FIELDS)
    if not data.strip():
        raise BadInput(f"{name}: empty file" if not data else f"{name}: contains only whitespace")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"{name}: JSON is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{name}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BadInput(f"{name}: malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{name}: JSON top level is {_json_type(doc)}; expected an object with a {fields} field")
    key = next((k for k in JSON_TEXT_FIELDS if k in doc), None)
    if key is None:
        raise BadInput(f"{name}: JSON object has no {fields} field")
    value = doc[key]
    if not isinstance(value, str):
        raise BadInput(f'{name}: JSON field "{key}" is {_json_type(value)}, expected a string')
    if not value.strip():
        raise BadInput(f'{name}: JSON field "{key}" is empty')
    text = _normalize_newlines(value.removeprefix("\ufeff"))
    _check_text(text, name)
    return text


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
