"""PipelineOptions: every transcription setting, its default and its help text, in one place.

The library (``WhisperSGPipeline``), the ``whispersg`` CLI and the live CLI all
read these fields; the CLIs build their flags from the field metadata, so a
flag name, default or help text is never written twice.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, Optional

from whispersg.errors import OptionError
from whispersg.languages import language_code
from whispersg.types import SpeakerCount
from whispersg.vocab import load_vocabulary


def _opt(default: Any, help: str, *, flags: tuple[str, ...] = (), choices: Optional[tuple] = None, group: str = "asr", **extra: Any) -> Any:
    """A dataclass field carrying its CLI help text, extra flag spellings and allowed values.

    Further metadata the CLIs read: ``cli=False`` (no flag), ``switch=(FLAG, when_true, when_false)``
    (a ``FLAG True|False`` flag setting the option to one of two values), ``note`` (one warning a CLI
    prints when the flag is given: what replaced what it did in the original WhisperSG or WhisperX).
    """
    metadata = {"help": help, "flags": flags, "choices": choices, "group": group, **extra}
    return field(default=default, metadata=metadata)


# Field metadata declaring a numeric option's range, and how its error message says it.
NUMERIC_BOUNDS = {"at_least": ">=", "above": ">", "at_most": "<="}


def number_rule(option: Field) -> str:
    """What a numeric option must be, from its field: "--NAME must be a number of UNIT >= 0, OFF"."""
    kind = "an integer" if "int" in str(option.type) else "a number"
    unit = f" of {option.metadata['unit']}" if option.metadata.get("unit") else ""
    limits = " and ".join(f"{NUMERIC_BOUNDS[key]} {option.metadata[key]:g}" for key in NUMERIC_BOUNDS
                          if key in option.metadata)
    off = f", {option.metadata['off']}" if option.metadata.get("off") else ""
    return f"--{option.name} must be {kind}{unit}{' ' + limits if limits else ''}{off}"


def checked_number(option: Field, value: Any) -> Any:
    """``value`` if it is a finite number within the bounds its field declares (an int field's as an int);
    else OptionError with the field's rule."""
    whole = "int" in str(option.type)
    problem = f"{number_rule(option)} (got {value!r})"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(problem)
    if whole and value != int(value):
        raise OptionError(problem)
    bounds = option.metadata
    if (value < bounds.get("at_least", value) or value <= bounds.get("above", value - 1)
            or value > bounds.get("at_most", value)):
        raise OptionError(problem)
    return int(value) if whole else value  # 3.0 from JSON or a float keyword works as 3


def number_from_text(option: Field, text: str) -> Any:
    """A numeric option given as text (a command line's, a query string's), checked as ``checked_number``."""
    try:
        value = (int if "int" in str(option.type) else float)(text)
    except ValueError:
        raise OptionError(f"{number_rule(option)} (got {text!r})") from None
    return checked_number(option, value)


@dataclass
class PipelineOptions:
    """Settings of ``WhisperSGPipeline``; names follow WhisperX's CLI where one exists."""

    # --- model ---
    model: Optional[str] = _opt(
        None,
        "model name (whispersg_small.en, small.en, tiny.en, base, large-v3, ...) or a CTranslate2 model folder; "
        "default: whispersg_small.en, else small.en, else the built-in tiny.en",
        group="model",
    )
    model_dir: Optional[str] = _opt(None, "model store folder (default: $WHISPERSG_MODEL_DIR, else ./models in a checkout, else ~/.cache/whispersg/models)",
                                    flags=("--cache_dir",), group="model")
    device: str = _opt("auto", "device for inference", choices=("auto", "cpu", "cuda"), group="model")
    device_index: int = _opt(0, "index of the CUDA device", group="model", at_least=0)
    compute_type: str = _opt(
        "auto",
        "CTranslate2 compute type; auto = int8 on CPU, float16 on CUDA",
        choices=("auto", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"),
        group="model",
        # The original WhisperSG's and WhisperX's --fp16 True|False (their default True).
        switch=("--fp16", "float16", "float32"),
    )
    threads: int = _opt(0, "CPU threads for inference (0 = all cores)", group="model", at_least=0)
    # 2 on CPU: 8 costs ~0.4 GB more (tiny.en) for a little speed (docs/decisions.md#cpu-batch-size).
    batch_size: Optional[int] = _opt(
        None,
        "number of 30 s chunks decoded together; default: 8 on CUDA, 2 on CPU, where each chunk of a batch "
        "holds beam_size copies of the encoder's attention keys and values: more chunks take more memory "
        "for somewhat more speed on long files",
        group="model", at_least=1,
    )

    # --- task ---
    task: str = _opt("transcribe", "transcribe speech, or translate it to English (multilingual models only)", choices=("transcribe", "translate"))
    language: Optional[str] = _opt(None, "language spoken, a code or a name in any case (en, English, ms, Malay); "
                                   "default: en for English-only models, else detected")

    # --- voice activity detection ---
    vad_method: str = _opt("silero", "voice activity detector; none decodes the whole file", choices=("silero", "pyannote", "none"), group="vad")
    vad_onset: float = _opt(0.400, "speech probability above which speech starts", group="vad", at_least=0, at_most=1)
    vad_offset: float = _opt(0.300, "speech probability below which speech ends", group="vad", at_least=0, at_most=1)
    chunk_size: float = _opt(30.0, "longest stretch of audio (s) decoded as one chunk (at most 30)", group="vad", above=0, at_most=30)
    chunk_context: float = _opt(30.0, "audio (s) around the speech kept in each chunk, up to --chunk_size and the neighbouring chunks", group="vad", at_least=0)
    min_speech_duration: float = _opt(0.0, "drop speech regions shorter than this (s)", group="vad", at_least=0)
    min_silence_duration: float = _opt(0.16, "silence (s) needed to end a speech region", group="vad", at_least=0)
    speech_pad: float = _opt(0.2, "padding (s) added on each side of a speech region", group="vad", at_least=0)

    # --- decoding ---
    beam_size: int = _opt(5, "beam width of beam search (1 = greedy)", at_least=1)
    best_of: int = _opt(5, "candidates sampled at a non-zero temperature", at_least=1)
    # 2: a lower WER than 1 on the dev set, at no measurable cost (docs/decisions.md#beam-search-patience).
    patience: float = _opt(2.0, "beam search patience factor: a beam stops after patience × beam_size finished candidates", above=0)
    length_penalty: float = _opt(1.0, "exponential length penalty", at_least=0)
    temperature: float = _opt(0.0, "sampling temperature of the first decode (0 to 1)", at_least=0, at_most=1)
    temperature_increment_on_fallback: Optional[float] = _opt(
        0.2, "temperature step when a decode fails the thresholds below (0 or none disables fallback)", at_least=0, at_most=1
    )
    compression_ratio_threshold: Optional[float] = _opt(2.4, "gzip compression ratio above which a decode counts as failed (repetition)", at_least=0)
    log_prob_threshold: Optional[float] = _opt(-1.0, "average log probability below which a decode counts as failed", flags=("--logprob_threshold",), at_most=0)
    no_speech_threshold: Optional[float] = _opt(0.6, "no-speech probability above which a low-confidence chunk is dropped as silence", at_least=0, at_most=1)
    condition_on_previous_text: bool = _opt(False, "prompt each chunk with the previous chunk's text (can propagate errors)")
    initial_prompt: Optional[str] = _opt(None, "text to prompt the first chunk with (style, spelling of names)")
    prefix: Optional[str] = _opt(None, "text the audio is known to start with (the live mode's committed text of the "
                                 "audio it gives as context); the first chunk is decoded as its continuation and the "
                                 "transcript leaves it out", cli=False)
    hotwords: Optional[str] = _opt(None, "words or phrases to bias decoding towards (names, jargon)")
    vocab: str = _opt("none", "vocabulary to bias decoding towards: sg (the shipped Singapore lexicon), none, "
                      "or a text file with one term per line (most useful first)")
    suppress_tokens: str = _opt("-1", "comma-separated token ids to suppress; -1 = Whisper's default symbol set")
    suppress_numerals: bool = _opt(False, "suppress digits and symbols so numbers are spelled out")
    max_new_tokens: Optional[int] = _opt(None, "cap on tokens generated per chunk", at_least=1)

    # --- word timestamps ---
    align: bool = _opt(True, "time every word (turn off with --no_align)", flags=("--word_timestamps",), group="align")
    align_method: str = _opt("attention", "word timing: Whisper's cross-attention (no extra model) or wav2vec2 CTC alignment",
                             choices=("attention", "wav2vec2"), group="align")
    align_model: Optional[str] = _opt(None, "wav2vec2 CTC model folder (or a name in the model store) for --align_method wav2vec2", group="align")
    interpolate_method: str = _opt("nearest", "how words the aligner cannot time (numbers, symbols) get times",
                                   choices=("nearest", "linear", "ignore"), group="align")
    return_char_alignments: bool = _opt(False, "wav2vec2: include character timings in the JSON output", group="align")
    segment_resolution: str = _opt("sentence", "split each decoded chunk's text into sentences (at their word times), "
                                   "or keep one segment per chunk", choices=("sentence", "chunk"), group="align")

    # --- speaker diarization ---
    diarize: bool = _opt(False, "label speakers (offline, built-in models; needs the [diarize] extra)", group="diarize")
    diarize_model: Optional[str] = _opt(None, "use a pyannote.audio pipeline (local folder or downloaded hub id) instead of the built-in diarizer", group="diarize")
    num_speakers: Optional[int] = _opt(None, "exact number of speakers, if known", group="diarize", at_least=1)
    min_speakers: Optional[int] = _opt(None, "at least this many speakers", group="diarize", at_least=1)
    max_speakers: Optional[int] = _opt(None, "at most this many speakers", group="diarize", at_least=1)

    # --- credentials (downloads only) ---
    hf_token: Optional[str] = _opt(
        None, "Hugging Face token, used only by downloads (whispersg models download --hf_token); never logged",
        group="model",
        note="--hf_token is not needed here: models and --diarize load offline from local folders; "
             "'whispersg models download NAME --hf_token TOKEN' uses it for gated or private downloads",
    )

    def validate(self) -> "PipelineOptions":
        """Check values that argparse cannot; raise OptionError naming the flag and the fix.

        Normalises what the original WhisperSG accepted: ``device=None`` (auto) and language names.
        """
        if self.device is None:
            self.device = "auto"
        if self.vocab:
            load_vocabulary(self.vocab)  # a missing or unreadable file fails now, not after model loading
        self._check_numbers()
        if self.task not in ("transcribe", "translate"):
            raise OptionError(f"--task must be transcribe or translate (got {self.task!r})")
        if self.vad_method not in ("silero", "pyannote", "none"):
            raise OptionError(f"--vad_method must be silero, pyannote or none (got {self.vad_method!r})")
        if self.language is not None:
            self.language = language_code(self.language)
        if self.segment_resolution not in ("sentence", "chunk"):
            raise OptionError(f"--segment_resolution must be sentence or chunk (got {self.segment_resolution!r})")
        if self.align_method == "wav2vec2" and not self.align_model:
            raise OptionError("--align_method wav2vec2 needs --align_model PATH (a local Wav2Vec2ForCTC folder)")
        if self.align_model and self.align_method != "wav2vec2":
            self.align_method = "wav2vec2"
        self.speaker_count().validate()
        self.suppress_token_ids()
        return self

    def _check_numbers(self) -> None:
        """Every numeric option is a finite number within the bounds its field declares (at_least, above, at_most)."""
        for option in fields(self):
            value = getattr(self, option.name)
            if not any(key in option.metadata for key in NUMERIC_BOUNDS) or (
                    value is None and str(option.type).startswith("Optional")):
                continue
            setattr(self, option.name, checked_number(option, value))

    def speaker_count(self) -> SpeakerCount:
        return SpeakerCount(self.num_speakers, self.min_speakers, self.max_speakers)

    def temperatures(self) -> tuple[float, ...]:
        """The temperature schedule: the first value, then fallback steps up to 1.0."""
        step = self.temperature_increment_on_fallback
        if not step or step <= 0:
            return (self.temperature,)
        values, t = [], self.temperature
        while t <= 1.0 + 1e-6:
            values.append(round(t, 4))
            t += step
        return tuple(values)

    def suppress_token_ids(self) -> list[int]:
        try:
            return [int(t) for t in str(self.suppress_tokens).split(",") if t.strip()]
        except ValueError as error:
            raise OptionError(f"--suppress_tokens must be comma-separated integers (got {self.suppress_tokens!r})") from error

    def updated(self, **changes: Any) -> "PipelineOptions":
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


# The original WhisperSG constructor's keyword names, mapped to today's options.
LEGACY_KEYWORDS = {
    "whisper_model_name": "model",
    "cache_dir": "model_dir",
    "alignment": "align",
    "word_timestamps": "align",
    "logprob_threshold": "log_prob_threshold",
    "diarization": "diarize",
    "align_model_name": "align_model",
}


def build_options(options: Optional[PipelineOptions] = None, **keywords: Any) -> PipelineOptions:
    """Merge keyword arguments (today's names or the original WhisperSG ones) into options."""
    known = PipelineOptions.field_names()
    changes: dict[str, Any] = {}
    for key, value in keywords.items():
        name = LEGACY_KEYWORDS.get(key, key)
        if name not in known:
            raise OptionError(f"unknown option {key!r}; see help(whispersg.PipelineOptions) for the valid names")
        changes[name] = value
    if "temperature" in changes and isinstance(changes["temperature"], (list, tuple)):
        # faster-whisper style schedule: first value, then its step.
        schedule = [float(t) for t in changes["temperature"]]
        changes["temperature"] = schedule[0]
        changes["temperature_increment_on_fallback"] = schedule[1] - schedule[0] if len(schedule) > 1 else None
    if isinstance(changes.get("suppress_tokens"), (list, tuple)):
        changes["suppress_tokens"] = ",".join(str(t) for t in changes["suppress_tokens"])
    base = options or PipelineOptions()
    return base.updated(**changes).validate()
