"""Bad report files in a real run alongside good ones: one clear failure record each, or success.

The run is a whole job (supervisor, four worker sessions, the stub endpoint);
a second test covers the unreadable file for a user who can read anything
(root), where file permissions cannot make a file unreadable.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distill.bench.stub_server import StubServer
from distill.core.config import Endpoint, Secret, Settings
from distill.job.claims import ClaimBook
from distill.job.state import StateDir
from distill.job.worker import EXIT_OK, Worker
from distill.results.store import OutputStore
from tests.helpers.chaos_tools import read_outputs, write_endpoint_config
from tests.helpers.jobtools import cli, job_ended, stray_files, wait_until
from tests.helpers.notes import write_notes

KEY = "sk-bad-inputs-key"
LIMIT = 20_000  # MAX_REPORT_BYTES of the run
CHINESE = ("主诉：胸痛伴气短三天。\n现病史：患者三天前出现胸痛，活动后加重，伴有心悸，无发热。\n"
           "体格检查：双下肢轻度水肿，心尖部可闻及收缩期杂音。\n诊断：冠状动脉粥样硬化性心脏病，心功能不全。\n")

#: number -> (what the file is, how to make it, the words its failure message must hold; None when it succeeds)
BadCase = tuple[str, Callable[[Path], None], str | None]


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _unreadable(folder: Path) -> None:
    path = folder / "report_110.txt"
    path.write_text("CHIEF COMPLAINT: Cough.\nASSESSMENT: Bronchitis.\n", encoding="utf-8")
    path.chmod(0)


CASES: dict[int, BadCase] = {
    101: ("empty", _write("report_101.txt", b""), "empty file"),
    102: ("whitespace only", _write("report_102.txt", b" \n\t\r\n  \n"), "only whitespace"),
    103: ("binary", _write("report_103.txt", bytes(range(256)) * 8), "binary"),
    104: ("over the size limit", _write("report_104.txt", b"Chest pain. " * (LIMIT // 10)), "over the"),
    105: ("invalid UTF-8", _write("report_105.txt", b"Chest pain \xff\xfe\x80 and \xc3\x28 fever\n" * 5), "UTF-8"),
    106: ("GB18030 Chinese", _write("report_106.txt", CHINESE.encode("gb18030")), None),
    107: ("malformed JSON", _write("report_107.json", b'{"text": "Chest pain", '), "malformed JSON"),
    108: ("JSON list", _write("report_108.json", b'["Chest pain and fever"]'), "top level is an array"),
    109: ("directory", lambda folder: (folder / "report_109.txt").mkdir(), "is a directory"),
    110: ("unreadable", _unreadable, "permission denied" if os.geteuid() != 0 else None),
    111: ("good JSON note", _write("report_111.json", b'{"text": "CHIEF COMPLAINT: Fever and cough for two days."}'),
          None),
}
GOOD = [100, 112, 113, 114, 115]


@pytest.fixture
def job(isolated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    stub = StubServer(latency_s=0.02, require_key=KEY).start()
    monkeypatch.setenv("DIAG_CONFIG", str(write_endpoint_config(tmp_path, endpoints=4, max_report_bytes=LIMIT)))
    monkeypatch.setenv("DIAG_API_KEY", KEY)
    monkeypatch.setenv("DIAG_BASE_URL", stub.url)
    state = StateDir(Path(isolated["state"]))
    yield {"stub": stub, "state": state, "input": tmp_path / "in", "output": tmp_path / "out"}
    if state.running_job() is not None:
        cli("stop", "--now")
        wait_until(lambda: state.running_job() is None, timeout=30)
    stub.stop()


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_each_bad_file_gets_one_clear_failure_record_and_the_good_notes_all_finish(job: dict[str, Any]) -> None:
    folder: Path = job["input"]
    write_notes(folder, GOOD)
    for _what, make, _words in CASES.values():
        make(folder)
    result = cli("start", "100", "--until-drained", "--input-dir", str(folder), "--output-dir", str(job["output"]))
    assert result.returncode == 0, result.stderr + result.stdout
    wait_until(lambda: job_ended(job["state"]), timeout=90)
    outputs = read_outputs(job["output"])
    expected_failed = {n for n, (_what, _make, words) in CASES.items() if words is not None}
    assert outputs.done == set(GOOD) | (set(CASES) - expected_failed)
    assert set(outputs.failed) == expected_failed
    asked = job["stub"].stats()["by_report_step"]
    for number in expected_failed:
        what, _make, words = CASES[number]
        record = outputs.failed[number]
        assert record["error_class"] == "bad_input", what
        assert words is not None and words in record["message"], (what, record["message"])
        assert f"report_{number}." in record["message"], what  # the line names the file
        assert "\n" not in record["message"], what
        assert not [key for key in asked if key.startswith(f"{number}/")], what  # no call paid for it
    assert outputs.raw[106]["report"]["encoding"] == "gb18030"
    assert outputs.normalized[106] and all(r["s_symptom"] in CHINESE for r in outputs.normalized[106])
    assert stray_files(job["output"], job["state"].root) == []


def test_an_unreadable_file_is_a_bad_input_even_for_a_user_who_can_read_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = StubServer(require_key=KEY).start()
    try:
        endpoint = Endpoint(name="api_1", base_url=stub.url, model="stub", provider="openai", api_key=Secret(KEY))
        settings = Settings(endpoints={"api_1": endpoint}, input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                            check_interval=0.1, state_dir=tmp_path / "state")
        write_notes(settings.input_dir, [1, 2, 3])
        locked = settings.input_dir / "report_2.txt"
        real_open = os.open

        def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if os.fspath(path) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(locked))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
        state, store = StateDir(settings.state_dir), OutputStore(settings.output_dir)
        state.ensure()
        store.prepare()
        ClaimBook(state, store, settings.input_dir).begin(1, None)
        out = io.StringIO()
        assert Worker("api_1", settings, job_id="j", until_drained=True, out=out).run() == EXIT_OK
    finally:
        stub.stop()
    outputs = read_outputs(settings.output_dir)
    assert outputs.done == {1, 3} and set(outputs.failed) == {2}
    assert outputs.failed[2]["error_class"] == "bad_input"
    assert "report_2.txt: cannot read the file: permission denied" in outputs.failed[2]["message"]
    assert [line for line in out.getvalue().splitlines() if "report 2: FAILED" in line]
