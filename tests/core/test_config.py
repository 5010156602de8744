from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.config import Secret, endpoint_table, load_settings, parse_endpoint
from distill.core.errors import ConfigError

CANARY = "sk-canary-7f3e9a"


@pytest.fixture(autouse=True)
def _clean_environment(isolated: dict[str, object]) -> None:
    """No DIAG_* variable of the developer's shell reaches these tests."""


def test_without_keys_every_endpoint_is_the_offline_teacher() -> None:
    table = endpoint_table(16, environ={})
    assert list(table) == [f"api_{i}" for i in range(1, 17)]
    assert all(entry["provider"] == "local" for entry in table.values())


def test_per_endpoint_variables_override_the_shared_ones() -> None:
    env = {"DIAG_API_KEY": "shared", "DIAG_BASE_URL": "http://h/v1", "DIAG_MODEL": "m",
           "DIAG_API_3_KEY": "three", "DIAG_API_3_MODEL": "m3"}
    table = endpoint_table(4, environ=env)
    assert table["api_3"]["api_key"] == Secret("three") and table["api_3"]["model"] == "m3"
    assert table["api_1"]["api_key"] == Secret("shared") and table["api_1"]["provider"] == "openai"


def test_a_secret_never_shows_itself() -> None:
    endpoint = parse_endpoint("api_1", {"api_key": CANARY, "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    for text in (repr(endpoint), str(endpoint), endpoint.describe(), repr(endpoint.api_key)):
        assert CANARY not in text
    assert endpoint.api_key is not None and endpoint.api_key.reveal() == CANARY


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"api_key": "k", "base_url": "ftp://x", "model": "m"}, "base_url"),
        ({"api_key": "k", "base_url": "http://x/v1", "model": ""}, "model"),
        ({"api_key": "k", "base_url": "http://x/v1", "model": "m", "timeout": "soon"}, "timeout"),
        ({"api_key": "k", "base_url": "http://x/v1", "model": "m", "json_mode": "maybe"}, "json_mode"),
        ({"provider": "openai"}, "api_key"),
        ({"provider": "magic"}, "provider"),
    ],
    ids=["bad-url", "no-model", "bad-timeout", "bad-json-mode", "openai-without-key", "unknown-provider"],
)
def test_a_malformed_endpoint_setting_is_named(entry: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        parse_endpoint("api_2", entry)
    assert "api_2" in str(info.value)


def test_a_malformed_check_interval_in_the_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "system_config.py"
    config.write_text("CHECK_INTERVAL = 'often'\n")
    with pytest.raises(ConfigError, match="CHECK_INTERVAL"):
        load_settings(config, output_dir=tmp_path / "out")


def test_local_override_file_is_applied(tmp_path: Path) -> None:
    (tmp_path / "system_config.py").write_text("CHECK_INTERVAL = 5\nINPUT_DIR = 'x'\n")
    (tmp_path / "local_config.py").write_text("CHECK_INTERVAL = 2\n")
    settings = load_settings(tmp_path / "system_config.py", output_dir=tmp_path / "out")
    assert settings.check_interval == 2.0


def test_output_dir_is_created_private(tmp_path: Path) -> None:
    settings = load_settings(output_dir=tmp_path / "new" / "out")
    assert settings.output_dir.is_dir()
    assert settings.output_dir.stat().st_mode & 0o777 == 0o700


def test_an_uncreatable_output_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="OUTPUT_DIR"):
        load_settings(output_dir=blocker / "out")


def test_the_shipped_configuration_has_sixteen_endpoints() -> None:
    settings = load_settings(create_output=False)
    assert list(settings.endpoints) == [f"api_{i}" for i in range(1, 17)]
    assert settings.check_interval == 5.0


def test_one_misconfigured_endpoint_is_left_out_with_a_line_naming_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_API_3_KEY", CANARY)
    monkeypatch.setenv("DIAG_API_3_BASE_URL", "ftp://nowhere")
    monkeypatch.setenv("DIAG_API_3_MODEL", "m")
    settings = load_settings(output_dir=tmp_path / "out")
    assert "api_3" not in settings.endpoints and len(settings.endpoints) == 15
    assert "base_url" in settings.endpoint_problems["api_3"]
    assert any(n.startswith("api_3 left out:") and "base_url" in n for n in settings.notices)
    assert CANARY not in " ".join(settings.notices)


def test_no_usable_endpoint_at_all_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "system_config.py"
    config.write_text("MULTI_API_CONFIG = {'api_1': {'provider': 'magic'}}\n")
    with pytest.raises(ConfigError, match="no usable endpoint"):
        load_settings(config, output_dir=tmp_path / "out")
