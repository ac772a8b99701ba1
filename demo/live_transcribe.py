"""Live transcription with WhisperSG's Python API: replay a recording in real time (or use a microphone).

    python demo/live_transcribe.py                 # replays demo/sample.wav
    python demo/live_transcribe.py --mic_id 0      # a microphone (needs the [live] extra)
"""

import argparse
from pathlib import Path

from whispersg import WhisperSGPipeline
from whispersg.live.sources import open_source
from whispersg.live.transcriber import LiveTranscriber
from whispersg.writers import format_timestamp

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--input", default=str(Path(__file__).with_name("sample.wav")), help="recording to replay")
parser.add_argument("--mic_id", type=int, default=None, help="microphone device index instead of --input")
args = parser.parse_args()

pipeline = WhisperSGPipeline()
source = open_source(args.mic_id, None if args.mic_id is not None else args.input, speed=1.0)


def show(segments):
    for segment in segments:
        print(f"[{format_timestamp(segment.start)}] {segment.text}", flush=True)


LiveTranscriber(pipeline, source, on_commit=show).run()
