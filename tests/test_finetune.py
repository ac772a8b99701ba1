"""The fine-tuning chain end to end: corpus layouts → interchange → DatasetDict → training → WER → CTranslate2.

Corpora are spoken by espeak-ng in the real IMDA NSC and Common Voice layouts
(tests/finetune_corpora.py); the model is a tiny randomly initialised Whisper with
the real English tokenizer (tests/tiny_whisper.py), trained for a few dozen CPU steps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="fine-tuning tests need the [finetune] extra")
pytest.importorskip("datasets", reason="fine-tuning tests need the [finetune] extra")

from whispersg.cli.finetune import (  # noqa: E402
    common_voice_main,
    evaluate_main,
    finalize_main,
    imda_part3_main,
    imda_part12_main,
    train_main,
)
from whispersg.finetune.interchange import read_pairs  # noqa: E402

from .finetune_corpora import COMMON_VOICE, build_common_voice, build_part3, build_part12  # noqa: E402
from .test_models import _unshare_works  # noqa: E402
from .tiny_whisper import build_tiny_whisper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("ffmpeg")),
                                reason="the fake corpora are spoken by espeak-ng and encoded by ffmpeg")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {"part1": build_part12(root), "part3": build_part3(root), "cv": build_common_voice(root)}


@pytest.fixture(scope="module")
def prepared(corpora, tmp_path_factory) -> dict[str, Path]:
    """Every preparation CLI run on its corpus, then finalize_data on all of them."""
    out = tmp_path_factory.mktemp("prepared")
    assert imda_part12_main([str(corpora["part1"]), "--channel", "2", "-o", str(out / "part1"), "-q"]) == 0
    assert imda_part3_main([str(corpora["part3"]), "--mic", "close", "-o", str(out / "part3"), "-q"]) == 0
    assert common_voice_main([str(corpora["cv"]), "--max_down_votes", "1", "-o", str(out / "cv"), "-q"]) == 0
    sources = [str(out / name) for name in ("part1", "part3", "cv")]
    assert finalize_main([*sources, "-o", str(out / "dataset"), "--test_size", "0.2", "--seed", "3", "-q"]) == 0
    return {"root": out, "dataset": out / "dataset"}


# ---------------------------------------------------------------- transcript cleaning


@pytest.mark.parametrize(
    ("annotated", "particles", "expected"),
    [
        ("<S> so we go <FIL/> (uh) pasar [lah] (ppl)", True, "so we go pasar lah"),
        ("so we go [lah]", False, "so we go"),
        ("!walao! the #pasar malam# at N_T_U", True, "walao the pasar malam at NTU"),
        ("i want abbre~ abbreviation in Hong-Kong <SPK/> <NON/>", True, "i want abbreviation in Hong Kong"),
        ("<Z>", True, None),
        ("something <UNK> here", True, None),
        ("** garbled", True, None),
        ("(ppb) <NON/> <s/>", True, None),
    ],
)
def test_imda_marks_are_cleaned_or_drop_the_utterance(annotated, particles, expected):
    from whispersg.finetune.transcripts import CleaningRules, clean_transcript

    assert clean_transcript(annotated, CleaningRules(keep_particles=particles)) == expected


# ---------------------------------------------------------------- readers


def test_imda_part12_reads_script_pairs_and_extracts_zipped_waves(prepared, capsys):
    folder = prepared["root"] / "part1"
    paths, texts = read_pairs(folder / "audio_paths.txt"), read_pairs(folder / "text.txt")
    assert list(paths) == list(texts)  # same ids, same order
    # 7 utterances in the SCRIPT files; the <UNK> one is excluded by default.
    assert len(paths) == 6 and "000020003" not in paths
    assert texts["000010002"] == "the hawker centre opens at seven"  # <FIL/> stripped from the normalised line
    for path in paths.values():
        assert Path(path).is_absolute() and Path(path).stat().st_size > 10_000


def test_imda_part12_original_prompts_skip_markup_and_read_unpacked_waves(tmp_path):
    corpus = build_part12(tmp_path, channel=0, zipped=False)
    out = tmp_path / "prep"
    assert imda_part12_main([str(corpus), "--channel", "0", "--original", "-o", str(out), "-q"]) == 0
    texts = read_pairs(out / "text.txt")
    assert texts["000010001"] == "Please take the train to Jurong East."
    assert "000010003" not in texts  # the prompt with <laughs> markup
    assert len(texts) == 6


def test_imda_part12_wrong_channel_is_one_clear_error(corpora, tmp_path, capsys):
    assert imda_part12_main([str(corpora["part1"]), "--channel", "0", "-o", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "CHANNEL0" in error and "Traceback" not in error
    assert not (tmp_path / "text.txt").exists()


def test_imda_part3_cuts_padded_clips_with_stable_ids(prepared, corpora, caplog):
    import soundfile

    from whispersg.finetune.imda import read_textgrid_intervals

    folder = prepared["root"] / "part3"
    paths, texts = read_pairs(folder / "audio_paths.txt"), read_pairs(folder / "text.txt")
    assert texts == {
        "3000-1-0-close": "shall we go to the library later lah",
        "3000-1-2-close": "i think the bus is coming now",
        "3000-2-0-close": "walao ok see you at the station",
        "3000-2-1-close": "the food there is very good makan",
    }
    intervals = read_textgrid_intervals(corpora["part3"] / "Scripts Same" / "3000-1.TextGrid")
    start, end, _ = intervals[2]
    clip = soundfile.info(paths["3000-1-2-close"])
    assert clip.duration == pytest.approx(end - start + 0.2, abs=0.01)  # 0.1 s padding each side


def test_imda_part3_boundary_mic_and_malformed_textgrid_reported(corpora, tmp_path, caplog):
    from whispersg.finetune.imda import read_part3

    examples, report = read_part3(corpora["part3"], tmp_path, mics=("boundary",), progress=False)
    assert {e.id for e in examples} == {"3000-1-0-boundary", "3000-1-2-boundary", "3000-2-0-boundary", "3000-2-1-boundary"}
    assert report.skipped["TextGrid without a boundary-mic recording"] == 1  # 3001-1 has only a close-mic file
    examples, report = read_part3(corpora["part3"], tmp_path, mics=("close",), progress=False)
    assert report.skipped["malformed TextGrid"] == 1
    assert "3001-1.TextGrid" in caplog.text


def test_common_voice_filters_votes_missing_clips_and_samples_with_a_seed(corpora, prepared):
    from whispersg.finetune.common_voice import read_common_voice

    texts = read_pairs(prepared["root"] / "cv" / "text.txt")
    expected = {Path(name).stem: sentence for name, sentence, up, down in COMMON_VOICE if down <= 1}
    assert texts == expected
    first, _ = read_common_voice(corpora["cv"], sample=2, seed=7)
    again, report = read_common_voice(corpora["cv"], sample=2, seed=7)
    assert [e.id for e in first] == [e.id for e in again] and len(first) == 2
    assert report.skipped["clip file missing"] == 1


# ---------------------------------------------------------------- finalize


def test_finalize_builds_a_split_deduplicated_audio_dataset_about_the_size_of_its_audio(prepared):
    import datasets

    from whispersg.finetune.finalize import REPORT_FILE

    dataset = datasets.load_from_disk(str(prepared["dataset"]))
    assert set(dataset) == {"train", "test"}
    feature = dataset["train"].features["audio"]
    assert isinstance(feature, datasets.Audio) and feature.sampling_rate == 16000
    sentences = list(dataset["train"]["sentence"]) + list(dataset["test"]["sentence"])
    # 6 (part 1, one prompt read by both speakers) + 4 (part 3) + 4 (Common Voice) - 1 duplicate
    assert len(sentences) == 13 and len(set(sentences)) == 13
    assert len(dataset["test"]) == round(13 * 0.2)
    assert not set(list(dataset["train"]["id"])) & set(list(dataset["test"]["id"]))
    report = json.loads((prepared["dataset"] / REPORT_FILE).read_text())
    assert report["skipped"] == {"duplicate transcript": 1}
    assert report["dataset_bytes"] / report["audio_bytes"] <= 1.1


def test_finalize_reports_orphans_and_drops_long_clips(tmp_path, prepared, caplog):
    from whispersg.finetune.finalize import finalize

    source = tmp_path / "source"
    shutil.copytree(prepared["root"] / "part1", source, ignore=shutil.ignore_patterns("audio"))
    lines = (source / "text.txt").read_text().splitlines()
    (source / "text.txt").write_text("\n".join(lines[1:] + ["999999999\tan orphan transcript"]) + "\n")
    result = finalize([source], tmp_path / "dataset", test_size=0.0, max_seconds=2.0, progress=False)
    assert result.skipped["id in audio_paths.txt without a transcript in text.txt"] == 1
    assert result.skipped["id in text.txt without audio in audio_paths.txt"] == 1
    assert result.skipped["clip empty or over 2 s"] >= 1
    assert result.test == 0 and result.train + result.skipped["clip empty or over 2 s"] == 5  # 6 ids, 1 orphan


def test_malformed_interchange_line_is_one_error_naming_file_and_line(tmp_path, capsys):
    (tmp_path / "audio_paths.txt").write_text("a\t/x.wav\nno tab here\n")
    (tmp_path / "text.txt").write_text("a\thello\n")
    assert finalize_main([str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "audio_paths.txt:2" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- training, evaluation, conversion


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny") / "base")


TINY_TRAINING = ["--batch_size", "4", "--effective_batch_size", "4", "--learning_rate", "5e-3", "--optim", "adamw_torch",
                 "--warmup_steps", "5", "--logging_steps", "5", "--generation_max_length", "40", "--report_to", "none"]


@pytest.fixture(scope="module")
def trained(prepared, tiny_base, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "model"
    code = train_main([str(prepared["dataset"]), "--output_dir", str(output), "--base_model", str(tiny_base),
                       "--max_steps", "100", "--eval_steps", "50", "--save_steps", "50", *TINY_TRAINING, "-q"])
    assert code == 0
    return output


@pytest.mark.slow
def test_training_lowers_loss_and_wer_on_the_training_clips(trained, prepared, tiny_base):
    from whispersg.finetune.evaluate import evaluate_model, load_test_data

    history = json.loads((trained / "checkpoint-100" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < 0.6 * losses[0]
    clips = load_test_data(prepared["dataset"], "train")
    before = evaluate_model(tiny_base, clips)  # random weights: long runs of junk words, WER far above 1
    after = evaluate_model(trained / "checkpoint-100", clips)
    # A 2-layer, 64-wide model after 100 steps mostly learns the corpus's language, not yet the audio.
    assert after.wer < 1.0 and after.wer < 0.5 * before.wer, (before.wer, after.wer, after.hypotheses)


@pytest.mark.slow
def test_checkpoints_are_standalone_and_training_resumes(trained, prepared, tiny_base):
    from whispersg.finetune.evaluate import evaluate_model, load_test_data

    checkpoint = trained / "checkpoint-50"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "preprocessor_config.json", "trainer_state.json", "optimizer.pt"):
        assert (checkpoint / name).is_file(), name
    standalone = checkpoint.parent.parent / "standalone"
    shutil.copytree(checkpoint, standalone)  # nothing outside the folder is needed
    result = evaluate_model(standalone, load_test_data(prepared["dataset"], "test"))
    assert result.utterances == 3 and len(result.hypotheses) == 3
    # Resume from the last checkpoint: the step count continues from 100 instead of restarting.
    code = train_main([str(prepared["dataset"]), "--output_dir", str(trained), "--base_model", str(tiny_base),
                       "--max_steps", "110", "--eval_steps", "10", "--save_steps", "10",
                       "--resume_from_checkpoint", "latest", *TINY_TRAINING, "-q"])
    assert code == 0
    state = json.loads((trained / "checkpoint-110" / "trainer_state.json").read_text())
    assert state["global_step"] == 110
    assert [e["step"] for e in state["log_history"] if "loss" in e][-2:] == [105, 110]


@pytest.mark.slow
def test_converted_model_transcribes_through_the_pipeline_and_cli(trained, prepared, tmp_path, capsys):
    from whispersg.cli.models import main as models_main
    from whispersg.finetune.evaluate import evaluate_model, load_test_data

    converted = tmp_path / "ct2"
    assert models_main(["convert", str(trained), "--output", str(converted), "--quantization", "int8"]) == 0
    for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (converted / name).is_file(), name
    clips = load_test_data(prepared["dataset"], "train")
    through_pipeline = evaluate_model(str(converted), clips)
    through_transformers = evaluate_model(trained, clips)
    # Same weights (int8) and greedy-vs-beam decoding: the two paths must agree closely.
    assert through_pipeline.wer < 1.0
    assert abs(through_pipeline.wer - through_transformers.wer) < 0.25
    capsys.readouterr()
    table = tmp_path / "wer.json"
    assert evaluate_main(["--model", str(trained), "--model", str(converted), "--data", str(prepared["dataset"]),
                          "--split", "train", "--output", str(table)]) == 0
    assert "| model |" in capsys.readouterr().out
    rows = json.loads(table.read_text())
    assert [row["model"] for row in rows] == [str(trained), str(converted)]


def test_convert_refuses_a_folder_without_tokenizer(tmp_path, capsys):
    from whispersg.cli.models import main as models_main

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"")
    assert models_main(["convert", str(tmp_path / "ckpt"), "-o", str(tmp_path / "out")]) == 1
    assert "tokenizer.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_notebook_runs_the_same_chain(prepared, tiny_base, tmp_path):
    papermill = pytest.importorskip("papermill", reason="executing the notebook needs papermill (the [finetune] extra)")
    output = tmp_path / "notebook-run"
    papermill.execute_notebook(
        str(REPO / "finetuning" / "training" / "training.ipynb"),
        str(tmp_path / "executed.ipynb"),
        parameters={
            "datasets": [str(prepared["dataset"])], "weights": None, "base_model": str(tiny_base),
            "output_dir": str(output), "max_steps": 10, "learning_rate": 5e-3, "warmup_steps": 2, "batch_size": 4,
            "effective_batch_size": 4, "optim": "adamw_torch", "eval_steps": 10, "save_steps": 10,
            "generation_max_length": 40, "report_to": ["none"],
        },
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    assert (output / "model.safetensors").is_file() and (output / "checkpoint-10" / "tokenizer.json").is_file()
    assert (Path(f"{output}-ct2") / "model.bin").is_file()
    executed = (tmp_path / "executed.ipynb").read_text()
    assert "transcribe with: whispersg --model" in executed


@pytest.mark.slow
@pytest.mark.network_isolated
@pytest.mark.skipif(not _unshare_works(), reason="needs 'unshare -n' (root or user namespaces) to remove the network")
def test_preparation_and_training_run_without_a_network(corpora, tiny_base, tmp_path):
    scripts = REPO / "finetuning"
    commands = [
        [scripts / "data_preprocessing" / "imda_part3.py", corpora["part3"], "-o", tmp_path / "p3", "-q"],
        [scripts / "data_preprocessing" / "common_voice.py", corpora["cv"], "-o", tmp_path / "cv", "-q"],
        [scripts / "data_preprocessing" / "finalize_data.py", tmp_path / "p3", tmp_path / "cv", "-o", tmp_path / "ds", "-q"],
        [scripts / "train.py", tmp_path / "ds", "--output_dir", tmp_path / "run", "--base_model", tiny_base,
         "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", *TINY_TRAINING, "-q"],
    ]
    for command in commands:
        result = subprocess.run(["unshare", "-n", sys.executable, *map(str, command)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ---------------------------------------------------------------- fuzzing the parsers of user files

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_CORPUS_TEXT = st.text(alphabet=st.sampled_from(list("abc 019\t\r\n<>/\\[]()!#_~-*\ufeffé")), max_size=300)


@_FUZZ
@given(text=_CORPUS_TEXT)
def test_fuzzed_transcripts_clean_to_plain_words_or_none(text):
    from whispersg.finetune.transcripts import clean_transcript

    cleaned = clean_transcript(text)
    assert cleaned is None or (cleaned == cleaned.strip() and cleaned and not set("<>[]()!#~_\t\n\r") & set(cleaned))


@_FUZZ
@given(content=_CORPUS_TEXT)
def test_fuzzed_script_files_parse_or_skip_without_crashing(tmp_path, content):
    from whispersg.finetune.imda import parse_script
    from whispersg.finetune.interchange import ReadReport

    script = tmp_path / "000010.TXT"
    script.write_text(content, encoding="utf-8")
    for line in parse_script(script, ReadReport()):
        assert line.id and line.id.isalnum() and "\t" not in line.prompt


@_FUZZ
@given(content=_CORPUS_TEXT)
def test_fuzzed_interchange_files_read_or_fail_with_file_and_line(tmp_path, content):
    from whispersg.errors import DataError

    path = tmp_path / "text.txt"
    path.write_text(content, encoding="utf-8")
    try:
        pairs = read_pairs(path)
    except DataError as error:
        assert str(error).startswith(f"{path}:")
    else:
        assert all(key and "\t" not in key and "\n" not in key for key in pairs)


@_FUZZ
@given(content=st.binary(max_size=400) | _CORPUS_TEXT.map(lambda t: f'File type = "ooTextFile"\nObject class = "TextGrid"\n{t}'.encode()))
def test_fuzzed_textgrids_read_or_fail_with_the_file_named(tmp_path, content):
    from whispersg.errors import DataError
    from whispersg.finetune.imda import read_textgrid_intervals

    path = tmp_path / "x.TextGrid"
    path.write_bytes(content)
    try:
        intervals = read_textgrid_intervals(path)
    except DataError as error:
        assert str(path) in str(error)
    else:
        assert all(isinstance(label, str) for _, _, label in intervals)


@_FUZZ
@given(content=_CORPUS_TEXT)
def test_fuzzed_common_voice_tables_read_or_fail_clearly(tmp_path, content):
    from whispersg.errors import DataError
    from whispersg.finetune.common_voice import read_common_voice

    (tmp_path / "clips").mkdir(exist_ok=True)
    (tmp_path / "validated.tsv").write_text("client_id\tpath\tsentence\tup_votes\tdown_votes\n" + content, encoding="utf-8")
    try:
        examples, report = read_common_voice(tmp_path)
    except DataError as error:
        assert "validated.tsv" in str(error)
    else:
        assert examples == [] and report.kept == 0  # no clip files exist
