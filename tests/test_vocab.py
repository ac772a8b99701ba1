"""Vocabulary biasing (--vocab): the shipped Singapore lexicon, user files, prompt budget, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from whispersg.errors import OptionError
from whispersg.vocab import MAX_VOCAB_TOKENS, load_vocabulary, vocabulary_hotwords

from .conftest import DEMO_WAV, REPO


def test_singapore_lexicon_ships_with_the_package_and_mixes_its_sections():
    terms = load_vocabulary("sg")
    assert {"lah", "HDB", "CPF", "MRT", "Toa Payoh", "hawker centre", "kiasu", "makan"} <= set(terms)
    assert len(terms) == len(set(terms)) > 100
    assert terms[:4] == ("lah", "HDB", "MRT", "hawker centre")  # one from each section before the second of any
    assert load_vocabulary("none") == () and load_vocabulary(None) == ()


def test_hotwords_keep_the_users_words_first_and_fit_the_prompt_budget(pipeline):
    tokenizer = pipeline.decoder._tokenizer(pipeline.options, "en")
    count = lambda text: len(tokenizer.encode(" " + text))  # noqa: E731
    text = vocabulary_hotwords("sg", "Tan Tock Seng", count)
    assert text.startswith("Tan Tock Seng, lah, HDB")
    assert count(text) <= MAX_VOCAB_TOKENS
    assert vocabulary_hotwords("none", "Tan Tock Seng", count) == "Tan Tock Seng"


def test_user_vocabulary_file_reaches_the_decoder_prompt(pipeline, tmp_path):
    vocab = tmp_path / "terms.txt"
    vocab.write_text("# our clinics\nTan Tock Seng\nKhoo Teck Puat\n\nTan Tock Seng\n", encoding="utf-8")
    assert load_vocabulary(str(vocab)) == ("Tan Tock Seng", "Khoo Teck Puat")
    options = pipeline.options.updated(vocab=str(vocab)).validate()
    tokenizer = pipeline.decoder._tokenizer(options, "en")
    prompt = tokenizer.decode(pipeline.decoder._prompt_tokens(tokenizer, options, []))
    assert "Tan Tock Seng, Khoo Teck Puat" in prompt
    transcript = pipeline.transcribe(str(DEMO_WAV), vocab=str(vocab))
    assert "Chicago" in transcript.text  # biasing does not derail ordinary speech


def test_missing_vocabulary_file_is_a_one_line_error_before_loading_a_model(tmp_path, cli_env):
    with pytest.raises(OptionError, match="no such file"):
        load_vocabulary(str(tmp_path / "nope.txt"))
    result = subprocess.run([sys.executable, "-m", "whispersg", str(DEMO_WAV), "-o", str(tmp_path), "--vocab",
                             str(tmp_path / "nope.txt")], capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert "--vocab" in result.stderr and "no such file" in result.stderr and "Traceback" not in result.stderr
    assert "loading model" not in result.stderr
