from __future__ import annotations

import pytest

from distill.core.errors import InvalidOutput
from distill.extraction.jsonextract import extract_json

WHOLE = {"findings": [{"quote": "chest pain", "status": "present"}, {"quote": "fever", "status": "absent"}]}
WHOLE_TEXT = '{"findings": [{"quote": "chest pain", "status": "present"}, {"quote": "fever", "status": "absent"}]}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(WHOLE_TEXT, WHOLE, id="bare"),
        pytest.param(f"```json\n{WHOLE_TEXT}\n```", WHOLE, id="fenced-json"),
        pytest.param(f"```\n{WHOLE_TEXT}\n```", WHOLE, id="fenced-plain"),
        pytest.param(f"```JSON {WHOLE_TEXT}```", WHOLE, id="fenced-same-line"),
        pytest.param(f"Here is the result:\n{WHOLE_TEXT}\nHope this helps!", WHOLE, id="prose-around"),
        pytest.param(f"Sure.\n```json\n{WHOLE_TEXT}\n```\nLet me know.", WHOLE, id="fenced-prose-around"),
        pytest.param('{"a": {"b": {"c": [1, {"d": 2}]}}}', {"a": {"b": {"c": [1, {"d": 2}]}}}, id="nested"),
        pytest.param('[{"quote": "a"}, {"quote": "b"}]', [{"quote": "a"}, {"quote": "b"}], id="array-of-objects"),
        pytest.param('The list: [{"x": 1}, [2, 3]] done', [{"x": 1}, [2, 3]], id="array-in-prose"),
    ],
)
def test_extract_json_returns_whole_value(text: str, expected: object) -> None:
    assert extract_json(text) == expected


def test_extract_json_never_returns_inner_object_of_a_valid_outer_one() -> None:
    text = 'Result: {"findings": [{"quote": "a"}], "extra": {"quote": "b"}} end'
    assert extract_json(text) == {"findings": [{"quote": "a"}], "extra": {"quote": "b"}}


def test_extract_json_takes_first_of_several_top_level_objects() -> None:
    assert extract_json('{"first": 1}\n{"second": 2}') == {"first": 1}


def test_extract_json_takes_first_fenced_block_that_parses() -> None:
    text = "```\nnot json at all\n```\ntext\n```json\n{\"ok\": true}\n```\n```json\n{\"later\": 1}\n```"
    assert extract_json(text) == {"ok": True}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('{"quote": "a } brace", "b": "[x"}', {"quote": "a } brace", "b": "[x"}, id="braces-in-string"),
        pytest.param(r'{"quote": "he said \"{\" twice"}', {"quote": 'he said "{" twice'}, id="escaped-quote"),
        pytest.param(r'{"path": "C:\\dir\\"}', {"path": "C:\\dir\\"}, id="escaped-backslash-before-quote"),
        pytest.param('note: {"q": "}}}"} trailing }', {"q": "}}}"}, id="closing-braces-in-string-and-after"),
    ],
)
def test_extract_json_is_string_aware(text: str, expected: object) -> None:
    assert extract_json(text) == expected


def test_extract_json_skips_prose_brackets_before_the_object() -> None:
    assert extract_json('See [1] and {curly words}. {"ok": 1}') == {"ok": 1}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"findings": [{"quote": "chest pain"}, {"quote": "fev', id="cut-in-string"),
        pytest.param('```json\n{"findings": [{"quote": "a"}, {"quote": "b"}', id="cut-in-open-fence"),
        pytest.param('Here: {"mappings": [{"finding": "x", "organ": "Heart (Cor)"},', id="cut-after-item"),
    ],
)
def test_truncated_json_raises_invalid_output_naming_truncation(text: str) -> None:
    with pytest.raises(InvalidOutput, match="truncated JSON"):
        extract_json(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   \n ", id="whitespace"),
        pytest.param("I could not find any findings in this note.", id="prose-only"),
        pytest.param("{'single': 'quotes'}", id="python-dict"),
    ],
)
def test_no_json_raises_invalid_output(text: str) -> None:
    with pytest.raises(InvalidOutput):
        extract_json(text)


def test_error_message_quotes_at_most_60_characters_of_the_answer() -> None:
    answer = "x" * 500 + " no json here " + "y" * 500
    with pytest.raises(InvalidOutput) as caught:
        extract_json(answer)
    assert "x" * 81 not in str(caught.value)
    assert "x" * 60 in str(caught.value) and "x" * 61 not in str(caught.value)
    assert len(str(caught.value)) < 200
