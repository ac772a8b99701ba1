"""The `whispersg` command end to end: outputs, batches, errors, flags and the offline guarantee."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields

import pytest

from whispersg.cli.transcribe import build_parser
from whispersg.cli.common import _field_type, options_from_args
from whispersg.options import PipelineOptions

from .conftest import DEMO_WAV, REPO
from .test_models import _unshare_works


def run_cli(args: list[str], env: dict, timeout: int = 300, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "whispersg", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)


def test_no_arguments_prints_help_and_opens_nothing(cli_env):
    result = run_cli([], cli_env, timeout=30)
    assert result.returncode == 0
    assert "usage: whispersg" in result.stdout and "--output_format" in result.stdout


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from whispersg.cli.transcribe import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('faster_whisper', 'ctranslate2', 'numpy', 'av', 'torch', 'rich') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_transcribes_demo_into_every_format(cli_env, tmp_path):
    result = run_cli([str(DEMO_WAV), "-o", str(tmp_path)], cli_env)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))  # not the sources record
    assert names == ["sample.json", "sample.srt", "sample.tsv", "sample.txt", "sample.vtt"]
    data = json.loads((tmp_path / "sample.json").read_text())
    assert data["language"] == "en" and data["segments"] and data["word_segments"]
    assert "Chicago" in (tmp_path / "sample.txt").read_text()
    assert re.search(r"^00:00:0\d,\d{3} --> 00:00:\d\d,\d{3}$", (tmp_path / "sample.srt").read_text(), re.M)
    # The transcript streams to stdout; progress, warnings and the summary go to stderr.
    assert "Chicago" in result.stdout
    assert "1 transcribed, 0 failed" in result.stderr and "real-time factor" in result.stderr
    assert "whispersg models download whispersg_small.en" in result.stderr


def test_batch_continues_past_bad_files_and_exits_nonzero(cli_env, tmp_path):
    bad = tmp_path / "in" / "broken.wav"
    bad.parent.mkdir()
    bad.write_text("not audio at all\n" * 10)
    good = tmp_path / "in" / "nested" / "call.wav"
    good.parent.mkdir()
    shutil.copy(DEMO_WAV, good)
    out = tmp_path / "out"
    result = run_cli([str(tmp_path / "in"), str(tmp_path / "missing.wav"), "-o", str(out), "-f", "txt"], cli_env)
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["call.txt"]
    assert "Traceback" not in result.stderr
    assert f"{bad}: not a readable audio" in result.stderr.replace("\n", "")
    assert "missing.wav: no such file" in result.stderr
    assert "1 transcribed, 2 failed" in result.stderr


def test_debug_shows_the_traceback(cli_env, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    result = run_cli([str(bad), "-o", str(tmp_path / "o"), "--debug"], cli_env)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_skip_existing_resumes_a_batch(cli_env, tmp_path):
    args = [str(DEMO_WAV), "-o", str(tmp_path), "-f", "srt"]
    assert run_cli(args, cli_env).returncode == 0
    before = (tmp_path / "sample.srt").stat().st_mtime_ns
    result = run_cli([*args, "--skip_existing"], cli_env)
    assert result.returncode == 0 and "skipped" in result.stderr
    assert (tmp_path / "sample.srt").stat().st_mtime_ns == before


def test_subtitle_flags_shape_the_srt(cli_env, tmp_path):
    result = run_cli([str(DEMO_WAV), "-o", str(tmp_path), "-f", "srt", "--max_line_width", "16",
                      "--max_line_count", "2", "--quiet"], cli_env)
    assert result.returncode == 0 and result.stdout == ""
    text = (tmp_path / "sample.srt").read_text()
    cue_lines = [l for l in text.splitlines() if l and not l.isdigit() and "-->" not in l]
    assert cue_lines and all(len(l) <= 16 for l in cue_lines)
    assert all(len(block.splitlines()) <= 4 for block in text.strip().split("\n\n"))


def test_bad_option_values_are_one_line_errors(cli_env, tmp_path):
    for args, message in [
        (["--batch_size", "-2"], "--batch_size must be an integer >= 1"),
        (["--language", "xx"], "is not a Whisper language code"),
        (["--task", "translate"], "English-only"),
        (["--model", str(tmp_path / "nope")], "does not exist"),
    ]:
        result = run_cli([str(DEMO_WAV), "-o", str(tmp_path), *args], cli_env, timeout=60)
        assert result.returncode != 0, args
        assert message in result.stderr.replace("\n", ""), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("sample.*"))


STRING_EXAMPLES = {"language": "ms", "suppress_tokens": "50,51", "vocab": "sg"}
# Flags that only make sense together with another one.
COMPANION_FLAGS = {"align_method": ["--align_model", "aligner"]}


def _example_value(option) -> str:
    default = option.default
    if option.name in STRING_EXAMPLES:
        return STRING_EXAMPLES[option.name]
    if option.metadata.get("choices"):
        return next(c for c in option.metadata["choices"] if c != default)
    kind = str(option.type)
    if "int" in kind:
        return str((default or 0) + 3)
    if "float" in kind:
        return str(round(default / 2, 3) if default else 0.05)
    return "value"


@pytest.mark.parametrize("option", [f for f in fields(PipelineOptions) if f.metadata.get("cli") is not False],
                         ids=lambda f: f.name)
def test_every_pipeline_flag_reaches_the_options(option):
    parser = build_parser()
    if str(option.type) in ("bool", "<class 'bool'>"):
        flag = f"--no_{option.name}" if option.default else f"--{option.name}"
        args = parser.parse_args(["x.wav", flag])
        expected = not option.default
    else:
        value = _example_value(option)
        args = parser.parse_args(["x.wav", f"--{option.name}", value, *COMPANION_FLAGS.get(option.name, [])])
        expected = _field_type(str(option.type))(value)
    options = options_from_args(args)
    assert getattr(options, option.name) == expected
    assert getattr(options, option.name) != option.default


@pytest.mark.skipif(not _unshare_works(), reason="needs 'unshare -n' (root or user namespaces) to remove the network")
def test_cli_works_with_no_network_at_all(cli_env, tmp_path):
    result = run_cli([str(DEMO_WAV), "-o", str(tmp_path), "-f", "json"], cli_env, prefix=["unshare", "-n"])
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "sample.json").read_text())["segments"]


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs 'unshare -m' and tmpfs mounts (root or user namespaces)")
def test_full_output_filesystem_is_one_clear_error_and_leaves_no_file(cli_env, tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    # 24 KiB holds the small formats but not the word-level JSON of the 30 s demo call.
    script = (f"mount -t tmpfs -o size=24k tmpfs {out} && {sys.executable} -m whispersg {DEMO_WAV} -o {out} "
              f"-f all; code=$?; echo LEFT:$(ls -A {out}); exit $code")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=cli_env,
                            cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "no space left on the device" in result.stderr.replace("\n", "")
    assert "sample.json" in result.stderr.replace("\n", "") and "Traceback" not in result.stderr
    assert "LEFT:\n" in result.stdout or result.stdout.rstrip().endswith("LEFT:")  # no partial or temp file


@pytest.mark.slow
def test_killed_batch_leaves_only_complete_outputs_and_skip_existing_finishes_it(cli_env, tmp_path):
    import os
    import signal
    import time

    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(6):
        shutil.copy(DEMO_WAV, inputs / f"call{index}.wav")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "whispersg", str(inputs), "-o", str(out), "-f", "all", "--quiet"]
    process = subprocess.Popen(args, env=cli_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob("*.srt"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # no chance to clean up: only atomic renames protect the outputs
    process.wait(timeout=30)
    finished = sorted(p.stem for p in out.glob("*.srt"))
    assert 2 <= len(finished) < 6, "the kill must land part-way through the batch"
    for path in out.glob("*.json"):
        json.loads(path.read_text())  # every visible transcript is complete
    complete = [p.stem for p in out.glob("*.srt") if p.with_suffix(".json").exists()]
    before = {stem: out.joinpath(f"{stem}.srt").stat().st_mtime_ns for stem in complete}
    result = subprocess.run([*args, "--skip_existing"], env=cli_env, cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in out.glob("*.srt")) == [f"call{i}" for i in range(6)]
    assert sorted(p.stem for p in out.glob("*.json")) == [f"call{i}" for i in range(6)]
    # Inputs whose outputs were complete are not redone.
    assert {stem: out.joinpath(f"{stem}.srt").stat().st_mtime_ns for stem in complete} == before
