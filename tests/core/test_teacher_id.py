"""The teacher identity: one spelling, parsed back, matched by model name or ``local``."""

from __future__ import annotations

import pytest

from distill.core.teacher_id import (
    OFFLINE_TEACHER_VERSION,
    TeacherId,
    llm_teacher,
    offline_teacher,
    teacher_of_record,
)


@pytest.mark.parametrize("teacher", [
    llm_teacher("qwen2.5-7b-instruct", "diag-prompts-2"),
    llm_teacher("Qwen/Qwen2.5-72B-Instruct", "diag-prompts-2"),
    llm_teacher("deepseek-chat", ""),
    offline_teacher(),
], ids=lambda t: t.spelling)
def test_a_spelling_parses_back_to_the_same_teacher(teacher: TeacherId) -> None:
    assert TeacherId.parse(teacher.spelling) == teacher


def test_the_offline_teacher_is_spelled_with_its_rules_version_and_no_prompt() -> None:
    assert offline_teacher().spelling == f"local/{OFFLINE_TEACHER_VERSION}"
    assert llm_teacher("m1", "p2").spelling == "openai/m1@p2"


@pytest.mark.parametrize("name, offline, llm", [
    ("local", True, False),
    ("qwen", False, True),
    ("openai/qwen@diag-prompts-2", False, True),
    (f"local/{OFFLINE_TEACHER_VERSION}", True, False),
    ("gpt-4o", False, False),
    ("", False, False),
])
def test_matches_takes_the_model_name_or_local(name: str, offline: bool, llm: bool) -> None:
    assert offline_teacher().matches(name) is offline
    assert llm_teacher("qwen", "diag-prompts-2").matches(name) is llm


@pytest.mark.parametrize("bad", ["", "local", "openai/", "/model", "openai/@p"])
def test_parse_refuses_what_is_not_a_spelling(bad: str) -> None:
    with pytest.raises(ValueError, match="teacher identity"):
        TeacherId.parse(bad)


def test_records_before_the_spelling_are_read_from_their_teacher_fields() -> None:
    old_raw = {"teacher": {"kind": "llm", "endpoint": "api_2", "model": "qwen"}, "prompt_version": "diag-prompts-2"}
    old_local = {"teacher": {"kind": "local", "endpoint": "api_1", "model": OFFLINE_TEACHER_VERSION},
                 "prompt_version": "diag-prompts-2"}
    old_failed = {"teacher_kind": "llm", "model": "qwen", "endpoint": "api_2"}
    assert teacher_of_record(old_raw) == llm_teacher("qwen", "diag-prompts-2")
    assert teacher_of_record(old_local) == offline_teacher()
    assert teacher_of_record(old_failed) == llm_teacher("qwen", "")
    assert teacher_of_record({"teacher_id": "openai/qwen@p3", "teacher": {"kind": "local"}}) == llm_teacher("qwen", "p3")
    assert teacher_of_record({}) is None
