from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from distill.core.errors import BadInput
from distill.extraction.report import (
    Report,
    decode_report_bytes,
    read_report,
    report_number,
    shown_name,
    unused_name_reason,
)

DATASET = Path(__file__).resolve().parents[2] / "dataset"
NOBODY = 65534

CHINESE_NOTE = "主诉：胸痛3天。\n现病史：患者3天前出现胸痛，无发热。\n初步诊断：冠心病？"
ENGLISH_NOTE = "CHIEF COMPLAINT: Cough.\nASSESSMENT: Possible bronchitis. No pneumonia."


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def bad_input_message(path: Path, **kwargs: int) -> str:
    with pytest.raises(BadInput) as info:
        read_report(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path.name}: "), message
    assert "\n" not in message
    return message


# --- file names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("report_10001.txt", 10001),
        ("report_7.json", 7),
        ("report_0042.txt", None),  # one number, one name: report_42.txt
        ("report_0.txt", 0),
        ("report_².txt", None),  # str.isdigit() says yes; int() refuses it
        ("report_٤.txt", None),  # int() reads it as 4
        ("dataset/sub/report_10002.txt", 10002),
        ("report_10001.txt.bak", None),
        ("report_.txt", None),
        ("report_12a.txt", None),
        ("report_-3.txt", None),
        ("report_١٢.txt", None),  # Arabic-Indic digits are not decimal digits here
        ("Report_1.txt", None),
        ("report_1.md", None),
        ("diagnostic_1.json", None),
    ],
)
def test_report_number(name: str, number: int | None) -> None:
    assert report_number(name) == number
    assert report_number(Path(name)) == number


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("report_007.txt", "leading zeros in the report number (rename it report_7.txt)"),
        ("report_00.json", "rename it report_0.json"),
        ("report_².txt", "ASCII digits 0-9"),
        ("report_٤.txt", "ASCII digits 0-9"),
        ("report_.txt", "ASCII digits 0-9"),
        ("report_1 .txt", "ASCII digits 0-9"),
    ],
)
def test_a_name_that_looks_like_a_report_but_is_not_one_says_why(name: str, words: str) -> None:
    reason = unused_name_reason(name)
    assert reason is not None and words in reason


@pytest.mark.parametrize("name", ["report_7.txt", "report_0.json", "notes.txt", "report_7.md", "diagnostic_7.json"])
def test_report_names_and_unrelated_files_have_no_reason_against_them(name: str) -> None:
    assert unused_name_reason(name) is None


def test_a_shown_name_is_one_printable_line() -> None:
    strange = "report_1\n2\udcff.txt"  # a newline and an undecodable byte (surrogate escape) in a file name
    shown = shown_name(strange)
    assert shown.isprintable() and "\n" not in shown and shown.startswith("report_1")
    assert shown_name("report_报告.txt") == "report_报告.txt"


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text", "encoding"),
    [
        pytest.param(ENGLISH_NOTE.encode("utf-8"), ENGLISH_NOTE, "utf-8", id="utf-8"),
        pytest.param(CHINESE_NOTE.encode("utf-8"), CHINESE_NOTE, "utf-8", id="utf-8-chinese"),
        pytest.param(b"\xef\xbb\xbf" + ENGLISH_NOTE.encode(), ENGLISH_NOTE, "utf-8-sig", id="bom"),
        pytest.param(CHINESE_NOTE.encode("gb18030"), CHINESE_NOTE, "gb18030", id="gb18030"),
        pytest.param("主诉：腹痛，呕吐2次。".encode("gbk"), "主诉：腹痛，呕吐2次。", "gb18030", id="gbk"),
        pytest.param(b"PLAN: rest.\r\nFollow up.\r\n", "PLAN: rest.\nFollow up.\n", "utf-8", id="crlf"),
        pytest.param(CHINESE_NOTE.replace("\n", "\r\n").encode("gb18030"), CHINESE_NOTE, "gb18030", id="gb18030-crlf"),
        pytest.param("BP\u00a0120/80".encode(), "BP\u00a0120/80", "utf-8", id="nbsp-kept"),
    ],
)
def test_decode_cases(tmp_path: Path, data: bytes, text: str, encoding: str) -> None:
    assert decode_report_bytes(data, name="report_1.txt") == (text, encoding)
    report = read_report(write(tmp_path, "report_1.txt", data))
    assert (report.text, report.encoding, report.number) == (text, encoding, 1)
    assert report.sha256 == hashlib.sha256(data).hexdigest()


