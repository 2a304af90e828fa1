"""MIDI input: a virtual input port named `latentsynth` plus chosen hardware ports, feeding
`MidiMapper`, by one of two paths (`path`, shown at start-up and in /status as `midi_input`):
- "native-jack": with the JACK audio backend's native callback and the JACK MIDI API, the port
  `latentsynth` belongs to the audio client and the callback reads it (`rt_engine.io.native_midi`):
  notes, bends and sustain sound at their event's frame in the same block. A thread, woken by
  the callback when events arrived, drains its event ring into the mapper, which does the rest
  (CC timbre, program change, RPN, gains) and the control-side work of what the callback applied.
  Hardware ports are connected to it (auto: JACK's physical MIDI outputs);
- "rtmidi": python-rtmidi (ALSA sequencer or JACK MIDI), for ALSA and the Python callback.

rtmidi calls our callback from its own thread for each message (no polling thread of ours); the
callback only translates the message into `EngineControl` calls, which push fixed-size records.
No MIDI system (no `/dev/snd/seq`, no JACK server): a warning and no ports, never an exception.

Port selection (`ports`): "auto" = the virtual port plus every hardware input (ALSA's
"Midi Through" loopback excluded); "none" = no MIDI at all; anything else = the virtual port plus
the hardware inputs whose names contain one of its comma-separated substrings (case-insensitive).
API (`api`): "alsa", "jack" or "auto" (ALSA, else JACK).

Public API: `MidiInput(engine, ports="auto", map_file=None, api="auto")` with `.start() ->
list[str]` (opened port names, rtmidi), `.wants_native_jack()`, `.native` (the callback's arrays),
`.start_native(backend) -> list[str]`, `.stop()`, `.path`, `.api_name`, `.mapper`.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

from rt_engine.io import native_midi as nm
from rt_engine.io.audio_backends import MIDI_PORT_NAME, connect_ports
from rt_engine.core.control_api import EngineControl
from rt_engine.io.midi_map import MidiMapper, load_midi_map

VIRTUAL_PORT_NAME = MIDI_PORT_NAME
APIS = ("auto", "alsa", "jack")


class _AppliedByCallback:
    """The mapper's engine on the native path: for an event the callback already applied
    (`applied`, with the bend it applied in `bend`), the engine's control-side work only; every
    other call goes to the engine as it is (a bend that differs, e.g. after an RPN 0 range
    change the callback had not seen yet, is sent again at the next block)."""

    def __init__(self, engine):
        self._engine = engine
        self.applied, self.bend = False, 0.0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def note_on(self, pitch, velocity, note_id=-1, channel=-1, at_frame=None) -> bool:
        return self._engine.note_on(pitch, velocity, note_id=note_id, channel=channel,
                                    at_frame=at_frame, applied=self.applied)

    def note_off(self, pitch=None, note_id=None, channel=-1, at_frame=None) -> bool:
        return self._engine.note_off(pitch=pitch, note_id=note_id, channel=channel,
                                     at_frame=at_frame, applied=self.applied)

    def pitch_bend(self, channel, semitones, at_frame=None) -> bool:
        applied = self.applied and semitones == self.bend
        return self._engine.pitch_bend(channel, semitones, at_frame=at_frame if applied else None,
                                       applied=applied)

    def sustain(self, channel, down, at_frame=None) -> bool:
        return True if self.applied else self._engine.sustain(channel, down, at_frame=at_frame)


class MidiInput:
    """Opens MIDI input ports and maps their messages onto `engine`. A bad `map_file` raises
    ValueError naming it at construction, before any port opens."""

    def __init__(self, engine: EngineControl, ports: str = "auto", map_file: str | Path | None = None,
                 api: str = "auto"):
        if api not in APIS:
            raise ValueError(f"MIDI API {api!r} unknown; choose one of {', '.join(APIS)}")
        if not ports:
            raise ValueError('MIDI ports must be "auto", "none" or a port-name substring')
        self.ports, self.api = ports, api
        self.engine = engine
        self.mapper = MidiMapper(engine, load_midi_map(map_file))
        self.native = nm.NativeMidi(self.mapper.map)
        self._applied = _AppliedByCallback(engine)
        self.api_name = ""
        self.path = "none"
        self.n_errors = 0
        self._inputs: list = []
        self._lock = threading.Lock()
        self._drainer: threading.Thread | None = None
        self._stop_drain = threading.Event()

    def wants_native_jack(self) -> bool:
        """True when MIDI may be read by the native JACK callback: ports are asked for and the
        API is JACK (or auto without an ALSA sequencer, which auto would prefer)."""
        return self.ports != "none" and (
            self.api == "jack" or (self.api == "auto" and not os.path.exists("/dev/snd/seq")))

    def start_native(self, backend) -> list[str]:
        """After `backend.reads_midi(self.native)` and `backend.start`: drain the callback's
        events into the mapper and connect the chosen hardware ports to the callback's port;
        returns the port names. When the backend did not take MIDI after all (its native
        callback could not load), the rtmidi path starts instead."""
        if backend.native_midi is not self.native:
            return self.start()
        client = backend.client
        own = f"{client.name}:{MIDI_PORT_NAME}"
        opened = [MIDI_PORT_NAME]
        sources = [port.name for port in client.get_ports(is_midi=True, is_output=True)
                   if not port.name.startswith(client.name + ":")]
        if self.ports == "auto":
            physical = {port.name for port in client.get_ports(is_midi=True, is_output=True,
                                                                is_physical=True)}
            chosen = [(0, name) for name in sources if name in physical]
        else:
            chosen = self._select(sources)
        for _, name in chosen:
            connect_ports(client, name, own)
            opened.append(name)
        self.api_name, self.path = "JACK", "native-jack"
        self._stop_drain.clear()
        self._drainer = threading.Thread(target=self._drain_loop, name="latentsynth-midi",
                                         daemon=True)
        self._drainer.start()
        return opened

    def _drain_loop(self) -> None:
        while True:
            woken = self.native.wait(1.0)
            if self._stop_drain.is_set():
                return
            if woken:
                self.drain_native()

    def drain_native(self) -> None:
        """Control side of the native path: the callback's events, in order, into the mapper."""
        engine = self._applied
        self.mapper.engine = engine
        for row in self.native.drain():
            size = int(row[nm.E_SIZE])
            data = [int(b) for b in row[nm.E_B0:nm.E_B0 + size]]
            engine.applied, engine.bend = row[nm.E_APPLIED] > 0.5, float(row[nm.E_VALUE])
            try:
                with self._lock:
                    self.mapper.handle(data, at_frame=int(row[nm.E_FRAME]) if engine.applied else None)
            except Exception:  # a failing engine call must not end the drain
                self.n_errors += 1
            channel = data[0] & 0x0F
            self.native.params[nm.M_BEND_RANGE + channel] = self.mapper.channels[channel].bend_range

    def start(self) -> list[str]:
        """Open the virtual port and the chosen hardware ports; returns their names. No MIDI
        system: a warning and []. A substring that matches nothing: a warning listing the
        available ports (the virtual port still opens)."""
        if self._inputs:
            raise RuntimeError("MidiInput already started")
        if self.ports == "none":
            return []
        try:
            import rtmidi  # optional: MIDI input only when a port is asked for
        except ImportError as error:
            warnings.warn(f"MIDI input disabled: python-rtmidi is not importable ({error})", stacklevel=2)
            return []
        candidates = {"alsa": [("ALSA", rtmidi.API_LINUX_ALSA)], "jack": [("JACK", rtmidi.API_UNIX_JACK)]}
        order = candidates[self.api] if self.api != "auto" else candidates["alsa"] + candidates["jack"]
        reasons = []
        for name, api in order:
            if api not in rtmidi.get_compiled_api():
                reasons.append(f"{name}: not compiled into python-rtmidi")
                continue
            if api == rtmidi.API_LINUX_ALSA and not os.path.exists("/dev/snd/seq"):
                reasons.append(f"{name}: /dev/snd/seq does not exist")
                continue
            try:
                return self._open(rtmidi, name, api)
            except rtmidi.RtMidiError as error:
                self.stop()
                reasons.append(f"{name}: {error}")
        warnings.warn("MIDI input disabled: no MIDI system available (" + "; ".join(reasons)
                      + "). Start a JACK server or load the ALSA sequencer, or use --midi none.",
                      stacklevel=2)
        return []

    def _open(self, rtmidi, api_name: str, api: int) -> list[str]:
        opened = []
        virtual = rtmidi.MidiIn(api, VIRTUAL_PORT_NAME)
        virtual.open_virtual_port(VIRTUAL_PORT_NAME)
        virtual.set_callback(self._on_message)
        self._inputs.append(virtual)
        opened.append(VIRTUAL_PORT_NAME)
        self.api_name, self.path = api_name, "rtmidi"
        wanted = self._select(virtual.get_ports())
        for index, port_name in wanted:
            midi_in = rtmidi.MidiIn(api, VIRTUAL_PORT_NAME)
            midi_in.open_port(index, f"in_{len(opened)}")
            midi_in.set_callback(self._on_message)
            self._inputs.append(midi_in)
            opened.append(port_name)
        return opened

    def _select(self, available: list[str]) -> list[tuple[int, str]]:
        """(index, name) of the hardware inputs that `ports` asks for."""
        if self.ports == "auto":
            return [(i, name) for i, name in enumerate(available)
                    if "midi through" not in name.lower() and not name.startswith(VIRTUAL_PORT_NAME + ":")]
        wanted = [part.strip().lower() for part in self.ports.split(",") if part.strip()]
        chosen = [(i, name) for i, name in enumerate(available) if any(w in name.lower() for w in wanted)]
        if not chosen:
            warnings.warn(f"MIDI input: no port matches {self.ports!r}; available: "
                          f"{', '.join(available) or 'none'} (the virtual port {VIRTUAL_PORT_NAME!r} "
                          "is open)", stacklevel=3)
        return chosen

    def _on_message(self, event, _data=None) -> None:
        """rtmidi callback: event = (message bytes, delta seconds)."""
        message, _delta_s = event
        try:
            with self._lock:
                self.mapper.handle(message)
        except Exception:  # a failing engine call must not kill rtmidi's thread
            self.n_errors += 1

    def stop(self) -> None:
        """Close every port and stop draining the native path. Safe to call twice."""
        self._stop_drain.set()
        if self._drainer is not None:
            self.native.wake()
            self._drainer.join(2.0)
            self._drainer = None
        for midi_in in self._inputs:
            midi_in.cancel_callback()
            midi_in.close_port()
            midi_in.delete()
        self._inputs = []
