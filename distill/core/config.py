"""Settings: ``configs/system_config.py``, the environment, and the isolation knobs.

Keys come from the environment only (or the git-ignored
``configs/local_config.py``). An endpoint without a key is served by the
offline teacher. Every malformed setting raises one ``ConfigError`` naming it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distill.core.errors import ConfigError
from distill.core.prices import Price, parse_prices

ENDPOINT_COUNT = 16
DEFAULT_OUTPUT_DIR = "/hy-tmp/output_diag_continuous"
FALLBACK_OUTPUT_DIR = "output_diag_continuous"
DEFAULT_MAX_REPORT_BYTES = 2_000_000
DEFAULT_STATE_DIR = "/tmp"
DEFAULT_SESSION_PREFIX = "continuous_diag"


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
    price: Price | None = None  # from MODEL_PRICES by model id; None: cost unknown

    @property
    def is_local(self) -> bool:
        return self.provider == "local"

    def describe(self) -> str:
        """A one-line description with no secret in it."""
        if self.is_local:
            return f"{self.name}: offline teacher"
        return f"{self.name}: {self.model} at {self.base_url}"


@dataclass(frozen=True)
class Settings:
    """Everything a job needs to know, resolved and validated."""

    endpoints: dict[str, Endpoint]
    input_dir: Path
    output_dir: Path
    check_interval: float = 5.0
    max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES
    state_dir: Path = Path("/tmp")
    tmux_socket: str | None = None
    session_prefix: str = "continuous_diag"
    notices: tuple[str, ...] = ()
    endpoint_problems: dict[str, str] = field(default_factory=dict)  # misconfigured endpoints, left out
    prices: dict[str, Price] = field(default_factory=dict)  # MODEL_PRICES, by model id

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def endpoint(self, api: str) -> Endpoint:
        """The endpoint named ``api``; a ``ConfigError`` says why it was left out, or lists the ones there are."""
        if api in self.endpoints:
            return self.endpoints[api]
        if api in self.endpoint_problems:
            raise ConfigError(f"--api {api}: that endpoint was left out: {self.endpoint_problems[api]}")
        raise ConfigError(f"--api {api}: no such endpoint (configured: {', '.join(self.endpoints)})")


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


#: Endpoint fields that may come from the environment: field -> variable suffix.
_ENV_FIELDS = {"base_url": "BASE_URL", "model": "MODEL", "json_mode": "JSON_MODE", "timeout": "TIMEOUT"}
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


def _as_number(value: Any, setting: str, *, minimum: float = 0.0, integer: bool = False) -> float:
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
        "timeout_s": bad.check(_as_number, entry.get("timeout", 120), bad.setting("timeout")),
        "max_attempts": bad.check(_as_number, entry.get("max_attempts", 5), bad.setting("max_attempts"), integer=True),
        "max_tokens": bad.check(_as_number, entry.get("max_tokens", 4096), bad.setting("max_tokens"), integer=True),
        "temperature": bad.check(_as_number, entry.get("temperature", 0.0), bad.setting("temperature"), minimum=-1),
        "backoff_base_s": bad.check(_as_number, entry.get("backoff_base", 1.0), bad.setting("backoff_base")),
        "backoff_cap_s": bad.check(_as_number, entry.get("backoff_cap", 60.0), bad.setting("backoff_cap")),
    }
    if bad.found:
        raise ConfigError("; ".join(bad.found))
    return Endpoint(
        name=str(entry.get("name") or name),
        base_url=base_url,
        model=model or "local-rules",
        api_key=key,
        provider=provider,
        json_mode=fields["json_mode"],
        timeout_s=fields["timeout_s"],
        max_attempts=int(fields["max_attempts"]),
        max_tokens=int(fields["max_tokens"]),
        temperature=float(fields["temperature"]),
        backoff_base_s=fields["backoff_base_s"],
        backoff_cap_s=fields["backoff_cap_s"],
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


def project_root() -> Path:
    """The checkout that holds ``configs/``: the working directory, else the package's parent."""
    here = Path.cwd()
    if (here / "configs" / "system_config.py").is_file():
        return here
    return Path(__file__).resolve().parents[2]


