"""The fine-tuning chain end to end: corpus layouts → interchange → DatasetDict → training → WER → CTranslate2.

Corpora are spoken by espeak-ng in the real IMDA NSC and Common Voice layouts
(tests/finetune_corpora.py); the model is a tiny randomly initialised Whisper with
the real English tokenizer (tests/tiny_whisper.py), trained for a few dozen CPU steps.
"""

from __future__ import annotations

import json
import os
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
    original_recipe_main,
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


def test_imda_part12_labels_are_the_prompts_as_written_by_default(prepared, capsys):
    folder = prepared["root"] / "part1"
    paths, texts = read_pairs(folder / "audio_paths.txt"), read_pairs(folder / "text.txt")
    assert list(paths) == list(texts)  # same ids, same order
    # 7 utterances in the SCRIPT files: the prompt with <laughs> markup and the one whose normalised line
    # says <UNK> (the speaker did not say it clearly) are skipped.
    assert set(texts) == {"000010001", "000010002", "000010004", "000020001", "000020002"}
    assert texts["000010001"] == "Please take the train to Jurong East."
    assert texts["000010002"] == "The hawker centre opens at seven."
    speakers = read_pairs(folder / "speakers.txt")
    assert speakers["000010001"] == "PART1/SPEAKER0001" and speakers["000020001"] == "PART1/SPEAKER0002"
    for path in paths.values():
        assert Path(path).is_absolute() and Path(path).stat().st_size > 10_000


def test_imda_part12_normalized_option_and_unpacked_waves(tmp_path):
    corpus = build_part12(tmp_path, channel=0, zipped=False)
    out = tmp_path / "prep"
    assert imda_part12_main([str(corpus), "--channel", "0", "--normalized", "-o", str(out), "-q"]) == 0
    texts = read_pairs(out / "text.txt")
    assert texts["000010002"] == "the hawker centre opens at seven"  # <FIL/> stripped from the normalised line
    assert texts["000010003"] == "we queued for chicken rice"  # its normalised line has no markup
    assert "000020003" not in texts  # <UNK> drops the utterance in this mode too
    assert len(texts) == 6
    assert read_pairs(out / "speakers.txt")["000020002"] == "PART1/SPEAKER0002"  # from the SPEAKER folder


def test_original_recipe_is_one_command_without_part3(corpora, tmp_path, capsys):
    import datasets

    part2 = build_part12(tmp_path / "p2", channel=0, part_name="PART2", first_speaker=3)
    out = tmp_path / "data"
    assert original_recipe_main(["--part1", str(corpora["part1"]), "--part2", str(part2), "--common_voice",
                                 str(corpora["cv"]), "--common_voice_sample", "3", "-o", str(out), "-q"]) == 0
    assert "next: python finetuning/train.py" in capsys.readouterr().err
    imda = datasets.load_from_disk(str(out / "imda"))
    rows = [row for split in imda.values() for row in split]
    assert {row["speaker"].split("/")[0] for row in rows} == {"PART1", "PART2"}  # no part 3
    assert len(rows) == 10 and all(row["sentence"][0].isupper() and row["sentence"].endswith(".") for row in rows)
    cv = datasets.load_from_disk(str(out / "common_voice"))
    sentences = [row["sentence"] for split in cv.values() for row in split]
    assert len(sentences) == 3 and all(s.endswith(".") and '"' not in s for s in sentences)


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
    expected = {Path(name).stem: sentence for name, sentence, up, down, _ in COMMON_VOICE if down <= 1}
    expected["common_voice_en_003"] = "Please switch off your phone, she said."  # quotes out, full stop in
    assert texts == expected
    assert read_pairs(prepared["root"] / "cv" / "speakers.txt")["common_voice_en_004"] == "common_voice/cv-a"
    as_written, _ = read_common_voice(corpora["cv"], clean_text=False)
    assert {e.id: e.text for e in as_written}["common_voice_en_003"] == '"Please switch off your phone," she said'
    first, _ = read_common_voice(corpora["cv"], sample=2, seed=7)
    again, report = read_common_voice(corpora["cv"], sample=2, seed=7)
    assert [e.id for e in first] == [e.id for e in again] and len(first) == 2
    assert report.skipped["clip file missing"] == 1


