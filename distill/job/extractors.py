"""The extractor a worker runs for its endpoint: the offline teacher or the LLM client, imported on demand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distill.core.config import Endpoint
from distill.extraction.extractor import Extractor


def make_extractor(endpoint: Endpoint, *, events: Callable[[str, dict[str, Any]], None],
                   should_stop: Callable[[], bool]) -> Extractor:
    """The offline teacher for a ``local`` endpoint, else the LLM extractor."""
    if endpoint.is_local:
        from distill.extraction.teacher import LocalTeacher

        return LocalTeacher(endpoint.name)
    from distill.extraction.chat_request import warm_up
    from distill.extraction.llm import LLMExtractor

    warm_up()  # start-up work, not the first report's
    return LLMExtractor(endpoint, events=events, should_stop=should_stop)
