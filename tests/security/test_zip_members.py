"""Zip members (issue 26, item 7): IMDA speaker zips are extracted within a size and a compression-ratio limit,
with free space checked; a refused or broken member is skipped with a warning naming it, and leaves no partial
file."""

from __future__ import annotations

import logging
import os
import zipfile
from collections import namedtuple

import pytest

from whispersg.errors import DataError
from whispersg.finetune import imda
from whispersg.finetune.imda import MemberSkipped, WaveIndex


def _zip(folder, members: dict[str, bytes]):
    archive = folder / "WAVE" / "SPEAKER0001.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    return archive


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_zip_bomb_member_is_skipped_by_name_and_the_rest_extracts(tmp_path, caplog):
    _zip(tmp_path, {"SPEAKER0001/000010001.WAV": bytes(3 << 20), "SPEAKER0001/000010002.WAV": os.urandom(4096)})
    index, audio = WaveIndex(tmp_path / "WAVE"), tmp_path / "audio"
    with caplog.at_level(logging.WARNING), pytest.raises(MemberSkipped) as skipped:
        index.materialise("000010001", audio)
    assert skipped.value.reason == "zip member compressed suspiciously well"
    assert "SPEAKER0001.zip:SPEAKER0001/000010001.WAV: compressed" in caplog.text
    assert index.materialise("000010002", audio).stat().st_size == 4096
    assert _left(audio) == ["000010002.wav"]


def test_a_member_over_the_size_limit_is_skipped(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(imda, "MAX_MEMBER_BYTES", 1000)
    _zip(tmp_path, {"SPEAKER0001/000010001.WAV": os.urandom(2000)})
    with caplog.at_level(logging.WARNING), pytest.raises(MemberSkipped, match="too large"):
        WaveIndex(tmp_path / "WAVE").materialise("000010001", tmp_path / "audio")
    assert "000010001.WAV: expands to" in caplog.text and _left(tmp_path / "audio") == []


def test_a_member_without_room_on_disk_is_one_error_naming_it(tmp_path, monkeypatch):
    _zip(tmp_path, {"SPEAKER0001/000010001.WAV": os.urandom(4096)})
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(imda.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 100, 100))
    with pytest.raises(DataError, match=r"SPEAKER0001\.zip:SPEAKER0001/000010001\.WAV: needs 0\.0 MB but .* free"):
        WaveIndex(tmp_path / "WAVE").materialise("000010001", tmp_path / "audio")
    assert _left(tmp_path / "audio") == []


def test_a_corrupt_member_is_skipped_by_name_and_leaves_no_partial_file(tmp_path, caplog):
    archive = _zip(tmp_path, {"SPEAKER0001/000010001.WAV": os.urandom(200_000)})
    data = bytearray(archive.read_bytes())
    data[30_000:30_100] = bytes(100)  # inside the stored data: the CRC (or the stream) no longer matches
    archive.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), pytest.raises(MemberSkipped, match="unreadable"):
        WaveIndex(tmp_path / "WAVE").materialise("000010001", tmp_path / "audio")
    assert "SPEAKER0001/000010001.WAV: cannot be extracted" in caplog.text
    assert _left(tmp_path / "audio") == []