def _load_module(path: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"_diag_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load configuration file {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: any error is a configuration error
        raise ConfigError(f"configuration file {path} failed to load: {type(exc).__name__}: {exc}") from None
    return {k: v for k, v in vars(module).items() if k.isupper()}


def _raw_settings(config_path: Path | None) -> dict[str, Any]:
    path = config_path or Path(os.environ.get("DIAG_CONFIG") or project_root() / "configs" / "system_config.py")
    values: dict[str, Any] = {}
    if path.is_file():
        values.update(_load_module(path))
    elif config_path is not None or os.environ.get("DIAG_CONFIG"):
        raise ConfigError(f"configuration file {path} does not exist (DIAG_CONFIG)")
    local = path.parent / "local_config.py"
    if local.is_file():
        overrides = _load_module(local)
        if "MULTI_API_CONFIG" in overrides and "MULTI_API_CONFIG" in values:
            merged = dict(values["MULTI_API_CONFIG"])
            for name, entry in overrides.pop("MULTI_API_CONFIG").items():
                merged[name] = {**merged.get(name, {}), **entry}
            values["MULTI_API_CONFIG"] = merged
        values.update(overrides)
    return values


def resolve_output_dir(requested: str | Path) -> tuple[Path, tuple[str, ...]]:
    """Create the output folder (0700); fall back from the default when it cannot be made."""
    path = Path(requested).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path, ()
    except OSError as exc:
        if str(requested) != DEFAULT_OUTPUT_DIR:
            raise ConfigError(f"OUTPUT_DIR {path} cannot be created: {exc.strerror}") from None
    fallback = Path(FALLBACK_OUTPUT_DIR).resolve()
    fallback.mkdir(parents=True, exist_ok=True, mode=0o700)
    return fallback, (f"OUTPUT_DIR {DEFAULT_OUTPUT_DIR} cannot be created; using {fallback}",)


def _as_path(value: Any, setting: str) -> str | Path | None:
    if value is None or isinstance(value, (str, Path)):
        return value
    raise ConfigError(f"{setting} must be a folder path (a string), got {value!r}")


def load_settings(
    config_path: Path | None = None,
    *,
    input_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    create_output: bool = True,
) -> Settings:
    """Read configuration, environment and isolation knobs into ``Settings``."""
    raw = _raw_settings(config_path)
    table = raw.get("MULTI_API_CONFIG")
    if table is None:
        table = endpoint_table()
    if not isinstance(table, Mapping) or not table:
        raise ConfigError("MULTI_API_CONFIG must be a non-empty dict of endpoints")
    endpoints: dict[str, Endpoint] = {}
    problems: dict[str, str] = {}
    for name, entry in table.items():
        try:
            endpoints[name] = parse_endpoint(name, entry)
        except ConfigError as exc:  # one misconfigured endpoint is left out; the others run
            problems[name] = str(exc)
    if not endpoints:
        raise ConfigError("no usable endpoint: " + " | ".join(left_out_lines(problems)))
    prices = parse_prices(raw.get("MODEL_PRICES"))
    endpoints = {name: replace(e, price=prices.get(e.model)) for name, e in endpoints.items()}
    check = _as_number(raw.get("CHECK_INTERVAL", 5), "CHECK_INTERVAL")
    max_bytes = int(_as_number(raw.get("MAX_REPORT_BYTES", DEFAULT_MAX_REPORT_BYTES), "MAX_REPORT_BYTES", integer=True))
    root = project_root()
    in_dir = Path(input_dir or _as_path(raw.get("INPUT_DIR"), "INPUT_DIR") or "dataset").expanduser()
    if not in_dir.is_absolute():
        in_dir = (Path.cwd() / in_dir) if (Path.cwd() / in_dir).exists() or input_dir else (root / in_dir)
    configured_out = _as_path(raw.get("OUTPUT_DIR"), "OUTPUT_DIR")
    requested_out = output_dir or os.environ.get("DIAG_OUTPUT_DIR") or configured_out or DEFAULT_OUTPUT_DIR
    notices: tuple[str, ...] = ()
    if create_output:
        out_dir, notices = resolve_output_dir(requested_out)
    else:
        out_dir = Path(requested_out).expanduser()
    notices += tuple(left_out_lines(problems))
    state_dir = Path(os.environ.get("DIAG_STATE_DIR") or DEFAULT_STATE_DIR)
    prefix = os.environ.get("DIAG_SESSION_PREFIX") or DEFAULT_SESSION_PREFIX
    if not prefix.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"DIAG_SESSION_PREFIX may hold letters, digits, '_' and '-' only, got {prefix!r}")
    return Settings(
        endpoints=endpoints,
        input_dir=in_dir.resolve(),
        output_dir=out_dir.resolve(),
        check_interval=check,
        max_report_bytes=max_bytes,
        state_dir=state_dir,
        tmux_socket=os.environ.get("DIAG_TMUX_SOCKET") or None,
        session_prefix=prefix,
        notices=notices,
        endpoint_problems=problems,
        prices=prices,
    )
