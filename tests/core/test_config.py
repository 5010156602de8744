from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.config import Endpoint, Secret, endpoint_table, load_settings, parse_endpoint
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
    for name, value in (("DIAG_API_KEY", CANARY), ("DIAG_BASE_URL", "http://127.0.0.1:9/v1"), ("DIAG_MODEL", "m"),
                        ("DIAG_API_3_BASE_URL", "ftp://nowhere")):
        monkeypatch.setenv(name, value)
    settings = load_settings(output_dir=tmp_path / "out")
    assert "api_3" not in settings.endpoints and len(settings.endpoints) == 15
    assert "DIAG_API_3_BASE_URL" in settings.endpoint_problems["api_3"]
    assert any(n.startswith("api_3 left out:") and "DIAG_API_3_BASE_URL" in n for n in settings.notices)
    assert CANARY not in " ".join(settings.notices)


def test_no_usable_endpoint_at_all_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "system_config.py"
    config.write_text("MULTI_API_CONFIG = {'api_1': {'provider': 'magic'}}\n")
    with pytest.raises(ConfigError, match="no usable endpoint"):
        load_settings(config, output_dir=tmp_path / "out")


def test_a_bad_variable_is_named_as_the_user_set_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_API_3_TIMEOUT", "abc")
    settings = load_settings(output_dir=tmp_path / "out")
    assert settings.endpoint_problems["api_3"] == "DIAG_API_3_TIMEOUT must be a number, got 'abc'"
    assert "MULTI_API_CONFIG" not in settings.endpoint_problems["api_3"]


def test_every_problem_of_an_endpoint_is_listed_at_once() -> None:
    env = {"DIAG_API_2_KEY": "k", "DIAG_API_2_TIMEOUT": "soon", "DIAG_API_2_JSON_MODE": "maybe"}
    with pytest.raises(ConfigError) as info:
        parse_endpoint("api_2", endpoint_table(2, environ=env)["api_2"])
    message = str(info.value)
    for named in ("DIAG_API_2_BASE_URL or DIAG_BASE_URL", "DIAG_API_2_MODEL or DIAG_MODEL", "DIAG_API_2_TIMEOUT",
                  "DIAG_API_2_JSON_MODE"):
        assert named in message
    assert "\n" not in message


def test_a_problem_shared_by_every_endpoint_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_API_KEY", CANARY)
    with pytest.raises(ConfigError) as info:
        load_settings(output_dir=tmp_path / "out")
    message = str(info.value)
    assert message.count("has no base URL") == 1 and message.count("has no model") == 1
    assert "16 endpoints (api_1 … api_16)" in message and "DIAG_API_<i>_BASE_URL or DIAG_BASE_URL" in message
    assert len(message) < 400 and CANARY not in message


@pytest.mark.parametrize(("line", "named"), [("OUTPUT_DIR = 42", "OUTPUT_DIR"), ("INPUT_DIR = ['a']", "INPUT_DIR"),
                                             ("CHECK_INTERVAL = 'soon'", "CHECK_INTERVAL")])
def test_a_wrongly_typed_setting_in_local_config_is_one_clear_error(tmp_path: Path, line: str, named: str) -> None:
    (tmp_path / "system_config.py").write_text("", encoding="utf-8")
    (tmp_path / "local_config.py").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{named} must be"):
        load_settings(tmp_path / "system_config.py", output_dir=tmp_path / "out")


