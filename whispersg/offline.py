"""The offline guarantee: no hub lookups, no telemetry, unless the user asks for a download.

``enforce_offline()`` runs before any dependency that could talk to the
network is imported by the pipeline; ``allow_downloads()`` is called only by
``whispersg models download``.
"""

from __future__ import annotations

import os
import sys

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "PYANNOTE_METRICS_ENABLED": "0",  # pyannote.audio's usage telemetry opt-out
    # onnxruntime (Silero VAD) starts a telemetry uploader (DNS lookups, ~/.cache/Microsoft) at import unless set.
    "ORT_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def enforce_offline() -> None:
    """Switch every dependency we use into offline mode, also if it was imported already."""
    os.environ.update(OFFLINE_ENV)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
        constants.HF_HUB_DISABLE_TELEMETRY = True
    onnxruntime = sys.modules.get("onnxruntime")
    if onnxruntime is not None and hasattr(onnxruntime, "disable_telemetry_events"):
        onnxruntime.disable_telemetry_events()  # imported before us: at least no more events are logged


def allow_downloads() -> None:
    """Lift the hub's offline mode for an explicit download (telemetry stays off)."""
    os.environ["HF_HUB_OFFLINE"] = "0"
    os.environ["TRANSFORMERS_OFFLINE"] = "0"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = False
