"""The real-time engine: implements `EngineControl` on top of the block kernel.

Control threads call the `EngineControl` methods; they push fixed-size records into the command
ring (`rt_engine.core.commands`) or hand timbre requests to the bank manager. The audio backend calls
`process(n_frames)` from its callback: that touches preallocated arrays only and calls the one
`nogil` kernel `rt_engine.core.voice_kernel.render_block`.

Staged allocation (SuperCollider's Stage1-4): `set_polyphony` allocates the new voice arrays on
the calling (control) thread and publishes them in `_staged_voices`, which only control writes;
the callback adopts a staged set that is not already its own (a copy without allocation) and swaps
the reference, and the old arrays are dropped later off the audio thread. A change staged while the
callback adopts the previous one is adopted at the next block.

One event stream: every control event is published once, as one record in the command ring
(`rt_engine.core.commands`), under the control lock; the block kernel drains it, and the stream layer
follows the same records from its thread (`EventFollower`), each at its frame plus the layer's
render-ahead. Events the native JACK callback already applied (MIDI read in the callback) are
published too, marked for the layers only.

Held notes: one table keyed by note id (`rt_engine.core.held_notes.HeldNotes`, bounded by the polyphony)
that `note_on`/`note_off`/`note_pitch` write once under the control lock; its ids travel in the
records (`held_id`: a note's own, and with every release the newest note still held, which a
monophonic layer falls back to), and the bank manager's boost reads the held pitches. A note
without an id gets one from its channel and pitch.

Latency the engine adds (reported by `status()["latency_s"]`): one block of scheduling (an
undated command waits for the next block start) plus the backend's declared output latency. The
limiter has no look-ahead. A stream layer's own render-ahead is reported as `gru_latency_s`.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from rt_engine.core import voice_kernel as vk
from rt_engine.core.commands import (
    COMMAND_DTYPE, DEFAULT_ADSR, GAIN_GRU, GAIN_MASTER, GAIN_SAMPLER, N_CHANNELS, PENDING_CAPACITY,
    CommandKind, CommandQueue, Counter, EventFollower, channel_slot,
)
from rt_engine.core.held_notes import HeldNotes, pitch_note_id

GAIN_LAYERS = {"sampler": GAIN_SAMPLER, "gru": GAIN_GRU, "master": GAIN_MASTER}
GRU_RING_CAPACITY = 16384


class _NoBanks:
    """The least bank provider an engine runs on (one empty slot of one silent row): what
    `load_kernels` renders through."""

    grid_n = 2
    initial_point = (0.5, 0.5)
    loop_start, loop_end = vk.HEAD_PAD, vk.HEAD_PAD + 64
    last_bank_s = float("nan")

    def __init__(self):
        self.slots = np.zeros((1, vk.N_SLOT_FIELDS))
        self.row_ready = np.zeros((1, 1), dtype=np.uint8)
        self.row_pitch = np.full(1, 60.0)
        self.banks = np.zeros((1, 1, self.loop_end + vk.HEAD_PAD), dtype=np.float32)

    def bind(self, select) -> None:
        pass


def load_kernels(sample_rate: int = 48_000) -> None:
    """Load (or compile) the block kernel's machine code before any bank exists, so that it overlaps
    with the bank worker's start (`render`, `serve`); an `Engine` made afterwards starts at once."""
    Engine(_NoBanks(), sample_rate, max_block=64, n_voices=1)


