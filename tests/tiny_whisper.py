"""A tiny randomly initialised Whisper saved with the real English Whisper tokenizer.

The weights are random (a few layers, small width) so training on CPU takes
seconds; the tokenizer is the one shipped with the built-in tiny.en, so labels,
decoding and CTranslate2 conversion behave exactly as for a real model.
"""

from __future__ import annotations

import json
from pathlib import Path

ENGLISH_VOCAB_SIZE = 51864  # text tokens + special tokens + 1501 timestamp tokens


def build_tiny_whisper(folder: Path, d_model: int = 64, layers: int = 2, seed: int = 0, multilingual: bool = False) -> Path:
    """``multilingual``: a vocabulary one larger (what marks a multilingual Whisper) and language/task ids, using
    the <|en|>/<|transcribe|> tokens the English tokenizer also holds."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    from whispersg.models import builtin_model_path

    builtin = builtin_model_path()
    special = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(builtin / "tokenizer.json"), bos_token=special, eos_token=special, unk_token=special, pad_token=special
    )
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    start, end, no_timestamps = (tokenizer.convert_tokens_to_ids(t) for t in ("<|startoftranscript|>", special, "<|notimestamps|>"))
    config = WhisperConfig(
        vocab_size=ENGLISH_VOCAB_SIZE + int(multilingual),
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        decoder_start_token_id=start,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    suppress = json.loads((builtin / "config.json").read_text())
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start,
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        no_timestamps_token_id=no_timestamps,
        suppress_tokens=suppress["suppress_ids"],
        begin_suppress_tokens=suppress["suppress_ids_begin"],
        is_multilingual=multilingual,
        max_length=448,
    )
    if multilingual:
        model.generation_config.lang_to_id = {"<|en|>": tokenizer.convert_tokens_to_ids("<|en|>")}
        model.generation_config.task_to_id = {task: tokenizer.convert_tokens_to_ids(f"<|{task}|>")
                                              for task in ("transcribe", "translate")}
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    processor.feature_extractor.save_pretrained(folder)
    return folder
