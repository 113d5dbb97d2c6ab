"""CSV import files (CONTRACT §5, §10): decode, parse, validate and normalise rows. Pure.

A file is at most 10 MB (10,485,760 bytes), UTF-8 with or without a BOM, comma- or
semicolon-separated (decided by which of the two the header line holds more of), with a header
row naming a ``phone`` column (``name`` optional; header names are case-insensitive; other
columns are ignored). Phones are normalised to E.164 with ``phonenumbers``; a national number
is read in the workspace's ``default_region``. Line numbers count the header as line 1 and point
at the first physical line of a record (a quoted field may span lines). Rows whose phone
normalises to one already seen are folded into the first (counted once). A file whose every
row is invalid still parses: the caller applies the valid part (possibly nothing).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from . import limits
from .errors import BadInput
from .phones import normalise_phone

if TYPE_CHECKING:
    from _csv import Reader

MAX_BYTES = 10 * 1024 * 1024
SAMPLE_CSV = "phone,name\n+96891234567,Aisha Al Balushi\n+14155550123,John Smith\n"



class CsvProblem(StrEnum):
    """Why a whole file is refused (the HTTP layer maps TOO_LARGE to 413, the rest to 422)."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    EMPTY = "empty"
    BAD_HEADER = "bad_header"
    MALFORMED = "malformed"


class CsvFileError(BadInput):
    """The file as a whole cannot be imported; retrying the same file will not help."""

    code = "invalid_csv"

    def __init__(self, problem: CsvProblem, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message, retriable=False, context=details)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One importable customer: its E.164 phone and, when given, a name."""

    line: int
    phone: str
    name: str | None


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row left out of the import, with the raw phone value and the reason."""

    line: int
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    """The valid rows (unique by phone, in file order), the invalid ones, and how many repeated."""

    rows: tuple[CsvRow, ...]
    invalid: tuple[InvalidRow, ...]
    duplicates: int


def _decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise CsvFileError(
            CsvProblem.TOO_LARGE,
            f"the file is {len(data)} bytes; at most {MAX_BYTES} bytes (10 MB) are allowed",
            {"size": len(data), "max_bytes": MAX_BYTES},
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CsvFileError(
            CsvProblem.NOT_UTF8,
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02X} at line {line}); "
            "save it as CSV UTF-8 and import it again",
            {"line": line, "byte_offset": exc.start},
        ) from None
    if not text.strip():
        raise CsvFileError(CsvProblem.EMPTY, "the file is empty; it needs a header row with a phone column")
    return text


def _delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


def parse_csv(data: bytes, default_region: str | None = None) -> ParsedCsv:
    """Parse an import file; raise ``CsvFileError`` when the file as a whole is unusable."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text), strict=True)
    try:
        return _parse_rows(reader, default_region)
    except csv.Error as exc:
        raise CsvFileError(
            CsvProblem.MALFORMED,
            f"the file is not valid CSV near line {reader.line_num}: {exc}",
            {"line": reader.line_num},
        ) from None


def _parse_rows(reader: Reader, default_region: str | None) -> ParsedCsv:
    header: list[str] | None = None
    for header in reader:
        if any(cell.strip() for cell in header):
            break
    columns = [cell.strip().casefold() for cell in header or []]
    if "phone" not in columns:
        found = ", ".join(repr(c) for c in columns if c) or "none"
        raise CsvFileError(
            CsvProblem.BAD_HEADER,
            f"the first row must be a header with a 'phone' column (columns found: {found})",
            {"line": reader.line_num, "columns": columns},
        )
    phone_at = columns.index("phone")
    name_at = columns.index("name") if "name" in columns else None

    seen: dict[str, CsvRow] = {}
    invalid: list[InvalidRow] = []
    duplicates = 0
    records = 0
    end = reader.line_num
    for record in reader:
        start, end = end + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue  # blank lines are not rows
        records += 1
        raw = record[phone_at] if phone_at < len(record) else ""
        try:
            phone = normalise_phone(raw, default_region)
        except ValueError as exc:
            invalid.append(InvalidRow(start, raw, str(exc)))
            continue
        name = record[name_at].strip() if name_at is not None and name_at < len(record) else ""
        name = name.replace("\x00", "")  # NUL cannot be stored (PostgreSQL text)
        problem = limits.text_problem(name, limits.NAME_MAX_CHARS)
        if problem is not None:  # the limit of every name (CONTRACT §10 "Limits")
            invalid.append(InvalidRow(start, raw, f"name {problem}"))
            continue
        if phone in seen:
            duplicates += 1
            continue
        seen[phone] = CsvRow(start, phone, name or None)
    if records == 0:
        raise CsvFileError(CsvProblem.EMPTY, "the file has a header but no rows to import")
    return ParsedCsv(tuple(seen.values()), tuple(invalid), duplicates)