# ---------------------------------------------------------------- finalize


def test_finalize_builds_a_speaker_split_audio_dataset_plain_datasets_can_read(prepared):
    import datasets

    from whispersg.finetune.finalize import REPORT_FILE

    dataset = datasets.load_from_disk(str(prepared["dataset"]))  # plain datasets, no WhisperSG code
    assert set(dataset) == {"train", "test"}
    feature = dataset["train"].features["audio"]
    assert isinstance(feature, datasets.Audio) and feature.sampling_rate == 16000 and not feature.decode
    row = dataset["train"][0]  # reading a row needs no audio decoder (torchcodec is not installed here)
    assert len(row["audio"]["bytes"]) > 1000 and row["audio"]["path"]
    sentences = list(dataset["train"]["sentence"]) + list(dataset["test"]["sentence"])
    # 5 (part 1: two speakers read the same prompt, both kept) + 4 (part 3) + 4 (Common Voice)
    assert len(sentences) == 13 and sentences.count("Please take the train to Jurong East.") == 2
    train_speakers, test_speakers = set(dataset["train"]["speaker"]), set(dataset["test"]["speaker"])
    assert train_speakers and test_speakers and not train_speakers & test_speakers
    # Both speakers of conversation 3000 on one side (its boundary-mic clips would hold both voices).
    sides = {side for side in ("train", "test") for s in dataset[side]["speaker"] if s.startswith("PART3/3000-")}
    assert len(sides) == 1
    assert 1 <= len(dataset["test"]) <= 5
    report = json.loads((prepared["dataset"] / REPORT_FILE).read_text())
    assert report["skipped"] == {} and report["split_by"] == "speaker"
    assert report["dataset_bytes"] / report["audio_bytes"] <= 1.1


