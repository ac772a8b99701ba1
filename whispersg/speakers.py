"""Speaker assignment: put diarization labels on words and segments.

Follows WhisperX's ``assign_word_speakers``: each word takes the speaker whose
turns overlap it most (or, with no overlap, the nearest turn), and a segment
takes the speaker of most of its words.  Unlike WhisperX, a segment whose
words change speaker is split at each change, so one subtitle never mixes two
people.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from whispersg.types import Segment, SpeakerTurn, Word


def speaker_at(start: float, end: float, turns: list[SpeakerTurn]) -> Optional[str]:
    """The speaker who talks most between ``start`` and ``end`` (nearest turn when none does)."""
    if not turns:
        return None
    overlap: Counter[str] = Counter()
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] += shared
    if overlap:
        return overlap.most_common(1)[0][0]
    middle = (start + end) / 2
    return min(turns, key=lambda t: 0.0 if t.start <= middle <= t.end else min(abs(t.start - middle), abs(t.end - middle))).speaker


def assign_speakers(segments: list[Segment], turns: list[SpeakerTurn], split_on_change: bool = True) -> list[Segment]:
    """Label every word and segment; split segments where the speaker changes between words."""
    if not turns:
        return segments
    ordered = sorted(turns, key=lambda t: t.start)
    out: list[Segment] = []
    for segment in segments:
        for word in segment.words:
            if word.start is not None and word.end is not None:
                word.speaker = speaker_at(word.start, word.end, ordered)
        timed = [w for w in segment.words if w.speaker]
        if not timed:
            segment.speaker = speaker_at(segment.start, segment.end, ordered)
            out.append(segment)
            continue
        if not split_on_change:
            segment.speaker = Counter(w.speaker for w in timed).most_common(1)[0][0]
            out.append(segment)
            continue
        out.extend(_split_by_speaker(segment))
    return out


def _split_by_speaker(segment: Segment) -> list[Segment]:
    runs: list[list[Word]] = []
    for word in segment.words:
        # Untimed words stay with the run they sit in.
        if runs and (word.speaker is None or word.speaker == runs[-1][-1].speaker or runs[-1][-1].speaker is None):
            runs[-1].append(word)
        else:
            runs.append([word])
    runs = _absorb_short_runs(runs)
    if len(runs) == 1:
        segment.speaker = Counter(w.speaker for w in segment.words if w.speaker).most_common(1)[0][0]
        return [segment]
    pieces = []
    for run in runs:
        piece = segment.with_words(run)
        speaker = Counter(w.speaker for w in run if w.speaker).most_common(1)
        piece.speaker = speaker[0][0] if speaker else None
        pieces.append(piece)
    return pieces


def _absorb_short_runs(runs: list[list[Word]]) -> list[list[Word]]:
    """A lone word flipping speaker between two runs of the same speaker is noise: merge it back."""
    changed = True
    while changed and len(runs) > 2:
        changed = False
        for index in range(1, len(runs) - 1):
            before, middle, after = runs[index - 1], runs[index], runs[index + 1]
            if len(middle) == 1 and before[-1].speaker == after[0].speaker:
                for word in middle:
                    word.speaker = before[-1].speaker
                runs[index - 1 : index + 2] = [before + middle + after]
                changed = True
                break
    return runs
