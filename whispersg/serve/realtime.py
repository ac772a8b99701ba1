"""One ``/v1/realtime`` WebSocket session: PCM in, interim and committed text out.

The client sends binary frames of 16 kHz mono signed 16-bit little-endian PCM
(any frame size) and, when done, the text message ``{"type": "stop"}``.  The
server answers with JSON messages:

- ``{"type": "ready", "model": ..., "sample_rate": 16000}`` once the session is set up;
- ``{"type": "interim", "settled": ..., "text": ..., "behind": false}`` for the open chunk, replaced by
  the next one: ``settled`` is already committed (never rewritten: the chunk's segments will start
  with exactly these words), ``text`` is the part that may still change;
- ``{"type": "committed", "segments": [...]}`` when a chunk ends (WhisperX segment dicts, times from
  session start, speakers when asked), never rewritten;
- ``{"type": "done", "text": ..., "duration": ..., "dropped_seconds": ...}`` after ``stop``, then it closes;
- ``{"type": "error", "message": ...}`` and a close, when something fails or nothing arrives for a while
  (``ServeSettings.live_idle_seconds``; what was sent is still transcribed and answered with ``done``).

It uses the live transcriber of ``whispersg_live`` (same segmenter, commit policy
and online speaker labels), fed by a PushSource instead of a microphone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Optional

from whispersg.audio import SAMPLE_RATE
from whispersg.errors import WhisperSGError
from whispersg.live.sources import PushSource
from whispersg.live.decoder import PipelineDecoder
from whispersg.live.settings import LiveSettings
from whispersg.live.transcriber import LiveState, LiveTranscriber

logger = logging.getLogger(__name__)


async def run_session(websocket, pipeline, overrides: dict[str, Any], speakers=None,
                      settings: Optional[LiveSettings] = None, idle_seconds: Optional[float] = None) -> None:
    """Serve one accepted WebSocket until the client stops, disconnects or sends nothing for ``idle_seconds``."""
    loop = asyncio.get_running_loop()
    outbox: "asyncio.Queue[Optional[dict]]" = asyncio.Queue()
    source = PushSource()
    last_interim = {"settled": "", "text": "", "behind": False}

    def post(message: Optional[dict]) -> None:
        loop.call_soon_threadsafe(outbox.put_nowait, message)

    def on_update(state: LiveState) -> None:
        current = {"settled": state.settled, "text": state.interim, "behind": state.behind}
        if current != last_interim:
            last_interim.update(current)
            post({"type": "interim", **current})

    def on_commit(segments) -> None:
        post({"type": "committed", "segments": [segment.to_dict() for segment in segments]})

    transcriber = LiveTranscriber(PipelineDecoder(pipeline, overrides), source, settings or LiveSettings(),
                                  on_update=on_update, on_commit=on_commit, speakers=speakers)

    def transcribe_until_done():
        try:
            transcript = transcriber.run()
            post({"type": "done", "text": transcript.text, "duration": round(transcript.duration, 3),
                  "dropped_seconds": round(transcriber.state.dropped_seconds, 3)})
        except WhisperSGError as error:
            post({"type": "error", "message": str(error)})
        except Exception as error:  # noqa: BLE001 - reported to the client, logged here
            logger.exception("realtime session failed")
            post({"type": "error", "message": f"internal error: {type(error).__name__}: {error}"})
        finally:
            post(None)

    await websocket.send_json({"type": "ready", "model": pipeline.model_name, "sample_rate": SAMPLE_RATE})
    work = loop.run_in_executor(None, transcribe_until_done)
    sender = asyncio.create_task(_forward(outbox, websocket))
    client_gone = False
    try:
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), idle_seconds)
            except asyncio.TimeoutError:  # a session left open must not hold its slot forever
                post({"type": "error", "message": f"no message for {idle_seconds:g} s; the session is ended"})
                break
            if message["type"] == "websocket.disconnect":
                client_gone = True
                break
            if message.get("bytes"):
                source.push(message["bytes"])
            elif message.get("text") and _is_stop(message["text"]):
                break
    finally:
        if client_gone:
            transcriber.stop_requested.set()
        source.finish()
        await work
        await sender
    if not client_gone:
        await websocket.close()


async def _forward(outbox: "asyncio.Queue[Optional[dict]]", websocket) -> None:
    while (message := await outbox.get()) is not None:
        try:
            await websocket.send_json(message)
        except Exception:  # noqa: BLE001 - the client left; keep draining so the session can end
            continue


def _is_stop(text: str) -> bool:
    try:
        return json.loads(text).get("type") == "stop"
    except (ValueError, AttributeError):
        return False
