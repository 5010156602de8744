"""Settings: ``configs/system_config.py``, the environment, and the isolation knobs.

Keys come from the environment only (or the git-ignored
``configs/local_config.py``). With no key at all, every endpoint is served by
the offline teacher; an endpoint without a key while others have one is refused
unless it asks for the offline teacher (``DIAG_API_<i>_PROVIDER=local``). Every
malformed setting raises one ``ConfigError`` naming it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distill.core.endpoints import (
    ENDPOINT_COUNT,
    SOURCES_KEY,
    Endpoint,
    Secret,
    endpoint_table,
    key_variable,
    keyless_beside_keyed,
    left_out_lines,
    parse_endpoint,
    positive_number,
)
from distill.core.errors import ConfigError
from distill.core.prices import Price, parse_prices

# Callers import these from here: configuration is one place to look.
__all__ = ["ENDPOINT_COUNT", "Endpoint", "Secret", "Settings", "endpoint_table", "key_variable", "load_settings",
           "parse_endpoint"]

DEFAULT_OUTPUT_DIR = "/hy-tmp/output_diag_continuous"
FALLBACK_OUTPUT_DIR = "output_diag_continuous"
DEFAULT_MAX_REPORT_BYTES = 2_000_000
DEFAULT_ANSWER_RECORD_CHARS = 20_000  # of each model answer, kept verbatim in the raw file and failure record
DEFAULT_STATE_DIR = "/tmp"
DEFAULT_SESSION_PREFIX = "continuous_diag"
DEFAULT_SETTLE_S = 2.0
SETTLE_ENV = "DIAG_SETTLE_S"


@dataclass(frozen=True)
class Settings:
    """Everything a job needs to know, resolved and validated."""

    endpoints: dict[str, Endpoint]
    input_dir: Path
    output_dir: Path
    check_interval: float = 5.0
    #: Seconds a note must keep its size and modification time before it is claimed (``SETTLE_S``, 2 s from the
    #: configuration); 0 claims at once, which is what a ``Settings`` built in code gets unless it asks.
    settle_s: float = 0.0
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
                if isinstance(entry, Mapping) and "provider" in entry:
                    sources = dict(merged[name].get(SOURCES_KEY) or {})
                    sources["provider"] = f"{local}: MULTI_API_CONFIG[{name!r}]['provider']"
                    merged[name][SOURCES_KEY] = sources
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


def settle_seconds(configured: Any) -> float:
    """``DIAG_SETTLE_S`` when set, else ``SETTLE_S``: seconds, 0 or more; a ``ConfigError`` naming the setting."""
    raw = os.environ.get(SETTLE_ENV, "").strip()
    setting, value = (SETTLE_ENV, raw) if raw else ("SETTLE_S", configured)
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting} must be a number of seconds (0 or more), got {value!r}") from None
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{setting} must be a number of seconds (0 or more), got {value!r}")
    return seconds


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
    problems.update(keyless_beside_keyed(table, endpoints))
    for name in problems:
        endpoints.pop(name, None)
    if not endpoints:
        raise ConfigError("no usable endpoint: " + " | ".join(left_out_lines(problems)))
    prices = parse_prices(raw.get("MODEL_PRICES"))
    answer_chars = int(positive_number(raw.get("ANSWER_RECORD_CHARS", DEFAULT_ANSWER_RECORD_CHARS),
                                       "ANSWER_RECORD_CHARS", integer=True))
    endpoints = {name: replace(e, price=prices.get(e.model), answer_record_chars=answer_chars)
                 for name, e in endpoints.items()}
    check = positive_number(raw.get("CHECK_INTERVAL", 5), "CHECK_INTERVAL")
    settle = settle_seconds(raw.get("SETTLE_S", DEFAULT_SETTLE_S))
    max_bytes = int(positive_number(raw.get("MAX_REPORT_BYTES", DEFAULT_MAX_REPORT_BYTES), "MAX_REPORT_BYTES", integer=True))
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
        settle_s=settle,
        max_report_bytes=max_bytes,
        state_dir=state_dir,
        tmux_socket=os.environ.get("DIAG_TMUX_SOCKET") or None,
        session_prefix=prefix,
        notices=notices,
        endpoint_problems=problems,
        prices=prices,
    )
