from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.core import redact
from distill.core.redact import KNOWN_MASK, mask_known, register_secrets, scrub_secrets
from distill.results.atomic import read_json, write_atomic, write_json

KEY = "plainkeywithoutanyshape"  # no sk- prefix, no digits: only the registry can mask it


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(redact, "_known", ())
    register_secrets([KEY, None, "short"])
    yield


def test_a_registered_key_is_masked_wherever_it_appears(registered: None) -> None:
    assert mask_known(f"answer: the key{KEY}was here") == f"answer: the key{KNOWN_MASK}was here"
    assert KEY not in scrub_secrets(f"{KEY} {KEY}")


def test_values_too_short_to_be_keys_are_not_registered(registered: None) -> None:
    assert mask_known("a short note") == "a short note"


def test_every_file_written_has_registered_keys_masked(registered: None, tmp_path: Path) -> None:
    write_json(tmp_path / "record.json", {"message": f"server said {KEY}"})
    assert read_json(tmp_path / "record.json") == {"message": f"server said {KNOWN_MASK}"}


def test_the_one_file_meant_to_hold_keys_can_opt_out(registered: None, tmp_path: Path) -> None:
    write_atomic(tmp_path / "settings.json", KEY.encode(), mask_keys=False)
    assert (tmp_path / "settings.json").read_text() == KEY
