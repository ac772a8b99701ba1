"""Output names across runs (issue 26, item 4): an output folder remembers each output's source, so a second
input with the same name is never taken as done, and never replaces the first one's transcript."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from ..conftest import DEMO_WAV, REPO


def _cli(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whispersg", *arguments, "-f", "txt", "--no_align"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def test_same_name_from_another_folder_is_transcribed_beside_the_first(cli_env, tmp_path):
    first, second, out = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav", tmp_path / "out"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(DEMO_WAV, path)
    assert _cli([str(first), "-o", str(out)], cli_env).returncode == 0
    before = (out / "x.txt").stat().st_mtime_ns

    result = _cli(["--skip_existing", str(second), "-o", str(out)], cli_env)
    assert result.returncode == 0, result.stderr
    assert "1 transcribed, 0 failed, 0 skipped" in result.stderr
    assert (out / "x.txt").stat().st_mtime_ns == before  # the first transcript is untouched
    assert "Chicago" in (out / "x-2.txt").read_text()
    records = json.loads((out / ".whispersg_sources").read_text())
    assert {records["x"]["path"], records["x-2"]["path"]} == {str(first.resolve()), str(second.resolve())}

    # A resumed batch finds each input's own outputs, whatever order it is given in.
    result = _cli(["--skip_existing", str(second), str(first), "-o", str(out)], cli_env)
    assert result.returncode == 0 and "0 transcribed, 0 failed, 2 skipped" in result.stderr


def test_a_changed_source_is_not_skipped(cli_env, tmp_path):
    source, out = tmp_path / "x.wav", tmp_path / "out"
    shutil.copy(DEMO_WAV, source)
    assert _cli([str(source), "-o", str(out)], cli_env).returncode == 0
    with open(source, "ab") as handle:  # a trailing byte: same name, another recording as far as we can tell
        handle.write(b"\0")
    result = _cli(["--skip_existing", str(source), "-o", str(out)], cli_env)
    assert result.returncode == 0 and "1 transcribed, 0 failed, 0 skipped" in result.stderr
    assert sorted(p.name for p in out.glob("[!.]*")) == ["x.txt"]
