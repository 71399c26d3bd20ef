"""Schema fuzzing: schemathesis generates requests for every operation of /openapi.json; none may get a 5xx.

It runs the schemathesis CLI against a real ``daehwa serve`` (fake upstream model, an authenticated user), bounded
by ``--max-examples`` so it stays well under a minute.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fake_upstream import FakeUpstream

pytest_plugins = ["tests.api_fixtures"]


def test_no_server_errors_from_schema_fuzzing(served: tuple[str, str, FakeUpstream, Path], tmp_path: Path) -> None:
    base_url, key, _, log = served
    root = base_url.removesuffix("/v1")
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{root}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "6",
            "--phases",
            "examples,fuzzing",
            "--generation-deterministic",
            "--header",
            f"Authorization: Bearer {key}",
            "--workers",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Internal Server Error" not in log.read_text() and "Traceback" not in log.read_text()
