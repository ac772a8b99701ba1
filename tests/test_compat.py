"""Drop-in for the original WhisperSG and WhisperX: their command lines, flags and Python usage.

The command lines are the original's documented ones (its README and demo/*.py flags) and the
WhisperX CLI's str2bool spellings, run against the real built-in tiny.en on the demo call.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict

import pytest

from whispersg import Segment, Transcript, Word, WhisperSGPipeline
from whispersg.cli.common import options_from_args
from whispersg.cli.live import build_parser as build_live_parser, live_settings_from_args
from whispersg.cli.transcribe import build_parser
from whispersg.errors import AudioError, OptionError
from whispersg.languages import LANGUAGES, language_code
from whispersg.live.settings import LiveSettings

from .conftest import DEMO_WAV, REPO, whispersg_command
from .test_live import run_segmenter

TOKEN = "hf_secret_value_123"


def run(args: list[str], env: dict, module: list[str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *module] if module else whispersg_command()
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def warning_lines(stderr: str, text: str) -> int:
    """How many warnings mention ``text`` (rich may wrap a long one over several lines)."""
    return sum(text in block for block in " ".join(stderr.split()).split("WARNING"))


# ---- the original `whispersg` (demo/transcribe.py) command lines -------------------------------------------------

def test_original_transcribe_command_line(cli_env, tmp_path):
    # The original's defaults spelled out: float16, fp16 True, threads 0, str2bool flags, a language name.
    result = run([str(DEMO_WAV), "--compute_type", "float16", "--fp16", "True", "--threads", "0",
                  "--language", "English", "--condition_on_previous_text", "False", "--highlight_words", "True",
                  "--verbose", "False", "--print_progress", "True", "--segment_resolution", "sentence",
                  "--save_results", "-o", str(tmp_path), "-f", "srt"], cli_env)
    assert result.returncode == 0, result.stderr
    assert "<u>" in (tmp_path / "sample.srt").read_text()  # --highlight_words True took effect
    assert "Chicago" in result.stdout and "Traceback" not in result.stderr
    # float16 is not a CPU type: one warning naming the fallback.
    assert warning_lines(result.stderr, "compute type float16 is not supported on cpu; using int8") == 1


def test_original_output_and_legacy_flags_each_say_what_replaced_them(cli_env, tmp_path):
    result = run([str(DEMO_WAV), "--fp16", "False", "--hf_token", TOKEN, "--print_progress", "False",
                  "--language", "english", "-o", str(tmp_path), "-f", "aud"], cli_env)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in (tmp_path / "sample.aud").read_text().splitlines()]
    assert rows and all(len(row) == 3 and float(row[0]) <= float(row[1]) for row in rows)
    assert "Chicago" in " ".join(row[2] for row in rows)
    assert warning_lines(result.stderr, "--hf_token is not needed here") == 1
    assert warning_lines(result.stderr, "--print_progress False") == 1
    assert "compute type" not in result.stderr  # --fp16 False is float32, which the CPU has
    assert TOKEN not in result.stderr + result.stdout


def test_segment_resolution_chunk_keeps_one_segment_per_chunk(pipeline):
    sentences = pipeline.transcribe(DEMO_WAV)
    chunks = pipeline.transcribe(DEMO_WAV, segment_resolution="chunk")
    assert len(chunks.segments) < len(sentences.segments)
    assert [w.word for w in chunks.words] == [w.word for w in sentences.words]


def test_legacy_flags_reach_the_options():
    parser = build_parser()
    options = options_from_args(parser.parse_args(["x.wav", "--cache_dir", "store", "--fp16", "False",
                                                   "--condition_on_previous_text", "True", "--language", "Chinese"]))
    assert (options.model_dir, options.compute_type, options.condition_on_previous_text) == ("store", "float32", True)
    assert options.language == "zh"
    assert options_from_args(parser.parse_args(["x.wav", "--fp16", "True"])).compute_type == "float16"
    assert options_from_args(parser.parse_args(["x.wav", "--word_timestamps=False"])).align is False


def test_true_false_values_never_swallow_an_input():
    args = build_parser().parse_args(["--diarize", "call.wav", "--highlight_words", "true", "--verbose", "False",
                                      "--no_align"])
    assert args.inputs == ["call.wav"] and args.diarize is True
    assert args.highlight_words is True and args.verbose is False and args.align is False
    assert build_parser().parse_args(["--highlight_words", "--", "True"]).inputs == ["True"]  # a file named True
    args = build_parser().parse_args(["call.wav", "--diarize", "False", "--save_results"])
    assert args.diarize is False and args.save_results is True


def test_bad_true_false_value_is_one_clear_line(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["x.wav", "--fp16", "maybe"])
    assert "argument --fp16: expected True or False, got 'maybe'" in capsys.readouterr().err


def test_language_names_in_any_case_map_to_codes():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(LANGUAGES) == set(_LANGUAGE_CODES)  # the decoder knows every code the table gives
    assert [language_code(name) for name in ("English", "CHINESE", "malay", " Tamil ", "en", "Mandarin")] == \
        ["en", "zh", "ms", "ta", "en", "zh"]
    with pytest.raises(OptionError, match="'Klingon' is not a Whisper language code or name"):
        language_code("Klingon")


# ---- the original `whispersg_live` (demo/live_transcribe.py) ----------------------------------------------------

def test_original_live_limits_are_accepted(caplog):
    with caplog.at_level(logging.WARNING, logger="whispersg"):
        settings = LiveSettings(soft_chunk_limit=15, hard_chunk_limit=100)
    assert (settings.soft_chunk_limit, settings.hard_chunk_limit) == (15, 30)
    assert [r.getMessage() for r in caplog.records if "--hard_chunk_limit 100" in r.getMessage()] == [
        "--hard_chunk_limit 100 is longer than Whisper's 30 s window; using 30, as a longer chunk would be "
        "decoded as several windows cut blindly instead of at its quietest point"]
    disabled = LiveSettings(soft_chunk_limit=-1, hard_chunk_limit=0)
    assert (disabled.soft_chunk_limit, disabled.hard_chunk_limit) == (None, None)


def test_disabled_limits_never_cut():
    from whispersg.audio import load_audio

    audio = load_audio(DEMO_WAV)
    assert any(reason == "soft limit" for reason, _, _ in run_segmenter(audio, soft_limit=3, hard_limit=30,
                                                                    silence_duration=100))
    assert run_segmenter(audio, soft_limit=-1, hard_limit=0, silence_duration=100) == []


def test_original_live_command_line(cli_env, tmp_path):
    result = run(["--input", str(DEMO_WAV), "--speed", "0", "--soft_chunk_limit", "15", "--hard_chunk_limit", "100",
                  "--silence_threshold", "300", "--language", "English", "--compute_type", "float16",
                  "-o", str(tmp_path), "-f", "json"], cli_env, module=["whispersg.cli.live"])
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "sample-live.json").read_text())
    assert "Chicago" in " ".join(s["text"] for s in data["segments"])
    assert warning_lines(result.stderr, "--hard_chunk_limit 100 is longer than Whisper's 30 s window") == 1
    assert warning_lines(result.stderr, "--silence_threshold is not used") == 1


def test_live_parser_takes_the_original_flags():
    args = build_live_parser().parse_args(["--mic_id", "1", "--soft_chunk_limit", "-1", "--hard_chunk_limit", "100",
                                           "--silence_duration", "0.1", "--silence_threshold", "50",
                                           "--task", "transcribe", "--language", "Chinese", "--model", "small"])
    settings = live_settings_from_args(args)
    assert (settings.soft_chunk_limit, settings.hard_chunk_limit, settings.silence_duration) == (None, 30, 0.1)
    assert args.silence_threshold == 50
    assert options_from_args(args).language == "zh"


# ---- the original Python usage (WhisperSGPipeline) --------------------------------------------------------------

@pytest.fixture(scope="module")
def original_pipeline(empty_model_store):
    # The original constructor's defaults: device None, float16, threads 0, a language name.
    return WhisperSGPipeline(whisper_model_name="tiny.en", cache_dir=str(empty_model_store), device=None,
                             compute_type="float16", threads=0, batch_size=8, alignment=True, diarization=False,
                             language="English", min_speakers=2, max_speakers=2)


def test_original_constructor_defaults_are_accepted(original_pipeline):
    assert original_pipeline.options.device == "auto" and original_pipeline.options.language == "en"


def test_result_reads_as_whisperx_dict(original_pipeline):
    result = original_pipeline.transcribe(str(DEMO_WAV))
    assert result["language"] == "en" and result.get("speaker_turns") is None
    text = " ".join(segment["text"].strip() for segment in result["segments"])
    assert text == result.text and "Chicago" in text
    first = result["segments"][0]
    assert first["start"] <= first["words"][0]["start"] <= first["words"][0]["end"] <= first["end"]
    assert "speaker" not in first and first.get("speaker", "none") == "none"
    assert result["word_segments"] == result.words
    assert [s.text for s in result] == [s["text"] for s in result["segments"]]  # iterating still gives segments


def test_mapping_keys_are_the_to_dict_keys():
    untimed, timed = Word("lah"), Word("ok", 0.5, 0.9, 0.8, "SPEAKER_00")
    segment = Segment(0.0, 1.0, "ok lah", [timed, untimed], speaker="SPEAKER_00", avg_logprob=-0.2)
    transcript = Transcript([segment], duration=1.0)
    for item in (untimed, timed, segment, transcript):
        assert item.keys() == list(item.to_dict()), item
    assert dict(timed) == asdict(timed) and segment["speaker"] == "SPEAKER_00"
    with pytest.raises(KeyError):
        untimed["start"]  # an untimed word has no start, as in WhisperX's dicts
    assert "start" not in untimed and untimed.get("start", -1) == -1
    assert len(transcript) == 1 and list(transcript) == [segment]


def test_original_methods_wrap_todays_stages(original_pipeline):
    audio = original_pipeline.get_audio_data(str(DEMO_WAV))
    assert audio.dtype.name == "float32" and abs(len(audio) / 16000 - 30.0) < 0.1
    assert original_pipeline.get_audio_data(audio) is audio
    with pytest.raises(AudioError):
        original_pipeline.get_audio_data(str(REPO / "no-such.wav"))
    plain = original_pipeline.transcribe(audio, align=False)
    aligned = original_pipeline.do_alignment(plain, audio)
    assert aligned is not plain and all(w["start"] is not None for w in aligned["word_segments"])
    assert plain.segments != aligned.segments  # split into sentences, words timed

    pytest.importorskip("senko", reason="diarization needs the [diarize] extra")
    diarized = original_pipeline.do_diarization(aligned, audio)
    assert sorted({turn.speaker for turn in diarized["speaker_turns"]}) == ["SPEAKER_00", "SPEAKER_01"]
    assert all("speaker" in word for segment in diarized["segments"] for word in segment["words"])
    assert "speaker_turns" not in aligned  # the input is left as it was


def test_print_transcription_method_prints_each_segment(original_pipeline, capsys):
    transcript = Transcript([Segment(0.0, 1.5, " Hello there.")])
    original_pipeline.print_transcription(transcript, show_timestamps=False)
    assert capsys.readouterr().out == "Hello there.\n"


# ---- the service ------------------------------------------------------------------------------------------------

def test_service_accepts_our_own_model_name(pipeline):
    pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
    from fastapi.testclient import TestClient

    from whispersg.serve.app import create_app

    with TestClient(create_app(pipeline)) as client:
        with open(DEMO_WAV, "rb") as stream:
            response = client.post("/v1/audio/transcriptions", files={"file": ("sample.wav", stream)},
                                   data={"model": "whispersg", "response_format": "text", "language": "English"})
        assert response.status_code == 200 and "Chicago" in response.text, response.text
        assert client.get("/v1/models/whispersg").status_code == 200
        assert client.get("/v1/models/large-v3").status_code == 404