def _source(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """An interchange folder of (id, audio path, text, speaker) rows."""
    from whispersg.finetune.interchange import Example, write_interchange

    write_interchange(folder, [Example(i, audio, text, speaker or None) for i, audio, text, speaker in rows])
    return folder


def test_finalize_filters_before_deduplicating_within_a_speaker_and_rejects_empty_labels(prepared, tmp_path):
    import soundfile

    from whispersg.finetune.finalize import drop_duplicates, finalize
    from whispersg.finetune.interchange import ReadReport, read_interchange

    clips = sorted(read_pairs(prepared["root"] / "part1" / "audio_paths.txt").values(),
                   key=lambda path: soundfile.info(path).duration)
    short, long = clips[0], clips[-1]
    limit = (soundfile.info(short).duration + soundfile.info(long).duration) / 2
    source = _source(tmp_path / "src", [
        ("s-long", long, "The same sentence.", "S"), ("s-short", short, "The same sentence.", "S"),
        ("r-short", short, "The same sentence.", "R"), ("s-empty", short, "  ", "S"), ("s-other", short, "Another one.", "S"),
    ])
    examples, _ = read_interchange(source)
    # A seed for which de-duplicating first would keep the copy that is then dropped as too long.
    seed = next(seed for seed in range(50)
                if "s-long" in {e.id for e in drop_duplicates(examples, seed, ReadReport(), "speaker")})
    result = finalize([source], tmp_path / "ds", test_size=0.0, seed=seed, max_seconds=limit, progress=False)
    import datasets

    ids = set(datasets.load_from_disk(str(tmp_path / "ds"))["train"]["id"])
    assert ids == {"s-short", "r-short", "s-other"}  # the sentence survives; another speaker's reading too
    assert result.skipped == {"empty transcript": 1, f"clip empty or over {limit:g} s": 1}
    finalize([source], tmp_path / "text", test_size=0.0, seed=seed, max_seconds=limit, progress=False, deduplicate="text")
    assert len(datasets.load_from_disk(str(tmp_path / "text"))["train"]) == 2
    # A read corpus whose speakers re-read prompts on purpose: de-duplication off keeps every reading.
    again = _source(tmp_path / "src2", [("a", short, "Twice.", "S"), ("b", long, "Twice.", "S")])
    assert finalize([again], tmp_path / "off", test_size=0.0, deduplicate="off", progress=False).train == 2


def test_split_keeps_speakers_and_conversations_on_one_side():
    from whispersg.errors import DataError
    from whispersg.finetune.finalize import split_train_test
    from whispersg.finetune.interchange import Example

    examples = [Example(f"{s}-{c}-{i}", "x.wav", f"t{i}", s, c) for s, c in
                (("A", "c1"), ("B", "c1"), ("C", "c2"), ("D", "c3"), ("E", None), ("F", None)) for i in range(3)]
    examples.append(Example("A-c4-0", "x.wav", "t", "A", "c4"))  # speaker A again, in another conversation
    for seed in range(10):
        train, test = split_train_test(examples, 0.3, seed, "speaker")
        assert train and test and len(train) + len(test) == len(examples)
        for key in ("speaker", "conversation"):
            left = {getattr(e, key) for e in train} - {None}
            right = {getattr(e, key) for e in test} - {None}
            assert not left & right, (seed, key)
        train, test = split_train_test(examples, 0.3, seed, "conversation")
        assert not {e.conversation for e in train if e.conversation} & {e.conversation for e in test if e.conversation}
    by_clip = split_train_test(examples, 0.3, 0, "clip")
    assert len(by_clip[1]) == round(len(examples) * 0.3)
    assert split_train_test(examples, 0.0, 0, "speaker")[1] == [] and split_train_test(examples, 1.0, 0)[0] == []
    with pytest.raises(DataError, match="one speaker"):
        split_train_test(examples[:3], 0.2, 0, "speaker")


def test_train_only_and_test_only_datasets_load_and_train(prepared, tiny_base, tmp_path):
    import datasets

    from whispersg.finetune.evaluate import load_test_data
    from whispersg.finetune.train import TrainingSettings, build_trainer

    sources = [str(prepared["root"] / name) for name in ("part1", "part3")]
    assert finalize_main([*sources, "-o", str(tmp_path / "train_only"), "--test_size", "0", "-q"]) == 0
    assert finalize_main([str(prepared["root"] / "cv"), "-o", str(tmp_path / "test_only"), "--test_size", "1", "-q"]) == 0
    assert set(datasets.load_from_disk(str(tmp_path / "train_only"))) == {"train"}
    assert len(datasets.load_from_disk(str(tmp_path / "test_only"))["test"]) == 4
    assert len(load_test_data(tmp_path / "test_only", "test")) == 4
    settings = TrainingSettings(datasets=[str(tmp_path / "train_only"), str(tmp_path / "test_only")],
                                output_dir=str(tmp_path / "run"), base_model=str(tiny_base), report_to=["none"])
    trainer = build_trainer(settings)
    assert len(trainer.train_dataset) == 9 and len(trainer.eval_dataset) == 4
    alone = build_trainer(TrainingSettings(datasets=[str(tmp_path / "train_only")], output_dir=str(tmp_path / "run2"),
                                           base_model=str(tiny_base), report_to=["none"], max_steps=1))
    assert alone.eval_dataset is None and alone.args.eval_strategy == "no"


def test_weighted_mixing_does_not_repeat_examples_unless_asked(prepared, tmp_path):
    from whispersg.finetune.data import mix_datasets

    assert finalize_main([str(prepared["root"] / "part1"), str(prepared["root"] / "part3"), "-o", str(tmp_path / "imda"),
                          "--test_size", "0", "-q"]) == 0  # 9 examples
    assert finalize_main([str(prepared["root"] / "cv"), "-o", str(tmp_path / "cv"), "--test_size", "0", "-q"]) == 0  # 4
    paths = [tmp_path / "imda", tmp_path / "cv"]
    clips = lambda mixed: [row["audio"]["path"] for row in mixed]  # noqa: E731
    mixed = clips(mix_datasets(paths, "train", [0.5, 0.5], seed=1))
    assert len(mixed) == len(set(mixed)) == 8  # 4 + 4: Common Voice runs out first, nothing repeats
    assert sum(name.endswith(".mp3") for name in mixed) == 4
    mixed = clips(mix_datasets(paths, "train", [3, 1], seed=1))
    assert len(mixed) == len(set(mixed)) and sum(n.endswith(".mp3") for n in mixed) == 3 and len(mixed) == 12
    oversampled = clips(mix_datasets(paths, "train", [0.5, 0.5], seed=1, oversample=True))
    assert set(oversampled) == set(clips(mix_datasets(paths, "train")))  # every example of both used
    assert len(oversampled) > len(set(oversampled))  # the smaller source repeated to keep the shares


def test_finalize_reports_orphans_and_drops_long_clips(tmp_path, prepared, caplog):
    from whispersg.finetune.finalize import finalize

    source = tmp_path / "source"
    shutil.copytree(prepared["root"] / "part1", source, ignore=shutil.ignore_patterns("audio"))
    lines = (source / "text.txt").read_text().splitlines()
    (source / "text.txt").write_text("\n".join(lines[1:] + ["999999999\tan orphan transcript"]) + "\n")
    result = finalize([source], tmp_path / "dataset", test_size=0.0, max_seconds=2.4, progress=False)
    assert result.skipped["id in audio_paths.txt without a transcript in text.txt"] == 1
    assert result.skipped["id in text.txt without audio in audio_paths.txt"] == 1
    assert result.skipped["clip empty or over 2.4 s"] >= 1
    assert result.test == 0 and result.train + result.skipped["clip empty or over 2.4 s"] == 4  # 5 ids, 1 orphan


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
def test_logged_loss_does_not_grow_with_gradient_accumulation(prepared, tiny_base, tmp_path):
    from whispersg.finetune.finalize import finalize
    from whispersg.finetune.train import TrainingSettings, build_trainer

    clip = next(iter(read_pairs(prepared["root"] / "part1" / "audio_paths.txt").values()))
    # Four identical rows: every micro-batch has the same loss, so the logged loss must not depend on accumulation.
    source = _source(tmp_path / "same", [(f"u{i}", clip, "Please take the train to Jurong East.", "") for i in range(4)])
    finalize([source], tmp_path / "ds", test_size=0.0, deduplicate="off", progress=False)
    logged = {}
    for accumulation in (1, 4):
        settings = TrainingSettings(datasets=[str(tmp_path / "ds")], output_dir=str(tmp_path / f"run{accumulation}"),
                                    base_model=str(tiny_base), batch_size=1, effective_batch_size=accumulation,
                                    max_steps=1, logging_steps=1, warmup_steps=0, optim="adamw_torch",
                                    save_steps=100, report_to=["none"])
        trainer = build_trainer(settings)
        assert trainer.args.gradient_accumulation_steps == accumulation
        trainer.train()
        logged[accumulation] = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    assert logged[4] == pytest.approx(logged[1], rel=1e-3), logged


@pytest.mark.slow
@pytest.mark.parametrize("train_only", ["decoder", "embeddings"])
def test_train_only_leaves_everything_else_as_it_was(prepared, tiny_base, tmp_path, train_only):
    from safetensors.torch import load_file

    output = tmp_path / "run"
    assert train_main([str(prepared["dataset"]), "--output_dir", str(output), "--base_model", str(tiny_base),
                       "--train_only", train_only, "--max_steps", "3", "--save_steps", "100", "--eval_steps", "100",
                       *TINY_TRAINING, "-q"]) == 0
    before, after = load_file(tiny_base / "model.safetensors"), load_file(output / "model.safetensors")
    changed = {name for name, tensor in before.items() if not bool((after[name] == tensor).all())}
    assert "model.decoder.embed_tokens.weight" in changed
    assert not {name for name in changed if name.startswith("model.encoder.")}, changed
    decoder_layers = {name for name in changed if name.startswith("model.decoder.layers.")}
    # The tiny model's decoder layers all get gradients, so "decoder" must move them and "embeddings" none.
    assert bool(decoder_layers) == (train_only == "decoder"), decoder_layers


@pytest.mark.slow
def test_blend_saves_the_weights_that_share_of_the_way_from_base_to_tuned(prepared, tiny_base, tmp_path, capsys):
    from safetensors.torch import load_file

    output, name = tmp_path / "run", "model.decoder.embed_tokens.weight"
    assert train_main([str(prepared["dataset"]), "--output_dir", str(output), "--base_model", str(tiny_base),
                       "--train_only", "embeddings", "--blend", "0.25", "--max_steps", "2", "--save_steps", "2",
                       "--eval_steps", "2", *TINY_TRAINING, "-q"]) == 0
    base = load_file(tiny_base / "model.safetensors")[name]
    tuned = load_file(output / "checkpoint-2" / "model.safetensors")[name]  # checkpoints are saved unblended
    saved = load_file(output / "model.safetensors")[name]
    assert not bool((tuned == base).all())
    assert (saved - (base + 0.25 * (tuned - base))).abs().max().item() < 1e-6
    assert train_main([str(prepared["dataset"]), "--output_dir", str(tmp_path / "bad"), "--base_model",
                       str(tiny_base), "--blend", "1.5", *TINY_TRAINING, "-q"]) != 0
    assert "--blend 1.5" in capsys.readouterr().err


def test_train_only_rejects_an_unknown_part(prepared, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(prepared["dataset"]), "--output_dir", str(tmp_path / "run"), "--train_only", "encoder"])
    assert exit_info.value.code == 2
    assert "--train_only" in capsys.readouterr().err


