"""Every exception diag-distill raises on purpose.

Each carries a message a user can act on. Errors that end a report carry a
``failure_class``: the name written into ``failed/diagnostic_<N>.json``.
"""

from __future__ import annotations


class DistillError(Exception):
    """Base of every error diag-distill raises on purpose."""

    failure_class = "internal"


# --- configuration and usage -------------------------------------------------


class ConfigError(DistillError):
    """A setting is missing or malformed; the message names it."""

    failure_class = "config"


class StateDirError(DistillError):
    """The state directory is unusable (a planted symlink, wrong owner, ...)."""

    failure_class = "state"


class JobAlreadyRunning(StateDirError):
    """Another job holds the same state directory."""


class JobNotStarted(StateDirError):
    """The state directory holds no job (its claims file is missing): ``start`` sets one up."""


class InputDirMissing(ConfigError):
    """The input folder does not exist or is not a folder."""


class ClaimsUnavailable(DistillError):
    """The shared claims store (Redis) cannot be reached now; claiming waits until it is back."""

    failure_class = "claims_unavailable"


# --- one report ----------------------------------------------------------------


class ReportError(DistillError):
    """Something went wrong with one report; the run goes on."""


class BadInput(ReportError):
    """The report file cannot be used: empty, binary, undecodable, too big, bad JSON."""

    failure_class = "bad_input"


class OutputWriteError(ReportError):
    """Writing outputs failed (disk full, permissions); nothing partial was left."""

    failure_class = "io_error"


class InvalidOutput(ReportError):
    """The model's answer could not be parsed or validated, even after repair."""

    failure_class = "invalid_output"


class NoteTooLong(ReportError):
    """The report cannot be fitted into the endpoint's context window, even in parts."""

    failure_class = "too_long"


# --- endpoints -----------------------------------------------------------------


class EndpointError(ReportError):
    """An endpoint call failed."""

    failure_class = "api_error"

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class EndpointAuthError(EndpointError):
    """401/403: the key is wrong or lacks rights. The endpoint is disabled."""

    failure_class = "api_auth"


class EndpointUnavailable(EndpointError):
    """5xx, timeouts, connection errors or 429 that outlasted the retry budget."""

    failure_class = "api_unavailable"


class EndpointRateLimited(EndpointUnavailable):
    """429 that outlasted the retry budget."""

    failure_class = "api_rate_limited"


class EndpointBadRequest(EndpointError):
    """4xx other than auth and rate limits: the request itself is refused."""

    failure_class = "api_bad_request"


class ContextLengthExceeded(EndpointError):
    """The endpoint said the request does not fit its context window (HTTP 400).

    ``context_tokens`` and ``prompt_tokens`` are what the server reported, when it did.
    The LLM extractor fits the request and asks again; it never ends a report by itself.
    """

    failure_class = "too_long"

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None,
                 context_tokens: int | None = None, prompt_tokens: int | None = None) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.context_tokens = context_tokens
        self.prompt_tokens = prompt_tokens


class StopRequested(DistillError):
    """Raised inside a report when the worker was told to stop now."""
