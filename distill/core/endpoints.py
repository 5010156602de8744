"""Endpoints: ``MULTI_API_CONFIG`` built from the environment, each entry validated, and the lines that
say which endpoints were left out and why (naming the variable the user set)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from distill.core.errors import ConfigError
from distill.core.prices import Price
from distill.core.teacher_id import OFFLINE_TEACHER_VERSION

ENDPOINT_COUNT = 16


class Secret:
    """A value that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the pool. ``provider`` is ``"openai"`` or ``"local"``."""

    name: str
    base_url: str = ""
    model: str = ""
    api_key: Secret | None = field(default=None, repr=False)
    provider: str = "local"
    json_mode: bool = True
    timeout_s: float = 120.0
    max_attempts: int = 5
    max_tokens: int = 4096
    temperature: float = 0.0
    backoff_base_s: float = 1.0  # first retry waits up to this long (full jitter), doubling each time
    backoff_cap_s: float = 60.0  # no single backoff wait is longer
    down_after: int = 3  # this many failed calls in a row (transport, 5xx, no chat completion) make it down
    probe_min_s: float = 2.0  # a down endpoint is probed after this long, the wait doubling per failed probe
    probe_max_s: float = 60.0  # up to this long: it is back in use at most this long after it recovers
    price: Price | None = None  # from MODEL_PRICES by model id; None: cost unknown
    answer_record_chars: int = 20_000  # ANSWER_RECORD_CHARS: how much of each answer's text records keep

    @property
    def host(self) -> str:
        """The base URL's host[:port], for logs: never its credentials, path or query."""
        parsed = urlparse(self.base_url)
        if not parsed.hostname:
            return ""
        try:
            port = parsed.port
        except ValueError:
            port = None
        return f"{parsed.hostname}:{port}" if port else parsed.hostname

    @property
    def is_local(self) -> bool:
        return self.provider == "local"

    def describe(self) -> str:
        """A one-line description with no secret in it."""
        if self.is_local:
            return f"{self.name}: offline teacher"
        return f"{self.name}: {self.model} at {self.base_url}"


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


#: Endpoint fields that may come from the environment: field -> variable suffix.
_ENV_FIELDS = {"base_url": "BASE_URL", "model": "MODEL", "json_mode": "JSON_MODE", "timeout": "TIMEOUT",
               "provider": "PROVIDER"}
#: Where an entry built from the environment records which variable each field came from.
SOURCES_KEY = "_from_env"


def _env_source(environ: Mapping[str, str], i: int, suffix: str) -> tuple[str | None, str | None]:
    """The value and the name of the variable that gave it: ``DIAG_API_<i>_<suffix>``, else ``DIAG_<suffix>``."""
    shared = "DIAG_API_KEY" if suffix == "KEY" else f"DIAG_{suffix}"
    for name in (f"DIAG_API_{i}_{suffix}", shared):
        value = _env(environ, name)
        if value is not None:
            return value, name
    return None, None