def test_multilingual_base_labels_carry_the_prompt_generation_uses(prepared, tmp_path):
    import numpy as np
    import torch

    from whispersg.errors import ModelError
    from whispersg.finetune.data import SpeechCollator, load_prepared
    from whispersg.finetune.train import load_base

    folder = build_tiny_whisper(tmp_path / "multi", multilingual=True)
    model, processor = load_base(str(folder))  # no --language: English
    rows = list(load_prepared(prepared["dataset"])["train"].select(range(2)))
    labels = SpeechCollator(processor, model.config.decoder_start_token_id)(rows)["labels"]
    prefix = processor.tokenizer.convert_tokens_to_ids(["<|en|>", "<|transcribe|>", "<|notimestamps|>"])
    assert labels[:, :3].tolist() == [prefix, prefix]
    features = processor.feature_extractor([np.zeros(16000, "float32")], sampling_rate=16000,
                                           return_tensors="pt").input_features
    prompts = []  # the decoder's first input in generation is its forced prompt
    hook = model.model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: prompts.append(kwargs["input_ids"][0].tolist()), with_kwargs=True)
    with torch.inference_mode():
        model.generate(features, max_new_tokens=3)
    hook.remove()
    assert prompts[0] == [model.config.decoder_start_token_id, *prefix]  # = the labels' prefix
    english, english_processor = load_base(str(build_tiny_whisper(tmp_path / "en")))
    english_labels = SpeechCollator(english_processor, english.config.decoder_start_token_id)(rows)["labels"]
    assert english_labels[0, 0].item() == prefix[2]  # English-only: <|notimestamps|> follows the start token
    with pytest.raises(ModelError, match="English-only"):
        load_base(str(tmp_path / "en"), language="ms")


