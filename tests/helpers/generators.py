"""Hypothesis strategies and random generators shared by the rule and store tests."""

from __future__ import annotations

import random

from hypothesis import strategies as st


def stamp_like(r: random.Random) -> str:
    """A string shaped like a date or an RFC 3339 timestamp; each part mostly valid, sometimes not
    (month 13, 31 April, hour 24, minute 60, offset +24:00 or +05:99, seven fraction digits …)."""

    def two(valid_lo: int, valid_hi: int, invalid: tuple[int, ...]) -> str:
        return f"{r.choice(invalid) if r.random() < 0.1 else r.randint(valid_lo, valid_hi):02d}"

    month = int(two(1, 12, (0, 13)))
    day = two(1, 28, (0, 29, 30, 31, 32)) if r.random() < 0.5 else f"{r.randint(28, 31):02d}"
    date_part = f"{r.choice((r.randint(1, 9999), r.randint(1990, 2030), 0)):04d}-{month:02d}-{day}"
    if r.random() < 0.3:
        return date_part
    frac = r.choice(("", "", ".5", ".123456", ".1234567", "."))
    zone = r.choice(
        ("Z", "z", "+00:00", "-00:00", f"{r.choice('+-')}{two(0, 23, (24, 25, 99))}:{two(0, 59, (60, 99))}")
    )
    time_part = f"{two(0, 23, (24, 25))}:{two(0, 59, (60, 61))}:{two(0, 59, (60, 61))}"
    return f"{date_part}{r.choice('TTTt x')}{time_part}{frac}{zone}"


SAFE_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30)