def endpoint_table(count: int = ENDPOINT_COUNT, environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Build ``MULTI_API_CONFIG`` from ``DIAG_API_<i>_*`` and ``DIAG_*`` variables."""
    env = os.environ if environ is None else environ
    table: dict[str, dict[str, Any]] = {}
    for i in range(1, count + 1):
        key, key_var = _env_source(env, i, "KEY")
        sources: dict[str, str] = {}
        entry: dict[str, Any] = {
            "name": f"api_{i}",
            "api_key": Secret(key) if key else None,
            "provider": "openai" if key else "local",
        }
        if key_var:
            sources["api_key"] = key_var
        for field_name, suffix in _ENV_FIELDS.items():
            value, var = _env_source(env, i, suffix)
            if value is not None and var is not None:
                entry[field_name] = value
                sources[field_name] = var
        entry.setdefault("base_url", "")
        entry.setdefault("model", "")
        entry[SOURCES_KEY] = sources
        table[f"api_{i}"] = entry
    return table


def _as_bool(value: Any, setting: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{setting} must be true or false, got {value!r}")


def positive_number(value: Any, setting: str, *, minimum: float = 0.0, integer: bool = False) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{setting} must be {kind}, got {value!r}") from None
    if number <= minimum:
        raise ConfigError(f"{setting} must be greater than {minimum:g}, got {value!r}")
    return number


def _endpoint_index(name: str) -> str:
    digits = name.rsplit("_", 1)[-1]
    return digits if digits.isdigit() else "<i>"


def key_variable(endpoint_name: str) -> str:
    """The variable that holds an endpoint's key: ``DIAG_API_2_KEY`` for ``api_2`` (or the shared ``DIAG_API_KEY``)."""
    return f"DIAG_API_{_endpoint_index(endpoint_name)}_KEY (or DIAG_API_KEY)"


class _Problems:
    """Collects every problem of one endpoint, each naming the setting the user wrote."""

    def __init__(self, name: str, entry: Mapping[str, Any]) -> None:
        self.where = f"MULTI_API_CONFIG[{name!r}]"
        self.index = _endpoint_index(name)
        sources = entry.get(SOURCES_KEY)
        self.sources: Mapping[str, str] = sources if isinstance(sources, Mapping) else {}
        self.found: list[str] = []

    def setting(self, field_name: str) -> str:
        """The variable that set ``field_name``, else its place in ``MULTI_API_CONFIG``."""
        return self.sources.get(field_name) or f"{self.where}[{field_name!r}]"

    def variables(self, suffix: str) -> str:
        shared = "DIAG_API_KEY" if suffix == "KEY" else f"DIAG_{suffix}"
        return f"DIAG_API_{self.index}_{suffix} or {shared}"

    def check(self, compute: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return compute(*args, **kwargs)
        except ConfigError as exc:
            self.found.append(str(exc))
            return None


def parse_endpoint(name: str, entry: Mapping[str, Any]) -> Endpoint:
    """Validate one ``MULTI_API_CONFIG`` entry; a ``ConfigError`` lists every problem it has, ``; ``-separated."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"MULTI_API_CONFIG[{name!r}] must be a dict, got {type(entry).__name__}")
    bad = _Problems(name, entry)
    key = entry.get("api_key")
    if isinstance(key, str):
        key = Secret(key) if key.strip() else None
    if key is not None and not isinstance(key, Secret):
        bad.found.append(f"{bad.setting('api_key')} must be a string")
        key = None
    provider = str(entry.get("provider") or ("openai" if key else "local"))
    if provider not in ("openai", "local"):
        bad.found.append(f"{bad.setting('provider')} must be 'openai' or 'local', got {provider!r}")
    base_url = str(entry.get("base_url") or "").rstrip("/")
    model = str(entry.get("model") or "")
    if provider == "openai":
        if key is None:
            bad.found.append(f"{bad.where} uses provider 'openai' but has no api_key (set {bad.variables('KEY')})")
        parsed = urlparse(base_url)
        if not base_url:
            bad.found.append(f"{bad.where} has no base URL (set {bad.variables('BASE_URL')})")
        elif parsed.scheme not in ("http", "https") or not parsed.netloc:
            bad.found.append(f"{bad.setting('base_url')} must be an http(s) URL, got {base_url!r}")
        if not model:
            bad.found.append(f"{bad.where} has no model (set {bad.variables('MODEL')})")
    fields = {
        "json_mode": bad.check(_as_bool, entry.get("json_mode", True), bad.setting("json_mode")),
        "timeout_s": bad.check(positive_number, entry.get("timeout", 120), bad.setting("timeout")),
        "max_attempts": bad.check(positive_number, entry.get("max_attempts", 5), bad.setting("max_attempts"), integer=True),
        "max_tokens": bad.check(positive_number, entry.get("max_tokens", 4096), bad.setting("max_tokens"), integer=True),
        "temperature": bad.check(positive_number, entry.get("temperature", 0.0), bad.setting("temperature"), minimum=-1),
        "backoff_base_s": bad.check(positive_number, entry.get("backoff_base", 1.0), bad.setting("backoff_base")),
        "backoff_cap_s": bad.check(positive_number, entry.get("backoff_cap", 60.0), bad.setting("backoff_cap")),
        "down_after": bad.check(positive_number, entry.get("down_after", 3), bad.setting("down_after"), integer=True),
        "probe_min_s": bad.check(positive_number, entry.get("probe_min", 2.0), bad.setting("probe_min")),
        "probe_max_s": bad.check(positive_number, entry.get("probe_max", 60.0), bad.setting("probe_max")),
    }
    if fields["probe_min_s"] and fields["probe_max_s"] and fields["probe_max_s"] < fields["probe_min_s"]:
        bad.found.append(f"{bad.setting('probe_max')} must be at least {bad.setting('probe_min')} "
                         f"({fields['probe_min_s']:g} s), got {fields['probe_max_s']:g}")
    if bad.found:
        raise ConfigError("; ".join(bad.found))
    return Endpoint(
        name=str(entry.get("name") or name),
        base_url=base_url,
        model=model if provider != "local" else OFFLINE_TEACHER_VERSION,
        api_key=key,
        provider=provider,
        json_mode=fields["json_mode"],
        timeout_s=fields["timeout_s"],
        max_attempts=int(fields["max_attempts"]),
        max_tokens=int(fields["max_tokens"]),
        temperature=float(fields["temperature"]),
        backoff_base_s=fields["backoff_base_s"],
        backoff_cap_s=fields["backoff_cap_s"],
        down_after=int(fields["down_after"]),
        probe_min_s=fields["probe_min_s"],
        probe_max_s=fields["probe_max_s"],
    )


def left_out_lines(problems: Mapping[str, str]) -> list[str]:
    """One line per distinct problem, naming every endpoint it left out (``api_1 … api_16 left out: …``)."""
    by_problem: dict[str, list[str]] = {}
    for name, problem in problems.items():
        generic = problem.replace(f"DIAG_API_{_endpoint_index(name)}_", "DIAG_API_<i>_")
        generic = generic.replace(f"MULTI_API_CONFIG[{name!r}]", "MULTI_API_CONFIG[<endpoint>]")
        by_problem.setdefault(generic, []).append(name)
    lines = []
    for generic, names in by_problem.items():
        if len(names) == 1:
            lines.append(f"{names[0]} left out: {problems[names[0]]}")
        else:
            lines.append(f"{_name_list(names)} left out: {generic}")
    return lines


def _name_list(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{len(names)} endpoints ({names[0]} … {names[-1]})"


KEYLESS_PROBLEM = ("no key while other endpoints have one, so it would silently mix the offline teacher into an "
                   "LLM job (set DIAG_API_<i>_KEY, or DIAG_API_<i>_PROVIDER=local to use the offline teacher)")


def _explicitly_local(entry: Any) -> bool:
    if not isinstance(entry, Mapping):
        return False
    sources = entry.get(SOURCES_KEY)
    if isinstance(sources, Mapping):
        return "provider" in sources
    return entry.get("provider") == "local"  # a hand-written MULTI_API_CONFIG says what it means


def keyless_beside_keyed(table: Mapping[str, Any], endpoints: Mapping[str, Endpoint]) -> dict[str, str]:
    """Endpoints the offline teacher would serve only because they lack a key, when others have one."""
    keyed = any(isinstance(e, Mapping) and e.get("api_key") for e in table.values())
    if not keyed:
        return {}
    return {name: KEYLESS_PROBLEM.replace("<i>", _endpoint_index(name)) for name, endpoint in endpoints.items()
            if endpoint.is_local and not _explicitly_local(table.get(name))}