def test_asking_for_a_left_out_endpoint_says_why_it_was_left_out(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_API_3_KEY", CANARY)
    monkeypatch.setenv("DIAG_API_3_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DIAG_API_3_TIMEOUT", "abc")
    monkeypatch.setenv("DIAG_API_3_MODEL", "m")
    monkeypatch.setenv("DIAG_PROVIDER", "local")  # every other endpoint: the offline teacher, on purpose
    monkeypatch.setenv("DIAG_API_3_PROVIDER", "openai")
    settings = load_settings(output_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"^--api api_3: that endpoint was left out: DIAG_API_3_TIMEOUT must be"):
        settings.endpoint("api_3")
    with pytest.raises(ConfigError, match=r"^--api api_99: no such endpoint \(configured: api_1, api_2, api_4"):
        settings.endpoint("api_99")



def test_keys_for_three_endpoints_leave_the_keyless_ones_out_with_one_line(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for i in (2, 5, 9):
        monkeypatch.setenv(f"DIAG_API_{i}_KEY", CANARY)
        monkeypatch.setenv(f"DIAG_API_{i}_BASE_URL", "http://127.0.0.1:9/v1")
        monkeypatch.setenv(f"DIAG_API_{i}_MODEL", "teacher-m")
    settings = load_settings(output_dir=tmp_path / "out")
    assert sorted(settings.endpoints) == ["api_2", "api_5", "api_9"]
    assert all(not e.is_local and e.model == "teacher-m" for e in settings.endpoints.values())
    lines = [n for n in settings.notices if "left out" in n]
    assert len(lines) == 1 and lines[0].startswith("13 endpoints (api_1 … api_16) left out: no key")
    assert "DIAG_API_<i>_PROVIDER=local" in lines[0] and CANARY not in lines[0]


def test_an_endpoint_set_to_the_offline_teacher_on_purpose_stays_beside_keyed_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAG_API_2_KEY", CANARY)
    monkeypatch.setenv("DIAG_API_2_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DIAG_API_2_MODEL", "teacher-m")
    monkeypatch.setenv("DIAG_API_7_PROVIDER", "local")
    (tmp_path / "system_config.py").write_text(
        "from distill.core.config import endpoint_table\nMULTI_API_CONFIG = endpoint_table()\n", encoding="utf-8")
    (tmp_path / "local_config.py").write_text("MULTI_API_CONFIG = {'api_8': {'provider': 'local'}}\n", encoding="utf-8")
    settings = load_settings(tmp_path / "system_config.py", output_dir=tmp_path / "out")
    assert sorted(settings.endpoints) == ["api_2", "api_7", "api_8"]
    assert settings.endpoints["api_7"].is_local and settings.endpoints["api_8"].is_local


def test_with_no_key_at_all_every_endpoint_is_the_offline_teacher(tmp_path: Path) -> None:
    settings = load_settings(output_dir=tmp_path / "out")
    assert len(settings.endpoints) == 16 and all(e.is_local for e in settings.endpoints.values())
    assert not [n for n in settings.notices if "left out" in n]


def test_the_answer_record_size_reaches_every_endpoint_and_a_bad_one_is_named(tmp_path: Path) -> None:
    config = tmp_path / "system_config.py"
    config.write_text("ANSWER_RECORD_CHARS = 500\n")
    settings = load_settings(config, output_dir=tmp_path / "out")
    assert {e.answer_record_chars for e in settings.endpoints.values()} == {500}
    assert {e.model for e in settings.endpoints.values()} == {"local-rules-2"}  # the offline teacher's one name
    config.write_text("ANSWER_RECORD_CHARS = 'all'\n")
    with pytest.raises(ConfigError, match="ANSWER_RECORD_CHARS must be a whole number"):
        load_settings(config, output_dir=tmp_path / "out")


@pytest.mark.parametrize(("base_url", "host"), [
    ("http://127.0.0.1:8099/v1", "127.0.0.1:8099"),
    ("https://user:pw@api.example.com/v1/openai?tenant=x", "api.example.com"),
    ("", ""),
])
def test_an_endpoint_host_has_no_credentials_path_or_query(base_url: str, host: str) -> None:
    assert Endpoint("api_1", base_url=base_url).host == host
def test_call_bounds_and_structured_output_settings_are_read() -> None:
    entry = {"api_key": "k", "base_url": "http://x/v1", "model": "m", "response_format": "json_schema",
             "context_tokens": "8192", "deadline": 30, "deadline_per_token": 0.02, "connect_timeout": 3,
             "max_answer_bytes": 500_000, "max_tokens": 1000}
    endpoint = parse_endpoint("api_2", entry)
    assert endpoint.output_form == "json_schema" and endpoint.context_tokens == 8192
    assert endpoint.connect_timeout_s == 3 and endpoint.max_answer_bytes == 500_000
    assert endpoint.call_deadline_s(endpoint.max_tokens) == pytest.approx(50.0)


def test_structured_output_defaults_follow_json_mode() -> None:
    base = {"api_key": "k", "base_url": "http://x/v1", "model": "m"}
    assert parse_endpoint("api_1", base).output_form == "json_object"
    assert parse_endpoint("api_1", {**base, "json_mode": False}).output_form == "none"
    assert parse_endpoint("api_1", base).context_tokens is None


def test_the_new_settings_come_from_the_environment() -> None:
    env = {"DIAG_API_KEY": "k", "DIAG_BASE_URL": "http://h/v1", "DIAG_MODEL": "m",
           "DIAG_API_2_RESPONSE_FORMAT": "none", "DIAG_API_2_CONTEXT_TOKENS": "2048", "DIAG_API_2_DEADLINE": "90"}
    table = endpoint_table(2, environ=env)
    endpoint = parse_endpoint("api_2", table["api_2"])
    assert (endpoint.output_form, endpoint.context_tokens, endpoint.deadline_s) == ("none", 2048, 90.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("response_format", "xml"), ("context_tokens", "big"), ("context_tokens", 0), ("deadline", -1),
     ("connect_timeout", "soon"), ("max_answer_bytes", 10), ("deadline_per_token", "fast")],
)
def test_a_malformed_call_setting_is_named(field: str, value: object) -> None:
    entry = {"api_key": "k", "base_url": "http://x/v1", "model": "m", field: value}
    with pytest.raises(ConfigError, match=field) as info:
        parse_endpoint("api_2", entry)
    assert "api_2" in str(info.value) and "\n" not in str(info.value)


def test_a_malformed_setting_from_the_environment_names_the_variable() -> None:
    env = {"DIAG_API_KEY": "k", "DIAG_BASE_URL": "http://h/v1", "DIAG_MODEL": "m",
           "DIAG_API_2_RESPONSE_FORMAT": "yaml"}
    with pytest.raises(ConfigError, match="DIAG_API_2_RESPONSE_FORMAT"):
        parse_endpoint("api_2", endpoint_table(2, environ=env)["api_2"])