def test_report_carries_its_sections(tmp_path: Path) -> None:
    report = read_report(write(tmp_path, "report_10001.txt", ENGLISH_NOTE.encode()))
    assert isinstance(report, Report)
    assert report.path == tmp_path / "report_10001.txt"
    assert report.sections.names() == ["chief complaint", "assessment"]
    assert report.sections.patient_text() == "Cough."


@pytest.mark.parametrize(
    ("doc", "text"),
    [
        pytest.param({"medical_record_content": ENGLISH_NOTE}, ENGLISH_NOTE, id="medical_record_content"),
        pytest.param({"text": CHINESE_NOTE, "id": 3}, CHINESE_NOTE, id="text"),
        pytest.param({"text": "A\r\nB", "medical_record_content": "other"}, "A\nB", id="text-preferred-crlf"),
    ],
)
def test_json_report(tmp_path: Path, doc: dict[str, object], text: str) -> None:
    data = json.dumps(doc, ensure_ascii=False).encode()
    report = read_report(write(tmp_path, "report_5.json", data))
    assert (report.text, report.encoding, report.number) == (text, "json", 5)
    assert report.sha256 == hashlib.sha256(data).hexdigest()


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        pytest.param("report_10007.txt", b"", "empty file", id="empty"),
        pytest.param("report_10007.txt", b" \n\t\r\n  ", "contains only whitespace", id="whitespace"),
        pytest.param("report_10007.txt", "\u00a0\u3000\n".encode(), "contains only whitespace", id="unicode-blank"),
        pytest.param("report_10007.txt", b"\xef\xbb\xbf", "empty file", id="bom-only"),
        pytest.param("report_10007.txt", b"SECRET\x00\x01\x02note", "binary file", id="nul-bytes"),
        pytest.param("report_10007.txt", b"SECRET" + bytes(range(1, 9)) * 4, "binary file", id="control-chars"),
        pytest.param("report_10007.txt", b"SECRET caf\x80\x81 \xc0\xff", "not valid UTF-8", id="not-utf8-not-gb"),
        pytest.param("report_10007.txt", "SECRET".encode("utf-16"), "UTF-16", id="utf-16"),
        pytest.param("report_10007.json", b'{"text": "SECRET",', "malformed JSON", id="json-malformed"),
        pytest.param("report_10007.json", b'["SECRET"]', "top level is an array", id="json-list"),
        pytest.param("report_10007.json", b'"SECRET"', "top level is a string", id="json-string"),
        pytest.param("report_10007.json", b'{"note": "SECRET"}', 'no "text" or "medical_record_content"', id="no-text"),
        pytest.param("report_10007.json", b'{"text": "  "}', 'field "text" is empty', id="json-empty-text"),
        pytest.param(
            "report_10007.json", b'{"text": ["SECRET"]}', "is an array, expected a string", id="json-list-text"
        ),
        pytest.param("report_10007.json", b'{"medical_record_content": null}', "is null", id="json-null-text"),
        pytest.param("report_10007.json", b"", "empty file", id="json-empty-file"),
        pytest.param("report_10007.json", b"[" * 100_000, "malformed JSON", id="json-too-deep"),
    ],
)
def test_bad_content_names_the_file_and_the_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    message = bad_input_message(write(tmp_path, name, data))
    assert reason in message
    assert "SECRET" not in message  # the note's text never appears in an error


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "report_3.txt"
    with path.open("wb") as f:
        f.truncate(3_100_000)  # sparse: costs no disk and, if ever read whole, would fail as binary
    message = bad_input_message(path)
    assert message == "report_3.txt: file is 3.1 MB, over the 2.0 MB limit (MAX_REPORT_BYTES)"


def test_max_bytes_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "report_3.txt", b"x" * 101)
    assert "101 bytes, over the 100 bytes limit" in bad_input_message(path, max_bytes=100)
    assert read_report(path, max_bytes=101).text == "x" * 101


def test_missing_file(tmp_path: Path) -> None:
    assert "file not found" in bad_input_message(tmp_path / "report_9.txt")


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "report_9.txt"
    link.symlink_to(tmp_path / "gone.txt")
    assert "broken symbolic link" in bad_input_message(link)


def test_directory_named_like_a_report(tmp_path: Path) -> None:
    path = tmp_path / "report_11.txt"
    path.mkdir()
    assert "is a directory" in bad_input_message(path)


