"""The latency floor: a bare Python sine synth as a JACK client, for benchmarks beside the engine.

`python -m tests.support.baseline_synth --osc-port N [--name latentsynth-baseline]` registers
`out` (audio) and `midi_in` (MIDI) and prints `ready`. A UDP thread sets a flag on an OSC
`/note/on` (any arguments) and clears it on `/panic`; the Python process callback plays a
0.5-amplitude cosine from the next block start while the flag is up (the first frame is already
loud, so the onset is exact). A MIDI note-on starts the tone at its event's frame, CC120 stops it.
This is what the engine's timing is compared with: half a period of block quantisation plus the
UDP hop, and the same Python-callback exposure to the machine's load.
"""
from __future__ import annotations

import argparse
import signal
import socket
import threading

import jack
import numpy as np

HZ = 440.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--osc-port", type=int, required=True)
    parser.add_argument("--name", default="latentsynth-baseline")
    args = parser.parse_args()

    client = jack.Client(args.name, no_start_server=True)
    out = client.outports.register("out")
    midi_in = client.midi_inports.register("midi_in")
    rate, block = int(client.samplerate), int(client.blocksize)
    phase_step = 2 * np.pi * HZ / rate
    state = {"on": False, "phase": 0.0}
    ramp = np.arange(block, dtype=np.float64)

    @client.set_process_callback
    def process(frames):
        start = 0 if state["on"] else frames
        for offset, event in midi_in.incoming_midi_events():
            data = bytes(event)
            if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0 and not state["on"]:
                state["on"], state["phase"], start = True, 0.0, offset
            elif len(data) == 3 and data[0] & 0xF0 == 0xB0 and data[1] == 120:
                state["on"] = False
        buffer = out.get_array()
        start = start if state["on"] else frames
        buffer[:start] = 0.0
        if start < frames:
            n = frames - start
            buffer[start:] = 0.5 * np.cos(state["phase"] + phase_step * ramp[:n])
            state["phase"] = (state["phase"] + phase_step * n) % (2 * np.pi)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.osc_port))

    def listen():
        while True:
            packet = sock.recv(1024)
            if packet.startswith(b"/note/on"):
                if not state["on"]:
                    state["phase"] = 0.0
                    state["on"] = True
            elif packet.startswith(b"/panic"):
                state["on"] = False

    threading.Thread(target=listen, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.activate()
    print("ready", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    client.deactivate()
    client.close()


if __name__ == "__main__":
    main()
