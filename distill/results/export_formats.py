"""The shapes of the export formats that fine-tuning tools read as they are.

- ``llamafactory``: one ``{"messages": [system, user, assistant]}`` line per
  report, each message ``{"role", "content"}``, plus a ``dataset_info.json``
  beside the files that describes them to LLaMA-Factory (``formatting:
  sharegpt``, ``columns.messages``, and ``tags`` naming the role and content
  keys and the three role values). Entries already in that file are kept.
- ``prompt-completion``: one ``{"prompt": [system, user], "completion":
  [assistant]}`` line per report, TRL's conversational prompt-completion
  type, on which its SFT trainer computes the loss over the completion only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.core.errors import ConfigError
from distill.results.atomic import write_json

SFT_CHAT = "sft-chat"
RECORDS = "records"
LLAMAFACTORY = "llamafactory"
PROMPT_COMPLETION = "prompt-completion"
FORMATS = (SFT_CHAT, RECORDS, LLAMAFACTORY, PROMPT_COMPLETION)
#: Formats with one line per report that carries the note itself.
NOTE_FORMATS = (SFT_CHAT, LLAMAFACTORY, PROMPT_COMPLETION)

DATASET_INFO = "dataset_info.json"
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}


def format_line(fmt: str, chat: dict[str, Any]) -> dict[str, Any]:
    """The line of ``fmt`` for one report, from its ``sft-chat`` line."""
    messages = chat["messages"]
    if fmt == LLAMAFACTORY:
        return {"messages": messages}
    if fmt == PROMPT_COMPLETION:
        return {"prompt": [m for m in messages if m["role"] != "assistant"],
                "completion": [m for m in messages if m["role"] == "assistant"]}
    return chat


def dataset_name(train_path: Path) -> str:
    """The name the train split goes by in ``dataset_info.json`` (the file's stem); the val split adds ``_val``."""
    return train_path.stem or train_path.name


def dataset_entries(train_path: Path, val_path: Path) -> dict[str, dict[str, Any]]:
    """The ``dataset_info.json`` entries of both splits; ``file_name`` is relative to the file's folder."""
    def entry(path: Path) -> dict[str, Any]:
        return {"file_name": path.name, "formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": dict(SHAREGPT_TAGS)}

    name = dataset_name(train_path)
    return {name: entry(train_path), f"{name}_val": entry(val_path)}


def read_dataset_info(folder: Path) -> dict[str, Any]:
    """The entries already in ``folder/dataset_info.json`` (``{}`` when there is none); ``ConfigError`` if unusable."""
    path = folder / DATASET_INFO
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or move it, then export again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object of dataset descriptions; fix or move it, then export again")
    return data


def write_dataset_info(train_path: Path, val_path: Path, existing: dict[str, Any]) -> Path:
    """Add (or replace) this export's two entries in ``dataset_info.json`` beside the files; return its path."""
    path = train_path.parent / DATASET_INFO
    write_json(path, {**existing, **dataset_entries(train_path, val_path)})
    return path
