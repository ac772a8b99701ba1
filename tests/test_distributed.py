"""`whispersg … --ray`: a real two-node Ray cluster on loopback, started and stopped here (issue 28)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO, whispersg_command

pytest.importorskip("ray", reason="the Ray tests need the [ray] extra (pip install 'whispersg[ray]')")

# Six short eval clips: two calls of up to four recordings, so both workers get work.
CLIPS = ("sg_nsc_202261748", "sg_nsc_203000298", "fleurs_en_000", "fleurs_en_001", "jfk_inaugural",
         "libri_1089-134686-0000")


def _free_port(low: int = 20000, high: int = 30000) -> int:
    """A free port outside Ray's default worker range (10002-19999), so a worker cannot take it."""
    for port in range(low + os.getpid() % 5000, high):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


def _ray(*arguments: str) -> list[str]:
    return [str(Path(os.sys.executable).parent / "ray"), *arguments]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (127.0.0.1) and a second node (127.0.0.2), one CPU each; yields the head's address."""
    if not shutil.which(_ray()[0]):
        pytest.skip("the 'ray' command is not installed beside this Python")
    temp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO), http_proxy="http://127.0.0.1:9",
               no_proxy="localhost,127.0.0.1,127.0.0.2")
    common = ["--num-cpus", "1", "--disable-usage-stats", "--block"]
    # The head keeps 127.0.0.1 (not the address Ray would find by probing a public resolver).
    head = subprocess.Popen(_ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                                 "--include-dashboard=false", "--temp-dir", str(temp), *common),
                            env=dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    nodes = [head]
    try:
        _wait_for_nodes(port, env, 1)
        nodes.append(subprocess.Popen(_ray("start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.2",
                                           *common), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        _wait_for_nodes(port, env, 2)
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):  # 'ray start --block' stops its node's processes when terminated
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)


def _wait_for_nodes(port: int, env: dict, count: int, timeout: float = 60) -> None:
    code = ("import ray,os; ray.init(address=os.environ['A'], _node_ip_address='127.0.0.1', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env=dict(env, A=f"127.0.0.1:{port}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"))
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    pytest.fail(f"the test Ray cluster did not reach {count} node(s)")


@pytest.fixture(scope="module")
def clips(eval_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name in CLIPS:
        shutil.copy(eval_dir / "audio" / f"{name}.wav", folder / f"{name}.wav")
    return folder


@pytest.fixture(scope="module")
def ray_env(empty_model_store, cluster) -> dict:
    return dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", COLUMNS="200",
                RAY_ADDRESS=cluster, PYTHONPATH=str(REPO))


def _whispersg(*arguments, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*whispersg_command(), *map(str, arguments)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def _words(folder: Path) -> dict[str, list[str]]:
    return {path.stem: [w["word"] for s in json.loads(path.read_text())["segments"] for w in s["words"]]
            for path in sorted(folder.glob("*.json"))}


@pytest.fixture(scope="module")
def local_words(clips, ray_env, tmp_path_factory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("local")
    done = _whispersg(clips, "-o", out, "-f", "json", "--quiet", env=ray_env)
    assert done.returncode == 0, done.stderr
    return _words(out)


def test_two_workers_on_two_nodes_match_the_local_run_and_a_corrupt_file_fails_alone(clips, ray_env, local_words,
                                                                                        tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(clips, inputs)
    (inputs / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    done = _whispersg(inputs, "--ray", "auto", "--ray_workers", "2", "-o", tmp_path / "out", "-f", "json", env=ray_env)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "broken.wav" in line and "✓" not in line]
    assert errors and "Traceback" not in done.stderr, done.stderr
    assert f"{len(CLIPS)} transcribed, 1 failed" in " ".join(done.stderr.split()), done.stderr
    assert "2 Ray workers" in " ".join(done.stderr.split()) and "on 2 node(s)" in done.stderr, done.stderr
    assert _words(tmp_path / "out") == local_words


def test_a_killed_worker_has_its_recordings_retried_and_each_is_transcribed_once(clips, ray_env, local_words,
                                                                                   tmp_path):
    command = [*whispersg_command(), str(clips), "--ray", "auto", "--ray_workers", "2", "-o", str(tmp_path / "out"),
               "-f", "json"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env, cwd=REPO)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.poll() is None and time.monotonic() < deadline:
        # Ray names an actor's process after the method it is running.
        busy = subprocess.run(["pgrep", "-f", "ray::_Worker.transcribe"], capture_output=True, text=True).stdout.split()
        if busy:
            killed = int(busy[0])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=300)
    assert killed is not None, "no worker was seen transcribing"
    assert run.returncode == 0, stderr
    assert "died" in stderr and "retried" in stderr, stderr
    finished = [line for line in stderr.splitlines() if line.startswith("✓")]
    assert sorted(Path(line.split()[1]).stem for line in finished) == sorted(CLIPS), stderr
    assert _words(tmp_path / "out") == local_words


def test_skip_existing_finishes_an_interrupted_run(clips, ray_env, local_words, tmp_path):
    out = tmp_path / "out"
    first = _whispersg(clips, "--ray", "auto", "-o", out, "-f", "json", "--quiet", env=ray_env)
    assert first.returncode == 0, first.stderr
    for name in CLIPS[:2]:  # as if the run had been stopped before these were written
        (out / f"{name}.json").unlink()
    again = _whispersg(clips, "--ray", "auto", "-o", out, "-f", "json", "--skip_existing", env=ray_env)
    assert again.returncode == 0, again.stderr
    assert f"2 transcribed, 0 failed, {len(CLIPS) - 2} skipped" in " ".join(again.stderr.split()), again.stderr
    assert _words(out) == local_words


def test_local_starts_a_private_cluster(clips, empty_model_store, tmp_path):
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    done = _whispersg(clips / f"{CLIPS[4]}.wav", "--ray", "local", "-o", tmp_path, "-f", "txt", env=env)
    assert done.returncode == 0, done.stderr
    assert "ask not what your country can do for you" in (tmp_path / f"{CLIPS[4]}.txt").read_text().lower()


def test_a_bad_address_fails_in_seconds_with_one_line_naming_it(tmp_path, empty_model_store):
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", PYTHONPATH=str(REPO))
    port = _free_port(30000, 31000)
    started = time.monotonic()
    done = _whispersg(REPO / "demo" / "sample.wav", "--ray", f"127.0.0.1:{port}", "-o", tmp_path, env=env, timeout=60)
    assert time.monotonic() - started < 15
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())
