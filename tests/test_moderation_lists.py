"""Word list files, reloading under concurrent use, and the ``daehwa filter`` commands."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException
from typer.testing import CliRunner

from daehwa.errors import ConfigError
from daehwa.moderation import WordFilter
from daehwa.moderation.cli import filter_app
from daehwa.moderation.lists import builtin_lists, read_list


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_blank_lines_bom_crlf_comments_and_duplicates_are_handled(tmp_path: Path) -> None:
    path = write(tmp_path / "w.txt", "\ufeff# a comment\r\n\r\n바보\r\n  \r\n바보\r\n멍청이\tinsult\r\n\ufeff똥개\n")
    entries = read_list(path)
    assert [(e.word, e.category) for e in entries] == [
        ("바보", "profanity"),
        ("바보", "profanity"),
        ("멍청이", "insult"),
        ("똥개", "profanity"),
    ]
    assert entries[2].source == f"{path}:6"
    filt = WordFilter([path], builtin=False)
    assert filt.stats.words == 4 and filt.stats.patterns > 0
    assert [m.word for m in filt.check("바보 멍청이 똥개").matches] == ["바보", "멍청이", "똥개"]


def test_category_headers_apply_to_the_lines_below(tmp_path: Path) -> None:
    path = write(tmp_path / "w.txt", "# category: hate\n가나다\n# Category: Sexual\n라마바\n사아자\tinsult\n")
    assert [(e.word, e.category) for e in read_list(path)] == [
        ("가나다", "hate"),
        ("라마바", "sexual"),
        ("사아자", "insult"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("바보\n" + "가" * 5000 + "\n", "w.txt:2 is 5000 characters long"),
        ("바보\tnot a category\n", "w.txt:1 has the category 'not a category'"),
        ("바보".encode("cp949"), "is not UTF-8"),
        (b"\x00\x01binary", "looks binary"),
    ],
)
def test_bad_list_files_give_errors_that_name_the_file_and_fix(tmp_path: Path, data: str | bytes, message: str) -> None:
    path = write(tmp_path / "w.txt", data)
    with pytest.raises(ConfigError) as caught:
        WordFilter([path], builtin=False)
    assert message in caught.value.message
    assert str(path) in caught.value.message


def test_a_missing_list_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        WordFilter([tmp_path / "nope.txt"])


def test_evasion_spellings_in_a_list_are_skipped_not_turned_into_plain_words(tmp_path: Path) -> None:
    # "ㄷㅐ출" would compose to 대출 (a loan) and "㉻㉶" is 하자 under NFKC: both would block ordinary text.
    path = write(tmp_path / "w.txt", "ㄷㅐ출\n㉻㉶\n씹\n")
    filt = WordFilter([path], builtin=False)
    assert filt.stats.words == 1 and filt.stats.skipped == 2
    assert filt.check("대출 하자").matches == ()
    assert filt.check("씹").hit


def test_reload_picks_up_changes_and_keeps_the_old_lists_on_error(tmp_path: Path) -> None:
    words = write(tmp_path / "w.txt", "바보\n")
    allow = write(tmp_path / "a.txt", "")
    filt = WordFilter([words], [allow], builtin=False)
    assert filt.check("바보야").hit
    write(words, "바보\n멍청이\n")
    write(allow, "바보상자\n")
    stats = filt.reload()
    assert stats["words"] == 2 and stats["allowed"] == 1
    assert filt.check("멍청이").hit
    assert not filt.check("바보상자").hit
    write(words, "x" * 500)
    with pytest.raises(ConfigError):
        filt.reload()
    assert filt.check("멍청이").hit  # the previous automaton is still in use


def test_reload_under_concurrent_checks(tmp_path: Path) -> None:
    words = write(tmp_path / "w.txt", "바보\n")
    filt = WordFilter([words], builtin=False)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[tuple[str, ...]] = set()

    def checker() -> None:
        try:
            while not stop.is_set():
                result = filt.check("바보 멍청이")
                seen.add(tuple(m.word for m in result.matches))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=checker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            write(words, "바보\n" if i % 2 else "바보\n멍청이\n")
            filt.reload()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    # Every check saw one whole list or the other, never a half-built automaton.
    assert seen <= {("바보",), ("바보", "멍청이")}
    assert ("바보",) in seen or ("바보", "멍청이") in seen


def test_builtin_lists_are_shipped_with_categories() -> None:
    words, allow = builtin_lists()
    names = {p.name for p in words}
    assert {"ko.txt", "en.txt"} <= names
    assert [p.name for p in allow] == ["allow.txt"]
    categories = {e.category for p in words for e in read_list(p)}
    assert {"profanity", "insult", "sexual", "hate"} <= categories


# -- the CLI --------------------------------------------------------------------------------------------------------
def test_cli_check_writes_one_json_object_per_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    words = write(tmp_path / "w.txt", "바보\tinsult\n")
    allow = write(tmp_path / "a.txt", "바보상자\n")
    result = CliRunner().invoke(
        filter_app,
        ["check", "--words", str(words), "--allow", str(allow), "--no-builtin"],
        input="너 바.보야\r\n바보상자 봐\n씨발\n",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {
        "text": "너 바.보야",
        "blocked": True,
        "matches": [{"word": "바보", "category": "insult", "start": 2, "end": 5}],
        "masked": "너 ***야",
    }
    assert lines[1]["blocked"] is False and lines[1]["matches"] == []
    assert lines[2] == {"text": "씨발", "blocked": False, "matches": [], "masked": "씨발"}  # built-in list is off


def test_cli_check_uses_the_builtin_list_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(filter_app, ["check"], input="tlqkf\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matches"][0]["word"] in {"시발", "씨발"}


def test_cli_check_reports_a_bad_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(filter_app, ["check", "--words", str(tmp_path / "missing.txt")], input="")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


@pytest.fixture
def reload_server(tmp_path: Path) -> Iterator[tuple[str, WordFilter, Path]]:
    """A real HTTP server with the admin reload endpoint's contract (the API module mounts the real one)."""
    words = write(tmp_path / "w.txt", "바보\n")
    filt = WordFilter([words], builtin=False)
    app = FastAPI()

    @app.post("/api/admin/filter/reload")
    def reload(authorization: str = Header(default="")) -> dict[str, object]:
        if authorization != "Bearer admin-key":
            raise HTTPException(status_code=403, detail="admin only")
        return filt.reload()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", filt, words
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cli_reload_posts_to_the_admin_endpoint(
    reload_server: tuple[str, WordFilter, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, filt, words = reload_server
    write(words, "멍청이\n")
    monkeypatch.setenv("DAEHWA_API_KEY", "admin-key")
    result = CliRunner().invoke(filter_app, ["reload", "--url", url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["words"] == 1
    assert filt.check("멍청이").hit


def test_cli_reload_with_a_wrong_key_fails_without_showing_it(reload_server: tuple[str, WordFilter, Path]) -> None:
    url, _, _ = reload_server
    result = CliRunner().invoke(filter_app, ["reload", "--url", url, "--api-key", "sk-wrong-secret"])
    assert result.exit_code == 1
    assert "admin" in result.stderr and "sk-wrong-secret" not in result.output + result.stderr


def test_cli_reload_explains_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DAEHWA_API_KEY", "k")
    result = CliRunner().invoke(filter_app, ["reload", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "is `daehwa serve` running" in result.stderr
