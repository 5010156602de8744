"""Notes for tests: a folder of small synthetic reports, and where the shared real notes are."""

from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT.parent / "shared" / "data"
SHARED_NOTES = SHARED_DATA / "mtsamples_dev"


def write_notes(folder: Path, numbers: list[int], text: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        body = text or (
            f"CHIEF COMPLAINT: Chest pain and shortness of breath for {n % 7 + 1} days.\n"
            "HISTORY OF PRESENT ILLNESS: The patient reports chest pain on exertion and denies fever.\n"
            "PHYSICAL EXAMINATION: Mild bilateral lower extremity edema. A systolic murmur is heard.\n"
            "ASSESSMENT: Congestive heart failure with left ventricular dysfunction.\n"
            "PLAN: Start diuretics.\n"
        )
        (folder / f"report_{n}.txt").write_text(body, encoding="utf-8")
