"""Hostile SoundFonts: each must be a clear error naming the file, never a crash of the caller.

Two corpora. A minimal font built here (one preset, one instrument, one 64-sample sine) is the
reproducer for tinysoundfont: setting its single preset bag's generator index to 0xFFFF makes
`tsf_load` read past the pgen array and die with SIGSEGV (checked in a child process). And, when
Debian's timgm6mb-soundfont is installed, index fields of TimGM6mb's pdta records patched to
out-of-range values (the mutations that crashed `dataset render-sf2`)."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training import sf2_check
from training.sf2_check import PROBE, check_pdta, probe_in_child
from training.sf2_render import RenderConfig, open_soundfont, render_soundfonts

TIMGM = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _list(kind: bytes, chunks: list[bytes]) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name(text: str) -> bytes:
    return text.encode().ljust(20, b"\0")


def tiny_sf2(pbag_gen_index: int = 0) -> bytes:
    """A minimal valid SoundFont 2 (about 1 kB); `pbag_gen_index` is the generator index of the
    one preset bag (0 is right; 0xFFFF is the crash)."""
    samples = (np.sin(2 * np.pi * np.arange(64) / 16) * 20000).astype("<i2").tobytes() + b"\0" * 92
    info = _list(b"INFO", [_chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"INAM", b"tiny\0\0")])
    sdta = _list(b"sdta", [_chunk(b"smpl", samples)])
    phdr = (_name("tiny") + struct.pack("<HHHIII", 0, 0, 0, 0, 0, 0)
            + _name("EOP") + struct.pack("<HHHIII", 0, 0, 1, 0, 0, 0))
    pbag = struct.pack("<HH", pbag_gen_index, 0) + struct.pack("<HH", 1, 0)
    pgen = struct.pack("<HH", 41, 0) + struct.pack("<HH", 0, 0)  # instrument 0, terminal
    inst = _name("tiny") + struct.pack("<H", 0) + _name("EOI") + struct.pack("<H", 1)
    ibag = struct.pack("<HH", 0, 0) + struct.pack("<HH", 1, 0)
    igen = struct.pack("<HH", 53, 0) + struct.pack("<HH", 0, 0)  # sample 0, terminal
    shdr = (_name("sine") + struct.pack("<IIIIIBbHH", 0, 64, 8, 56, 16000, 60, 0, 0, 1)
            + _name("EOS") + struct.pack("<IIIIIBbHH", 0, 0, 0, 0, 0, 0, 0, 0, 0))
    mod = b"\0" * 10
    pdta = _list(b"pdta", [_chunk(b"phdr", phdr), _chunk(b"pbag", pbag), _chunk(b"pmod", mod),
                           _chunk(b"pgen", pgen), _chunk(b"inst", inst), _chunk(b"ibag", ibag),
                           _chunk(b"imod", mod), _chunk(b"igen", igen), _chunk(b"shdr", shdr)])
    body = b"sfbk" + info + sdta + pdta
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _child_load(path: Path) -> int:
    return subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, timeout=60).returncode


def test_the_minimal_reproducer_crashes_tinysoundfont_and_is_caught_first(tmp_path):
    good, bad = tmp_path / "tiny.sf2", tmp_path / "tiny-bad-pbag.sf2"
    good.write_bytes(tiny_sf2())
    bad.write_bytes(tiny_sf2(pbag_gen_index=0xFFFF))
    assert len(bad.read_bytes()) < 2048
    check_pdta(good)
    synth, sfid = open_soundfont(good, 16_000)
    synth.program_select(0, sfid, 0, 0)
    assert _child_load(bad) < 0  # the bug: tinysoundfont dies on this file
    with pytest.raises(ValueError, match="tiny-bad-pbag.sf2.*pbag record 0 points at pgen record 65535"):
        open_soundfont(bad, 16_000)


def _pdta_records(data: bytes) -> dict[str, tuple[int, int]]:
    """name -> (payload offset, size) of the pdta sub-chunks of a font."""
    pos, found = 12, {}
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk_id == b"LIST" and data[pos + 8:pos + 12] == b"pdta":
            sub = pos + 12
            while sub < pos + 8 + size:
                sub_size = struct.unpack_from("<I", data, sub + 4)[0]
                found[data[sub:sub + 4].decode()] = (sub + 8, sub_size)
                sub += 8 + sub_size
        pos += 8 + size + (size & 1)
    return found


# (chunk, record, byte offset in the record, little-endian format, value)
TIMGM_MUTATIONS = [
    ("pbag", 80, 0, "<H", 0xFFFE), ("pbag", 3, 0, "<H", 0), ("pbag", 48, 0, "<H", 0x8000),
    ("inst", 154, 20, "<H", 0xFFFF), ("ibag", 250, 0, "<H", 0xFFFE), ("ibag", 1743, 0, "<H", 0x7FFF),
    ("phdr", 10, 24, "<H", 0xFFFF), ("pgen", 5, 2, "<H", 0x7FFF), ("igen", 0, 0, "<H", 53),
    ("shdr", 2, 24, "<I", 0xFFFFFFF0),
]


@pytest.mark.skipif(not TIMGM.is_file(), reason="timgm6mb-soundfont is not installed (.ci/install)")
@pytest.mark.parametrize("chunk, record, field, fmt, value", TIMGM_MUTATIONS)
def test_patched_timgm6mb_fonts_are_clear_errors_naming_the_file(tmp_path, chunk, record, field, fmt, value):
    data = bytearray(TIMGM.read_bytes())
    offset, _ = _pdta_records(bytes(data))[chunk]
    size = sf2_check.RECORD_BYTES[chunk]
    if chunk == "igen":  # make a sample-id generator name a sample past the list
        record = next(r for r in range(len(data)) if struct.unpack_from("<H", data, offset + 4 * r)[0] == 53)
        field, value = 2, 0xFFF0
    struct.pack_into(fmt, data, offset + record * size + field, value)
    path = tmp_path / f"timgm-{chunk}-{record}.sf2"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"timgm-{chunk}-{record}.sf2"):
        open_soundfont(path, 16_000)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    truncated = tmp_path / "truncated.sf2"
    truncated.write_bytes(tiny_sf2()[:300])
    foreign = tmp_path / "foreign.sf2"
    foreign.write_bytes(b"RIFF\0\0\0\0WAVEfmt ")
    for path in (truncated, foreign):
        with pytest.raises(ValueError, match=path.name):
            open_soundfont(path, 16_000)


def test_a_crash_the_checks_miss_is_caught_by_the_child_probe(tmp_path, monkeypatch):
    font = tmp_path / "tiny.sf2"
    font.write_bytes(tiny_sf2())
    monkeypatch.setattr(sf2_check, "PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(ValueError, match="tiny.sf2.*crashed.*SIGSEGV"):
        probe_in_child(font)


def test_render_sf2_refuses_a_broken_font_before_any_work(tmp_path):
    good, bad = tmp_path / "good.sf2", tmp_path / "bad.sf2"
    good.write_bytes(tiny_sf2())
    bad.write_bytes(tiny_sf2(pbag_gen_index=0xFFFF))
    config = RenderConfig(sf2_paths=(str(good), str(bad)), seconds=0.1, pitches=(60,), programs=(0,))
    with pytest.raises(ValueError, match="bad.sf2"):
        render_soundfonts(config, tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()
