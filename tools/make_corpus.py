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


def _unpacked_recordings(deb_dir: Path, packages: tuple[str, ...], suffixes: tuple[str, ...],
                         ) -> tuple[list[np.ndarray], list[str]]:
    """Unpack the named .debs from deb_dir; every file with one of ``suffixes``, 16 kHz mono."""
    debs = sorted(d for d in deb_dir.glob("*.deb") if d.name.split("_")[0].startswith(packages))
    if not debs:
        raise SystemExit(f"no {' / '.join(packages)} .deb in {deb_dir}; fetch them with "
                         f"apt-get download {' '.join(packages)}")
    clips = []
    with tempfile.TemporaryDirectory() as td:
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), td], check=True)
        for f in sorted(p for p in Path(td).rglob("*") if p.suffix.lower() in suffixes):
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
