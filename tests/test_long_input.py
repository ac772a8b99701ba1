"""Long recordings: streamed decoding keeps memory flat, and nothing is lost at the block cuts.

CI runs 20 minutes; ``benchmarks/long_input.py --minutes 120`` runs the 2-hour version.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.long_input import build_long_recording, transcribe_measured

from .conftest import DEMO_WAV

LONG_MINUTES = 20
# At the defaults: on CPU the pipeline decodes 2 chunks at a time, which a 1-minute recording already
# fills, so a long one must not need more (a batch of 8 would cost ~0.5 GB once, whatever the length:
# CTranslate2 keeps the encoder's keys and values per beam; see docs/transcription.md "Long recordings").
DEFAULTS: list[str] = []


@pytest.mark.slow
def test_peak_memory_on_20_minutes_stays_within_200_mb_of_one_minute(tmp_path, cli_env):
    short, long = tmp_path / "one-minute.wav", tmp_path / "twenty-minutes.wav"
    short_copies = build_long_recording([DEMO_WAV], 1, short)
    copies = build_long_recording([DEMO_WAV], LONG_MINUTES, long)
    one = transcribe_measured(short, tmp_path / "out", DEFAULTS, env=cli_env)
    twenty = transcribe_measured(long, tmp_path / "out", DEFAULTS, env=cli_env)
    assert one["returncode"] == 0 and twenty["returncode"] == 0
    assert twenty["peak_rss_mb"] - one["peak_rss_mb"] < 200, (one["peak_rss_mb"], twenty["peak_rss_mb"])
    # Every repetition of the call is transcribed (block cuts fall in pauses and lose nothing).
    def mentions(name: str) -> int:
        transcript = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        return " ".join(segment["text"] for segment in transcript["segments"]).count("Chicago")

    per_copy = mentions("one-minute") / short_copies
    assert per_copy >= 1
    assert mentions("twenty-minutes") >= (copies - 1) * per_copy, (mentions("twenty-minutes"), copies, per_copy)
    transcript = json.loads((tmp_path / "out" / "twenty-minutes.json").read_text())
    assert transcript["segments"][-1]["end"] > LONG_MINUTES * 60 - 60
    starts = [segment["start"] for segment in transcript["segments"]]
    assert starts == sorted(starts)
