"""Speaker labels for a live session: incremental clustering of CAM++ embeddings, stable labels.

Each committed chunk is embedded in 1.5 s windows (the same models, windows and
spectral clustering as file diarization).  At every commit the session's recent
windows plus the new ones are clustered again, and each resulting cluster is
mapped to the label most of its earlier windows already carry; a cluster made
mostly of new windows is a new speaker.  Committed labels are never changed,
so ``SPEAKER_00`` is the first voice heard for the whole session.

Measured on the two diarization references in ``../shared/eval/diarization``
with the live segmenter's default 4 s / 12 s chunks: window-level DER 0.085
(2/2 speakers) and 0.002 (3/3); with 15 s / 30 s chunks 0.060 and 0.001, as
whole-file diarization.  A greedy centroid tracker tried first got 0.128 (3
speakers for 2) at its best threshold and was sensitive to it.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from whispersg.diarization import cluster_embeddings, turns_from_windows
from whispersg.types import SpeakerCount, SpeakerTurn

logger = logging.getLogger(__name__)

# Windows kept for re-clustering (~15 min of speech at 0.6 s per window): bounds the cost of a commit.
MAX_HISTORY_WINDOWS = 1500
# An existing speaker claims a cluster only if the cluster holds at least this many of its earlier
# windows, and at least half as many as new ones (a few misplaced old windows do not hide a new voice).
MIN_SHARED_WINDOWS = 2
# A new speaker needs this many windows (~4.5 s of speech) in its first chunk; fewer joins the closest
# known speaker, so a cough or a short overlap does not found one (docs/decisions.md#live-online-speakers).
MIN_NEW_SPEAKER_WINDOWS = 6


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-8)


class OnlineSpeakers:
    """Assigns session-wide speaker labels to chunks as they are committed."""

    def __init__(self, embedder, max_speakers: Optional[int] = None) -> None:
        self.embedder = embedder
        self.max_speakers = max_speakers
        self._history = np.zeros((0, 0), dtype=np.float32)
        self._labels = np.zeros(0, dtype=int)
        self._count = 0

    @property
    def speaker_count(self) -> int:
        return self._count

    def label(self, audio: np.ndarray) -> list[SpeakerTurn]:
        """Speaker turns of one chunk, times relative to the chunk."""
        windows, embeddings = self.embedder.embed(audio)
        if not windows:
            return []
        combined = embeddings if not len(self._history) else np.concatenate([self._history, embeddings])
        if len(combined) < 2:
            labels = np.zeros(len(embeddings), dtype=int)
        else:
            labels = self._labels_for_new(combined)
        self._count = max(self._count, int(labels.max()) + 1)
        self._history = combined[-MAX_HISTORY_WINDOWS:]
        self._labels = np.concatenate([self._labels, labels])[-MAX_HISTORY_WINDOWS:]
        return turns_from_windows(windows, labels)

    def _labels_for_new(self, combined: np.ndarray) -> np.ndarray:
        config = self.embedder.clustering_config()
        clusters = cluster_embeddings(combined, config, SpeakerCount(max_speakers=self.max_speakers))
        earlier, new = clusters[: len(self._labels)], clusters[len(self._labels) :]
        fresh = combined[len(self._labels) :]
        labels = np.full(len(new), -1, dtype=int)
        # Largest clusters first, so a small one can join a voice founded in this same chunk.
        for cluster in sorted(np.unique(new), key=lambda c: -int((new == c).sum())):
            members = new == cluster
            known = self._labels[earlier == cluster]
            if len(known) >= max(MIN_SHARED_WINDOWS, 0.5 * int(members.sum())):
                labels[members] = int(np.bincount(known).argmax())
            elif int(members.sum()) < MIN_NEW_SPEAKER_WINDOWS and (self._count or (labels >= 0).any()):
                # Too little speech to found a speaker on: it belongs to the closest known voice.
                labels[members] = self._closest_speaker(fresh[members], fresh, labels)
            else:
                labels[members] = self._count
                logger.debug("new speaker SPEAKER_%02d", self._count)
                self._count += 1
        return labels

    def _closest_speaker(self, vectors: np.ndarray, fresh: np.ndarray, labels: np.ndarray) -> int:
        """The speaker whose windows so far (earlier chunks and this one's assigned) are closest to ``vectors``."""
        assigned = labels >= 0
        pool = fresh[assigned] if not len(self._history) else np.concatenate([self._history, fresh[assigned]])
        pool_labels = np.concatenate([self._labels, labels[assigned]])
        centre = _unit(vectors.mean(axis=0))
        scores = {int(label): float(_unit(pool[pool_labels == label].mean(axis=0)) @ centre)
                  for label in np.unique(pool_labels)}
        return max(scores, key=scores.get)
