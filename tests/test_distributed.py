"""`whispersg … --ray`: a real two-node Ray cluster on loopback, started and stopped here (issue 28)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, interruptible, whispersg_command

pytest.importorskip("ray", reason="the Ray tests need the [ray] extra (pip install 'whispersg[ray]')")

# Six short eval clips: two calls of up to four recordings, so both workers get work.
CLIPS = ("sg_nsc_202261748", "sg_nsc_203000298", "fleurs_en_000", "fleurs_en_001", "jfk_inaugural",
         "libri_1089-134686-0000")


def _free_ports(count: int, low: int = 20000, high: int = 30000) -> list[int]:
    """Consecutive free ports outside Ray's default worker range (10002-19999), so a worker cannot take one."""
    span = high - low - count
    for step in range(span):  # from a place that differs between concurrent runs
        first = low + (os.getpid() + step) % span
        if all(_port_is_free(port) for port in range(first, first + count)):
            return list(range(first, first + count))
    raise RuntimeError("no free ports")


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ray(*arguments: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ray"), *arguments]


@dataclass
class Cluster:
    address: str
    token: Path
    sessions: list[int]  # the 'ray start' process sessions: every process of this cluster is in one of them


@pytest.fixture(scope="module")
def cluster():
    """Head (127.0.0.2) and a second node (127.0.0.3), one CPU each, with token authentication on as
    'ray start --head' turns it on wherever a token exists; yields the head's address."""
    if not Path(_ray()[0]).is_file():
        pytest.skip("the 'ray' command is not installed beside this Python")
    # Short, because Ray's Unix socket paths (temp dir + session + sockets/…) must stay under 107 characters.
    temp = Path(tempfile.mkdtemp(prefix="wsg-ray-", dir="/tmp"))
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    port, client, dashboard, head_agent, node_agent = _free_ports(5)
    # Loopback addresses other than 127.0.0.1: Ray replaces 127.0.0.1 in a node's --address by the address it
    # finds by probing a public resolver, where this GCS (listening on loopback only) does not answer.
    head_ip, node_ip = "127.0.0.2", "127.0.0.3"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO), RAY_AUTH_TOKEN_PATH=str(token),
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # 'ray start --block' stops at once on SIGTERM
               http_proxy="http://127.0.0.1:9", no_proxy=f"localhost,127.0.0.1,{head_ip},{node_ip}")
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus", "1", "--disable-usage-stats", "--block"]
    logs = {name: (temp / f"{name}.log").open("w") for name in ("head", "node")}
    head = subprocess.Popen(_ray("start", "--head", "--node-ip-address", head_ip, "--port", str(port),
                                 "--ray-client-server-port", str(client), "--dashboard-port", str(dashboard),
                                 "--dashboard-agent-listen-port", str(head_agent), "--include-dashboard=false",
                                 "--temp-dir", str(temp), *common),
                            env=env, stdout=logs["head"], stderr=subprocess.STDOUT, start_new_session=True)
    nodes = [head]
    address = f"{head_ip}:{port}"
    try:
        _wait_for_log(temp / "head.log", head)
        # Nodes and drivers given an address present the token only when told to (the head turned it on itself).
        nodes.append(subprocess.Popen(_ray("start", "--address", address, "--node-ip-address", node_ip,
                                           "--dashboard-agent-listen-port", str(node_agent), *common),
                                      env=dict(env, RAY_AUTH_MODE="token"), stdout=logs["node"],
                                      stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_log(temp / "node.log", nodes[1])
        _wait_for_nodes(address, head_ip, env, 2, temp)
        yield Cluster(address, token, [node.pid for node in nodes])
    finally:
        for node in reversed(nodes):
            node.terminate()
        for node in reversed(nodes):
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:  # anything of this node still running (its session) goes too
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for log in logs.values():
            log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_log(log: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    pytest.fail(f"'ray start' did not start within {timeout:.0f} s:\n" + log.read_text(errors="replace")[-3000:])


def _wait_for_nodes(address: str, node_ip: str, env: dict, count: int, temp: Path, timeout: float = 60) -> None:
    code = ("import ray, sys, time; ray.init(address='auto', _node_ip_address=sys.argv[1], log_to_driver=False)\n"
            "deadline = time.monotonic() + float(sys.argv[3])\n"
            "while sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))")
    done = subprocess.run([sys.executable, "-c", code, node_ip, str(count), str(timeout)], capture_output=True,
                          text=True, timeout=timeout + 60, env=dict(env, RAY_ADDRESS=address, RAY_AUTH_MODE="token"))
    if done.stdout.strip().splitlines()[-1:] != [str(count)]:
        logs = "".join((temp / f"{name}.log").read_text(errors="replace")[-1500:] for name in ("head", "node"))
        pytest.fail(f"the test Ray cluster did not reach {count} nodes: {done.stderr[-1500:]}\n{logs}")


@pytest.fixture(scope="module")
def clips(eval_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name in CLIPS:
        shutil.copy(eval_dir / "audio" / f"{name}.wav", folder / f"{name}.wav")
    return folder


@pytest.fixture(scope="module")
def ray_env(empty_model_store, cluster) -> dict:
    """A shell on a cluster node told the cluster's address and token, as Ray asks for an explicit address."""
    return dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", COLUMNS="200",
                RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token),
                PYTHONPATH=str(REPO))


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


@pytest.mark.slow  # the module's cluster tests take ~55 s together
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


@pytest.mark.slow  # the module's cluster tests take ~55 s together
def test_a_killed_worker_has_its_recordings_retried_and_each_is_transcribed_once(clips, ray_env, local_words,
                                                                                   cluster, tmp_path):
    command = [*whispersg_command(), str(clips), "--ray", "auto", "--ray_workers", "2", "-o", str(tmp_path / "out"),
               "-f", "json"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env, cwd=REPO)
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and run.poll() is None and time.monotonic() < deadline:
        # Ray names an actor's process after the method it is running.
        busy = subprocess.run(["pgrep", "-s", ",".join(map(str, cluster.sessions)), "-f", "ray::_Worker.transcribe"],
                              capture_output=True, text=True).stdout.split()
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


@pytest.mark.slow  # the module's cluster tests take ~55 s together
def test_ctrl_c_leaves_whole_files_and_skip_existing_finishes_the_rest(clips, ray_env, local_words, cluster, tmp_path):
    out = tmp_path / "out"
    # One worker takes the calls in turn, so the second call is still decoding when the first one's files appear.
    command = [*whispersg_command(), str(clips), "--ray", "auto", "--ray_workers", "1", "-o", str(out), "-f", "json"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ray_env, cwd=REPO,
                           preexec_fn=interruptible)
    seen = []
    for line in run.stderr:
        seen.append(line)
        if line.startswith("✓"):
            run.send_signal(signal.SIGINT)
            break
    stderr = "".join(seen) + run.communicate(timeout=120)[1]
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    files = sorted(path.name for path in out.iterdir())
    assert not [name for name in files if name.endswith(".tmp")], files  # no half-written output left
    written = [path for path in out.glob("*.json") if json.loads(path.read_text())["segments"]]
    assert 1 <= len(written) < len(CLIPS) and len(written) == len(files) - 1, files  # the rest: .whispersg_sources
    time.sleep(1)  # ray.kill is asynchronous
    left = subprocess.run(["pgrep", "-s", ",".join(map(str, cluster.sessions)), "-f", "ray::_Worker"],
                          capture_output=True, text=True).stdout.split()
    assert left == [], "the interrupted run's Ray worker is still running"
    again = _whispersg(clips, "--ray", "auto", "-o", out, "-f", "json", "--skip_existing", env=ray_env)
    assert again.returncode == 0, again.stderr
    summary = f"{len(CLIPS) - len(written)} transcribed, 0 failed, {len(written)} skipped"
    assert summary in " ".join(again.stderr.split()), again.stderr
    assert _words(out) == local_words


@pytest.mark.slow  # the module's cluster tests take ~55 s together
def _private_cluster_env(model_store: Path, tmp_path: Path) -> tuple[dict, Path]:
    """The environment of a user with no Ray settings and a HOME of its own (where Ray would write
    ~/.ray/auth_token for a new local cluster); returns it and that HOME."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(model_store), NO_COLOR="1", PYTHONPATH=str(REPO), HOME=str(home))
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    return env, home


def test_local_starts_a_private_cluster_and_leaves_nothing_behind(clips, empty_model_store, tmp_path):
    env, home = _private_cluster_env(empty_model_store, tmp_path)
    done = _whispersg(clips / f"{CLIPS[4]}.wav", "--ray", "local", "-o", tmp_path, "-f", "txt", env=env)
    assert done.returncode == 0, done.stderr
    assert "ask not what your country can do for you" in (tmp_path / f"{CLIPS[4]}.txt").read_text().lower()
    assert "Token authentication" not in done.stderr  # Ray's warning on every new local cluster
    assert not (home / ".ray").exists()
    assert _processes_with(f"HOME={home}") == []  # the cluster's processes all inherited this HOME


@pytest.mark.slow
def test_local_works_in_a_program_that_imported_ray_first(empty_model_store, tmp_path):
    """Ray reads its authentication mode when imported: a private cluster must not be given a token then."""
    env, _ = _private_cluster_env(empty_model_store, tmp_path)
    program = ("import ray\nfrom whispersg.distributed import transcribe_on_ray\n"
               "[(source, result)] = transcribe_on_ray([{!r}], address='local')\nprint(result.text)\n")
    done = subprocess.run([sys.executable, "-c", program.format(str(REPO / "demo" / "sample.wav"))],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "new jersey" in done.stdout.lower()


def _processes_with(variable: str) -> list[str]:
    """Command lines of the running processes whose environment holds ``variable`` (NAME=value)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if variable.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError):
            continue
    return found


def test_a_bad_address_fails_in_seconds_with_one_line_naming_it(tmp_path, empty_model_store):
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", PYTHONPATH=str(REPO))
    port = _free_ports(1, 30000, 31000)[0]
    started = time.monotonic()
    done = _whispersg(REPO / "demo" / "sample.wav", "--ray", f"127.0.0.1:{port}", "-o", tmp_path, env=env, timeout=60)
    assert time.monotonic() - started < 15
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())


