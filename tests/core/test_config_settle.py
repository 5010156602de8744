from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.config import DEFAULT_SETTLE_S, load_settings
from distill.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_environment(isolated: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIAG_SETTLE_S", raising=False)


def config_with(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "system_config.py"
    config.write_text(text)
    return config


def test_notes_settle_for_two_seconds_unless_configured(tmp_path: Path) -> None:
    assert DEFAULT_SETTLE_S == 2.0
    assert load_settings(config_with(tmp_path, ""), output_dir=tmp_path / "out").settle_s == 2.0
    assert load_settings(config_with(tmp_path, "SETTLE_S = 0.5\n"), output_dir=tmp_path / "out").settle_s == 0.5


def test_the_shipped_configuration_settles_notes_for_two_seconds(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[2] / "configs" / "system_config.py"
    assert load_settings(shipped, output_dir=tmp_path / "out").settle_s == 2.0


def test_the_environment_overrides_the_configuration_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_SETTLE_S", "0")
    assert load_settings(config_with(tmp_path, "SETTLE_S = 9\n"), output_dir=tmp_path / "out").settle_s == 0.0


@pytest.mark.parametrize("line", ["SETTLE_S = 'soon'\n", "SETTLE_S = -1\n", "SETTLE_S = True\n",
                                  "SETTLE_S = float('nan')\n"])
def test_a_malformed_settling_time_in_the_file_is_one_line_naming_it(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigError, match=r"^SETTLE_S must be a number of seconds \(0 or more\), got ") as caught:
        load_settings(config_with(tmp_path, line), output_dir=tmp_path / "out")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["two", "-0.5", "inf"])
def test_a_malformed_settling_time_in_the_environment_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DIAG_SETTLE_S", value)
    with pytest.raises(ConfigError, match=rf"^DIAG_SETTLE_S must be a number of seconds \(0 or more\), got '{value}'"):
        load_settings(config_with(tmp_path, ""), output_dir=tmp_path / "out")
