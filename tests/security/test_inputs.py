"""Inputs that would make FFmpeg read other files, devices or the network are refused (issue 26, item 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from whispersg.audio import decode_file, load_audio, probe_duration
from whispersg.errors import AudioError

from ..audio_files import encode
from ..conftest import DEMO_WAV, REPO


@pytest.fixture(scope="module")
def server_recording(tmp_path_factory):
    """A private recording on the 'server's' disk, which no client may make it read."""
    folder = tmp_path_factory.mktemp("private")
    return encode(load_audio(DEMO_WAV)[: 16000 * 5], folder / "secret.flac", "flac")


def playlist(path) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:30\n#EXTINF:5,\n{path}\n#EXT-X-ENDLIST\n"


def hostile_files(folder, target):
    """Files that name other files for FFmpeg to read: an HLS playlist, a concat list, an image sequence."""
    (folder / "list.m3u8").write_text(playlist(target))
    (folder / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    (folder / "frames.tiff").write_bytes(b"II*\x00" + bytes(64))
    return [folder / "list.m3u8", folder / "list.ffconcat", folder / "frames.tiff"]


def test_playlists_and_lists_are_not_decoded(tmp_path, server_recording):
    for path in hostile_files(tmp_path, server_recording):
        with pytest.raises(AudioError, match="not a plain audio or video file") as refused:
            decode_file(path)
        assert str(path) in str(refused.value) and "\n" not in str(refused.value)
        assert probe_duration(path) is None


def test_plain_containers_still_decode(tmp_path):
    reference = load_audio(DEMO_WAV)[: 16000 * 3]
    for name, codec, container in (("a.mp3", "libmp3lame", None), ("a.m4a", "aac", "mp4"), ("a.ogg", "libopus", "ogg"),
                                   ("a.webm", "libopus", "webm"), ("a.aac", "aac", "adts"), ("a.flac", "flac", None)):
        path = encode(reference, tmp_path / name, codec, 48000 if codec == "libopus" else 16000, "mono", container)
        assert abs(len(decode_file(path).samples) / 16000 - 3.0) < 0.1, name


def test_cli_refuses_a_playlist_in_one_line(cli_env, tmp_path, server_recording):
    listed = hostile_files(tmp_path, server_recording)[0]
    result = subprocess.run([sys.executable, "-m", "whispersg", str(listed), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, env=cli_env, cwd=REPO, timeout=300)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a plain audio or video file" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "list.txt").exists()


def test_service_refuses_an_uploaded_playlist_naming_a_server_file(pipeline, tmp_path, server_recording):
    pytest.importorskip("fastapi", reason="whispersg serve needs the [serve] extra")
    from fastapi.testclient import TestClient

    from whispersg.serve.app import create_app

    with TestClient(create_app(pipeline)) as client:
        for path in hostile_files(tmp_path, server_recording):
            with open(path, "rb") as stream:
                response = client.post("/v1/audio/transcriptions", files={"file": (path.name, stream)})
            assert response.status_code == 400, (path.name, response.text)
            message = response.json()["error"]["message"]
            assert message.startswith(f"{path.name}:") and "whispersg-serve" not in message
