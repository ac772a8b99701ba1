"""Smaller hardening (issue 26, item 9): the Bearer scheme is required; user paths are never Rich markup."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ..conftest import DEMO_WAV, REPO


def test_api_key_without_the_bearer_scheme_is_refused(pipeline):
    pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")
    from fastapi.testclient import TestClient

    from whispersg.serve.app import ServeSettings, create_app

    with TestClient(create_app(pipeline, ServeSettings(api_key="k-123"))) as client:
        assert client.get("/v1/models", headers={"Authorization": "k-123"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Basic k-123"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "bearer k-123"}).status_code == 200


def test_a_file_named_like_markup_is_transcribed_with_the_rest_of_the_batch(cli_env, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "[").mkdir(parents=True)
    for name in ("[/i].wav", "[bold]x.wav"):  # the first is the file i].wav in a folder named [
        shutil.copy(DEMO_WAV, inputs / name)
    result = subprocess.run([sys.executable, "-m", "whispersg", str(inputs), "-o", str(tmp_path / "out"), "-f", "txt",
                             "--no_align"], capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "MarkupError" not in result.stderr and "[/i].wav" in result.stderr and "[bold]x.wav" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("[!.]*")) == ["[bold]x.txt", "i].txt"]
