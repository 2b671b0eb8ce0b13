"""The prompt classes the embedded model knows, with the wordings it was trained on and held out.

Held-out wordings never reach training; the benchmark reports them separately to show that the
text encoder, not a lookup table, carries the prompt.
"""

from __future__ import annotations

CLASSES = ("speech", "music", "noise")

TRAIN_WORDINGS: dict[str, tuple[str, ...]] = {
    "speech": (
        "speech", "a person speaking", "someone talking", "a man speaking", "a woman speaking",
        "voice", "human voice", "talking", "spoken words", "a person talking", "narration",
        "the speaker", "vocals", "a voice reading", "conversation",
    ),
    "music": (
        "music", "piano", "a song playing", "instrumental music", "melody", "background music",
        "musical instruments", "a band playing", "the tune", "drums and bass", "guitar", "synth",
        "strings", "the soundtrack",
    ),
    "noise": (
        "noise", "hum", "static", "background noise", "hiss", "white noise", "buzzing",
        "electrical hum", "fan noise", "rumble", "crackling", "the noise floor",
    ),
}

HELDOUT_WORDINGS: dict[str, tuple[str, ...]] = {
    "speech": ("a man reading text aloud", "people talking", "the voice of a narrator"),
    "music": ("piano and drums playing a tune", "the music track", "an orchestra"),
    "noise": ("a humming sound", "machine noise", "hissing static"),
}


def all_wordings() -> list[str]:
    return [w for d in (TRAIN_WORDINGS, HELDOUT_WORDINGS) for ws in d.values() for w in ws]
