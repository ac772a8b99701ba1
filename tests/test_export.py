"""`whispersg models export`: a CTranslate2 Whisper folder back to a transformers checkpoint, checked on real audio.

The built-in tiny.en is exported; transformers' greedy transcripts of real clips
must equal CTranslate2's greedy transcripts of the same features, and
export → convert must give back the very same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from whispersg.errors import ModelError, OutputError
from whispersg.finetune.export import (
    EXPORT_MARKER,
    export_transformers,
    generation_settings,
    read_ct2_model,
    whisper_tokens,
)
from whispersg.models import builtin_model_path, convert_checkpoint

from .conftest import DEMO_WAV, EVAL_DIR, REPO

pytest.importorskip("transformers", reason="export needs the [finetune] extra (torch, transformers)")

EVAL_CLIPS = 6  # the first clips of the shared eval set, besides the demo call's three 10 s pieces


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_transformers(builtin_model_path(), tmp_path_factory.mktemp("export") / "tiny.en-hf")


def real_clips() -> dict[str, np.ndarray]:
    """The demo call cut in three 10 s pieces, plus eval clips of at most 30 s when the eval set is here."""
    from whispersg.audio import load_audio

    demo = load_audio(str(DEMO_WAV))
    clips = {f"demo-{i}": demo[i * 160000:(i + 1) * 160000] for i in range(3)}
    manifest = EVAL_DIR / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        for row in [r for r in rows if r["duration"] <= 30][:EVAL_CLIPS]:
            clips[row["id"]] = load_audio(str(EVAL_DIR / row["audio"]))
    return clips


def features(checkpoint, clips: dict[str, np.ndarray]) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(checkpoint)
    return extractor(list(clips.values()), sampling_rate=16000, return_tensors="np").input_features


def ct2_greedy(model_folder, checkpoint, mel: np.ndarray) -> list[list[int]]:
    """CTranslate2 greedy decoding in float32 (the export's weight type), no timestamps."""
    import ctranslate2
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(checkpoint)
    model = ctranslate2.models.Whisper(str(model_folder), device="cpu", compute_type="float32", intra_threads=2)
    prompt = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    results = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), [prompt] * len(mel),
                             beam_size=1, suppress_blank=True, suppress_tokens=[-1], max_length=448)
    return [result.sequences_ids[0] for result in results]


def hf_greedy(checkpoint, mel: np.ndarray) -> list[list[int]]:
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.set_num_threads(2)
    model = WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    with torch.inference_mode():
        generated = model.generate(torch.from_numpy(mel), num_beams=1, do_sample=False, return_timestamps=False)
    config = model.generation_config
    prompt = {config.decoder_start_token_id, config.no_timestamps_token_id}
    sequences = []
    for row in generated.tolist():
        while row and row[0] in prompt:  # transformers versions differ in whether the prompt is returned
            row.pop(0)
        sequences.append(row[:row.index(config.eos_token_id)] if config.eos_token_id in row else row)
    return sequences


def test_transformers_greedy_equals_ctranslate2_greedy_on_real_clips(exported):
    from transformers import WhisperTokenizer

    clips = real_clips()
    mel = features(exported, clips)
    ct2 = ct2_greedy(builtin_model_path(), exported, mel)
    hf = hf_greedy(exported, mel)
    tokenizer = WhisperTokenizer.from_pretrained(exported)
    texts = {name: (tokenizer.decode(a, skip_special_tokens=True).strip(), tokenizer.decode(b, skip_special_tokens=True).strip())
             for name, a, b in zip(clips, ct2, hf)}
    assert all(ct2_text for ct2_text, _ in texts.values()), texts  # real speech: every clip has words
    differing = {name: pair for name, pair in texts.items() if pair[0] != pair[1]}
    assert not differing, differing
    assert ct2 == hf  # the same tokens, not only the same text


def test_export_then_convert_gives_back_the_same_weights(exported, tmp_path):
    original = read_ct2_model(builtin_model_path() / "model.bin")
    converted = convert_checkpoint(exported, tmp_path / "back", quantization="float16")
    again = read_ct2_model(converted / "model.bin")
    # A newer ctranslate2 may add scalar flags; every array of the original must come back unchanged.
    assert all(again.variables[name].ndim == 0 for name in set(again.variables) - set(original.variables))
    for name, value in original.variables.items():
        assert again.dtypes[name] == original.dtypes[name], name
        assert np.array_equal(again.variables[name], value), name  # float16 → float32 → float16 is exact
    assert again.aliases == original.aliases
    original_config = json.loads((builtin_model_path() / "config.json").read_text())
    config = json.loads((converted / "config.json").read_text())
    for key in ("suppress_ids", "suppress_ids_begin", "alignment_heads"):
        assert config[key] == original_config[key], key


def test_int8_model_exports_and_requantises_to_the_same_integers(exported, tmp_path):
    int8 = convert_checkpoint(exported, tmp_path / "int8", quantization="int8")
    reexported = export_transformers(int8, tmp_path / "int8-hf")
    back = read_ct2_model(convert_checkpoint(reexported, tmp_path / "int8-again", quantization="int8") / "model.bin")
    first = read_ct2_model(int8 / "model.bin")
    quantised = [name for name, dtype in first.dtypes.items() if dtype == "int8" and first.variables[name].ndim > 1]
    assert quantised  # the int8 path was exercised
    for name in quantised:
        assert np.array_equal(back.variables[name], first.variables[name]), name
        assert np.allclose(back.float32(name + "_scale"), first.float32(name + "_scale"), rtol=1e-6), name


