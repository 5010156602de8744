from __future__ import annotations

import pytest

from distill.core.words import counted


@pytest.mark.parametrize(("n", "noun", "text"), [(1, "finding", "1 finding"), (2, "finding", "2 findings"),
                                                 (0, "unit", "0 units"), (1, "diagnosis", "1 diagnosis"),
                                                 (3, "diagnosis", "3 diagnoses")])
def test_counted_uses_the_singular_for_exactly_one(n: int, noun: str, text: str) -> None:
    assert counted(n, noun) == text