class Engine:
    """Polyphonic sampler engine with an optional stream layer, played through `EngineControl`.

    `banks` is the bank provider (`rt_engine.banks.bank_manager.BankManager`; tests use fixed banks):
    it owns the slot arrays the kernel reads and answers timbre requests."""

    def __init__(self, banks, sample_rate: int = 48_000, max_block: int = 1024,
                 n_voices: int = 64, stream_layer=None, queue_capacity: int = 4096,
                 master_gain: float = 0.7, sampler_gain: float = 0.5,
                 velocity_exponent: float = 1.6, gru_gain: float = 0.0):
        if not 8_000 <= sample_rate <= 192_000:
            raise ValueError(f"sample_rate must be 8000..192000 Hz, got {sample_rate}")
        if not 16 <= max_block <= 8192:
            raise ValueError(f"max_block must be 16..8192 frames, got {max_block}")
        self.sample_rate = int(sample_rate)
        self.max_block = int(max_block)
        self.banks = banks
        self.queue = CommandQueue(queue_capacity)
        self.output_latency_s = 0.0
        self._xruns = np.zeros(1, dtype=np.int64)  # counted by the backend (native or Python)
        self.audio_callback = "none"  # which callback renders: "native" or "python" (backend)
        self.midi_input = "none"      # which MIDI path runs: "native-jack", "rtmidi" (serve)
        self.native_block = None      # rt_engine.io.native_audio.NativeBlock when a native one does
        self.block = self.max_block
        self._pending = np.zeros(PENDING_CAPACITY, dtype=COMMAND_DTYPE)
        self._due = np.zeros(PENDING_CAPACITY, dtype=np.int64)
        self._counters = np.zeros(Counter.N, dtype=np.int64)
        self._channels = np.zeros((N_CHANNELS, vk.N_CHANNEL_FIELDS))
        self._params = np.zeros(vk.N_PARAMS)
        self._init_params(master_gain, sampler_gain, velocity_exponent, gru_gain)
        self._voice_arrays = self._allocate_voices(n_voices)
        self._staged_voices = None
        self._retired_voices = None
        n_slots = banks.slots.shape[0]
        self._work = np.zeros(2 * n_slots + 2)
        self._mix = np.zeros((2, self.max_block))
        self._bend_curve = np.zeros((N_CHANNELS, self.max_block))
        self._out = np.zeros((2, self.max_block), dtype=np.float32)
        self._sinc = vk.make_sinc_table()
        self._cpu = np.zeros(2)            # (smoothed load, peak load) of the callback
        self._clock = np.full(1, np.nan)   # estimated wall time of frame 0 (s since epoch)
        self._held = HeldNotes(self.polyphony)  # the one held-note table (rt_engine.core.held_notes)
        self._control_lock = threading.Lock()
        self._timbre_generation = 0
        self.stream_layer = stream_layer
        self._gru_ring = np.zeros(GRU_RING_CAPACITY if stream_layer else 1, dtype=np.float32)
        self._gru_pos = np.zeros(2, dtype=np.int64)
        self._params[vk.P_GRU_PRESENT] = 1.0 if stream_layer else 0.0
        banks.bind(self.select_bank)
        self._warm_up()
        if stream_layer is not None:  # it follows the event stream from here on
            stream_layer.set_mix_gain(gru_gain)  # its starting gain: a layer at gain 0 is not computed
            stream_layer.start(self.sample_rate, self._gru_ring, self._gru_pos, EventFollower(self.queue))

    def _warm_up(self) -> None:
        """Load (or compile) the kernels now, not in an audio callback; then rewind."""
        scratch = self._allocate_voices(self.polyphony)
        vk.adopt_voices(self._voice_arrays[0], self._voice_arrays[1], scratch[0], scratch[1],
                        self._params[vk.P_FADE_FRAMES])
        self.process(self.max_block)
        self._gru_pos[:] = 0
        self._counters[:] = 0
        self._clock[0] = np.nan
        self._cpu[:] = 0.0

    # ---- set-up -------------------------------------------------------------------------
    def _init_params(self, master_gain, sampler_gain, velocity_exponent, gru_gain):
        p, rate = self._params, self.sample_rate
        p[vk.P_SAMPLE_RATE] = rate
        p[vk.P_GAIN_SAMPLER_T] = p[vk.P_GAIN_SAMPLER] = sampler_gain
        # The GRU voice starts muted (`/mix/gru 1` brings it in): the shipped 2x128 model is
        # within 50 cents on 5 of 6 notes only, too rough to sound under every sampler note.
        p[vk.P_GAIN_GRU_T] = p[vk.P_GAIN_GRU] = gru_gain
        p[vk.P_GAIN_MASTER_T] = p[vk.P_GAIN_MASTER] = master_gain
        p[vk.P_GAIN_SMOOTH] = np.exp(-1.0 / (0.005 * rate))
        p[vk.P_LIMIT_GAIN] = 1.0
        p[vk.P_LIMIT_CEILING] = 10 ** (-0.3 / 20)
        p[vk.P_LIMIT_RELEASE] = np.exp(-1.0 / (0.08 * rate))
        (p[vk.P_ATTACK_S], p[vk.P_DECAY_S], p[vk.P_SUSTAIN], p[vk.P_RELEASE_S]) = DEFAULT_ADSR
        (p[vk.P_GRID_ATTACK_S], p[vk.P_GRID_DECAY_S], p[vk.P_GRID_SUSTAIN], p[vk.P_GRID_RELEASE_S]) = DEFAULT_ADSR
        p[vk.P_EXACT_SLOT] = -1.0
        p[vk.P_VELOCITY_EXPONENT] = velocity_exponent
        p[vk.P_BEND_SMOOTH] = np.exp(-1.0 / (0.004 * rate))
        p[vk.P_FADE_FRAMES] = round(0.004 * rate)
        p[vk.P_XFADE_FRAMES] = round(0.05 * rate)
        x, y = self.banks.initial_point
        p[vk.P_TIMBRE_X] = p[vk.P_TIMBRE_TX] = x
        p[vk.P_TIMBRE_Y] = p[vk.P_TIMBRE_TY] = y
        p[vk.P_GRID_N] = self.banks.grid_n
        p[vk.P_LOOP_START], p[vk.P_LOOP_END] = self.banks.loop_start, self.banks.loop_end

    def _allocate_voices(self, n_voices: int):
        if not 1 <= n_voices <= 4096:
            raise ValueError(f"polyphony must be 1..4096 voices, got {n_voices}")
        n_rows = n_voices + vk.N_TAIL_VOICES
        n_slots = self.banks.slots.shape[0]
        return (np.zeros((n_rows, vk.N_VOICE_FIELDS)), np.zeros((n_rows, n_slots)),
                np.zeros((n_rows, n_slots)))

    @property
    def polyphony(self) -> int:
        return self._voice_arrays[0].shape[0] - vk.N_TAIL_VOICES

    # ---- audio thread -------------------------------------------------------------------
    def process(self, n_frames: int) -> np.ndarray:
        """Render the next block (audio thread): float32 [2, n_frames], a view of a
        preallocated buffer valid until the next call."""
        if not 0 < n_frames <= self.max_block:
            raise ValueError(f"block of {n_frames} frames outside 1..{self.max_block} (max_block)")
        start = time.perf_counter()
        staged = self._staged_voices  # the callback only reads it: a change staged while
        if staged is not None and staged is not self._voice_arrays:  # adopting is never lost
            vk.adopt_voices(self._voice_arrays[0], self._voice_arrays[1], staged[0], staged[1],
                            self._params[vk.P_FADE_FRAMES])
            self._retired_voices = self._voice_arrays
            self._voice_arrays = staged
        clock = self._clock
        epoch = time.time() - self._counters[Counter.FRAME] / self.sample_rate
        if not epoch >= clock[0]:  # earliest observation wins; callbacks only ever run late
            clock[0] = epoch
        else:
            clock[0] += 0.01 * (epoch - clock[0])
        vk.render_block(self._out, n_frames, *self.kernel_state())
        self.block = n_frames
        load = (time.perf_counter() - start) * self.sample_rate / n_frames
        self._cpu[0] += 0.05 * (load - self._cpu[0])
        if load > self._cpu[1]:
            self._cpu[1] = load
        return self._out[:, :n_frames]

    def kernel_state(self) -> tuple:
        """The arrays `render_block` takes after (out, n_frames), in its order."""
        voices, voice_w, w_step = self._voice_arrays
        banks = self.banks
        return (self.queue.records, self.queue.positions, self._pending, voices, voice_w, w_step,
                self._channels, self._params, self._counters, banks.slots, banks.row_ready,
                banks.row_pitch, banks.banks, self._sinc, self._gru_ring, self._gru_pos, self._mix,
                self._bend_curve, self._work, self._due)

    def timbre_gliding(self) -> bool:
        """True while a timbre glide runs in the block kernel (its position moves at block rate)."""
        return bool(self._params[vk.P_TIMBRE_FRAMES_LEFT] > 0.0)

    @property
    def crossfade_frames(self) -> int:
        """Frames a full timbre crossfade takes (the kernel ramps slot weights at most this fast)."""
        return int(self._params[vk.P_XFADE_FRAMES])

    @property
    def xruns(self) -> int:
        return int(self._xruns[0])

    @xruns.setter
    def xruns(self, value: int) -> None:
        self._xruns[0] = value

    # ---- EngineControl: time ------------------------------------------------------------
    @property
    def frame(self) -> int:
        """Absolute frame of the next block's first sample."""
        return int(self._counters[Counter.FRAME])

    def frame_for_time(self, unix_time_s: float) -> int:
        """Absolute output frame at which wall-clock `unix_time_s` (s since the epoch) is heard,
        accounting for the declared output latency."""
        epoch = self._clock[0]
        if not np.isfinite(epoch):
            epoch = time.time() - self.frame / self.sample_rate
        return int(round((unix_time_s - epoch - self.output_latency_s) * self.sample_rate))

    def _publish(self, kind, at_frame, channel=-1, note_id=-1, a=0.0, b=0.0, c=0.0, held_id=-1,
                 skip_kernel=False) -> bool:
        """Write one event into the stream every layer reads (the block kernel, the stream layer)."""
        frame = -1 if at_frame is None else int(at_frame)
        return self.queue.push(kind, frame, channel, note_id, a, b, c, held_id, self.frame + self.block,
                               skip_kernel)

    def _publish_release(self, kind, at_frame, channel=-1, note_id=-1, a=0.0, skip_kernel=False) -> bool:
        """A release, with the newest note the table still holds (control lock held): see
        `rt_engine.core.commands` (held_id, b = its pitch or NaN, c = its MIDI channel)."""
        newest = self._held.newest()
        if newest is None:
            return self._publish(kind, at_frame, channel, note_id, a, np.nan, 0.0, -1, skip_kernel)
        return self._publish(kind, at_frame, channel, note_id, a, newest.pitch, float(newest.slot - 1),
                             newest.note_id, skip_kernel)

    def _publish_forgotten(self, note_ids: list[int], at_frame: int | None) -> None:
        """Notes the table forgot to stay within the polyphony (control lock held): released for the
        stream layers (the sampler has stolen their voices itself)."""
        for note_id in note_ids:
            self._publish_release(CommandKind.NOTE_OFF_ID, at_frame, -1, note_id, skip_kernel=True)

    # ---- EngineControl: notes -----------------------------------------------------------
    def note_on(self, pitch: float, velocity: float, note_id: int = -1, channel: int = -1,
                at_frame: int | None = None, applied: bool = False) -> bool:
        # applied (note_on, note_off, pitch_bend): the native callback already applied the command
        # at its frame (JACK MIDI read in the callback); the event is published for the other layers
        if velocity <= 0:  # the one place "velocity 0 is off" is decided (OSC and MIDI alike)
            if note_id >= 0:
                return self.note_off(note_id=note_id, channel=channel, at_frame=at_frame, applied=applied)
            return self.note_off(pitch=pitch, channel=channel, at_frame=at_frame, applied=applied)
        velocity = min(max(float(velocity), 1.0), 127.0)
        slot = channel_slot(channel)
        key = note_id if note_id >= 0 else pitch_note_id(slot, pitch)
        with self._control_lock:
            forgotten = self._held.press(key, float(pitch), slot)
            self._publish_forgotten(forgotten, at_frame)
            published = self._publish(CommandKind.NOTE_ON, at_frame, channel, note_id, float(pitch), velocity,
                                      held_id=key, skip_kernel=applied)
            self.banks.note_requested(pitch, self._held.pitches())  # after the record: not on its way
            return published

    def note_off(self, pitch: float | None = None, note_id: int | None = None, channel: int = -1,
                 at_frame: int | None = None, applied: bool = False) -> bool:
        if (pitch is None) == (note_id is None):
            raise ValueError("note_off needs exactly one of pitch or note_id")
        slot = channel_slot(channel)
        with self._control_lock:
            if note_id is not None:
                self._held.release(int(note_id))
                return self._publish_release(CommandKind.NOTE_OFF_ID, at_frame, channel, int(note_id),
                                             skip_kernel=applied)
            self._held.release_pitch(float(pitch), slot)
            return self._publish_release(CommandKind.NOTE_OFF_PITCH, at_frame, channel, -1, float(pitch),
                                         skip_kernel=applied)

    def note_pitch(self, note_id: int, pitch: float, glide_s: float = 0.0,
                   at_frame: int | None = None) -> bool:
        with self._control_lock:
            self._held.set_pitch(int(note_id), float(pitch))
            return self._publish(CommandKind.NOTE_PITCH, at_frame, -1, int(note_id), pitch, max(glide_s, 0.0))

    def pitch_bend(self, channel: int, semitones: float, at_frame: int | None = None,
                   applied: bool = False) -> bool:
        channel_slot(channel)
        return self._publish(CommandKind.PITCH_BEND, at_frame, channel, -1, float(semitones), skip_kernel=applied)

    def sustain(self, channel: int, down: bool, at_frame: int | None = None) -> bool:
        channel_slot(channel)
        return self._publish(CommandKind.SUSTAIN, at_frame, channel, -1, 1.0 if down else 0.0)

    def all_notes_off(self, channel: int = -1, at_frame: int | None = None) -> bool:
        return self._release_channel(CommandKind.ALL_NOTES_OFF, channel, at_frame)

    def all_sound_off(self, channel: int = -1, at_frame: int | None = None) -> bool:
        return self._release_channel(CommandKind.ALL_SOUND_OFF, channel, at_frame)

    def reset_controllers(self, channel: int = -1, at_frame: int | None = None) -> bool:
        channel_slot(channel)
        return self._publish(CommandKind.RESET_CONTROLLERS, at_frame, channel)

    def _release_channel(self, kind: int, channel: int, at_frame: int | None = None) -> bool:
        slot = channel_slot(channel)
        with self._control_lock:
            self._held.release_channel(slot)
            return self._publish_release(kind, at_frame, channel)

    # ---- EngineControl: timbre, mix -----------------------------------------------------
    def _next_generation(self) -> int:
        with self._control_lock:
            self._timbre_generation += 1
            return self._timbre_generation

    def timbre_xy(self, x: float, y: float, glide_s: float = 0.0, at_frame: int | None = None) -> bool:
        x, y = float(np.clip(x, 0.0, 1.0)), float(np.clip(y, 0.0, 1.0))
        generation = self._next_generation()
        self.banks.request_xy(x, y, generation)
        return self._publish(CommandKind.TIMBRE_XY, at_frame, -1, generation, x, y, max(glide_s, 0.0))

    def timbre_preset(self, name: str) -> None:
        if name not in self.banks.preset_names():
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(self.banks.preset_names())}")
        self.banks.request_preset(name, self._next_generation())

    def timbre_audio(self, path: str, on_done: Callable[[], None],
                     on_fail: Callable[[str], None]) -> None:
        self.banks.request_audio(path, self._next_generation(), on_done, on_fail)

    def select_bank(self, slot: int, generation: int) -> bool:
        """Stage 3 of a bank load (called by the bank provider once the held pitches' rows of exact
        bank `slot` are playable): the callback plays it, with its envelope, unless a newer timbre
        request (`generation`) was applied meanwhile."""
        return self._publish(CommandKind.SELECT_BANK, None, -1, int(slot), float(generation))

    def gru_glide(self, seconds: float, at_frame: int | None = None) -> bool:
        if self.stream_layer is not None:
            self.stream_layer.set_glide(max(float(seconds), 0.0))
        return True

    def gru_temperature(self, value: float, at_frame: int | None = None) -> bool:
        return self._publish(CommandKind.GRU_TEMPERATURE, at_frame, -1, -1, max(float(value), 0.0))

    def gru_voices(self, n_voices: int) -> bool:
        if self.stream_layer is not None:
            self.stream_layer.set_voices(int(n_voices))
        return True

    def set_gain(self, layer: str, gain: float, at_frame: int | None = None) -> bool:
        if layer not in GAIN_LAYERS:
            raise ValueError(f"unknown gain layer {layer!r}; known: {', '.join(GAIN_LAYERS)}")
        return self._publish(CommandKind.SET_GAIN, at_frame, GAIN_LAYERS[layer], -1, max(float(gain), 0.0))

    def set_polyphony(self, n_voices: int) -> None:
        staged = self._allocate_voices(int(n_voices))  # stage 1: allocate here, off the audio thread
        with self._control_lock:
            self._publish_forgotten(self._held.resize(int(n_voices)), None)
        self._retired_voices = None                    # stage 4: drop what the callback swapped out
        if self.native_block is not None:              # stage 2-3 in the native table
            self.native_block.stage_voices(staged)
            self._retired_voices, self._voice_arrays = self._voice_arrays, staged
            return
        self._staged_voices = staged                   # stage 2-3: the callback adopts and swaps

    def panic(self) -> None:
        self._release_channel(CommandKind.PANIC, -1)

    def preset_names(self) -> list[str]:
        return self.banks.preset_names()

    # ---- status -------------------------------------------------------------------------
    @property
    def latency_s(self) -> float:
        """Latency the engine adds (s): one block of scheduling plus the output latency."""
        return self.block / self.sample_rate + self.output_latency_s

    def status(self) -> dict:
        counters = self._counters
        layer = self.stream_layer
        cpu_peak, self._cpu[1] = float(self._cpu[1]), 0.0
        return {
            "voices": int(counters[Counter.VOICES]),
            "gru_active": int(bool(layer is not None and layer.is_active())),
            "cpu": round(float(self._cpu[0]), 4),
            "cpu_peak": round(cpu_peak, 4),  # since the previous status()
            "xruns": int(self.xruns),
            "audio_callback": self.audio_callback,
            "midi_input": self.midi_input,
            "sample_rate": self.sample_rate,
            "block": int(self.block),
            "latency_s": round(self.latency_s, 6),
            "gru_latency_s": round(self.latency_s + (layer.latency_frames / self.sample_rate
                                                     if layer is not None else 0.0), 6),
            "bank_state": self.banks.state(),
            "bank_seconds": round(float(self.banks.last_bank_s), 4),
            "polyphony": self.polyphony,
            "commands": int(counters[Counter.COMMANDS]),
            "dropped": int(counters[Counter.DROPPED] + self.queue.dropped),
            "late": int(counters[Counter.LATE]),
            "pending": int(counters[Counter.PENDING]),
            "steals": int(counters[Counter.STEALS]),
            "gru_underruns": int(counters[Counter.GRU_UNDERRUNS]),
            "gru_kernel": layer.kernel_path if layer is not None else "none",
            "gru_shed_voices": int(layer.shed_voices) if layer is not None else 0,
            "frame": int(counters[Counter.FRAME]),
        }

    def close(self) -> None:
        """Stop the stream layer and the bank manager (not from the audio thread)."""
        if self.stream_layer is not None:
            self.stream_layer.stop()
        self.banks.close()
