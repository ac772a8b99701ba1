"""LocalAgreement (whispersg.live.agreement): what is settled early, and that it is never rewritten."""

from __future__ import annotations

import pytest

from whispersg.live.agreement import StablePrefix, word_key
from whispersg.types import Segment, Word


def words(spec: str, start: float = 0.0, step: float = 0.4) -> list[Word]:
    """'a b c' → timed words, each ``step`` long, from ``start``."""
    return [Word(text, start + i * step, start + (i + 1) * step - 0.05) for i, text in enumerate(spec.split())]


def texts(items: list[Word]) -> list[str]:
    return [w.word for w in items]


def test_words_two_hypotheses_agree_on_are_settled():
    prefix = StablePrefix()
    settled, tail = prefix.update(words("so i went"))
    assert settled == [] and texts(tail) == ["so", "i", "went"]
    settled, tail = prefix.update(words("So, I went to the"))
    assert texts(settled) == ["So,", "I", "went"]  # case and punctuation do not matter; the newer spelling wins
    assert texts(tail) == ["to", "the"]
    settled, tail = prefix.update(words("So I went to a market"))
    assert texts(settled) == ["to"] and texts(tail) == ["a", "market"]
    assert texts(prefix.settled) == ["So,", "I", "went", "to"]


def test_agreed_words_wait_for_audio_after_them_and_must_agree_again():
    prefix = StablePrefix()
    prefix.update(words("so i went"))  # so 0-0.35, i 0.4-0.75, went 0.8-1.15
    # The hypotheses agree on all three, but only "so" and "i" end by 0.8 s (audio heard - right context).
    settled, tail = prefix.update(words("so i went to"), agree_until=0.8)
    assert texts(settled) == ["so", "i"] and texts(tail) == ["went", "to"]
    # "went" is agreed on, only young: no forced decode is due for it; "to" (1.2-1.55) was not agreed on.
    assert prefix.oldest_unagreed_end == pytest.approx(1.55)
    # "went" waited; the next hypothesis heard it differently, so it is not settled.
    settled, tail = prefix.update(words("so i want to the", step=0.4), agree_until=2.0)
    assert settled == [] and texts(tail) == ["want", "to", "the"]
    settled, tail = prefix.update(words("so i want to the shop"), agree_until=2.0)
    assert texts(settled) == ["want", "to", "the"] and texts(tail) == ["shop"]


def test_a_careful_decode_settles_waiting_agreed_words_as_agreed():
    prefix = StablePrefix()
    prefix.update(words("we can go"))
    # "go" (0.8-1.15) is agreed on but young; the bound settles it and "now", which was not agreed on.
    settled, tail = prefix.update(words("we can go now"), agree_until=0.8, settle_until=1.6)
    assert texts(settled) == ["we", "can", "go", "now"] and prefix.forced_count == 1
    assert tail == [] and prefix.oldest_unagreed_end is None


def test_a_changed_mind_settles_nothing_and_earlier_words_stay():
    prefix = StablePrefix()
    prefix.update(words("neither did i"))
    prefix.update(words("neither did i think"))
    assert texts(prefix.settled) == ["neither", "did", "i"]
    # The model now hears the start differently: settled words are not taken back.
    settled, tail = prefix.update(words("I need to design it"))
    assert settled == [] and texts(prefix.settled) == ["neither", "did", "i"]
    assert texts(tail) == ["design", "it"]  # only what lies after the settled words' time is compared


def test_drifted_timestamps_do_not_settle_a_word_twice():
    prefix = StablePrefix()
    prefix.update(words("new jersey"))
    prefix.update(words("new jersey now"))
    assert texts(prefix.settled) == ["new", "jersey"]
    # 'jersey' drifts past the boundary in the next hypotheses: it is the same word, not a new one.
    drifted = [Word("new", 0.0, 0.3), Word("jersey", 0.5, 0.9), Word("now", 0.9, 1.2), Word("though", 1.2, 1.6)]
    prefix.update(drifted)
    prefix.update(drifted)
    assert texts(prefix.settled) == ["new", "jersey", "now", "though"]


