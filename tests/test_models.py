"""Model store: name resolution, the default chain with its warning, clear errors, offline download."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whispersg.errors import ModelError, NetworkError
from whispersg.models import (
    BUILTIN_MODEL,
    builtin_model_path,
    check_model_folder,
    fallback_warning,
    installed_models,
    is_english_only,
    load_whisper,
    resolve_model,
)
from whispersg.pipeline import WhisperSGPipeline

from .conftest import REPO


def copy_builtin(store: Path, name: str) -> Path:
    """A real CTranslate2 model folder under another name (the built-in tiny.en's files)."""
    target = store / name
    shutil.copytree(builtin_model_path(), target)
    return target


def test_builtin_tiny_is_found_and_english_only():
    path = builtin_model_path()
    assert path is not None and (path / "model.bin").is_file()
    assert is_english_only(path)


def test_default_falls_back_to_builtin_with_a_warning_naming_the_fix(empty_model_store):
    model = resolve_model(None, empty_model_store)
    assert model.name == BUILTIN_MODEL and model.path == builtin_model_path()
    warning = fallback_warning(model)
    assert "whispersg_small.en" in warning and "whispersg models download whispersg_small.en" in warning


def test_default_prefers_finetuned_then_small(tmp_path):
    copy_builtin(tmp_path, "small.en")
    model = resolve_model(None, tmp_path)
    assert model.name == "small.en" and model.fallback_from == "whispersg_small.en"
    copy_builtin(tmp_path, "whispersg_small.en")
    model = resolve_model(None, tmp_path)
    assert model.name == "whispersg_small.en" and fallback_warning(model) is None
    assert set(installed_models(tmp_path)) == {"small.en", "whispersg_small.en", BUILTIN_MODEL}


def test_pipeline_logs_the_fallback_warning_once(empty_model_store, caplog):
    with caplog.at_level(logging.WARNING, logger="whispersg"):
        WhisperSGPipeline(model_dir=str(empty_model_store), threads=1)
    messages = [r.getMessage() for r in caplog.records if "whispersg_small.en" in r.getMessage()]
    assert len(messages) == 1


def test_names_and_paths_resolve(tmp_path):
    assert resolve_model("tiny.en", tmp_path).path == builtin_model_path()
    folder = copy_builtin(tmp_path / "elsewhere", "my-model")
    assert resolve_model(str(folder), tmp_path).path == folder
    with pytest.raises(ModelError, match="whispersg models download small.en"):
        resolve_model("small.en", tmp_path)
    with pytest.raises(ModelError, match="neither a folder nor a known model name"):
        resolve_model("no-such-model", tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing" / "folder"), tmp_path)


def test_missing_tokenizer_is_an_error_not_a_hub_lookup(tmp_path):
    folder = copy_builtin(tmp_path, "no-tokenizer")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="lacks tokenizer.json"):
        check_model_folder(folder)


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="lacks model.bin, config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)


def test_truncated_model_bin_is_a_clear_error(tmp_path):
    folder = copy_builtin(tmp_path, "truncated")
    data = (folder / "model.bin").read_bytes()
    (folder / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="could not be loaded"):
        load_whisper(resolve_model(str(folder)), device="cpu", threads=1)


def test_download_without_network_fails_fast(tmp_path, monkeypatch):
    # The session's socket guard refuses the connection, as a machine without a network would.
    started = time.perf_counter()
    from whispersg.models import download_model

    with pytest.raises(NetworkError, match="downloads need a network"):
        download_model("small.en", tmp_path)
    assert time.perf_counter() - started < 5
    assert not any(tmp_path.iterdir())


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs 'unshare -n' (root or user namespaces) to remove the network")
def test_download_cli_in_network_namespace_fails_within_5_seconds(tmp_path, cli_env):
    started = time.perf_counter()
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "whispersg", "models", "--model_dir", str(tmp_path), "download", "small.en"],
        capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode != 0
    assert "downloads need a network" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 5 + 3  # 5 s budget for the network check, plus interpreter start-up


def test_unsupported_compute_type_falls_back_with_a_warning(caplog):
    import ctranslate2

    from whispersg.errors import OptionError
    from whispersg.models import resolve_compute_type

    assert resolve_compute_type("auto", "cpu") == "int8"
    if "float16" not in ctranslate2.get_supported_compute_types("cpu"):
        with caplog.at_level(logging.WARNING):
            assert resolve_compute_type("float16", "cpu") == "int8"
        assert any("not supported on cpu" in r.getMessage() for r in caplog.records)
    with pytest.raises(OptionError, match="unknown"):
        resolve_compute_type("int3", "cpu")