def test_evaluate_takes_language_and_treats_hub_ids_as_transformers_models(prepared, tmp_path, capsys, monkeypatch):
    from whispersg.finetune.evaluate import is_transformers_checkpoint

    multi = build_tiny_whisper(tmp_path / "multi", multilingual=True)
    assert evaluate_main(["--model", str(multi), "--data", str(prepared["dataset"]), "--language", "en", "-q"]) == 0
    assert "| model |" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert is_transformers_checkpoint("openai/whisper-small.en") and not is_transformers_checkpoint("tiny.en")
    assert is_transformers_checkpoint(multi) and not is_transformers_checkpoint(tmp_path)
    assert evaluate_main(["--model", "openai/whisper-small.en", "--data", str(prepared["dataset"])]) == 1
    error = " ".join(capsys.readouterr().err.split())  # one message (the console wraps it at its width)
    assert error.startswith("error: openai/whisper-small.en:") and error.count("error:") == 1
    assert "needs a download" in error and "--allow_download" in error and "Traceback" not in error


def test_long_clips_are_evaluated_whole_with_long_form_generation(prepared, tiny_base, monkeypatch):
    import numpy as np
    from transformers import WhisperForConditionalGeneration

    from whispersg.finetune.evaluate import Utterance, load_test_data, transcribe_with_checkpoint

    short = load_test_data(prepared["dataset"], "train", 2)
    long = Utterance("long", np.tile(short[0].samples, int(np.ceil(35 * 16000 / len(short[0].samples)))), "x")
    seen = []
    original = WhisperForConditionalGeneration.generate

    def spy(self, input_features=None, **kwargs):
        seen.append((input_features.shape[0], input_features.shape[-1], kwargs.get("return_timestamps")))
        return original(self, input_features, **kwargs)

    monkeypatch.setattr(WhisperForConditionalGeneration, "generate", spy)
    texts = transcribe_with_checkpoint(tiny_base, [short[0], long, short[1]], max_length=20)
    assert len(texts) == 3
    frames = len(long.samples) // 160
    assert (2, 3000, None) in seen  # the short clips, batched in one 30 s window each
    assert any(batch == 1 and length >= frames - 1 and stamps for batch, length, stamps in seen), seen


