"""`latentsynth render` starts its bank worker first: the model loads in the worker while the
command's own imports (numpy, Numba, the engine) load beside it."""
import json
import subprocess
import sys
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import multiprocessing.process, sys
seen = []
original = multiprocessing.process.BaseProcess.start
def start(self):
    seen.append(sorted(name for name in ("numpy", "numba", "torch") if name in sys.modules))
    original(self)
multiprocessing.process.BaseProcess.start = start
from rt_engine.cli import main
if __name__ == "__main__":
    code = main(["render", "--midi", sys.argv[1], "--out", sys.argv[2], "--model", sys.argv[3], "--tail", "0.1"])
    print("loaded at spawn:", seen[0] if seen else None, "exit", code)
"""


def test_the_bank_worker_is_spawned_before_numpy_loads(tmp_path):
    model = tmp_path / "procedural"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"bank_source": "procedural"}))
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.Message("note_on", note=60, velocity=100, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=240))
    midi.save(tmp_path / "one.mid")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    result = subprocess.run([sys.executable, str(probe), str(tmp_path / "one.mid"), str(tmp_path / "one.wav"),
                             str(model)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "loaded at spawn: [] exit 0" in result.stdout, result.stdout + result.stderr
