#!/usr/bin/env bash
# Builds the peers' own virtualenv for benchmarks/run.py: WhisperX pins torch~=2.8 and torchaudio,
# which cannot live beside WhisperSG's torch 2.13, so it gets benchmarks/.venv-whisperx.
# Run once on a connected machine (several GB: torch 2.8 with its CUDA libraries).
set -euo pipefail
cd "$(dirname "$0")"
WHISPERX_VERSION=${WHISPERX_VERSION:-3.8.6}
if [ ! -x .venv-whisperx/bin/python ]; then
  python3 -m venv .venv-whisperx
fi
.venv-whisperx/bin/pip install -q --upgrade pip
.venv-whisperx/bin/pip install -q "whisperx==${WHISPERX_VERSION}" jiwer whisper-normalizer
.venv-whisperx/bin/python -c "import whisperx, torch; print('whisperx ready, torch', torch.__version__)"
