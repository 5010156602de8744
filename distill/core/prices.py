"""What tokens cost: an optional price table per model, and the cost of a report's calls.

Prices are in any one currency per million tokens, as providers list them: ``input`` (prompt tokens
not served from the prefix cache), ``cached_input`` (prompt tokens the endpoint served from its prefix
cache; defaults to ``input`` for a provider that bills no discount) and ``output`` (completion tokens).
Set them in the configuration as ``MODEL_PRICES = {"deepseek-chat": {"input": 0.27, "cached_input": 0.07,
"output": 1.10}}``, keyed by the endpoint's model id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distill.core.errors import ConfigError

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    """The price of one model per million tokens."""

    input: float
    cached_input: float
    output: float

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        """The cost of calls that used these tokens (``cached_tokens`` is part of ``prompt_tokens``)."""
        cached = max(0, min(cached_tokens, prompt_tokens))
        return ((prompt_tokens - cached) * self.input + cached * self.cached_input
                + completion_tokens * self.output) / PER_TOKENS


#: An example table for the benchmark's "cost per 1,000 reports" (a DeepSeek-style list price with a
#: cache-hit discount); a job uses only the prices its configuration sets.
SAMPLE_PRICE = Price(input=0.27, cached_input=0.07, output=1.10)


def _amount(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where} must be a number >= 0 (price per million tokens), got {value!r}")
    return float(value)


def parse_price(model: str, entry: Any) -> Price:
    """One entry of ``MODEL_PRICES``; a ``ConfigError`` names the model and the field."""
    where = f"MODEL_PRICES[{model!r}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a dict with input, cached_input and output, got {entry!r}")
    unknown = sorted(set(entry) - {"input", "cached_input", "output"})
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {', '.join(map(str, unknown))} "
                          "(expected input, cached_input, output)")
    for name in ("input", "output"):
        if name not in entry:
            raise ConfigError(f"{where} lacks {name!r} (price per million tokens)")
    paid = _amount(entry["input"], f"{where}['input']")
    cached = _amount(entry.get("cached_input", paid), f"{where}['cached_input']")
    return Price(input=paid, cached_input=cached, output=_amount(entry["output"], f"{where}['output']"))


def parse_prices(table: Any) -> dict[str, Price]:
    """``MODEL_PRICES`` (optional: ``None`` is an empty table). Every bad entry is named on its own line of
    one ``ConfigError``, so a user fixes them all in one go."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"MODEL_PRICES must be a dict of model id -> prices, got {type(table).__name__}")
    prices: dict[str, Price] = {}
    problems: list[str] = []
    for model, entry in table.items():
        try:
            prices[str(model)] = parse_price(str(model), entry)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return prices


def cost_of(price: Price | None, usage: Mapping[str, Any]) -> float | None:
    """The cost of ``usage`` (``prompt_tokens``, ``cached_tokens``, ``completion_tokens``) at ``price``;
    ``None`` when the model has no price."""
    if price is None:
        return None
    return price.cost(int(usage.get("prompt_tokens") or 0), int(usage.get("cached_tokens") or 0),
                      int(usage.get("completion_tokens") or 0))
