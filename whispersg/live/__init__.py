"""Live transcription: audio sources, streaming segmentation, the transcriber and its display."""
