"""Vetting an untrusted SoundFont (.sf2) before tinysoundfont parses it in this process.

tinysoundfont (TinySoundFont's `tsf_load`) follows the index fields of the `pdta` records without
checking them: a preset bag whose generator index points past the `pgen` list, an instrument
whose bag index points past `ibag`, and the like, make it read outside its arrays and die with
SIGSEGV, taking the caller with it. Two guards, both naming the file:

1. `check_pdta(path)`: the RIFF layout and every index of the hydra (phdr -> pbag -> pgen/pmod,
   inst -> ibag -> igen/imod, instrument and sample ids, sample ranges) is checked in Python,
   so the known crashes become a ValueError that says which record points where.
2. `probe_in_child(path)`: the font is then loaded once by tinysoundfont in a child process; a
   crash there (anything the checks miss) is a ValueError naming the signal, not a dead caller.

Public API: `check_pdta(path)`, `probe_in_child(path, timeout_s)`, `vet_soundfont(path)`.
"""
from __future__ import annotations

import signal
import struct
import subprocess
import sys
from pathlib import Path

RECORD_BYTES = {"phdr": 38, "pbag": 4, "pmod": 10, "pgen": 4, "inst": 22, "ibag": 4, "imod": 10,
                "igen": 4, "shdr": 46}
GEN_INSTRUMENT, GEN_SAMPLE_ID = 41, 53
PROBE = "import sys, tinysoundfont; tinysoundfont.Synth(samplerate=16000).sfload(sys.argv[1])"


def _chunks(data: bytes, start: int, end: int, path: Path):
    """(id, payload offset, payload size) of the RIFF chunks in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if pos + 8 + size > end:
            raise ValueError(f"{path}: chunk {chunk_id!r} at byte {pos} runs past its container")
        yield chunk_id, pos + 8, size
        pos += 8 + size + (size & 1)


def _u16(data: bytes, offset: int) -> int:
    return struct.unpack_from("<H", data, offset)[0]


def _check_indices(path: Path, data: bytes, table: dict, owner: str, field: int, target: str) -> None:
    """Records of `owner` hold, at byte `field`, non-decreasing indices into `target` that stay
    within it (the terminal record included)."""
    offset, count = table[owner]
    size, limit, previous = RECORD_BYTES[owner], table[target][1] - 1, 0
    for record in range(count):
        index = _u16(data, offset + record * size + field)
        if index < previous or index > limit:
            raise ValueError(f"{path}: bad soundfont: {owner} record {record} points at {target} "
                             f"record {index} ({'decreasing' if index < previous else 'past the last, ' + str(limit)})")
        previous = index


def check_pdta(path: str | Path) -> None:
    """Raise ValueError naming the file and the record when the font's structure or any hydra
    index is out of bounds (what makes tinysoundfont read outside its arrays)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ValueError(f"{path}: not a SoundFont (no RIFF sfbk header)")
    lists = {data[offset:offset + 4]: (offset + 4, offset + size)
             for chunk_id, offset, size in _chunks(data, 12, len(data), path) if chunk_id == b"LIST"}
    if b"pdta" not in lists or b"sdta" not in lists:
        raise ValueError(f"{path}: bad soundfont: no pdta or sdta list")
    n_samples = sum(size // 2 for chunk_id, _, size in _chunks(data, *lists[b"sdta"], path) if chunk_id == b"smpl")
    table = {}
    for chunk_id, offset, size in _chunks(data, *lists[b"pdta"], path):
        name = chunk_id.decode("latin-1")
        if name in RECORD_BYTES:
            if size % RECORD_BYTES[name] or size < 2 * RECORD_BYTES[name] and name not in ("pmod", "imod"):
                raise ValueError(f"{path}: bad soundfont: {name} is {size} bytes, not whole records "
                                 f"of {RECORD_BYTES[name]} (with a terminal one)")
            table[name] = (offset, size // RECORD_BYTES[name])
    missing = sorted(set(RECORD_BYTES) - set(table))
    if missing:
        raise ValueError(f"{path}: bad soundfont: pdta lacks {', '.join(missing)}")
    for owner, field, target in (("phdr", 24, "pbag"), ("pbag", 0, "pgen"), ("pbag", 2, "pmod"),
                                 ("inst", 20, "ibag"), ("ibag", 0, "igen"), ("ibag", 2, "imod")):
        _check_indices(path, data, table, owner, field, target)
    for gens, operator, target in (("pgen", GEN_INSTRUMENT, "inst"), ("igen", GEN_SAMPLE_ID, "shdr")):
        offset, count = table[gens]
        for record in range(count):
            if _u16(data, offset + 4 * record) == operator:
                index = _u16(data, offset + 4 * record + 2)
                if index >= table[target][1] - 1:
                    raise ValueError(f"{path}: bad soundfont: {gens} record {record} names {target} "
                                     f"{index}, there are {table[target][1] - 1}")
    offset, count = table["shdr"]
    for record in range(count - 1):
        start, end = struct.unpack_from("<II", data, offset + 46 * record + 20)
        if not start <= end <= n_samples:
            raise ValueError(f"{path}: bad soundfont: shdr record {record} spans samples {start}..{end}, "
                             f"the font holds {n_samples}")


def probe_in_child(path: str | Path, timeout_s: float = 300.0) -> None:
    """Load the font with tinysoundfont in a child process; raise ValueError naming the file when
    the child crashes, fails or hangs."""
    try:
        result = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True,
                                timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ValueError(f"cannot load soundfont {path}: tinysoundfont took more than {timeout_s:g} s") from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        raise ValueError(f"cannot load soundfont {path}: tinysoundfont crashed parsing it ({name})")
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise ValueError(f"cannot load soundfont {path}: {last}")


def vet_soundfont(path: str | Path) -> None:
    """`check_pdta`, then `probe_in_child`: after this, loading the font in-process is safe from
    the parser crashes known and unknown."""
    check_pdta(path)
    probe_in_child(path)
