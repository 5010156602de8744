"""The optional price table: parsed, validated one line per bad entry, and applied to tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.config import load_settings
from distill.core.errors import ConfigError
from distill.core.prices import Price, cost_of, parse_prices


def test_cost_bills_cached_prompt_tokens_at_the_cached_price() -> None:
    price = Price(input=2.0, cached_input=0.5, output=8.0)
    # 1,000,000 prompt tokens of which 600,000 cached, 100,000 completion tokens.
    assert price.cost(1_000_000, 600_000, 100_000) == pytest.approx(0.8 + 0.3 + 0.8)
    assert price.cost(100, 500, 0) == pytest.approx(100 * 0.5 / 1e6)  # never more cached than sent
    assert cost_of(None, {"prompt_tokens": 5}) is None
    assert cost_of(price, {"prompt_tokens": 1_000_000}) == pytest.approx(2.0)


def test_cached_input_defaults_to_the_input_price() -> None:
    assert parse_prices({"m": {"input": 1.5, "output": 3}}) == {"m": Price(1.5, 1.5, 3.0)}
    assert parse_prices(None) == {}


def test_every_bad_entry_gets_its_own_line_naming_model_and_field() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_prices({"good": {"input": 1, "output": 2}, "neg": {"input": -1, "output": 2},
                      "missing": {"input": 1}, "typo": {"input": 1, "output": 2, "cache": 0.1}, "flat": 3})
    lines = str(caught.value).splitlines()
    assert len(lines) == 4
    assert "MODEL_PRICES['neg']['input'] must be a number >= 0" in lines[0]
    assert "MODEL_PRICES['missing'] lacks 'output'" in lines[1]
    assert "MODEL_PRICES['typo'] has unknown field(s) cache" in lines[2]
    assert "MODEL_PRICES['flat'] must be a dict" in lines[3]


def test_prices_from_the_config_reach_the_endpoints_of_that_model(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_API_KEY", "sk-x")
    monkeypatch.setenv("DIAG_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DIAG_MODEL", "priced-model")
    config = tmp_path / "system_config.py"
    config.write_text("from distill.core.config import endpoint_table\nMULTI_API_CONFIG = endpoint_table(2)\n"
                      "MODEL_PRICES = {'priced-model': {'input': 0.3, 'cached_input': 0.03, 'output': 1.2}}\n")
    settings = load_settings(config, output_dir=tmp_path / "out")
    assert settings.prices == {"priced-model": Price(0.3, 0.03, 1.2)}
    assert {e.price for e in settings.endpoints.values()} == {Price(0.3, 0.03, 1.2)}


def test_a_bad_price_table_in_the_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "system_config.py"
    config.write_text("MODEL_PRICES = {'m': {'input': 'cheap', 'output': 1}}\n")
    with pytest.raises(ConfigError, match=r"MODEL_PRICES\['m'\]\['input'\]"):
        load_settings(config, output_dir=tmp_path / "out")
