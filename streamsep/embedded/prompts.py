"""The prompt classes the embedded model knows, with the wordings it was trained on and held out,
and the rule that decides which other prompts it can serve.

Held-out wordings never reach training; the benchmark reports them separately to show that the
text encoder, not a lookup table, carries the prompt.

Training gives every clip of a class a random wording of that class (tools/train.py), so each
wording means the whole class: "piano" and "guitar" mean all the music in the mixture, not that
instrument. A prompt is served (``judge``) when its MiniLM embedding is at least
``KNOWN_SIMILARITY`` (cosine) from some trained or held-out wording and nearer to one of them than
to every sound in ``UNSUPPORTED``. Measured with all-MiniLM-L6-v2 (nearest trained wording):

* held-out wordings 0.64 ("a man reading text aloud") to 0.82 ("people talking"); each is also
  nearer a trained wording than any unsupported sound, the tightest "piano and drums playing a
  tune" (0.695 to "drums and bass" against 0.690 to "drums");
* refused by the threshold: "a car engine" 0.28, "a dog barking" 0.41, "rain" 0.43 (nearest to
  "music": synthetic rain is among the training noises, but no wording names it), "applause"
  0.46, "a podcast host" 0.49 (speech, but the nearest wording is too far);
* refused only by ``UNSUPPORTED``: "drums" is 0.84 from "drums and bass" and "singing" 0.76 from
  "vocals", "birds singing" 0.56 from "vocals": MiniLM puts them next to a trained wording, yet
  the model hears drums only inside the music, never sung voices, and no birds;
* accepted paraphrases: "a lecture" 0.51 (speech), "jazz" 0.54, "rock music" 0.81 (music),
  "engine noise" 0.75, "hum of a fridge" 0.65 (noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


#: Below this cosine similarity to every known wording a prompt names something the model never
#: heard (see the module docstring for the measured values it sits between).
KNOWN_SIMILARITY = 0.5

#: Sounds the model cannot return on their own, by what it does with them instead (the class it
#: hears them inside, or None: outside every class). Only their embeddings are used: a prompt
#: nearer to one of these than to any known wording is refused. Two kinds need listing: parts of
#: a class that MiniLM puts right next to a trained wording (drums, singing), and everyday sounds,
#: so that their paraphrases stay refused even where they happen to score above the threshold.
UNSUPPORTED: dict[str | None, tuple[str, ...]] = {
    "music": ("drums", "a drum kit", "percussion", "bass guitar", "a bass line", "singing",
              "a singer", "a choir", "a violin", "a saxophone", "a trumpet", "a flute"),
    None: ("a dog barking", "birds singing", "a car engine", "traffic", "wind", "thunder",
           "applause", "laughter", "a baby crying", "footsteps", "a siren", "a phone ringing",
           "keyboard typing", "water running", "a door closing", "a cat meowing", "gunshots"),
}

#: One way to get any prompt served, named in every refusal.
OPEN_VOCABULARY_HINT = "a SAM-Audio model (--model facebook/sam-audio-small), which takes any text"


def all_wordings() -> list[str]:
    return [w for d in (TRAIN_WORDINGS, HELDOUT_WORDINGS) for ws in d.values() for w in ws]


def known_wordings() -> list[tuple[str, str]]:
    """(class, wording) for every trained and held-out wording: the prompts judged against."""
    return [(c, w) for d in (TRAIN_WORDINGS, HELDOUT_WORDINGS) for c in CLASSES for w in d[c]]


def unsupported_sounds() -> list[tuple[str | None, str]]:
    return [(c, w) for c, ws in UNSUPPORTED.items() for w in ws]


def normalize(text: str) -> str:
    """The key a prompt is cached and compared under: whitespace collapsed."""
    return " ".join(text.strip().split())


@dataclass(frozen=True)
class PromptVerdict:
    """Whether the embedded model can serve a prompt, and what it is nearest to."""

    text: str
    cls: str  # the class of the nearest known wording: what the prompt acts as
    wording: str
    similarity: float
    class_similarity: tuple[tuple[str, float], ...]  # best per class, most similar first
    #: the nearest unsupported sound when it is nearer than every known wording, and its class
    unsupported: str | None = None
    unsupported_cls: str | None = None
    unsupported_similarity: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.similarity >= KNOWN_SIMILARITY and self.unsupported is None

    @property
    def exact(self) -> bool:
        return self.similarity >= 1.0 - 1e-5

    def _nearest(self) -> str:
        return ", ".join(f"{c} {s:.2f}" for c, s in self.class_similarity)

    def refusal(self) -> str:
        """One line: why the prompt is refused, the nearest classes, and what to do instead."""
        t = self.text
        if self.unsupported is not None and self.unsupported_cls is not None:
            c = self.unsupported_cls
            what = t if self.unsupported == t else f"sounds like {self.unsupported!r}"
            why = (f"the embedded model cannot isolate {t!r}: it hears {what} only as part of "
                   f"{c} (nearest classes: {self._nearest()}); prompt {c} for all of the {c}")
            use = c
        else:
            why = (f"the embedded model knows only {', '.join(CLASSES[:-1])} and {CLASSES[-1]}, "
                   f"not {t!r} (nearest classes: {self._nearest()}); prompt one of those")
            use = self.cls
        return (f"{why}, pass --prompt-policy nearest to use it as {use} anyway, or use "
                f"{OPEN_VOCABULARY_HINT}")

    def note(self) -> str | None:
        """What to tell about a prompt that is served but is not one of the known wordings."""
        if self.exact:
            return None
        if not self.accepted:  # served only because the policy is "nearest"
            if self.unsupported is not None and self.similarity >= KNOWN_SIMILARITY:
                return (f"the embedded model hears {self.unsupported!r} only as part of "
                        f"{self.unsupported_cls}; {self.text!r} will act as a {self.cls} prompt "
                        f"(nearest wording {self.wording!r}, similarity {self.similarity:.2f})")
            return (f"the embedded model knows {', '.join(CLASSES)}; {self.text!r} is closest to "
                    f"{self.wording!r} (similarity {self.similarity:.2f}), so it will act as a "
                    f"{self.cls} prompt")
        return (f"the embedded model hears {self.text!r} as {self.cls} (nearest wording "
                f"{self.wording!r}, similarity {self.similarity:.2f})")


def judge(text: str, emb: np.ndarray, known: list[tuple[str, str]], known_emb: np.ndarray,
          unsupported: list[tuple[str | None, str]] | None = None,
          unsupported_emb: np.ndarray | None = None) -> PromptVerdict:
    """The verdict for a prompt from its unit embedding and those of the known wordings (and,
    optionally, of the unsupported sounds; a known wording itself never needs them)."""
    sims = known_emb @ emb
    k = int(np.argmax(sims))
    best: dict[str, float] = {}
    for (c, _), s in zip(known, sims, strict=True):
        best[c] = max(best.get(c, -1.0), float(s))
    ranked = tuple(sorted(best.items(), key=lambda cs: -cs[1]))
    verdict = PromptVerdict(normalize(text), known[k][0], known[k][1], float(sims[k]), ranked)
    if unsupported and unsupported_emb is not None and not verdict.exact:
        u = unsupported_emb @ emb
        j = int(np.argmax(u))
        if u[j] >= sims[k]:
            return PromptVerdict(verdict.text, verdict.cls, verdict.wording, verdict.similarity,
                                 ranked, unsupported[j][1], unsupported[j][0], float(u[j]))
    return verdict


def describe() -> list[str]:
    """The embedded model's prompts, for ``streamsep models``."""
    lines = [f"classes: {', '.join(CLASSES)} (each wording means the whole class: 'piano' is "
             "all the music)"]
    for c in CLASSES:
        lines.append(f"  {c}: {', '.join(TRAIN_WORDINGS[c])}")
        lines.append(f"    held out (never trained on, measured to work): "
                     f"{', '.join(HELDOUT_WORDINGS[c])}")
    lines.append(f"other text is served when it is at least {KNOWN_SIMILARITY} similar (MiniLM "
                 "cosine) to one of these wordings and nearer to them than to a sound the model "
                 "cannot isolate, e.g. " + ", ".join(repr(w) for w in UNSUPPORTED["music"][:2])
                 + ", " + ", ".join(repr(w) for w in UNSUPPORTED[None][:3])
                 + "; --prompt-policy nearest serves anything as its nearest class")
    return lines
