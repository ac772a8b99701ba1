"""API keys never reach a log line; `serve --verbose` shows the access log (issue 26, item 8)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import pytest

from whispersg.cli.common import RedactSecrets

from ..conftest import whispersg_command

KEY = "sekrit-4f9c"


@pytest.mark.parametrize("line", [
    f"< authorization: Bearer {KEY}",
    f"headers: [(b'host', b'x'), (b'authorization', b'Bearer {KEY}')]",
    f"{{'Authorization': 'Bearer {KEY}'}}",
    f'127.0.0.1:5 - "GET /v1/realtime?language=en&api_key={KEY}&diarize=1 HTTP/1.1" 101',
    f"AUTHORIZATION={KEY}",
])
def test_keys_are_redacted_from_log_records(line):
    record = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "%s", (line,), None)
    assert RedactSecrets().filter(record)
    assert KEY not in record.getMessage() and "<redacted>" in record.getMessage()


def test_verbose_server_logs_requests_without_the_key(empty_model_store):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")
    from ..test_serve import _free_port, _wait_until

    port = _free_port()
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", COLUMNS="300")
    server = subprocess.Popen([*whispersg_command(), "serve", "--port", str(port), "--threads", "1", "--verbose",
                               "--api_key", KEY], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, server.stdout.read()
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_until(up, timeout=120)
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert httpx.get(f"{base}/v1/models?api_key={KEY}").status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert "GET /v1/models" in output and "200" in output, output  # the access log is on with --verbose
    assert "api_key=<redacted>" in output and KEY not in output, output
    assert "visible to other users" in output  # the key belongs in WHISPERSG_API_KEY, not in ps
