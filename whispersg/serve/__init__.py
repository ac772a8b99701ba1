"""`whispersg serve`: a local transcription service on top of WhisperSGPipeline.

- ``app``: the FastAPI application (OpenAI-compatible ``/v1/audio/*``, ``/v1/models``,
  ``/health``, the ``/v1/realtime`` WebSocket and the browser page at ``/``);
- ``jobs``: the bounded queue that runs transcriptions off the event loop;
- ``responses``: a Transcript rendered as OpenAI's response formats;
- ``realtime``: one WebSocket session driving the live transcriber;
- ``static/``: the page (plain HTML/JS/CSS, nothing from a CDN).

Needs the ``[serve]`` extra (fastapi, uvicorn, python-multipart).
"""
