"""Who made a record: the teacher identity (provider, model, prompt version) and its one spelling.

Every output that names a teacher (raw file, failure record, checkpoint, log,
heartbeat, status entry, export line) writes ``TeacherId.spelling`` under the
key ``teacher_id``. The spelling is ``<provider>/<model>@<prompt version>``;
the offline teacher reads no prompt, so its spelling has no ``@`` part::

    >>> TeacherId("openai", "qwen2.5-7b-instruct", "diag-prompts-2").spelling
    'openai/qwen2.5-7b-instruct@diag-prompts-2'
    >>> offline_teacher().spelling
    'local/local-rules-2'
    >>> TeacherId.parse("openai/Qwen/Qwen2.5-7B@diag-prompts-2").model
    'Qwen/Qwen2.5-7B'
    >>> offline_teacher().matches("local"), offline_teacher().matches("gpt-4o")
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The offline rule-based teacher's version: its "model" in every record it makes.
OFFLINE_TEACHER_VERSION = "local-rules-2"
LOCAL = "local"
#: The key every output uses for the spelling.
TEACHER_ID_KEY = "teacher_id"


@dataclass(frozen=True, order=True)
class TeacherId:
    """A teacher: ``provider`` ("openai" or "local"), ``model`` id (the rules version for local),
    ``prompt_version`` (empty for the offline teacher, which reads no prompt)."""

    provider: str
    model: str
    prompt_version: str = ""

    @property
    def is_local(self) -> bool:
        return self.provider == LOCAL

    @property
    def spelling(self) -> str:
        """The one string that names this teacher everywhere."""
        base = f"{self.provider}/{self.model}"
        return f"{base}@{self.prompt_version}" if self.prompt_version else base

    def __str__(self) -> str:
        return self.spelling

    @property
    def redo_name(self) -> str:
        """What ``start --redo`` takes to re-run this teacher's reports: ``local``, else the model name."""
        return LOCAL if self.is_local else self.model

    def matches(self, name: str) -> bool:
        """True for this teacher's spelling, its model name, or ``local`` when it is the offline teacher."""
        name = name.strip()
        if not name:
            return False
        if name == self.spelling or name == self.model:
            return True
        return self.is_local and name == LOCAL

    @classmethod
    def parse(cls, spelling: str) -> TeacherId:
        """The teacher a spelling names; ``ValueError`` for a string that is not one."""
        text = spelling.strip()
        provider, slash, rest = text.partition("/")
        if not slash or not provider or not rest:
            raise ValueError(f"not a teacher identity (expected <provider>/<model>[@<prompt version>]): {spelling!r}")
        model, at, prompt = rest.rpartition("@")
        if not at:
            model, prompt = rest, ""
        if not model:
            raise ValueError(f"not a teacher identity (no model): {spelling!r}")
        return cls(provider, model, prompt)


def offline_teacher() -> TeacherId:
    """The built-in rule-based teacher."""
    return TeacherId(LOCAL, OFFLINE_TEACHER_VERSION)


def llm_teacher(model: str, prompt_version: str, provider: str = "openai") -> TeacherId:
    """A model behind an endpoint, asked with prompts of ``prompt_version``."""
    return TeacherId(provider, model, prompt_version)


def teacher_of_record(record: Mapping[str, Any]) -> TeacherId | None:
    """The teacher of a raw file, failure record or checkpoint; ``None`` when it names none.

    Reads ``teacher_id`` when present; older records (before the spelling
    existed) are read from their ``teacher`` / ``teacher_kind`` / ``model`` /
    ``prompt_version`` fields.
    """
    spelled = record.get(TEACHER_ID_KEY)
    if isinstance(spelled, str) and spelled:
        try:
            return TeacherId.parse(spelled)
        except ValueError:
            return None
    teacher = record.get("teacher")
    fields: Mapping[str, Any] = teacher if isinstance(teacher, Mapping) else {}
    kind = str(fields.get("kind") or record.get("teacher_kind") or "")
    model = str(fields.get("model") or record.get("model") or "")
    if kind == LOCAL:
        return TeacherId(LOCAL, model or OFFLINE_TEACHER_VERSION)
    if kind == "llm" and model:
        return TeacherId(str(fields.get("provider") or "openai"), model, str(record.get("prompt_version") or ""))
    return None
