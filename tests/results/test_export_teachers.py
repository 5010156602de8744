"""Export by teacher, and the formats fine-tuning tools read as they are (LLaMA-Factory, TRL prompt-completion).

The fixture output folder holds the records of two teachers: the offline teacher (``local``) and
``qwen2.5-7b-instruct``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from distill.cli.export_cmd import command as export_command
from distill.core.errors import ConfigError
from distill.results.export import ExportOptions, MixedTeachers, export_dataset, validation_path
from distill.results.export_formats import DATASET_INFO

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "outputs"
NOTES = FIXTURE / "notes"
QWEN = "qwen2.5-7b-instruct"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def both_splits(to: Path) -> list[dict[str, Any]]:
    return read_lines(to) + read_lines(validation_path(to))


def export(*args: str) -> Any:
    return CliRunner().invoke(export_command, ["--output-dir", str(FIXTURE), "--input-dir", str(NOTES), *args])


def test_a_two_teacher_folder_without_teacher_is_refused_naming_both(tmp_path: Path) -> None:
    to = tmp_path / "t.jsonl"
    result = export("--to", str(to))
    assert result.exit_code != 0
    assert result.stderr.count("\n") == 1
    assert "local 7" in result.stderr and f"{QWEN} 2" in result.stderr and "--teacher" in result.stderr
    assert not to.exists() and not validation_path(to).exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporaries either


def test_teacher_model_exports_only_that_teachers_records(tmp_path: Path) -> None:
    every, only = tmp_path / "all.jsonl", tmp_path / "qwen.jsonl"
    assert export("--to", str(every), "--format", "records", "--teacher", "all").exit_code == 0
    result = export("--to", str(only), "--format", "records", "--teacher", QWEN)
    assert result.exit_code == 0, result.output
    lines = both_splits(only)
    assert lines and {line["model"] for line in lines} == {QWEN}
    assert lines == [line for line in both_splits(every) if line["model"] == QWEN]
    reports = {line["report"] for line in lines}
    assert f"by teacher: {QWEN} {len(reports)}" in result.stdout


def test_teacher_is_repeatable_and_local_names_the_offline_teacher(tmp_path: Path) -> None:
    local, both = tmp_path / "local.jsonl", tmp_path / "both.jsonl"
    assert export("--to", str(local), "--format", "records", "--teacher", "local").exit_code == 0
    assert {line["teacher_kind"] for line in both_splits(local)} == {"local"}
    result = export("--to", str(both), "--format", "records", "--teacher", "local", "--teacher", QWEN)
    assert result.exit_code == 0, result.output
    assert {line["model"] for line in both_splits(both)} == {QWEN, "local-rules-2"}


def test_a_teacher_the_folder_does_not_hold_is_one_line_naming_those_it_does(tmp_path: Path) -> None:
    result = export("--to", str(tmp_path / "t.jsonl"), "--teacher", "gpt-9")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "gpt-9" in result.stderr and QWEN in result.stderr


def test_mixed_teachers_raise_from_the_library_too(tmp_path: Path) -> None:
    with pytest.raises(MixedTeachers):
        export_dataset(FIXTURE, tmp_path / "t.jsonl", ExportOptions(source_dir=NOTES))


def test_llamafactory_writes_sharegpt_chat_lines_and_their_dataset_description(tmp_path: Path) -> None:
    (tmp_path / DATASET_INFO).write_text(json.dumps({"mine": {"file_name": "mine.json"}}), encoding="utf-8")
    to = tmp_path / "diag.jsonl"
    result = export("--to", str(to), "--format", "llamafactory", "--teacher", "all", "--val-fraction", "0.5")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / DATASET_INFO).read_text(encoding="utf-8"))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    assert info == {
        "mine": {"file_name": "mine.json"},  # entries already there are kept
        "diag": {"file_name": "diag.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": tags},
        "diag_val": {"file_name": "diag.val.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                     "tags": tags},
    }
    lines = both_splits(to)
    assert lines
    for line in lines:
        assert set(line) == {"messages"}
        messages = line["messages"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)
        # The roles are the tag values; the system prompt first, then user and assistant alternating.
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert isinstance(json.loads(messages[2]["content"]), list)
    assert "LLaMA-Factory dataset description" in result.stdout


def test_an_unusable_dataset_info_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / DATASET_INFO).write_text("{ not json", encoding="utf-8")
    result = export("--to", str(tmp_path / "d.jsonl"), "--format", "llamafactory", "--teacher", "all")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and DATASET_INFO in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [DATASET_INFO]


def test_prompt_completion_lines_split_the_chat_before_the_answer(tmp_path: Path) -> None:
    chat, pairs = tmp_path / "chat.jsonl", tmp_path / "pc.jsonl"
    assert export("--to", str(chat), "--teacher", "all").exit_code == 0
    result = export("--to", str(pairs), "--format", "prompt-completion", "--teacher", "all")
    assert result.exit_code == 0, result.output
    lines, chats = both_splits(pairs), both_splits(chat)
    assert len(lines) == len(chats) > 0
    for line, full in zip(lines, chats, strict=True):
        assert set(line) == {"prompt", "completion"}
        assert [m["role"] for m in line["prompt"]] == ["system", "user"]
        assert [m["role"] for m in line["completion"]] == ["assistant"]
        assert line["prompt"] + line["completion"] == full["messages"]


def test_teacher_needs_a_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--teacher"):
        export_dataset(FIXTURE, tmp_path / "t.jsonl", ExportOptions(teachers=(" ",)))
