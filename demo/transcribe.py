"""Transcribe a recording with WhisperSG's Python API (offline, built-in model if nothing better is installed).

    python demo/transcribe.py demo/sample.wav --diarize
"""

import argparse
from pathlib import Path

from whispersg import WhisperSGPipeline, print_transcription, write_transcript

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("audio", nargs="?", default=str(Path(__file__).with_name("sample.wav")))
parser.add_argument("--diarize", action="store_true", help="label speakers (needs the [diarize] extra)")
parser.add_argument("--output", default="output/demo.srt", help="where to write subtitles")
args = parser.parse_args()

pipeline = WhisperSGPipeline(diarize=args.diarize)
transcript = pipeline.transcribe(args.audio)
print_transcription(transcript)
print(f"subtitles written to {write_transcript(transcript, args.output)}")
