"""CSV import files made to measure (size limits)."""

from __future__ import annotations


def file_of_size(size: int) -> bytes:
    """A valid import file of exactly ``size`` bytes: one customer repeated, padded in a third column."""
    head = b"phone,name,notes\n"
    row = b"+96891234567,Aisha," + b"x" * 100_000 + b"\n"
    body = row * ((size - len(head)) // len(row))
    tail = size - len(head) - len(body)
    last = b"+96891234567,Aisha," + b"y" * (tail - 20) + b"\n"
    data = head + body + last
    assert len(data) == size
    return data