class _Nodes:
    """What _worker_shape reads of a cluster: its live nodes' resources."""

    def __init__(self, *resources: dict) -> None:
        self._nodes = [{"Alive": True, "Resources": r} for r in resources]

    def nodes(self) -> list[dict]:
        return self._nodes


def test_worker_shape_follows_the_cluster_and_refuses_a_worker_no_node_can_hold():
    from whispersg.distributed import RaySettings, _worker_shape
    from whispersg.errors import WhisperSGError

    two = _Nodes({"CPU": 1.0}, {"CPU": 1.0})
    assert _worker_shape(two, RaySettings(address="auto")) == (2, 1.0, 0.0, True)  # one per node
    assert _worker_shape(two, RaySettings(address="auto", workers=1)) == (1, 1.0, 0.0, False)  # not 2 CPUs: no node has 2
    servers = _Nodes({"CPU": 16.0}, {"CPU": 16.0})
    assert _worker_shape(servers, RaySettings(address="auto", workers=8)) == (8, 4.0, 0.0, False)
    gpus = _Nodes({"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0, "GPU": 2.0})
    assert _worker_shape(gpus, RaySettings(address="auto")) == (4, 1.0, 1.0, False)  # one per GPU
    assert _worker_shape(gpus, RaySettings(address="auto", gpus_per_worker=0.5))[0] == 8
    with pytest.raises(WhisperSGError, match=r"ray_cpus_per_worker 32: .*\(the largest has 16\)"):
        _worker_shape(servers, RaySettings(address="auto", cpus_per_worker=32))
    with pytest.raises(WhisperSGError, match=r"ray_gpus_per_worker 1: .*\(the largest has 0\)"):
        _worker_shape(servers, RaySettings(address="auto", gpus_per_worker=1))
