"""Result types and every writer, parsed back: JSON schema, SRT/VTT timing syntax, TSV, TXT, RTTM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from whispersg.errors import OutputError
from whispersg.types import Segment, SpeakerTurn, Transcript, Word
from whispersg.writers import ALL_FORMATS, format_timestamp, render, write_transcript

SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


def sample_transcript(speakers: bool = False) -> Transcript:
    words_a = [Word("Hello", 0.5, 0.9, 0.9), Word("there,", 1.0, 1.4, 0.8), Word("Sheila.", 1.5, 2.0, 0.7)]
    words_b = [Word("The", 3.0, 3.2, 0.9), Word("MRT", 3.3, 3.8, 0.6), Word("is", 3.9, 4.0, 0.9),
               Word("crowded", 4.1, 4.6, 0.9), Word("lah.", 4.7, 5.0, 0.5)]
    segments = [
        Segment(0.5, 2.0, "Hello there, Sheila.", words_a),
        Segment(3.0, 5.0, "The MRT is crowded lah.", words_b),
    ]
    turns = []
    if speakers:
        segments[0].speaker = "SPEAKER_00"
        segments[1].speaker = "SPEAKER_01"
        for word in words_a:
            word.speaker = "SPEAKER_00"
        for word in words_b:
            word.speaker = "SPEAKER_01"
        turns = [SpeakerTurn(0.4, 2.1, "SPEAKER_00"), SpeakerTurn(2.9, 5.1, "SPEAKER_01")]
    return Transcript(segments=segments, language="en", duration=6.0, speaker_turns=turns, source="/x/call one.wav")


def parse_srt(text: str) -> list[tuple[str, str, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].isdigit(), block
        match = re.fullmatch(rf"({SRT_TIME}) --> ({SRT_TIME})", lines[1])
        assert match, lines[1]
        cues.append((match.group(1), match.group(2), "\n".join(lines[2:])))
    return cues


def test_json_follows_whisperx_schema_and_round_trips():
    transcript = sample_transcript(speakers=True)
    data = json.loads(render(transcript, "json"))
    assert set(data) >= {"segments", "word_segments", "language"}
    for segment in data["segments"]:
        assert {"start", "end", "text", "words", "speaker"} <= set(segment)
        for word in segment["words"]:
            assert {"word", "start", "end", "score", "speaker"} <= set(word)
            assert segment["start"] <= word["start"] <= word["end"] <= segment["end"]
    assert len(data["word_segments"]) == 8
    again = Transcript.from_dict(data)
    assert again.text == transcript.text
    assert again.words[3].speaker == "SPEAKER_01"
    assert again.speakers == ["SPEAKER_00", "SPEAKER_01"]


def test_srt_has_valid_numbered_cues_with_speaker_prefixes():
    cues = parse_srt(render(sample_transcript(speakers=True), "srt"))
    assert [c[0] for c in cues] == ["00:00:00,500", "00:00:03,000"]
    assert cues[1][1] == "00:00:05,000"
    assert cues[0][2] == "[SPEAKER_00]: Hello there, Sheila."


def test_vtt_header_and_timing_syntax():
    text = render(sample_transcript(), "vtt")
    assert text.startswith("WEBVTT\n")
    timings = re.findall(rf"^({VTT_TIME}) --> ({VTT_TIME})$", text, flags=re.M)
    assert timings == [("00:00:00.500", "00:00:02.000"), ("00:00:03.000", "00:00:05.000")]


def test_srt_line_width_and_count_wrap_words_into_more_cues():
    cues = parse_srt(render(sample_transcript(), "srt", max_line_width=12, max_line_count=1))
    assert all(len(line) <= 12 for _, _, text in cues for line in text.splitlines())
    assert [text for _, _, text in cues] == ["Hello there,", "Sheila.", "The MRT is", "crowded lah."]
    two_lines = parse_srt(render(sample_transcript(), "srt", max_line_width=12, max_line_count=2))
    assert two_lines[0][2] == "Hello there,\nSheila."
    assert two_lines[0][:2] == ("00:00:00,500", "00:00:02,000")


def test_highlight_words_underlines_each_word_in_turn():
    cues = parse_srt(render(sample_transcript(), "srt", highlight_words=True))
    underlined = [re.search(r"<u>(.*?)</u>", text).group(1) for _, _, text in cues if "<u>" in text]
    assert underlined == ["Hello", "there,", "Sheila.", "The", "MRT", "is", "crowded", "lah."]
    assert ("00:00:03,300", "00:00:03,800", "The <u>MRT</u> is crowded lah.") in cues


def test_tsv_and_txt():
    transcript = sample_transcript(speakers=True)
    rows = [line.split("\t") for line in render(transcript, "tsv").splitlines()]
    assert rows[0] == ["start", "end", "text"]
    assert rows[1] == ["500", "2000", "[SPEAKER_00]: Hello there, Sheila."]
    assert render(transcript, "txt").splitlines() == [
        "[SPEAKER_00]: Hello there, Sheila.",
        "[SPEAKER_01]: The MRT is crowded lah.",
    ]


def test_rttm_lists_speaker_turns():
    lines = render(sample_transcript(speakers=True), "rttm").splitlines()
    assert lines[0].split() == ["SPEAKER", "call_one", "1", "0.400", "1.700", "<NA>", "<NA>", "SPEAKER_00", "<NA>", "<NA>"]
    assert len(lines) == 2


def test_format_timestamp():
    assert format_timestamp(3725.4567, ",", True) == "01:02:05,457"
    assert format_timestamp(5.0) == "00:05.000"
    assert format_timestamp(-0.1) == "00:00.000"


@pytest.mark.parametrize("output_format", ALL_FORMATS)
def test_atomic_write_leaves_no_temporary_files(tmp_path: Path, output_format: str):
    target = tmp_path / "deep" / f"out.{output_format}"
    write_transcript(sample_transcript(speakers=True), target)
    assert target.read_text().strip()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_failed_render_keeps_the_previous_file(tmp_path: Path):
    target = tmp_path / "out.srt"
    target.write_text("previous complete file\n")
    with pytest.raises(Exception):
        write_transcript(sample_transcript(), target, "no-such-format")
    assert target.read_text() == "previous complete file\n"


def test_unwritable_location_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=str(blocker)):
        write_transcript(sample_transcript(), blocker / "x.txt")


hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis ([test] extra)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_times = st.floats(min_value=0, max_value=36000, allow_nan=False)


@st.composite
def transcripts(draw) -> Transcript:
    segments = []
    for _ in range(draw(st.integers(0, 4))):
        start = draw(_times)
        end = start + draw(st.floats(min_value=0, max_value=60, allow_nan=False))
        words = [Word(draw(_text), draw(st.none() | _times), draw(st.none() | _times), draw(st.none() | st.floats(0, 1)),
                      draw(st.none() | st.sampled_from(["SPEAKER_00", "SPEAKER_01"])))
                 for _ in range(draw(st.integers(0, 5)))]
        segments.append(Segment(start, end, draw(_text), words, draw(st.none() | st.just("SPEAKER_00"))))
    return Transcript(segments=segments, source=draw(st.none() | _text))


@settings(max_examples=150, deadline=None)
@given(transcripts(), st.sampled_from(ALL_FORMATS), st.none() | st.integers(1, 50), st.none() | st.integers(1, 4),
       st.booleans())
def test_writers_never_crash_and_json_round_trips(transcript, output_format, width, count, highlight):
    text = render(transcript, output_format, max_line_width=width, max_line_count=count, highlight_words=highlight)
    assert isinstance(text, str)
    if output_format == "json":
        assert Transcript.from_dict(json.loads(text)).to_dict() == transcript.to_dict()
    if output_format == "srt":
        for block in text.strip().split("\n\n") if text.strip() else []:
            assert re.fullmatch(rf"{SRT_TIME} --> {SRT_TIME}", block.splitlines()[1]), block
