"""MIDI input: a virtual input port named `latentsynth` plus chosen hardware ports, through
python-rtmidi (ALSA sequencer or JACK MIDI), feeding `MidiMapper`.

rtmidi calls our callback from its own thread for each message (no polling thread of ours); the
callback only translates the message into `EngineControl` calls, which push fixed-size records.
No MIDI system (no `/dev/snd/seq`, no JACK server): a warning and no ports, never an exception.

Port selection (`ports`): "auto" = the virtual port plus every hardware input (ALSA's
"Midi Through" loopback excluded); "none" = no MIDI at all; anything else = the virtual port plus
the hardware inputs whose names contain one of its comma-separated substrings (case-insensitive).
API (`api`): "alsa", "jack" or "auto" (ALSA, else JACK).

Public API: `MidiInput(engine, ports="auto", map_file=None, api="auto")` with `.start() ->
list[str]` (opened port names), `.stop()`, `.api_name`, `.mapper`.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

from rt_engine.control_api import EngineControl
from rt_engine.midi_map import MidiMapper, load_midi_map

VIRTUAL_PORT_NAME = "latentsynth"
APIS = ("auto", "alsa", "jack")


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
        self.mapper = MidiMapper(engine, load_midi_map(map_file))
        self.api_name = ""
        self.n_errors = 0
        self._inputs: list = []
        self._lock = threading.Lock()

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
        self.api_name = api_name
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
        """Close every port. Safe to call twice."""
        for midi_in in self._inputs:
            midi_in.cancel_callback()
            midi_in.close_port()
            midi_in.delete()
        self._inputs = []
