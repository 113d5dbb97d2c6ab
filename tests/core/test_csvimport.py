"""CSV import parsing (pure): encodings, delimiters, quoting, phones, line numbers, limits."""

from __future__ import annotations

import random
import time

import phonenumbers
import pytest

from helpers.csvfiles import file_of_size
from segment_worker import limits
from segment_worker.csvimport import (
    MAX_BYTES,
    SAMPLE_CSV,
    CsvFileError,
    CsvProblem,
    parse_csv,
)
from segment_worker.phones import is_valid, normalise_phone


def _phones(data: bytes, region: str | None = None) -> list[str]:
    return [r.phone for r in parse_csv(data, region).rows]


def test_comma_file_with_names() -> None:
    parsed = parse_csv(b"phone,name\n+96891234567,Aisha\n+16502530000,John\n")
    assert [(r.line, r.phone, r.name) for r in parsed.rows] == [
        (2, "+96891234567", "Aisha"),
        (3, "+16502530000", "John"),
    ]
    assert parsed.invalid == ()


def test_bom_is_ignored_and_header_is_case_insensitive() -> None:
    data = "\ufeffPhone;NAME\n+96891234567;Zoë\n".encode()
    parsed = parse_csv(data)
    assert [(r.phone, r.name) for r in parsed.rows] == [("+96891234567", "Zoë")]


def test_semicolon_delimiter_with_quoted_commas() -> None:
    data = b'name;phone\n"Smith, John";"+1 (650) 253-0000"\n'
    parsed = parse_csv(data)
    assert [(r.phone, r.name) for r in parsed.rows] == [("+16502530000", "Smith, John")]


def test_quoted_comma_in_comma_file_and_extra_columns() -> None:
    data = b'email,phone,name\nx@y.z,+96891234567,"Al Balushi, Aisha"\n'
    parsed = parse_csv(data)
    assert [(r.phone, r.name) for r in parsed.rows] == [("+96891234567", "Al Balushi, Aisha")]


def test_name_is_optional() -> None:
    parsed = parse_csv(b"phone\n+96891234567\n")
    assert [(r.phone, r.name) for r in parsed.rows] == [("+96891234567", None)]


def test_national_numbers_use_default_region_and_international_forms_do_not() -> None:
    data = b"phone\n(650) 253-0000\n011 968 9123 4567\n+968 9123 4567\n+1-650-253-0000\n"
    assert _phones(data, "US") == ["+16502530000", "+96891234567"]
    assert parse_csv(data, "US").duplicates == 2  # each number in its second spelling
    assert _phones(b"phone\n91234567\n", "OM") == ["+96891234567"]


def test_national_number_without_region_is_invalid_with_a_clear_reason() -> None:
    parsed = parse_csv(b"phone\n6502530000\n")
    assert parsed.rows == ()
    [bad] = parsed.invalid
    assert bad.line == 2 and bad.value == "6502530000"
    assert "default_region" in bad.reason


def test_invalid_phones_are_listed_with_line_numbers_and_reasons() -> None:
    data = (
        b"phone,name\n+96891234567,ok\nabc,x\n,empty\n+1 650 253 0000 ext 12,ext\n+99912345,cc\n123,short\n"
    )
    parsed = parse_csv(data, "US")
    assert [r.phone for r in parsed.rows] == ["+96891234567"]
    by_line = {i.line: (i.value, i.reason) for i in parsed.invalid}
    assert by_line[3] == ("abc", "not a phone number")
    assert by_line[4] == ("", "phone is empty")
    assert "extension" in by_line[5][1]
    assert by_line[6][0] == "+99912345"
    assert "country calling code" in by_line[6][1] or "valid" in by_line[6][1]
    assert by_line[7][0] == "123"
    assert set(by_line) == {3, 4, 5, 6, 7}


def test_line_numbers_follow_multiline_quoted_fields_and_blank_lines() -> None:
    data = b'phone,name\n+96891234567,"two\nlines"\n\nnope,x\n'
    parsed = parse_csv(data)
    assert parsed.rows[0].name == "two\nlines"
    assert [i.line for i in parsed.invalid] == [5]


def test_duplicates_are_counted_once_and_keep_the_first_name() -> None:
    data = b"phone,name\n+96891234567,First\n+968 9123 4567,Second\n+96891234567,Third\n"
    parsed = parse_csv(data)
    assert [(r.line, r.name) for r in parsed.rows] == [(2, "First")]
    assert parsed.duplicates == 2


