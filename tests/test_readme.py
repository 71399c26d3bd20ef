"""The README's API examples, run as written against a real ``daehwa serve`` (only the address and key differ)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.fake_upstream import FakeUpstream

from .conftest import require

pytest_plugins = ["tests.api_fixtures"]

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
API_SECTION = README.split("<!-- api:start -->", 1)[1].split("<!-- api:end -->", 1)[0]


def _block(language: str, containing: str) -> str:
    for body in re.findall(rf"```{language}\n(.*?)```", API_SECTION, re.S):
        if containing in body:
            return str(body)
    raise AssertionError(f"README has no {language} block containing {containing!r}")


def test_curl_examples_work_as_written(served: tuple[str, str, FakeUpstream, Path]) -> None:
    require(shutil.which("curl") is not None, "curl is not installed")
    base, key, _, _ = served
    root = base.removesuffix("/v1")
    script = _block("sh", "curl").replace("http://127.0.0.1:8000", root)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"KEY={key}\n{script}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"role":"assistant"' in out.replace(" ", "") or '"assistant"' in out
    assert "data: " in out  # the SSE example streamed
    assert "2+2?" not in result.stderr
    # curl -s prints each JSON answer without a newline: decode them one after another around the SSE lines.
    rest = re.sub(r"(?:event|data|id): [^\n]*\n", "", out)
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(rest):
        if rest[at].isspace():
            at += 1
            continue
        try:
            document, at = decoder.raw_decode(rest, at)
        except ValueError:
            raise AssertionError(f"not JSON at {at}: {rest[at - 40 : at + 80]!r}\nwhole output:\n{out}") from None
        documents.append(document)
    assert len(documents) >= 3 and not any(d.get("error") for d in documents), documents


def test_openai_sdk_example_works_as_written(served: tuple[str, str, FakeUpstream, Path]) -> None:
    base, key, upstream, _ = served
    code = _block("python", "OpenAI(").replace("http://127.0.0.1:8000/v1", base).replace('"dh-..."', repr(key))
    code = code.replace('model="local"', 'model="up/m1"')  # the served fake model instead of loading the real one
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Hello from the fake upstream."
    assert upstream.requests[-1].json["messages"][-1]["content"] == "안녕하세요!"