def test_fifo_named_like_a_report_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "report_12.txt"
    os.mkfifo(path)
    assert "not a regular file" in bad_input_message(path)


def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "report_13.txt", ENGLISH_NOTE.encode())
    path.chmod(0)
    if os.geteuid() != 0:
        assert "permission denied" in bad_input_message(path)
        return
    # Root reads anything: drop to an unprivileged user in a child process instead.
    message = _read_report_as(NOBODY, path)
    assert message.startswith("BadInput: report_13.txt: "), message
    assert "permission denied" in message


def _read_report_as(uid: int, path: Path) -> str:
    """Run read_report in a forked child running as ``uid``; returns what it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        try:
            os.setgid(uid)
            os.setuid(uid)
            read_report(path)
            result = "no error"
        except BadInput as exc:
            result = f"BadInput: {exc}"
        except BaseException as exc:
            result = f"{type(exc).__name__}: {exc}"
        os.write(w, result.encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_name_that_is_not_a_report(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", ENGLISH_NOTE.encode())
    assert "not a report file name" in bad_input_message(path)


# --- the project's sample notes --------------------------------------------------------


def bundled_notes(folder: Path) -> list[Path]:
    """The sample notes the project ships, from the folder's manifest: never what a user added there."""
    manifest = (folder / "SAMPLE_NOTES.sha256").read_text(encoding="utf-8").splitlines()
    entries = [line.split(None, 1) for line in manifest if line.strip() and not line.startswith("#")]
    paths = [folder / name.strip() for _, name in entries]
    for (digest, _), path in zip(entries, paths, strict=True):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} differs from its manifest entry"
    return paths


def check_sample_notes(folder: Path) -> None:
    reports = [read_report(p) for p in bundled_notes(folder)]
    assert len(reports) >= 34
    encodings = [r.encoding for r in reports]
    assert encodings.count("gb18030") >= 2
    assert "json" in encodings
    chinese = [r for r in reports if any("\u4e00" <= c <= "\u9fff" for c in r.text)]
    assert len(chinese) >= 6
    assert sum(r.sections.names() == ["note"] for r in reports) >= 4
    assert len({r.number for r in reports}) == len(reports)


def test_every_dataset_note_reads_without_error() -> None:
    check_sample_notes(DATASET)


def test_a_note_a_user_adds_to_the_dataset_folder_does_not_break_the_sample_checks(tmp_path: Path) -> None:
    copy = tmp_path / "dataset"
    shutil.copytree(DATASET, copy)
    (copy / "report_99999.txt").write_bytes(b"\x00\xff binary, not a note")
    check_sample_notes(copy)
    with pytest.raises(BadInput):
        read_report(copy / "report_99999.txt")


@pytest.mark.skipif(not (DATASET.parent / ".git").exists() or shutil.which("git") is None,
                    reason="not a git checkout")
def test_notes_a_user_adds_to_the_dataset_folder_are_ignored_by_git() -> None:
    def ignored(name: str) -> bool:
        run = subprocess.run(["git", "check-ignore", "-q", f"dataset/{name}"], cwd=DATASET.parent, check=False)
        return run.returncode == 0

    assert ignored("report_99999.txt") and ignored("report_20001.json")
    assert not any(ignored(p.name) for p in bundled_notes(DATASET))


def test_a_symlink_is_not_followed_by_default_and_the_message_names_its_target(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("CHIEF COMPLAINT: not a note of this folder.\n")
    (tmp_path / "in").mkdir()
    link = tmp_path / "in" / "report_5.txt"
    link.symlink_to(outside)
    message = bad_input_message(link)
    assert "symbolic link" in message and str(outside) in message and "report_5.txt" in message


def test_follow_symlinks_allows_a_link_inside_the_input_folder_only(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "real.txt").write_text("CHIEF COMPLAINT: Chest pain for two days.\n")
    (tmp_path / "outside.txt").write_text("CHIEF COMPLAINT: Chest pain for two days.\n")
    inside = folder / "report_6.txt"
    inside.symlink_to(folder / "real.txt")
    escaping = folder / "report_7.txt"
    escaping.symlink_to(Path("..") / "outside.txt")
    assert read_report(inside, follow_symlinks=True, inside=folder).number == 6
    with pytest.raises(BadInput, match="outside the input folder"):
        read_report(escaping, follow_symlinks=True, inside=folder)