def test_a_speaker_repeating_a_word_is_kept():
    prefix = StablePrefix()
    prefix.update([Word("hello", 0.0, 0.5)])
    prefix.update([Word("hello", 0.0, 0.5), Word("hello", 1.2, 1.7)])
    prefix.update([Word("hello", 0.0, 0.5), Word("hello", 1.2, 1.7)])
    assert texts(prefix.settled) == ["hello", "hello"]


def test_finished_chunk_starts_with_the_settled_words_exactly():
    prefix = StablePrefix()
    prefix.update(words("oh hello i did"))
    prefix.update(words("oh hello i didn't know"))
    assert texts(prefix.settled) == ["oh", "hello", "i"]
    # The final (beam search) decode spells the start differently and goes on.
    final_words = words("Oh, hello. I didn't know you were there.")
    final = [Segment(0.0, 0.8, "Oh, hello.", words=final_words[:2]),
             Segment(0.8, 3.2, "I didn't know you were there.", words=final_words[2:])]
    merged = prefix.finish_chunk(final, chunk_end=3.5)
    assert [s.text for s in merged] == ["oh hello", "i didn't know you were there."]
    assert " ".join(s.text for s in merged).split()[:3] == ["oh", "hello", "i"]
    assert prefix.settled == [] and prefix.boundary is None


def test_settled_words_after_a_hard_cut_carry_over_to_the_next_chunk():
    prefix = StablePrefix()
    prefix.update(words("one two three four", start=10.0))
    prefix.update(words("one two three four five", start=10.0))
    assert texts(prefix.settled) == ["one", "two", "three", "four"]
    final = [Segment(10.0, 11.1, "one two three", words=words("one two three", start=10.0))]
    merged = prefix.finish_chunk(final, chunk_end=11.2)  # cut before 'four' (11.2–11.55)
    assert [s.text for s in merged] == ["one two three"]
    assert texts(prefix.settled) == ["four"]
    later = prefix.finish_chunk([Segment(11.2, 12.4, "four five", words=words("four five", start=11.2))], 13.0)
    assert [s.text for s in later] == ["four five"]


def test_a_chunk_with_no_final_words_keeps_its_settled_words():
    prefix = StablePrefix()
    prefix.update(words("makan already"))
    prefix.update(words("makan already lah"))
    merged = prefix.finish_chunk([], chunk_end=2.0)
    assert [s.text for s in merged] == ["makan already"]
    assert word_key("Lah!") == "lah"


def test_unsure_words_wait_for_the_final_decode():
    prefix = StablePrefix()
    first = [Word("along", 0.0, 0.4, 0.9), Word("greenville", 0.4, 1.0, 0.3), Word("drive", 1.0, 1.4, 0.9)]
    prefix.update(first)
    settled, tail = prefix.update(first)
    # Both hypotheses agree on all three, but 'greenville' is a guess: it and what follows stay open.
    assert texts(settled) == ["along"] and texts(tail) == ["greenville", "drive"]



def test_words_old_enough_are_settled_without_agreement():
    prefix = StablePrefix()
    first = [Word("along", 0.0, 0.4, 0.9), Word("greenville", 0.4, 1.0, 0.3), Word("drive", 1.0, 1.4, 0.3),
             Word("today", 2.5, 3.0, 0.3)]
    prefix.update(first)
    assert prefix.oldest_unagreed_end == 0.4
    # A careful decode with enough audio after its words: what ends by the bound is settled, even
    # unsure and unconfirmed; the word whose end is past it waits.
    careful = [Word("along", 0.0, 0.4, 0.9), Word("greenfield", 0.4, 1.0, 0.4), Word("drive", 1.0, 1.4, 0.4),
               Word("to", 2.5, 3.0, 0.4)]
    settled, tail = prefix.update(careful, settle_until=2.0)
    assert texts(settled) == ["along", "greenfield", "drive"] and texts(tail) == ["to"]
    assert prefix.oldest_unagreed_end == 3.0
