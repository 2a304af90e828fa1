"""A JACK client in the engine's place in the graph, for the latency bench's loaded baseline: a MIDI
input fed from the same sender as the engine's, an audio output into the capture and the system
playback, and a process callback in machine code that reads the MIDI buffer and writes silence.
So the graph keeps the engine's shape (the same edges, the same client count) without the
engine's code in it.

`stand_in_process` is a Numba `cfunc` (`int (*)(jack_nframes_t, void *)`) registered with libjack's
`jack_set_process_callback`; its user pointer is an int64 table: the address of
`jack_port_get_buffer`, the output port, the MIDI input port. It allocates nothing and touches no
Python object.

Run as a process (the engine is one):
    python -m tests.support.native_stand_in --server NAME [--midi-from PORT] [--name NAME]
It prints "ready" once its ports are connected, and exits when its stdin closes.
"""
from __future__ import annotations

import argparse
import sys

import jack
import numba
import numpy as np
from numba import carray, types

from rt_engine.io.audio_backends import connect_ports
from rt_engine.io.native_audio import _address, _call_port_get_buffer, _libjack, jack_address

T_GET_BUFFER, T_OUT, T_MIDI_IN = 0, 1, 2
N_TABLE = 3
NAME = "latentsynth-stand-in"


@numba.cfunc(types.int32(types.uint32, types.CPointer(types.int64)), cache=True, nogil=True)
def stand_in_process(n_frames, arg):
    """JACK process callback: take the MIDI input's buffer, as the engine does, and write silence."""
    table = carray(arg, (N_TABLE,))
    _call_port_get_buffer(table[T_GET_BUFFER], table[T_MIDI_IN], n_frames)
    out = _call_port_get_buffer(table[T_GET_BUFFER], table[T_OUT], n_frames)
    for i in range(n_frames):
        out[i] = 0.0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True, help="JACK server name")
    parser.add_argument("--name", default=NAME, help="client name")
    parser.add_argument("--midi-from", default=None, help="MIDI output port to connect to the MIDI input")
    args = parser.parse_args()
    client = jack.Client(args.name, no_start_server=True, servername=args.server)
    midi_in = client.midi_inports.register("midi_in")
    out = client.outports.register("out_1")
    lib = _libjack()
    table = np.zeros(N_TABLE, dtype=np.int64)
    table[T_GET_BUFFER] = _address(lib.jack_port_get_buffer)
    table[T_OUT], table[T_MIDI_IN] = jack_address(out), jack_address(midi_in)
    if lib.jack_set_process_callback(jack_address(client), stand_in_process.address, table.ctypes.data) != 0:
        print("jack_set_process_callback refused the stand-in's callback", file=sys.stderr)
        return 1
    client.activate()
    if args.midi_from:
        connect_ports(client, args.midi_from, midi_in)
    for target in client.get_ports(is_physical=True, is_input=True, is_audio=True)[:1]:
        connect_ports(client, out, target)
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes the pipe
    client.deactivate()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