def test_short_row_without_phone_cell_is_invalid() -> None:
    parsed = parse_csv(b"name,phone\nlonely\n")
    assert [(i.line, i.value, i.reason) for i in parsed.invalid] == [(2, "", "phone is empty")]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", CsvProblem.EMPTY),
        (b"\xef\xbb\xbf  \n\n", CsvProblem.EMPTY),
        (b"phone,name\n", CsvProblem.EMPTY),
        (b"mobile,name\n+96891234567,x\n", CsvProblem.BAD_HEADER),
        (b"phone,name\n+96891234567,caf\xe9\n", CsvProblem.NOT_UTF8),
        (b'phone,name\n+96891234567,"unterminated\n', CsvProblem.MALFORMED),
    ],
)
def test_unusable_files_are_refused_whole(data: bytes, problem: CsvProblem) -> None:
    with pytest.raises(CsvFileError) as err:
        parse_csv(data)
    assert err.value.problem is problem
    assert err.value.message


def test_header_error_names_the_columns_found() -> None:
    with pytest.raises(CsvFileError) as err:
        parse_csv(b"Mobile;Name\n1;2\n")
    assert "'mobile'" in err.value.message and "phone" in err.value.message


def test_non_utf8_error_names_the_line() -> None:
    with pytest.raises(CsvFileError) as err:
        parse_csv("phone,name\n+96891234567,ok\n+16502530000,Jos\u00e9\n".encode("latin-1"))
    assert err.value.context["line"] == 3
    assert "UTF-8" in err.value.message




def test_exactly_10_mb_is_accepted_and_one_byte_more_is_too_large() -> None:
    parsed = parse_csv(file_of_size(MAX_BYTES))
    assert [r.phone for r in parsed.rows] == ["+96891234567"]
    with pytest.raises(CsvFileError) as err:
        parse_csv(file_of_size(MAX_BYTES + 1))
    assert err.value.problem is CsvProblem.TOO_LARGE
    assert err.value.context == {"size": MAX_BYTES + 1, "max_bytes": MAX_BYTES}


def test_hundred_thousand_rows_parse_quickly() -> None:
    lines = [f"+1650{2_000_000 + i},Customer {i}" for i in range(100_000)]
    data = ("phone,name\n" + "\n".join(lines) + "\n").encode()
    t0 = time.perf_counter()
    parsed = parse_csv(data)
    elapsed = time.perf_counter() - t0
    assert len(parsed.rows) == 100_000 and parsed.invalid == ()
    assert elapsed < 20, f"parsing 100k rows took {elapsed:.1f}s"


def test_sample_csv_parses_cleanly() -> None:
    parsed = parse_csv(SAMPLE_CSV.encode())
    assert len(parsed.rows) == 2 and parsed.invalid == ()


def test_normalise_phone_reasons() -> None:
    assert normalise_phone(" +968 9123 4567 ", None) == "+96891234567"
    with pytest.raises(ValueError, match="not a valid phone number"):
        normalise_phone("+1 555 555 0123", None)


def test_fast_validity_agrees_with_phonenumbers() -> None:
    rng = random.Random(20261122)
    checked = 0
    for cc in (1, 7, 44, 47, 61, 212, 262, 290, 358, 590, 599, 968, 971, 33):
        for _ in range(1500):
            national = str(rng.randrange(10**5, 10**11))
            number = phonenumbers.parse(f"+{cc}{national}", None)
            assert is_valid(number) == phonenumbers.is_valid_number(number), f"+{cc}{national}"
            checked += phonenumbers.is_valid_number(number)
    for known in (
        "+14165550199",
        "+18765550123",
        "+16502530000",
        "+447624123456",
        "+77012345678",
        "+79123456789",
    ):
        number = phonenumbers.parse(known, None)
        assert is_valid(number) == phonenumbers.is_valid_number(number), known
    assert checked > 200  # enough valid numbers among the random ones to mean something


def test_a_name_over_the_limit_makes_its_row_invalid_with_a_reason() -> None:
    at_limit, over = "n" * limits.NAME_MAX_CHARS, "é" * (limits.NAME_MAX_CHARS + 1)
    parsed = parse_csv(f"phone,name\n+96891234567,{over}\n+96891234567,{at_limit}\n".encode())
    assert [(r.line, r.name) for r in parsed.rows] == [(3, at_limit)]  # the same phone, a valid name
    assert [(i.line, i.value, i.reason) for i in parsed.invalid] == [
        (2, "+96891234567", "name is 161 characters long; the limit is 160")
    ]