def test_english_only_token_ids_and_generation_config(exported):
    config = json.loads((exported / "generation_config.json").read_text())
    assert config["is_multilingual"] is False
    assert config["decoder_start_token_id"] == 50257 and config["eos_token_id"] == 50256
    assert config["no_timestamps_token_id"] == 50362 and config["prev_sot_token_id"] == 50360
    assert config["forced_decoder_ids"] == [[1, 50362]]
    # A lang_to_id would make transformers detect a language and prompt a .en model with a language token.
    assert "lang_to_id" not in config and "task_to_id" not in config
    ct2_config = json.loads((builtin_model_path() / "config.json").read_text())
    assert config["suppress_tokens"] == ct2_config["suppress_ids"]
    assert config["begin_suppress_tokens"] == ct2_config["suppress_ids_begin"] == [220, 50256]
    marker = json.loads((exported / EXPORT_MARKER).read_text())
    assert marker["source"] == str(builtin_model_path().resolve()) and marker["ctranslate2_weights"] == ["float16"]


def multilingual_added_tokens(languages: int = 99) -> dict[str, int]:
    """The multilingual Whisper layout: end of text at 50257, then start of transcript, languages, tasks."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    codes = list(LANGUAGES)[:languages]
    names = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{code}|>" for code in codes], "<|translate|>",
             "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    return {name: 50257 + index for index, name in enumerate(names)}


def test_multilingual_token_ids_and_generation_config():
    tokens = whisper_tokens(multilingual_added_tokens(), vocab_size=51865)
    assert tokens.multilingual
    assert (tokens.eot, tokens.sot, tokens.translate, tokens.transcribe, tokens.no_timestamps) == (
        50257, 50258, 50358, 50359, 50363)
    assert tokens.languages["<|en|>"] == 50259 and len(tokens.languages) == 99
    settings = generation_settings(tokens, {"suppress_ids": [1, 2], "suppress_ids_begin": [220, 50257]}, 448)
    assert settings["lang_to_id"]["<|en|>"] == 50259 and settings["task_to_id"] == {"transcribe": 50359,
                                                                                    "translate": 50358}
    assert settings["decoder_start_token_id"] == 50258 and settings["bos_token_id"] == 50257
    assert settings["forced_decoder_ids"] == [[1, None], [2, 50359]] and settings["is_multilingual"] is True
    # large-v3's vocabulary adds Cantonese: 100 languages, every later special id one higher.
    v3 = whisper_tokens(multilingual_added_tokens(100), vocab_size=51866)
    assert v3.languages["<|yue|>"] == 50358 and v3.transcribe == 50360 and v3.no_timestamps == 50364


def test_missing_special_tokens_is_a_clear_error():
    with pytest.raises(ModelError, match="lacks Whisper's special tokens <\\|notimestamps\\|>"):
        whisper_tokens({k: v for k, v in multilingual_added_tokens().items() if k != "<|notimestamps|>"}, 51865)


def test_refuses_a_folder_it_did_not_write_and_replaces_its_own_only_with_force(exported, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="does not hold an earlier export"):
        export_transformers(builtin_model_path(), foreign)
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    with pytest.raises(OutputError, match="pass --force"):
        export_transformers(builtin_model_path(), exported)


def test_truncated_model_bin_is_a_clear_error(tmp_path):
    import shutil

    folder = tmp_path / "truncated"
    shutil.copytree(builtin_model_path(), folder)
    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="ends early"):
        export_transformers(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_writes_a_loadable_checkpoint_and_refuses_a_foreign_folder(tmp_path, cli_env):
    out = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-m", "whispersg", "models", "export", "tiny.en", "--format", "transformers",
                             "-o", str(out)], capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "preprocessor_config.json", EXPORT_MARKER} <= {p.name for p in out.iterdir()}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    refused = subprocess.run([sys.executable, "-m", "whispersg", "models", "export", "tiny.en", "-o",
                              str(tmp_path / "other")], capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=300)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "does not hold an earlier export" in refused.stderr


def test_download_of_a_transformers_checkpoint_is_converted_to_ctranslate2(exported, tmp_path):
    """A hub repository holding a transformers checkpoint (here: the export, copied by an injected fetch)."""
    import shutil

    from whispersg.models import FINETUNED_MODEL, download_model, is_model_folder, resolve_model

    fetched = []

    def copy_export(repo_id, folder, token):
        fetched.append(repo_id)
        shutil.copytree(exported, folder)

    target = download_model(FINETUNED_MODEL, tmp_path, fetch=copy_export)
    assert fetched == ["Nsohko/whispersg_small.en"]
    assert target == tmp_path / FINETUNED_MODEL and is_model_folder(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FINETUNED_MODEL]  # no .partial folder left
    assert resolve_model(None, tmp_path).path == target  # the default model now resolves to it
    original = read_ct2_model(builtin_model_path() / "model.bin")
    converted = read_ct2_model(target / "model.bin")
    assert all(np.array_equal(converted.variables[name], value) for name, value in original.variables.items())


def test_download_of_a_repository_with_no_model_is_a_clear_error(tmp_path):
    from whispersg.models import download_model

    def readme_only(repo_id, folder, token):
        folder.mkdir()
        (folder / "README.md").write_text("nothing here")

    with pytest.raises(ModelError, match="holds neither a CTranslate2 model"):
        download_model("tiny.en", tmp_path, fetch=readme_only)
    assert not any(tmp_path.iterdir())
