"""No command deletes or writes over a folder it did not create (issue 26, item 3)."""

from __future__ import annotations

import json

import pytest

from whispersg.audio import load_audio
from whispersg.errors import OutputError

from ..conftest import DEMO_WAV
from ..finetune_corpora import write_wav


@pytest.fixture
def workspace(tmp_path):
    """A user's working folder holding their own notes and an interchange source of two short clips."""
    work = tmp_path / "work"
    source = work / "src"
    source.mkdir(parents=True)
    (work / "notes.txt").write_text("my notes\n")
    audio = load_audio(DEMO_WAV)
    paths = [write_wav(source / f"clip{i}.wav", audio[16000 * 3 * i : 16000 * 3 * (i + 1)]) for i in range(4)]
    (source / "audio_paths.txt").write_text("".join(f"u{i}\t{p}\n" for i, p in enumerate(paths)))
    (source / "text.txt").write_text("".join(f"u{i}\tsentence number {i}\n" for i in range(4)))
    return work


def test_finalize_never_deletes_a_folder_it_did_not_write(workspace, capsys):
    pytest.importorskip("datasets", reason="finalize needs the [finetune] extra")
    from whispersg.cli.finetune import finalize_main

    # The reported case: `finalize_data.py src -o .` deleted the working folder's files and src/ itself.
    assert finalize_main([str(workspace / "src"), "-o", str(workspace), "-q"]) == 1
    error = capsys.readouterr().err
    assert "does not hold an earlier prepared dataset" in error and "Traceback" not in error
    assert (workspace / "notes.txt").read_text() == "my notes\n" and (workspace / "src" / "text.txt").is_file()

    dataset = workspace / "dataset"
    assert finalize_main([str(workspace / "src"), "-o", str(dataset), "--test_size", "0.25", "-q"]) == 0
    assert json.loads((dataset / "whispersg_finalize.json").read_text())["train"] == 3
    assert finalize_main([str(workspace / "src"), "-o", str(dataset), "-q"]) == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert finalize_main([str(workspace / "src"), "-o", str(dataset), "--test_size", "0.5", "--overwrite", "-q"]) == 0
    assert json.loads((dataset / "whispersg_finalize.json").read_text())["train"] == 2


def test_preparation_refuses_a_folder_of_other_files(workspace, capsys):
    from whispersg.cli.finetune import common_voice_main

    assert common_voice_main([str(workspace / "cv"), "-o", str(workspace), "-q"]) == 1
    error = capsys.readouterr().err
    assert "does not hold an earlier preparation" in error and "Traceback" not in error
    assert sorted(p.name for p in workspace.iterdir()) == ["notes.txt", "src"]


def test_model_conversion_never_replaces_a_folder_of_other_files(workspace, capsys):
    from whispersg.cli.models import main as models_main

    checkpoint = workspace / "ckpt"
    checkpoint.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (checkpoint / name).write_text("{}")
    assert models_main(["convert", str(checkpoint), "-o", str(workspace), "--force"]) == 1
    error = capsys.readouterr().err
    assert "does not hold an earlier converted model" in error and "Traceback" not in error
    assert (workspace / "notes.txt").is_file()


def test_training_output_must_be_new_or_an_earlier_run(tmp_path):
    from whispersg.finetune.train import RUN_MARKER, TrainingSettings, claim_output_dir

    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # e.g. the base model's own folder
    with pytest.raises(OutputError, match="does not hold an earlier training run"):
        claim_output_dir(TrainingSettings(datasets=["d"], output_dir=str(folder)))
    run = tmp_path / "run"
    claim_output_dir(TrainingSettings(datasets=["d"], output_dir=str(run)))
    assert (run / RUN_MARKER).is_file()
    (run / "checkpoint-10").mkdir()
    with pytest.raises(OutputError, match="pass --overwrite"):
        claim_output_dir(TrainingSettings(datasets=["d"], output_dir=str(run)))
    claim_output_dir(TrainingSettings(datasets=["d"], output_dir=str(run), resume_from_checkpoint="latest"))
    claim_output_dir(TrainingSettings(datasets=["d"], output_dir=str(run), overwrite=True))
