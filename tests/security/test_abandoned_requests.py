"""Abandoned requests (issue 26, item 6): a place in the queue is taken before the upload is read, a stalled upload
gives it back, and a client that leaves takes its job with it (queued: at once; running: at its next progress
report).  A real server on 127.0.0.1, raw sockets, every wait bounded."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")
uvicorn = pytest.importorskip("uvicorn", reason="whispersg serve needs the [serve] extra")

from whispersg.audio import load_audio  # noqa: E402
from whispersg.serve.app import ServeSettings, create_app  # noqa: E402

from ..conftest import DEMO_WAV  # noqa: E402
from ..test_serve import _free_port, _wait_until, _write_wav  # noqa: E402

BOUNDARY = "whispersgboundary"


def _multipart(audio: bytes) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    return head + audio + f"\r\n--{BOUNDARY}--\r\n".encode()


def _open(port: int, body_length: int) -> socket.socket:
    """A connection that has sent the headers of an upload of ``body_length`` bytes, and no body yet."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall((f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                        f"Content-Length: {body_length}\r\n\r\n").encode())
    return connection


def _status(connection: socket.socket) -> int:
    return int(connection.recv(65536).split(b" ", 2)[1])


@pytest.fixture
def server(pipeline):
    port = _free_port()
    settings = ServeSettings(workers=1, max_queue=1, upload_idle_seconds=1.0, bind=("127.0.0.1", port))
    app = create_app(pipeline, settings)
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    _wait_until(lambda: instance.started, timeout=30)
    yield port
    instance.should_exit = True
    thread.join(30)


def _queue(port: int) -> dict:
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    with connection:
        connection.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    return json.loads(reply.split(b"\r\n\r\n", 1)[1])["queue"]


def test_a_full_queue_refuses_before_the_upload_and_stalled_uploads_give_their_place_back(server):
    stalled = [_open(server, 10_000_000) for _ in range(2)]  # both places taken, no body sent
    _wait_until(lambda: _queue(server)["waiting"] == 2, timeout=10)
    third = _open(server, 10_000_000)
    started = time.monotonic()
    assert _status(third) == 429  # answered without a byte of its body
    assert time.monotonic() - started < 5
    for connection in stalled:
        assert _status(connection) == 408  # after upload_idle_seconds without data
    _wait_until(lambda: _queue(server)["waiting"] == 0, timeout=10)
    for connection in (*stalled, third):
        connection.close()


def test_clients_that_leave_take_their_jobs_with_them(server, tmp_path):
    audio = load_audio(DEMO_WAV)
    long_body = _multipart(_write_wav(tmp_path / "long.wav", np.concatenate([audio] * 20)).read_bytes())  # 10 min
    running = _open(server, len(long_body))
    running.sendall(long_body)
    _wait_until(lambda: _queue(server)["running"] == 1, timeout=30)
    short_body = _multipart(DEMO_WAV.read_bytes())
    waiting = _open(server, len(short_body))
    waiting.sendall(short_body)
    _wait_until(lambda: _queue(server)["waiting"] == 1, timeout=30)

    waiting.close()  # a queued job is dropped at once
    _wait_until(lambda: _queue(server)["waiting"] == 0, timeout=10)
    assert _queue(server)["running"] == 1
    running.close()  # a running one stops well before its 10 minutes of audio are done
    _wait_until(lambda: _queue(server)["running"] == 0, timeout=15)
    assert _queue(server)["completed"] == 1
