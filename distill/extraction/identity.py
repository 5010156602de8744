"""The teacher an endpoint is: its provider and model, asked with this version of the prompts."""

from __future__ import annotations

from distill.core.config import Endpoint
from distill.core.teacher_id import TeacherId, offline_teacher
from distill.extraction.prompts import PROMPT_VERSION


def endpoint_teacher(endpoint: Endpoint) -> TeacherId:
    """The teacher of every record ``endpoint`` makes (the same as its extractor's ``info.teacher``)."""
    if endpoint.is_local:
        return offline_teacher()
    return TeacherId(endpoint.provider, endpoint.model, PROMPT_VERSION)
