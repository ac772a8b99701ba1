"""Shared fixtures: the real tiny.en pipeline, the eval set, and a socket guard.

Every test runs with outbound network connections refused (loopback and
Unix sockets stay allowed), so any accidental hub lookup fails loudly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EVAL_DIR = Path(os.environ.get("WHISPERSG_EVAL_DIR", REPO.parent / "shared" / "eval"))
DEMO_WAV = REPO / "demo" / "sample.wav"
DEMO_STM = REPO / "demo" / "sample.stm"
DEMO_RTTM = REPO / "demo" / "sample.rttm"

NO_EVAL_REASON = (
    f"the shared evaluation set is not at {EVAL_DIR} (it ships beside the developers' checkout, not in the repo); "
    "set WHISPERSG_EVAL_DIR to run these tests"
)


def demo_reference() -> str:
    """The demo call's reference transcript (its STM, speakers' turns joined in order)."""
    from whispersg.metrics import read_stm

    return " ".join(text for _, _, _, text in read_stm(DEMO_STM))


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):
        return True  # Unix socket path
    host = str(address[0])
    return host in ("localhost", "::1") or host.startswith("127.")


@pytest.fixture(autouse=True, scope="session")
def _block_network():
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return original_connect(self, address)

    def guarded_connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return original_connect_ex(self, address)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    yield
    socket.socket.connect = original_connect
    socket.socket.connect_ex = original_connect_ex


@pytest.fixture(scope="session")
def empty_model_store(tmp_path_factory) -> Path:
    """A model store with nothing in it, so the default resolves to the built-in tiny.en."""
    return tmp_path_factory.mktemp("empty-store")


@pytest.fixture(scope="session")
def pipeline(empty_model_store):
    from whispersg import WhisperSGPipeline

    return WhisperSGPipeline(model_dir=str(empty_model_store), threads=2)


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not (EVAL_DIR / "manifest.jsonl").is_file():
        pytest.skip(NO_EVAL_REASON)
    return EVAL_DIR


@pytest.fixture(scope="session")
def eval_items(eval_dir) -> list[dict]:
    rows = [json.loads(line) for line in (eval_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row["path"] = eval_dir / row["audio"]
    return rows


@pytest.fixture
def cli_env(empty_model_store, tmp_path) -> dict:
    """Environment for running the CLI as a subprocess: empty store, no colour."""
    env = dict(os.environ)
    env["WHISPERSG_MODEL_DIR"] = str(empty_model_store)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


def whispersg_command() -> list[str]:
    return [sys.executable, "-m", "whispersg"]


def interruptible() -> None:
    """``preexec_fn`` for a child a test sends SIGINT: a test run started in the background by a
    non-interactive shell (as CI does) has SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _have(*programs: str) -> bool:
    import shutil

    return all(shutil.which(p) for p in programs)


@pytest.fixture
def virtual_microphone(tmp_path):
    """A PulseAudio server with a null sink: what paplay plays into 'vmic' is recorded from its monitor."""
    pytest.importorskip("pyaudio", reason="the microphone path needs the [live] extra (PyAudio)")
    if not _have("pulseaudio", "paplay", "pactl"):
        pytest.skip("needs PulseAudio (Debian: pulseaudio pulseaudio-utils; .ci/run installs them)")
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_SOURCE="vmic.monitor", HOME=str(tmp_path))
    started = subprocess.run(
        ["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
         "--load=module-null-sink sink_name=vmic", "--load=module-native-protocol-unix"],
        env=env, capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        pytest.skip(f"PulseAudio would not start here: {started.stderr.strip()[:200]}")
    for _ in range(50):
        if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    yield env
    subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)


class Watched:
    """A child process whose stdout and stderr are read as they come, so a test can wait for a line
    (the CLIs print one when they are ready) instead of sleeping for a guessed time."""

    def __init__(self, args: list[str], **popen) -> None:
        import threading

        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
        self._lines = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(name,), daemon=True) for name in self._lines]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str) -> None:
        for line in getattr(self.process, name):
            with self._changed:
                self._lines[name].append(line)
                self._changed.notify_all()

    def text(self, name: str = "stderr") -> str:
        with self._changed:
            return "".join(self._lines[name])

    def wait_for(self, fragment: str, timeout: float, name: str = "stderr") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while fragment not in "".join(self._lines[name]):
                left = deadline - time.monotonic()
                assert left > 0 and self.process.poll() is None, (
                    f"no {fragment!r} on {name} within {timeout} s (exit {self.process.poll()}):\n{self.text('stdout')}{self.text()}")
                self._changed.wait(min(left, 0.5))

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Wait for exit; (returncode, stdout, stderr)."""
        returncode = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return returncode, self.text("stdout"), self.text("stderr")
