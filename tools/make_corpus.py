"""Render the embedded model's corpus: speech, music and noise clips, split by voice and song.

Everything is synthesised from Debian packages (espeak-ng, flite, festival + slt-hts, fluidsynth
with the GM soundfont on openttd-openmsx / planetblupi MIDI) or generated here, so the corpus is
reproducible offline. The test split holds voices and songs that never appear in training; recorded
speech (pocketsphinx-testdata, codec2-examples) is used for evaluation only.

Output (16 kHz mono float32) under OUT:
  speech_{train,test}.npy, music_{train,test}.npy, noise_{train,test}.npy  concatenated clips
  real_speech_test.npy                                                    recorded speech (eval)
  speech_recorded_train.npy      recorded prompts (asterisk-prompt-* .debs, see --recorded-debs)
  music_recorded_train.npy       recorded soundtracks (see --recorded-music-debs)
  test_mixtures.npz + test_mixtures.json                                 fixed 10 s mixtures
  manifest.json                                                          what went where

    python tools/make_corpus.py --out /work/data/corpus [--speech-minutes 40]

Recorded training speech (three female voices, it/fr/es telephone prompts, 8 kHz; research note
"More real recorded voices") comes from Debian packages fetched with apt-get download:
    cd DEBS && apt-get download asterisk-prompt-it-menardi-wav asterisk-prompt-fr-armelle \
        asterisk-prompt-es-co
    python tools/make_corpus.py --out /work/data/corpus --recorded-debs DEBS

Recorded training music (43 min: openclonk-data's 8 Music.ocg songs, asc-music's 3 tracks):
    cd DEBS && apt-get download openclonk-data asc-music
    python tools/make_corpus.py --out /work/data/corpus --recorded-music-debs DEBS

More voices, recorded noise and coded speech (issue 17; train split only, each writes one more
file and records it in extra_manifest.json; tools/train.py uses the files it finds):
    apt-get install festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph \
        festvox-suopuhe-lj festvox-suopuhe-mv festvox-itapc16k festvox-ca-ona-hts festvox-ru
    cd DEBS && apt-get download asterisk-core-sounds-es-wav flight-of-the-amazon-queen \
        beneath-a-steel-sky openclonk-data lincity-ng-data wesnoth-1.16-data
    python tools/make_corpus.py --out /work/data/corpus --recorded-es-debs DEBS \
        --festvox-minutes 16 --recorded-noise-debs DEBS --dialogue-debs DEBS --sky-debs DEBS
    python tools/make_corpus.py --out /work/data/corpus --codec-pool-minutes 6   # after the speech
The evaluation packages asterisk-core-sounds-en/fr/it/ru are refused (HELD_OUT_PACKAGES).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16000
SEED = 1234

ESPEAK_TRAIN_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc"]
ESPEAK_TEST_VOICES = ["en-gb-x-gbclan", "en-gb-x-gbcwmd"]
ESPEAK_TRAIN_VARIANTS = [
    "", "m1", "m2", "m3", "m5", "m7", "f1", "f2", "f3", "f5", "klatt", "klatt3", "Alex", "Andy",
    "Annie", "Belinda", "David", "Ed", "Gene", "John", "Linda", "Max", "Michael", "Mike", "Paul",
    "Rob", "Steph", "travis", "victor", "shelby", "grandma", "grandpa", "Alicia", "Denis",
]
ESPEAK_TEST_VARIANTS = ["m4", "m6", "f4", "klatt2", "Andrea", "Auntie", "Edward", "Lee", "Hugo"]
FLITE_TRAIN_VOICES = ["kal", "awb", "rms", "kal16"]
FLITE_TEST_VOICES = ["slt"]
FESTIVAL_TEST_VOICES = ["cmu_us_slt_arctic_hts"]

OPENMSX = Path("/usr/share/games/openttd/baseset/openmsx")
BLUPI = Path("/usr/share/planetblupi/music")
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

REAL_SPEECH = [
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0890.wav",
    "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
    "/usr/share/codec2/wav/wia_16kHz.wav",
    "/usr/share/codec2/raw/speech_orig_16k.wav",
    "/usr/share/codec2/wav/forig.wav",
    "/usr/share/codec2/wav/morig.wav",
]
# codec2's wav/david4.wav and wav/vk2tpm_004.wav are modem signals, not speech: never list them.


def sentences() -> list[str]:
    """Plain English sentences from the license texts every Debian system carries."""
    text = ""
    for p in sorted(Path("/usr/share/common-licenses").glob("*")):
        if p.is_file():
            text += " " + p.read_text(errors="ignore")
    text = re.sub(r"\s+", " ", text)
    out = []
    for s in re.split(r"(?<=[.;:!?])\s+", text):
        s = re.sub(r"[^A-Za-z,.' ]", " ", s)
        s = re.sub(r"\s+", " ", s).strip()
        if 40 <= len(s) <= 220 and sum(c.isalpha() for c in s) > 0.75 * len(s):
            out.append(s)
    return sorted(set(out))


def load_resampled(path: str | Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    return x.astype(np.float32)


def trim(x: np.ndarray, thresh: float = 1e-3) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > thresh)
    return x[idx[0] : idx[-1] + 1] if idx.size else x[:0]


def normalise(x: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2) + 1e-12)
    return (x * (0.1 / rms)).astype(np.float32) if rms > 1e-5 else x


def tts(engine: str, voice: str, text: str, rng: np.random.Generator, tmp: Path) -> np.ndarray:
    wav = tmp / "u.wav"
    if engine == "espeak":
        speed = int(rng.integers(125, 195))
        pitch = int(rng.integers(20, 80))
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        subprocess.run(cmd, check=True, capture_output=True)
    elif engine == "flite":
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True,
                       capture_output=True)
    else:
        (tmp / "u.txt").write_text(text)
        cmd = ["text2wave", "-eval", f"(voice_{voice})", "-o", str(wav), str(tmp / "u.txt")]
        subprocess.run(cmd, check=True, capture_output=True)
    return trim(load_resampled(wav))


def render_speech(plan: list[tuple[str, str]], sents: list[str], minutes: float,
                  rng: np.random.Generator, tmp: Path) -> tuple[np.ndarray, list[dict]]:
    """Round-robin over voices until `minutes` of speech, with short natural pauses between."""
    chunks, index, total, k = [], [], 0, 0
    while total < minutes * 60 * SR:
        engine, voice = plan[k % len(plan)]
        text = sents[int(rng.integers(len(sents)))]
        x = tts(engine, voice, text, rng, tmp)
        k += 1
        if x.size < SR // 2:
            continue
        x = normalise(x) * np.float32(10 ** (rng.uniform(-6, 3) / 20))
        gap = np.zeros(int(rng.uniform(0.1, 0.6) * SR), np.float32)
        index.append({"engine": engine, "voice": voice, "start": total, "len": int(x.size)})
        chunks += [x, gap]
        total += x.size + gap.size
    return np.concatenate(chunks), index


def render_music(midis: list[Path], tmp: Path) -> tuple[np.ndarray, list[dict]]:
    chunks, index, total = [], [], 0
    for m in midis:
        wav = tmp / "m.wav"
        subprocess.run(["fluidsynth", "-ni", "-g", "0.6", "-r", "44100", "-F", str(wav), SOUNDFONT,
                        str(m)], check=True, capture_output=True)
        x = normalise(trim(load_resampled(wav)))
        index.append({"song": m.name, "start": total, "len": int(x.size)})
        chunks.append(x)
        total += x.size
    return np.concatenate(chunks), index


def coloured(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^slope power spectrum."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    return np.fft.irfft(spec / f ** (slope / 2), n).astype(np.float32)


def synth_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary and slowly varying noises: coloured, hum, fan, crackle, hiss bursts, tones."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    kind = rng.choice(["white", "pink", "brown", "hum", "fan", "crackle", "rain", "tone"])
    if kind == "white":
        x = rng.standard_normal(n).astype(np.float32)
    elif kind == "pink":
        x = coloured(n, 1.0, rng)
    elif kind == "brown":
        x = coloured(n, 2.0, rng)
    elif kind == "hum":
        f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.98, 1.02)
        amps = rng.uniform(0.1, 1.0, 8) / np.arange(1, 9) ** rng.uniform(0.3, 1.2)
        x = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 6.3))
                for k, a in enumerate(amps))
        x = x + 0.05 * coloured(n, 1.0, rng) / 10
    elif kind == "fan":
        base = coloured(n, rng.uniform(0.5, 1.5), rng)
        lfo = 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 3) * t)
        blade = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 300) * t)
        x = base / (np.std(base) + 1e-9) * lfo + blade
    elif kind == "crackle":
        x = 0.05 * rng.standard_normal(n)
        clicks = rng.random(n) < rng.uniform(2, 40) / SR
        x = x + clicks * rng.standard_normal(n) * 8
    elif kind == "rain":
        x = rng.standard_normal(n) * (1 + 0.5 * coloured(n, 2.0, rng) / 30)
        x = np.convolve(x, np.ones(3) / 3, mode="same")
    else:
        freqs = rng.uniform(200, 4000, int(rng.integers(1, 4)))
        x = sum(np.sin(2 * np.pi * f * t) for f in freqs) + 0.02 * rng.standard_normal(n)
    return normalise(np.asarray(x, np.float32))


def make_noise(minutes: float, rng: np.random.Generator) -> np.ndarray:
    chunks, total = [], 0
    while total < minutes * 60 * SR:
        x = synth_noise(rng.uniform(3, 12), rng) * np.float32(10 ** (rng.uniform(-6, 3) / 20))
        chunks.append(x)
        total += x.size
    return np.concatenate(chunks)


def crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    s = int(rng.integers(0, max(1, x.size - n)))
    return x[s : s + n]


def scale_to_snr(target: np.ndarray, other: np.ndarray, snr_db: float) -> np.ndarray:
    pt, po = np.mean(target**2) + 1e-10, np.mean(other**2) + 1e-10
    return other * np.float32(np.sqrt(pt / po / 10 ** (snr_db / 20 * 2)))


def active_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A crop with at least half its frames above a low level, so scores are meaningful."""
    for _ in range(50):
        c = crop(x, n, rng)
        frames = c[: n // 400 * 400].reshape(-1, 400)
        if np.mean(np.sqrt(np.mean(frames**2, axis=1)) > 0.01) > 0.5:
            return c
    return c


def test_mixtures(speech: np.ndarray, real: np.ndarray, music: np.ndarray, noise: np.ndarray,
                  count: int, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """Fixed 10 s held-out mixtures with their sources, for eval_quality and the tests."""
    n = 10 * SR
    arrays, meta = {}, []
    kinds = ["speech+music", "speech+noise", "speech+music+noise", "real_speech+music",
             "real_speech+noise"]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        sp = active_crop(real if kind.startswith("real") else speech, n, rng)
        srcs = {"speech": sp}
        if "music" in kind:
            srcs["music"] = scale_to_snr(sp, active_crop(music, n, rng), -rng.uniform(-5, 5))
        if "noise" in kind:
            lo, hi = (5, 15) if "music" in kind else (-5, 10)  # speech-to-noise ratio, dB
            srcs["noise"] = scale_to_snr(sp, active_crop(noise, n, rng), rng.uniform(lo, hi))
        mix = sum(srcs.values())
        peak = max(1.0, float(np.max(np.abs(mix))) / 0.9)
        key = f"m{i:03d}"
        arrays[f"{key}/mixture"] = (mix / peak).astype(np.float32)
        for name, s in srcs.items():
            arrays[f"{key}/{name}"] = (s / peak).astype(np.float32)
        meta.append({"id": key, "kind": kind, "sources": sorted(srcs)})
    return arrays, meta


RECORDED_MUSIC_DEBS = ("openclonk-data", "asc-music")  # 8 + 3 recorded game soundtracks


# Recorded voices the held-out evaluation uses (issue 17): never train on them.
HELD_OUT_PACKAGES = ("asterisk-core-sounds-en", "asterisk-core-sounds-fr",
                     "asterisk-core-sounds-it", "asterisk-core-sounds-ru")


def _debs(deb_dir: Path, packages: tuple[str, ...]) -> list[Path]:
    """The .debs in deb_dir whose package name starts with one of ``packages``; refuses the
    held-out ones even when asked for them."""
    debs = sorted(d for d in deb_dir.glob("*.deb") if d.name.split("_")[0].startswith(packages))
    held = [d.name for d in debs if d.name.split("_")[0].startswith(HELD_OUT_PACKAGES)]
    if held:
        raise SystemExit(f"refusing held-out evaluation packages {held}")
    if not debs:
        raise SystemExit(f"no {' / '.join(packages)} .deb in {deb_dir}; fetch them with "
                         f"apt-get download {' '.join(packages)}")
    return debs


def _unpacked_recordings(deb_dir: Path, packages: tuple[str, ...], suffixes: tuple[str, ...],
                         exclude: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Unpack the named .debs from deb_dir; every file with one of ``suffixes`` (and whose path
    does not match the regex ``exclude``), 16 kHz mono."""
    debs = _debs(deb_dir, packages)
    clips = []
    with tempfile.TemporaryDirectory() as td:
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), td], check=True)
        for f in sorted(p for p in Path(td).rglob("*") if p.suffix.lower() in suffixes
                        and not (exclude and re.search(exclude, str(p.relative_to(td))))):
            if f.suffix.lower() == ".gsm":  # libsndfile reads raw GSM only inside WAV: use sox
                wav = Path(td) / "x.wav"
                subprocess.run(["sox", str(f), "-e", "float", str(wav)], check=True,
                               capture_output=True)
                f = wav
            clips.append(load_resampled(f))
    return clips, [d.name for d in debs]


def recorded_speech(deb_dir: Path) -> tuple[np.ndarray, list[str]]:
    """The asterisk prompt packages' prompts, trimmed and concatenated (16 kHz)."""
    clips, names = _unpacked_recordings(deb_dir, ("asterisk-prompt-",), (".wav", ".gsm"))
    chunks = []
    for x in clips:
        x = trim(x, 3e-3)
        if x.size > SR // 2:
            chunks += [normalise(x), np.zeros(SR // 5, np.float32)]
    return np.concatenate(chunks), names


def recorded_music(deb_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Recorded soundtracks (openclonk-data's Music.ocg, asc-music), concatenated (16 kHz)."""
    clips, names = _unpacked_recordings(deb_dir, RECORDED_MUSIC_DEBS, (".ogg", ".mp3"))
    # openclonk-data also ships sound effects as .ogg: keep only its music folder's songs
    songs = [normalise(trim(x)) for x in clips if x.size > 60 * SR]
    return np.concatenate(songs), names


# asterisk-core-sounds-es-wav (es_MX_f_Allison, 8 kHz): its tones, beeps and silences are no speech
RECORDED_ES_DEBS = ("asterisk-core-sounds-es-",)
RECORDED_ES_EXCLUDE = r"(^|/)(silence/|ascending-2tone|descending-2tone|beep|beeperr)"


def recorded_speech_es(deb_dir: Path) -> tuple[np.ndarray, list[str]]:
    """The es-MX asterisk core prompts (one more recorded female voice), 16 kHz."""
    clips, names = _unpacked_recordings(deb_dir, RECORDED_ES_DEBS, (".wav",),
                                        RECORDED_ES_EXCLUDE)
    chunks = []
    for x in clips:
        x = trim(x, 3e-3)
        if x.size > SR // 2:
            chunks += [normalise(x), np.zeros(SR // 5, np.float32)]
    return np.concatenate(chunks), names


# Festival voices in other languages (issue 17), each reading text in its own language.
# (voice, locale whose message catalogues supply the text, the encoding the voice reads)
# festvox-hi-nsk / -mr-nsk / -te-nsk are not used: in Debian bookworm they lack their
# *_phones.scm, fail to load, and installing them makes every text2wave call segfault.
FESTVOX_TRAIN_VOICES = (
    ("czech_dita", "cs", "iso-8859-2"), ("czech_krb", "cs", "iso-8859-2"),
    ("czech_machac", "cs", "iso-8859-2"), ("czech_ph", "cs", "iso-8859-2"),
    ("suo_fi_lj_diphone", "fi", "latin-1"), ("hy_fi_mv_diphone", "fi", "latin-1"),
    ("pc_diphone", "it", "latin-1"), ("upc_ca_ona_hts", "ca", "utf-8"),
    ("msu_ru_nsh_clunits", "ru", "utf-8"),
)
FESTVOX_PACKAGES = ("festvox-czech-dita", "festvox-czech-krb", "festvox-czech-machac",
                    "festvox-czech-ph", "festvox-suopuhe-lj", "festvox-suopuhe-mv",
                    "festvox-itapc16k", "festvox-ca-ona-hts", "festvox-ru")
# Translated message catalogues every Debian system carries (glib, gtk, iso-codes)
TEXT_CATALOGS = ("glib20", "gtk20", "iso_3166-1", "iso_639-2")


def native_sentences(lang: str, rng: np.random.Generator) -> list[str]:
    """Sentences of 60-200 characters in ``lang``, joined from translated UI strings."""
    import gettext

    frags = set()
    for dom in TEXT_CATALOGS:
        f = Path(f"/usr/share/locale/{lang}/LC_MESSAGES/{dom}.mo")
        if not f.exists():
            continue
        with f.open("rb") as fh:
            cat = gettext.GNUTranslations(fh)._catalog  # type: ignore[attr-defined]
        for k, v in cat.items():
            if k == "" or not isinstance(v, str):
                continue
            v = re.sub(r"%[-#0-9.]*[a-zA-Z]|<[^>]*>|&[a-z]+;|\S*[_/@\\=|]\S*", " ", v)
            v = re.sub(r"[^\w,.;:!?' -]|[\d_]", " ", v)
            v = re.sub(r"\s+", " ", v).strip(" ,.;:-'")
            if sum(c.isalpha() for c in v) >= 3:
                frags.add(v)
    pool = sorted(frags)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    out, cur = [], ""
    for frag in pool:
        cur = f"{cur}, {frag}" if cur else frag
        if len(cur) >= 60:
            out.append(cur[:200].rsplit(" ", 1)[0].rstrip(" ,.;:") + ".")
            cur = ""
    return out


def render_festvox(minutes: float, rng: np.random.Generator, tmp: Path,
                   ) -> tuple[np.ndarray, list[dict]]:
    """Round-robin over FESTVOX_TRAIN_VOICES until ``minutes`` of speech."""
    voices = [v for v in FESTVOX_TRAIN_VOICES
              if any(Path("/usr/share/festival/voices").glob(f"*/{v[0]}"))]
    texts = {lang: native_sentences(lang, rng) for lang in sorted({v[1] for v in voices})}
    chunks, index, total, k = [], [], 0, 0
    wav, txt = tmp / "u.wav", tmp / "u.txt"
    while total < minutes * 60 * SR:
        voice, lang, enc = voices[k % len(voices)]
        k += 1
        sents = texts[lang]
        txt.write_bytes(sents[int(rng.integers(len(sents)))].encode(enc, errors="ignore"))
        wav.unlink(missing_ok=True)
        r = subprocess.run(["text2wave", "-eval", f"(voice_{voice})", "-o", str(wav), str(txt)],
                           capture_output=True)
        if r.returncode or not wav.exists():
            raise SystemExit(f"text2wave failed for {voice}: {r.stderr[-300:]!r} (install "
                             f"{' '.join(FESTVOX_PACKAGES)})")
        try:
            x = trim(load_resampled(wav))
        except sf.LibsndfileError:  # a header-only file: the voice read nothing it knew
            continue
        if x.size < SR // 2:
            continue
        x = normalise(x) * np.float32(10 ** (rng.uniform(-6, 3) / 20))
        gap = np.zeros(int(rng.uniform(0.1, 0.6) * SR), np.float32)
        index.append({"voice": voice, "start": total, "len": int(x.size)})
        chunks += [x, gap]
        total += x.size + gap.size
    return np.concatenate(chunks), index


# Recorded ambiences and machine noise from game data packages (issue 17):
#   openclonk-data  Sound.ocg: Environment (wind, rain, birds, thunder, waterfall, earthquake),
#                   Liquids, Fire, Structures and Objects (machines), Hits; not its voices or UI
#   lincity-ng-data sounds/: traffic, industry, mines, farms, harbour, trains, crowds, water…;
#                   not the school / residential / shanty / commune clips (children, voices)
#   wesnoth-1.16-data sounds/ambient: birds, campfire, morning, night, ship (not its war drums)
RECORDED_NOISE_DEBS = ("openclonk-data", "lincity-ng-data", "wesnoth-1.16-data")
OPENCLONK_NOISE_GROUPS = ("Environment.ocg", "Liquids.ocg", "Fire.ocg", "Structures.ocg",
                          "Objects.ocg", "Hits.ocg")
LINCITY_EXCLUDE = r"School|University|Residential|Shanty|Commune|Click|Window|Build"


def c4group_files(data: bytes) -> list[tuple[str, bytes]]:
    """The files inside an OpenClonk .ocg group: a gzip stream (first two magic bytes changed)
    holding a scrambled 204-byte header and 316-byte entry records; child groups nest."""
    import struct
    import zlib

    buf = bytearray(data)
    if buf[:2] == b"\x1e\x8c":
        buf[:2] = b"\x1f\x8b"
    d = zlib.decompressobj(31).decompress(bytes(buf))

    def header(b: bytes) -> bytes:
        h = bytearray(b)
        for i in range(0, len(h) - 2, 3):
            h[i], h[i + 2] = h[i + 2], h[i]
        return bytes(c ^ 237 for c in h)

    out: list[tuple[str, bytes]] = []

    def walk(base: int, prefix: str) -> None:
        h = header(d[base : base + 204])
        if not h.startswith(b"RedWolf Design GrpFolder"):
            raise ValueError("not a c4group")
        n = struct.unpack("<i", h[36:40])[0]
        table = base + 204
        start = table + n * 316
        for i in range(n):
            rec = d[table + i * 316 : table + (i + 1) * 316]
            name = rec[:260].split(b"\0")[0].decode("latin-1")
            _, child, size, _, off = struct.unpack("<5i", rec[260:280])
            if child:
                walk(start + off, f"{prefix}{name}/")
            else:
                out.append((prefix + name, d[start + off : start + off + size]))

    walk(0, "")
    return out


def recorded_noise(deb_dir: Path) -> tuple[np.ndarray, list[str], list[str]]:
    """Recorded game ambiences (RECORDED_NOISE_DEBS), each clip trimmed and level-normalised,
    concatenated (16 kHz). Returns the audio, the .debs and the clip names."""
    import io

    debs = _debs(deb_dir, RECORDED_NOISE_DEBS)
    clips: list[tuple[str, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as td:
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), td], check=True)
        root = Path(td)
        for ocg in sorted(root.rglob("Sound.ocg")):
            for name, blob in c4group_files(ocg.read_bytes()):
                if name.startswith(OPENCLONK_NOISE_GROUPS) and name.lower().endswith(
                        (".ogg", ".wav")):
                    x, sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
                    x = x.mean(axis=1)
                    clips.append((f"openclonk:{name}", soxr.resample(x, sr, SR)
                                  if sr != SR else x))
        for f in sorted(root.rglob("lincity-ng/sounds/*.wav")):
            if not re.search(LINCITY_EXCLUDE, f.name):
                clips.append((f"lincity-ng:{f.name}", load_resampled(f)))
        for f in sorted(root.rglob("sounds/ambient/*.ogg")):
            if "wardrums" not in f.name:
                clips.append((f"wesnoth:{f.name}", load_resampled(f)))
    chunks, names = [], []
    for name, x in clips:
        x = trim(np.asarray(x, np.float32), 1e-3)
        if x.size >= SR:  # at least 1 s of sound: drops clicks and one-shot blips
            chunks.append(normalise(x))
            names.append(name)
    return np.concatenate(chunks), [d.name for d in debs], names


# Recorded game dialogue (issue 17): flight-of-the-amazon-queen's CD version, voiced by many
# actors (Joe King and some 80 other characters), 11.025 kHz. Its data file queen.1c (the
# ScummVM "rebuilt" format) is a "QTBL" table of 21-byte records (12-byte name, bundle byte,
# big-endian offset and size) followed by the files; compression byte 1 means the *.SB speech
# files are MP3, which libsndfile decodes.
DIALOGUE_DEBS = ("flight-of-the-amazon-queen",)


def queen_speech(data: bytes) -> list[tuple[str, bytes]]:
    import struct

    if data[:4] != b"QTBL":
        raise ValueError("not a rebuilt queen.1c")
    if data[12] != 1:
        raise ValueError(f"queen.1c compression {data[12]} (only MP3, 1, is handled)")
    n = struct.unpack(">H", data[13:15])[0]
    out = []
    for i in range(n):
        rec = data[15 + i * 21 : 15 + (i + 1) * 21]
        name = rec[:12].split(b"\0")[0].decode("latin-1")
        off, size = struct.unpack(">II", rec[13:21])
        if name.upper().endswith(".SB"):
            out.append((name, data[off : off + size]))
    return sorted(out)


def recorded_dialogue(deb_dir: Path, minutes: float | None, rng: np.random.Generator,
                      ) -> tuple[np.ndarray, list[str], int]:
    """All (or a random ``minutes`` of) the game's speech lines, trimmed, normalised, 16 kHz."""
    import io

    debs = _debs(deb_dir, DIALOGUE_DEBS)
    lines: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory() as td:
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), td], check=True)
        for f in sorted(Path(td).rglob("queen.1c")):
            lines += queen_speech(f.read_bytes())
    order = rng.permutation(len(lines))
    chunks, total, used = [], 0, 0
    for i in order:
        if minutes is not None and total >= minutes * 60 * SR:
            break
        x, sr = sf.read(io.BytesIO(lines[i][1]), dtype="float32", always_2d=True)
        x = trim(soxr.resample(x.mean(axis=1), sr, SR), 3e-3)
        if x.size > SR // 2:
            chunks += [normalise(x), np.zeros(SR // 5, np.float32)]
            total += x.size + SR // 5
            used += 1
    return np.concatenate(chunks), [d.name for d in debs], used


# Recorded game dialogue, second game (issue 17): beneath-a-steel-sky's CD version (v0.0372,
# freeware), a different cast (Robert Foster, Joey, LINC and some 50 more), 11.025 kHz. Format as
# ScummVM's sky engine reads it: sky.dnr is a little-endian uint32 count and 8-byte entries (uint16
# file number, 24-bit offset whose bit 23 means "times 16", 24-bit flags whose low 22 bits are the
# stored size, bit 23 "stored plain" and bit 22 "packed data carry their own header"); each file in
# sky.dsk starts with a 22-byte DataFileHeader, and bit 7 of its flag word marks an RNC method-1
# packed body (unpacked size (flag >> 8) << 16 | s_tot_size). Dialogue line (section, line) is
# file 50000 + SKY_SPEECH_SECTIONS[section] + line (Sound::startSpeech), raw unsigned 8-bit PCM
# after the header; almost every one is RNC packed (rnc_unpack below).
SKY_DEBS = ("beneath-a-steel-sky",)
SKY_SPEECH_SECTIONS = (0, 600, 1100, 2430, 3380, 4530, 5080, 5230)  # section starts; 6 has 150
SKY_SR = 11025


def _rnc_crc(data: bytes | bytearray) -> int:
    """CRC-16 (reflected polynomial 0xA001, start 0) that RNC headers carry."""
    tab = _RNC_CRC_TABLE
    crc = 0
    for b in data:
        crc = tab[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _rnc_crc_table() -> list[int]:
    tab = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0xA001 if n & 1 else n >> 1
        tab.append(n)
    return tab


_RNC_CRC_TABLE = _rnc_crc_table()


def rnc_unpack(data: bytes) -> bytes:
    """Unpack one RNC method-1 stream ("RNC\\1", big-endian unpacked and packed sizes, unpacked
    and packed CRC, leeway, block count, then the packed body). The body interleaves a bit stream
    of little-endian 16-bit words, read LSB first, with the literal bytes: a literal run is taken
    from the byte after the last word fetched. Each block has three Huffman tables (literal-run
    lengths, match offsets, match lengths: 5-bit count, 4-bit code lengths, canonical codes read
    bit-reversed; symbol s >= 2 stands for 2**(s-1) plus s-1 more bits), a 16-bit token count,
    then tokens of a literal run and, except the last, a match (offset + 1, length + 2)."""
    import struct

    if data[:4] != b"RNC\x01":
        raise ValueError("not an RNC method-1 stream")
    size, packed, crc_unpacked = struct.unpack(">IIH", data[4:14])
    blocks = data[17]
    src = bytes(data[18 : 18 + packed]) + b"\0\0\0\0"
    pos, bits, nbits = 0, 0, 0  # next unread byte; pending bits of the current word, their count

    def read(n: int) -> int:
        nonlocal pos, bits, nbits
        if n > nbits:
            bits |= (src[pos] | src[pos + 1] << 8) << nbits
            pos += 2
            nbits += 16
        v = bits & ((1 << n) - 1)
        bits >>= n
        nbits -= n
        return v

    def table(old: tuple) -> tuple:
        n = read(5)
        if not n:  # ScummVM's makeHufftable keeps the previous table then
            return old
        lengths = [read(4) for _ in range(n)]
        width = max(lengths)
        lut: list = [None] * (1 << width)
        code = 0
        for length in range(1, width + 1):
            for sym, ln in enumerate(lengths):
                if ln == length:
                    rev = int(f"{code >> (16 - length):0{length}b}"[::-1], 2)
                    lut[rev :: 1 << length] = [(length, sym)] * (1 << (width - length))
                    code += 1 << (16 - length)
        return lut, width

    def value(tab: tuple) -> int:
        nonlocal pos, bits, nbits
        lut, width = tab
        if width > nbits:
            bits |= (src[pos] | src[pos + 1] << 8) << nbits
            pos += 2
            nbits += 16
        hit = lut[bits & ((1 << width) - 1)]
        if hit is None:
            raise ValueError("RNC: no Huffman code matches")
        length, sym = hit
        bits >>= length
        nbits -= length
        return sym if sym < 2 else (1 << (sym - 1)) | read(sym - 1)

    out = bytearray()
    read(2)  # lock and key flags
    raw = dist = lens = ([], 0)
    for _ in range(blocks):
        raw, dist, lens = table(raw), table(dist), table(lens)
        counts = read(16)
        for left in range(counts, 0, -1):
            n = value(raw)
            if n:
                # a literal run comes from after the fetched words: give back whole pending words
                whole = nbits // 16 * 16
                pos -= whole // 8
                nbits -= whole
                bits &= (1 << nbits) - 1
                out += src[pos : pos + n]
                pos += n
            if left > 1:
                off = value(dist) + 1
                n = value(lens) + 2
                start = len(out) - off
                if start < 0:
                    raise ValueError("RNC: match before the start")
                if off >= n:
                    out += out[start : start + n]
                else:
                    out += (out[start:] * (n // off + 1))[:n]
    if len(out) != size or _rnc_crc(out) != crc_unpacked:
        raise ValueError("RNC: unpacked size or CRC mismatch")
    return bytes(out)


def sky_speech(dnr: bytes, dsk: bytes) -> list[tuple[str, bytes]]:
    """The dialogue lines of a Beneath a Steel Sky sky.dnr / sky.dsk pair: [(name, unsigned 8-bit
    11.025 kHz PCM)], name "s{section}_{line:04d}", sorted. The PCM is the (unpacked) file after
    its header; in v0.0372 every line is RNC packed and under 64 KiB, so this is exactly the
    s_tot_size - 22 bytes that ScummVM's Sound::startSpeech plays."""
    import struct

    count = struct.unpack("<I", dnr[:4])[0]
    base = 50000
    out = []
    for i in range(count):
        e = dnr[4 + 8 * i : 12 + 8 * i]
        nr = e[0] | e[1] << 8
        sec = next((s for s in range(7) if SKY_SPEECH_SECTIONS[s] <= nr - base
                    < SKY_SPEECH_SECTIONS[s + 1]), None)
        if sec is None:
            continue
        off = int.from_bytes(e[2:5], "little")
        flags = int.from_bytes(e[5:8], "little")
        off = (off & 0x7FFFFF) << 4 if off >> 23 & 1 else off
        blob = dsk[off : off + (flags & 0x3FFFFF)]
        if len(blob) < 22:
            raise ValueError(f"sky.dsk file {nr} is cut short")
        flag, total = struct.unpack("<H", blob[:2])[0], struct.unpack("<H", blob[12:14])[0]
        if not flags >> 23 & 1 and flag >> 7 & 1:
            body = rnc_unpack(blob[22:])
            if not flags >> 22 & 1:  # the header is not in the packed data: put it back
                body = blob[:22] + body
            if len(body) != (flag >> 8) << 16 | total:
                raise ValueError(f"sky.dsk file {nr}: unpacked size mismatch")
            blob = body
        out.append((f"s{sec}_{nr - base - SKY_SPEECH_SECTIONS[sec]:04d}", bytes(blob[22:])))
    return sorted(out)


def recorded_dialogue_sky(deb_dir: Path, rng: np.random.Generator,
                          ) -> tuple[np.ndarray, list[str], int]:
    """All of Beneath a Steel Sky's dialogue lines longer than 0.5 s, trimmed, normalised, 16 kHz
    (as recorded_dialogue)."""
    debs = _debs(deb_dir, SKY_DEBS)
    lines: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory() as td:
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), td], check=True)
        for dnr in sorted(Path(td).rglob("sky.dnr")):
            lines += sky_speech(dnr.read_bytes(), (dnr.parent / "sky.dsk").read_bytes())
    if not lines:
        raise SystemExit(f"no sky.dnr / sky.dsk speech in {[d.name for d in debs]}")
    chunks, used = [], 0
    for i in rng.permutation(len(lines)):
        pcm = (np.frombuffer(lines[i][1], np.uint8).astype(np.float32) - 128.0) / 128.0
        x = trim(soxr.resample(pcm, SKY_SR, SR), 3e-3)
        if x.size > SR // 2:
            chunks += [normalise(x), np.zeros(SR // 5, np.float32)]
            used += 1
    return np.concatenate(chunks), [d.name for d in debs], used


# Speech through real transmission and storage codecs (issue 17), decoded back to 16 kHz
# for tools/train.py: the target is the coded speech, as it sounds inside the mixture.
CODECS = (  # name, ffmpeg encoder arguments, container
    ("g722", ["-ar", "16000", "-c:a", "g722"], "wav"),
    ("gsm", ["-ar", "8000", "-c:a", "libgsm"], "gsm"),
    ("g711_mulaw", ["-ar", "8000", "-c:a", "pcm_mulaw"], "wav"),
    ("opus_12k", ["-ar", "16000", "-c:a", "libopus", "-b:a", "12k"], "ogg"),
    ("opus_24k", ["-ar", "48000", "-c:a", "libopus", "-b:a", "24k"], "ogg"),
    ("mp3_32k", ["-ar", "16000", "-c:a", "libmp3lame", "-b:a", "32k"], "mp3"),
    ("speex_8k", ["-ar", "8000", "-c:a", "libspeex", "-b:a", "8k"], "ogg"),
    ("g726_24k", ["-ar", "8000", "-c:a", "g726", "-b:a", "24k"], "wav"),
)


def codec_pool(out: Path, minutes: float, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """``minutes`` of the training speech (5 s crops drawn from every speech*_train.npy file in
    equal shares), then that pool through each of CODECS; concatenated."""
    files = sorted(p for p in out.glob("speech*_train.npy") if p.name != "speech_codec_train.npy")
    srcs = [np.load(p, mmap_mode="r") for p in files]
    n, count = 5 * SR, int(minutes * 60 / 5)
    picks = rng.integers(0, len(srcs), count)
    pool = np.concatenate([crop(np.asarray(srcs[i]), n, rng) for i in picks]).astype(np.float32)
    pool = pool / max(1.0, float(np.max(np.abs(pool))) / 0.9)
    coded = []
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "pool.wav"
        sf.write(str(src), pool, SR, subtype="FLOAT")
        for name, enc_args, ext in CODECS:
            enc = Path(td) / f"{name}.{ext}"
            dec = Path(td) / f"{name}.decoded.wav"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-ac", "1", *enc_args,
                            str(enc)], check=True)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(enc), "-ac", "1", "-ar",
                            str(SR), "-c:a", "pcm_f32le", str(dec)], check=True)
            y = load_resampled(dec)[: pool.size]
            coded.append(np.pad(y, (0, pool.size - y.size)))
    return np.concatenate(coded), {"seconds_per_codec": pool.size / SR,
                                   "codecs": [c[0] for c in CODECS],
                                   "sources": [p.name for p in files]}


def make_demo(corpus: Path, demo_wav: Path, fixture: Path) -> None:
    """The bundled demo (12 s, 48 kHz: recorded LibriVox speech from pocketsphinx-testdata, never
    trained on, over a held-out planetblupi song and a 50 Hz hum) and the test fixture (its first
    8 s at 16 kHz with the sources, float16)."""
    n = 12 * SR
    speech = np.concatenate([trim(load_resampled(p)) for p in REAL_SPEECH[:2]])
    speech = normalise(np.pad(speech, (SR // 4, max(0, n - speech.size - SR // 4)))[:n])
    music = np.load(corpus / "music_test.npy")[30 * SR : 30 * SR + n]
    music = scale_to_snr(speech, music, 0.0)
    t = np.arange(n) / SR
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 6)).astype(np.float32)
    hum = scale_to_snr(speech, hum, 15.0)
    mix = speech + music + hum
    peak = float(np.max(np.abs(mix))) / 0.9
    mix, speech, music, hum = (a / peak for a in (mix, speech, music, hum))
    demo_wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(demo_wav), soxr.resample(mix, SR, 48000), 48000, subtype="PCM_16")
    k = 8 * SR
    fixture.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(fixture, mixture=mix[:k].astype(np.float16),
                        speech=speech[:k].astype(np.float16), music=music[:k].astype(np.float16),
                        noise=hum[:k].astype(np.float16))


def write_real_speech(out: Path, manifest: dict) -> None:
    """Recorded speech for evaluation only (never trained on)."""
    files = [p for p in REAL_SPEECH if Path(p).exists()]
    real = np.concatenate([normalise(trim(load_resampled(p))) for p in files])
    np.save(out / "real_speech_test.npy", real)
    manifest["real_speech_test"] = {"seconds": real.size / SR, "files": files}


def write_test_mixtures(out: Path, count: int) -> None:
    arrays, meta = test_mixtures(np.load(out / "speech_test.npy"),
                                 np.load(out / "real_speech_test.npy"),
                                 np.load(out / "music_test.npy"), np.load(out / "noise_test.npy"),
                                 count, np.random.default_rng(SEED + 7))
    np.savez(out / "test_mixtures.tmp.npz", **arrays)
    (out / "test_mixtures.tmp.npz").replace(out / "test_mixtures.npz")
    (out / "test_mixtures.json").write_text(json.dumps(meta, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/work/data/corpus"))
    ap.add_argument("--speech-minutes", type=float, default=40.0)
    ap.add_argument("--test-speech-minutes", type=float, default=6.0)
    ap.add_argument("--test-mixtures", type=int, default=60)
    ap.add_argument("--recorded-debs", type=Path, default=None,
                    help="only write speech_recorded_train.npy from asterisk-prompt-*.deb here")
    ap.add_argument("--recorded-music-debs", type=Path, default=None,
                    help="only write music_recorded_train.npy from the "
                    f"{', '.join(RECORDED_MUSIC_DEBS)} .debs here")
    ap.add_argument("--recorded-es-debs", type=Path, default=None,
                    help="only write speech_recorded_es_train.npy from the "
                    "asterisk-core-sounds-es-wav .deb here")
    ap.add_argument("--festvox-minutes", type=float, default=None,
                    help="only write speech_festvox_train.npy: this much speech from the "
                    "festival voices in other languages (FESTVOX_PACKAGES, installed)")
    ap.add_argument("--recorded-noise-debs", type=Path, default=None,
                    help="only write noise_recorded_train.npy from the "
                    f"{', '.join(RECORDED_NOISE_DEBS)} .debs here")
    ap.add_argument("--dialogue-debs", type=Path, default=None,
                    help="only write speech_dialogue_train.npy (float16) from the "
                    "flight-of-the-amazon-queen .deb here")
    ap.add_argument("--dialogue-minutes", type=float, default=None,
                    help="with --dialogue-debs: a random this-many minutes of its lines "
                    "(default: all, about 5 h)")
    ap.add_argument("--sky-debs", type=Path, default=None,
                    help="only write speech_sky_train.npy (float16) from the "
                    "beneath-a-steel-sky .deb here (all its dialogue, about 1.9 h)")
    ap.add_argument("--codec-pool-minutes", type=float, default=None,
                    help="only write speech_codec_train.npy: this much training speech through "
                    "each codec in CODECS (run after the other speech files)")
    ap.add_argument("--mixtures-only", action="store_true",
                    help="only re-mix test_mixtures.* from the rendered clips")
    ap.add_argument("--demo", nargs=2, type=Path, metavar=("DEMO_WAV", "FIXTURE_NPZ"),
                    help="only write the demo mixture and the test fixture (needs the corpus)")
    args = ap.parse_args(argv)
    if args.recorded_debs:
        x, names = recorded_speech(args.recorded_debs)
        np.save(args.out / "speech_recorded_train.npy", x)
        print(f"recorded speech: {x.size / SR / 60:.1f} min from {names}", file=sys.stderr)
        return 0
    if args.recorded_music_debs:
        x, names = recorded_music(args.recorded_music_debs)
        np.save(args.out / "music_recorded_train.npy", x)
        print(f"recorded music: {x.size / SR / 60:.1f} min from {names}", file=sys.stderr)
        return 0
    extra = json.loads((args.out / "extra_manifest.json").read_text()) \
        if (args.out / "extra_manifest.json").exists() else {}
    if args.recorded_es_debs:
        x, names = recorded_speech_es(args.recorded_es_debs)
        np.save(args.out / "speech_recorded_es_train.npy", x)
        extra["speech_recorded_es_train"] = {"seconds": x.size / SR, "debs": names}
    if args.festvox_minutes:
        with tempfile.TemporaryDirectory() as td:
            x, idx = render_festvox(args.festvox_minutes, np.random.default_rng(SEED + 17),
                                    Path(td))
        np.save(args.out / "speech_festvox_train.npy", x)
        extra["speech_festvox_train"] = {"seconds": x.size / SR,
                                         "voices": sorted({d["voice"] for d in idx})}
    if args.recorded_noise_debs:
        x, names, clips = recorded_noise(args.recorded_noise_debs)
        np.save(args.out / "noise_recorded_train.npy", x)
        extra["noise_recorded_train"] = {"seconds": x.size / SR, "debs": names, "clips": clips}
    if args.dialogue_debs:
        x, names, used = recorded_dialogue(args.dialogue_debs, args.dialogue_minutes,
                                           np.random.default_rng(SEED + 29))
        np.save(args.out / "speech_dialogue_train.npy", x.astype(np.float16))
        extra["speech_dialogue_train"] = {"seconds": x.size / SR, "debs": names, "lines": used}
    if args.sky_debs:
        x, names, used = recorded_dialogue_sky(args.sky_debs, np.random.default_rng(SEED + 31))
        np.save(args.out / "speech_sky_train.npy", x.astype(np.float16))
        extra["speech_sky_train"] = {"seconds": x.size / SR, "debs": names, "lines": used}
    if args.codec_pool_minutes:
        x, info = codec_pool(args.out, args.codec_pool_minutes, np.random.default_rng(SEED + 23))
        np.save(args.out / "speech_codec_train.npy", x)
        extra["speech_codec_train"] = dict(info, seconds=x.size / SR)
    if args.recorded_es_debs or args.festvox_minutes or args.recorded_noise_debs \
            or args.codec_pool_minutes or args.dialogue_debs or args.sky_debs:
        (args.out / "extra_manifest.json").write_text(json.dumps(extra, indent=1))
        for k, v in extra.items():
            print(f"{k}: {v['seconds'] / 60:.1f} min", file=sys.stderr)
        return 0
    if args.demo:
        make_demo(args.out, *args.demo)
        return 0
    if args.mixtures_only:
        manifest = json.loads((args.out / "manifest.json").read_text())
        write_real_speech(args.out, manifest)
        write_test_mixtures(args.out, args.test_mixtures)
        (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    sents = sentences()
    order = rng.permutation(len(sents))
    n_test = len(sents) // 10
    test_sents = [sents[i] for i in order[:n_test]]
    train_sents = [sents[i] for i in order[n_test:]]
    manifest: dict = {"sample_rate": SR, "seed": SEED, "sentences": len(sents)}

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        train_plan = [("espeak", f"{v}+{var}" if var else v) for v in ESPEAK_TRAIN_VOICES
                      for var in ESPEAK_TRAIN_VARIANTS]
        train_plan += [("flite", v) for v in FLITE_TRAIN_VOICES] * 12
        train_plan = [train_plan[i] for i in rng.permutation(len(train_plan))]
        test_plan = [("espeak", f"{v}+{var}") for v in ESPEAK_TEST_VOICES
                     for var in ESPEAK_TEST_VARIANTS]
        test_plan += [("flite", v) for v in FLITE_TEST_VOICES] * 6
        test_plan += [("festival", v) for v in FESTIVAL_TEST_VOICES] * 6
        test_plan = [test_plan[i] for i in rng.permutation(len(test_plan))]
        for split, plan, minutes, ss in [("train", train_plan, args.speech_minutes, train_sents),
                                         ("test", test_plan, args.test_speech_minutes, test_sents)]:
            x, idx = render_speech(plan, ss, minutes, rng, tmp)
            np.save(args.out / f"speech_{split}.npy", x)
            manifest[f"speech_{split}"] = {"seconds": x.size / SR,
                                           "voices": sorted({f"{d['engine']}:{d['voice']}"
                                                             for d in idx})}
            print(f"speech {split}: {x.size / SR / 60:.1f} min", file=sys.stderr)

        for split, midis in [("train", sorted(OPENMSX.glob("*.mid"))),
                             ("test", sorted(BLUPI.glob("*.mid")))]:
            x, idx = render_music(midis, tmp)
            np.save(args.out / f"music_{split}.npy", x)
            manifest[f"music_{split}"] = {"seconds": x.size / SR, "songs": [d["song"] for d in idx]}
            print(f"music {split}: {x.size / SR / 60:.1f} min", file=sys.stderr)

    for split, minutes in [("train", 15.0), ("test", 3.0)]:
        x = make_noise(minutes, np.random.default_rng(SEED + (split == "test")))
        np.save(args.out / f"noise_{split}.npy", x)
        manifest[f"noise_{split}"] = {"seconds": x.size / SR}

    write_real_speech(args.out, manifest)
    write_test_mixtures(args.out, args.test_mixtures)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote corpus to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