@pytest.mark.slow
def test_training_runs_data_parallel_under_torchrun(prepared, tiny_base, tmp_path):
    import socket

    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    records = tmp_path / "records"
    records.mkdir()
    output = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(REPO / "tests" / "ddp_train.py"), str(prepared["dataset"]), str(tiny_base),
         str(output), str(records)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["main"] for r in ranks] == [True, False]
    for step in range(3):  # each rank trained on its own shard of every batch
        assert not set(ranks[0]["batches"][step]) & set(ranks[1]["batches"][step]), step
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-3"]
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json", "trainer_state.json"):
        assert (output / "checkpoint-3" / name).is_file(), name
    assert (output / "model.safetensors").is_file()


@pytest.mark.slow
def test_notebook_runs_the_same_chain_and_reports_the_wer_it_computed(prepared, tiny_base, tmp_path):
    import math
    import re

    papermill = pytest.importorskip("papermill", reason="executing the notebook needs papermill (the [finetune] extra)")
    from whispersg.finetune.evaluate import evaluate_model, load_test_data

    output = tmp_path / "notebook-run"
    papermill.execute_notebook(
        str(REPO / "finetuning" / "training" / "training.ipynb"),
        str(tmp_path / "executed.ipynb"),
        parameters={
            "datasets": [str(prepared["dataset"])], "weights": None, "base_model": str(tiny_base),
            "output_dir": str(output), "max_steps": 10, "learning_rate": 5e-3, "warmup_steps": 2, "batch_size": 4,
            "effective_batch_size": 4, "optim": "adamw_torch", "eval_steps": 10, "save_steps": 10, "logging_steps": 5,
            "generation_max_length": 40, "report_to": ["none"], "language": None, "task": "transcribe", "seed": 3,
        },
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    assert (output / "model.safetensors").is_file() and (output / "checkpoint-10" / "tokenizer.json").is_file()
    assert (Path(f"{output}-ct2") / "model.bin").is_file()
    executed = (tmp_path / "executed.ipynb").read_text()
    assert "transcribe with: whispersg --model" in executed
    printed = {name: float(value) for name, value in re.findall(r"WER (before|after) fine-tuning: (\d+\.\d{4})", executed)}
    saved = json.loads((output / "wer_before_after.json").read_text())
    # The numbers the notebook shows are the ones these models score on the test split, computed again here.
    test_data = load_test_data(prepared["dataset"], "test")
    assert saved["utterances"] == len(test_data)
    for name, model in (("before", tiny_base), ("after", output)):
        wer = evaluate_model(model, test_data).wer
        # The random base writes long runs of junk words, so its WER is far above 1 (bounded by 225 tokens a clip).
        assert math.isfinite(wer) and wer >= 0.0, (name, wer)
        assert printed[name] == pytest.approx(wer, abs=5e-5) and saved[name] == pytest.approx(wer, abs=1e-9), (name, wer)
    history = json.loads((output / "checkpoint-10" / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "loss" in e] == [5, 10]  # logging_steps reached the trainer


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
