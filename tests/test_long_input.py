"""Long recordings: streamed decoding keeps memory flat, and nothing is lost at the block cuts.

CI runs 20 minutes; ``benchmarks/long_input.py --minutes 120`` runs the 2-hour version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DEMO_WAV

REPO = Path(__file__).resolve().parent.parent
LONG_MINUTES = 20
# At the defaults: on CPU the pipeline decodes 2 chunks at a time, which a 1-minute recording already
# fills, so a long one must not need more (a batch of 8 would cost ~0.5 GB once, whatever the length:
# CTranslate2 keeps the encoder's keys and values per beam; see docs/transcription.md "Long recordings").


@pytest.mark.slow
def test_peak_memory_on_20_minutes_stays_within_200_mb_of_one_minute(tmp_path, cli_env):
    # The benchmark runs as a program (tests do not import benchmark code): it builds the 1-minute and
    # the long recording from the demo call, transcribes each in its own process and reports peak RSS.
    command = [sys.executable, "benchmarks/long_input.py", "--minutes", str(LONG_MINUTES), "--clips", str(DEMO_WAV),
               "--results", str(tmp_path / "results"), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    (report_path,) = (tmp_path / "results").glob("long-input-*.json")
    one, twenty = json.loads(report_path.read_text())["runs"]
    assert twenty["peak_rss_mb"] - one["peak_rss_mb"] < 200, (one["peak_rss_mb"], twenty["peak_rss_mb"])
    # Every repetition of the call is transcribed (block cuts fall in pauses and lose nothing).
    def mentions(name: str) -> int:
        transcript = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        return " ".join(segment["text"] for segment in transcript["segments"]).count("Chicago")

    per_copy = mentions("long-1min") / one["clips"]
    assert per_copy >= 1
    long_name = f"long-{LONG_MINUTES}min"
    assert mentions(long_name) >= (twenty["clips"] - 1) * per_copy, (mentions(long_name), twenty["clips"], per_copy)
    transcript = json.loads((tmp_path / "out" / f"{long_name}.json").read_text())
    assert transcript["segments"][-1]["end"] > LONG_MINUTES * 60 - 60
    starts = [segment["start"] for segment in transcript["segments"]]
    assert starts == sorted(starts)
