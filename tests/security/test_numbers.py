"""Every numeric option is checked once, in PipelineOptions: out of range, nan and inf are clear errors
(issue 26, item 5) in Python, the CLI, the HTTP API and the WebSocket query."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whispersg.errors import OptionError
from whispersg.options import NUMERIC_BOUNDS, PipelineOptions

from ..conftest import DEMO_WAV, REPO

NUMERIC = [option for option in fields(PipelineOptions) if re.search(r"\b(int|float)\b", str(option.type))]
HOSTILE_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**9, 10**9),
                            st.sampled_from([1.5, 1e309, -1e309, float("nan"), 0, 0.0, -0.0, 1, 30, 30.000001, 448]))


def test_every_numeric_option_declares_its_range():
    assert NUMERIC and all(set(NUMERIC_BOUNDS) & set(option.metadata) for option in NUMERIC), \
        [option.name for option in NUMERIC if not set(NUMERIC_BOUNDS) & set(option.metadata)]


@settings(max_examples=400, deadline=None)
@given(option=st.sampled_from(NUMERIC), value=HOSTILE_NUMBERS)
def test_numeric_options_are_finite_and_in_range_or_refused(option, value):
    try:
        checked = PipelineOptions(**{option.name: value}).validate()
    except OptionError as error:
        assert str(error).startswith(f"--{option.name} must be") and "\n" not in str(error)
        return
    kept = getattr(checked, option.name)
    bounds = option.metadata
    assert math.isfinite(kept) and kept == value
    assert kept >= bounds.get("at_least", -math.inf) and kept > bounds.get("above", -math.inf)
    assert kept <= bounds.get("at_most", math.inf)
    if "int" in str(option.type):
        assert isinstance(kept, int)


def test_reported_values_are_refused_everywhere_with_a_clear_error(pipeline, cli_env, tmp_path):
    for value in (1.5, float("nan"), float("inf"), float("1e309")):
        with pytest.raises(OptionError, match="--temperature must be a number >= 0 and <= 1"):
            pipeline.options_for(temperature=value)
    for text in ("1.5", "nan", "1e309"):
        result = subprocess.run([sys.executable, "-m", "whispersg", str(DEMO_WAV), "--temperature", text, "-o",
                                 str(tmp_path)], capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "--temperature must be" in result.stderr and "Traceback" not in result.stderr
        assert "unexpected" not in result.stderr


def test_service_answers_400_for_bad_numbers(pipeline):
    pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")
    from fastapi.testclient import TestClient

    from whispersg.serve.app import create_app

    with TestClient(create_app(pipeline)) as client:
        for field, value in (("temperature", "1.5"), ("temperature", "nan"), ("temperature", "1e309"),
                             ("num_speakers", "²"), ("max_speakers", "0")):
            with open(DEMO_WAV, "rb") as stream:
                response = client.post("/v1/audio/transcriptions", files={"file": ("call.wav", stream)},
                                       data={field: value, "diarize": "true"})
            assert response.status_code == 400, (field, value, response.text)
            assert field in response.json()["error"]["message"]
        for query in ("diarize=true&max_speakers=²", "diarize=true&max_speakers=0", "max_commit_delay=nan",
                      "max_commit_delay=inf"):
            with client.websocket_connect(f"/v1/realtime?{query}") as socket_:
                message = socket_.receive_json()
            assert message["type"] == "error" and re.search(r"max_speakers|max_commit_delay", message["message"]), \
                (query, message)
        assert client.get("/health").json()["status"] == "ok"
