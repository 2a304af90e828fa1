"""The GRU voices: a `StreamLayer` (rt_engine.core.layer_api) that streams the Sound Model
Factory GRU at 16 kHz, resamples it to the device rate and writes it ahead of the audio callback.

A worker thread (or, offline, the caller via `render_available`) renders blocks of `block_samples`
model samples while the ring holds fewer than `ahead_frames` frames, then sleeps until the callback
has drained it half a block below that (`wait_s`: one wake-up per block, not a poll). Each block:
events due in it are applied at their exact model sample (splitting the block), the control kernel
smooths (pitch, x, y, bend, envelope) per sample, the nogil GRU kernel (`models.gru_stream`) samples
mu-law classes, which are decoded, enveloped, resampled (`rt_engine.gru.stream_resampler`) and
copied into the ring. All buffers are preallocated; the heavy work runs in nogil kernels, so the
thread holds the GIL only briefly per block.

Timing: an event's `at_frame` is the absolute output frame (= ring frame) at which its effect
should be heard. It is applied at model sample ceil(at_frame * rate_in / rate_out) - resampler delay,
so the change reaches the ring exactly at `at_frame`. `latency_frames` (the render-ahead plus one block
plus the resampler delay) is what the layer adds to the frames of the engine's records
(`follow_events`) so that they arrive before that sample is rendered; events that arrive later apply
at the next unrendered sample (counted in `late_events`).

Voices (`set_voices`, default 4; `rt_engine.gru.gru_voices`): each has its own recurrent state, pitch,
glide and envelope and plays one note id (the engine's held-note table's, `rt_engine.core.held_notes`: two
notes at one pitch with different ids are two voices). A new note takes a voice as the sampler's notes
do (the same id, else a free voice, else the quietest released, else the oldest held: a steal,
counted). With one voice the layer is monophonic with last-note priority over the held notes: a new
note while one is held glides over the portamento time (`set_glide`, legato) or, in retrigger mode
(`set_legato(False)`), restarts the voice's recurrent state and attack; from silence a note starts at
once from a fresh recurrent state; releasing the sounding note glides to the fall-back the engine's
table names with the release (its newest note still held). A stolen or retriggered note is not cut:
a tail voice plays it on and fades it out over `FADE_S` (3 ms) while the new note starts.
`note_pitch` glides its note; `timbre_xy` moves (x, y) linearly over `glide_s` (or a 5 ms smoothing); pitch bend is
per MIDI channel (MPE: each note follows its own channel's bend; channel -1 bends every channel) and
is smoothed by a one-pole (5 ms); the amplitude envelope is a linear attack/release, so the output is
exactly zero once released and that voice's GRU stops running (idle costs only the resampler). The sampling
temperature (`set_temperature`, 0 = argmax) steps at its event's sample, unsmoothed: a new
temperature changes only how the next classes are drawn, so the step itself makes no click.

Mix gain (`set_mix_gain`, the engine's `/mix/gru`): at gain 0 the GRU is not computed (the control
smoothers still run, so pitch, timbre and envelope stay current); it runs on for `MUTE_TAIL_S` after
the gain reaches 0 (the engine's 5 ms gain smoothing fades it out meanwhile). When the gain rises again
a sounding note restarts from a fresh recurrent state at that sample, as from silence.

Overload (the worker thread; offline rendering never sheds): when the worker falls behind (the
ring holds less than half the render-ahead), it sheds before rendering the next block: the tail voices and the released voices stop at once, and the
block's steals and retriggers cut the old note instead of handing it to a tail (each counted in
`shed_voices`), so what it computes is bounded by the notes held. A flood of note-ons (each a
steal that would start a fading tail) then costs no more than the voices it holds; the held notes
play on.

Bounds: pending events wait in a heap (ordered by model sample, then arrival; O(log n) per event) of at
most `EVENT_CAPACITY`; overflowing events are counted in `dropped_events`. The layer keeps no held-note
list of its own: its voices hold at most `MAX_VOICES` notes, and the engine's table bounds the rest.
"""
from __future__ import annotations

import collections
import heapq
import threading
from pathlib import Path

import numba
import numpy as np

from models.gru_stream import gru_stream_sample, kernel_path, load_stream_weights, new_state
from models.mu_law import mu_law_decode_table
from rt_engine.gru.gru_voices import (C_BEND, C_BEND_COEFF, C_BEND_TARGET, C_ENV, C_ENV_DOWN, C_ENV_TARGET, C_ENV_UP,
                                  C_PITCH, C_PITCH_TARGET, C_X, C_Y, FADE_S, GLIDES, N_CONTROL, GruVoice,
                                  allocate, hand_over)
from rt_engine.core.commands import N_CHANNELS, EventFollower, channel_slot
from rt_engine.core.layer_api import apply_event
from rt_engine.gru.stream_resampler import StreamResampler
from models.kernel_cache import drop_stale_cache

drop_stale_cache(__name__)

__all__ = ["GruLayer", "control_block", "control_block_reference", "FADE_S", "N_CONTROL", "MAX_VOICES"]
EVENT_CAPACITY = 1024
"""Events waiting for the worker thread (queued, and pending in the heap); more are counted in
`dropped_events` and dropped."""
MAX_VOICES = 16
"""Most GRU voices (`set_voices`)."""

TAIL_VOICES = 2
"""Tail voices that fade out stolen and retriggered notes."""
WAKE_S = (0.0005, 0.008)
"""Bounds of the worker thread's sleep (s). Every wake-up of a sleeping thread costs kernel time,
timers and the GIL, so the worker sleeps as long as the ring allows (`GruLayer.wait_s`)."""
MUTE_TAIL_S = 0.05
"""Seconds the GRU keeps running after its mix gain reaches 0 (10 time constants of the engine's
5 ms gain smoothing: -87 dB)."""


@numba.njit(nogil=True, cache=True)
def control_block(control, conditioning, envelope):
    """Advance the per-sample smoothers by len(envelope) samples.

    control float64 [N_CONTROL] (updated in place); conditioning float32 [n, 3] receives
    (x, y, MIDI pitch + bend) and envelope float32 [n] the amplitude, per model sample."""
    for t in range(envelope.shape[0]):
        for base in range(0, 12, 4):
            if control[base + 2] > 0.0:
                control[base + 2] -= 1.0
                control[base] = control[base + 3] if control[base + 2] <= 0.0 else control[base] + control[base + 1]
        control[C_BEND] = control[C_BEND_TARGET] + (control[C_BEND] - control[C_BEND_TARGET]) * control[C_BEND_COEFF]
        env, target = control[C_ENV], control[C_ENV_TARGET]
        if env < target:
            env = min(target, env + control[C_ENV_UP])
        elif env > target:
            env = max(target, env - control[C_ENV_DOWN])
        control[C_ENV] = env
        conditioning[t, 0] = control[C_X]
        conditioning[t, 1] = control[C_Y]
        conditioning[t, 2] = control[C_PITCH] + control[C_BEND]
        envelope[t] = env


def control_block_reference(control, conditioning, envelope):
    """NumPy twin of `control_block` (same arguments and updates)."""
    for t in range(envelope.shape[0]):
        for value, step, left, target in GLIDES:
            if control[left] > 0.0:
                control[left] -= 1.0
                control[value] = control[target] if control[left] <= 0.0 else control[value] + control[step]
        control[C_BEND] = control[C_BEND_TARGET] + (control[C_BEND] - control[C_BEND_TARGET]) * control[C_BEND_COEFF]
        if control[C_ENV] < control[C_ENV_TARGET]:
            control[C_ENV] = min(control[C_ENV_TARGET], control[C_ENV] + control[C_ENV_UP])
        elif control[C_ENV] > control[C_ENV_TARGET]:
            control[C_ENV] = max(control[C_ENV_TARGET], control[C_ENV] - control[C_ENV_DOWN])
        conditioning[t] = (control[C_X], control[C_Y], control[C_PITCH] + control[C_BEND])
        envelope[t] = control[C_ENV]


@numba.njit(nogil=True, cache=True)
def _decode_add(mu, decode_table, envelope, gain, audio):
    """audio[t] += decode_table[mu[t]] * envelope[t] * gain for t < len(mu)."""
    for t in range(mu.shape[0]):
        audio[t] += decode_table[mu[t]] * envelope[t] * gain


class GruLayer:
    """GRU voices streaming into the engine's ring (see the module docstring)."""

    def __init__(self, weights, model_rate_hz: int = 16000, *, temperature: float = 1.0,
                 control_interval: int = 16, block_samples: int = 64, ahead_s: float = 0.02,
                 attack_s: float = 0.005, release_s: float = 0.08, smooth_s: float = 0.005,
                 gain: float = 1.0, seed: int = 0, sample_rate: int = 48000, threaded: bool = True,
                 voices: int = 4, legato: bool = True):
        if block_samples < 1 or control_interval < 1 or temperature < 0 or ahead_s < 0:
            raise ValueError("GruLayer: block_samples and control_interval must be >= 1, temperature and "
                             f"ahead_s >= 0 (got {block_samples}, {control_interval}, {temperature}, {ahead_s})")
        self.weights = weights
        self.model_rate_hz = int(model_rate_hz)
        self.temperature, self.control_interval = float(temperature), int(control_interval)
        self.block_samples, self.ahead_s = int(block_samples), float(ahead_s)
        self.attack_s, self.release_s, self.smooth_s = float(attack_s), float(release_s), float(smooth_s)
        self.gain = float(gain)
        self.threaded = bool(threaded)
        self.glide_s = 0.0
        self.legato = bool(legato)
        self.late_events = 0
        self.dropped_events = 0
        self.steals = 0
        self.shed_voices = 0
        self._overloaded = False         # rendering a block while behind real time (see Overload)
        self._seed = int(seed)
        self._decode_table = mu_law_decode_table(weights.table.shape[0])
        self._voices = self._new_voices(0, self._checked_voices(voices))
        self._tails = [GruVoice(weights, self._seed + MAX_VOICES + index, self.model_rate_hz, self.attack_s,
                                self.release_s, self.smooth_s) for index in range(TAIL_VOICES)]
        self._note_count = 0
        self._bends = np.zeros(N_CHANNELS)  # bend (semitones) per channel slot
        self._events: collections.deque = collections.deque()
        self._pending: list[tuple] = []  # heap of (model sample, arrival count, event)
        self._mix_gain = 1.0
        self._mute_left = 0              # model samples still computed after the mix gain reached 0
        self.computed_samples = 0        # model samples the GRU kernel has generated
        self._event_count = 0
        self._conditioning = np.zeros((block_samples, 3), np.float32)
        self._envelope = np.zeros(block_samples, np.float32)
        self._mu = np.zeros(block_samples, np.int64)
        self._audio = np.zeros(block_samples, np.float32)
        self._next_sample = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ring = self.positions = None
        self._follower: EventFollower | None = None
        self._configure_rate(sample_rate)

    @classmethod
    def from_dir(cls, folder: str | Path, compression: str = "int8", **options) -> "GruLayer":
        """Load a GRU checkpoint folder (`models.gru.save_gru`) as a layer; int8 or fp32 weights."""
        weights, config = load_stream_weights(folder, compression)  # no torch in the audio process
        return cls(weights, config.sample_rate, **options)

    def _configure_rate(self, sample_rate: int) -> None:
        self.sample_rate = int(sample_rate)
        self._resampler = StreamResampler(self.model_rate_hz, self.sample_rate, max_chunk=self.block_samples)
        self._frames = np.zeros(self._resampler.max_frames_for(self.block_samples), np.float32)
        self.ahead_frames = int(round(self.ahead_s * self.sample_rate))

    @property
    def latency_frames(self) -> int:
        """Frames between an event's delivery and the first frame it can still change: render-ahead,
        one block, the resampler's delay."""
        return int(self.ahead_frames + self._frames.shape[0] + np.ceil(self._resampler.latency_frames))

    # ---- lifecycle -------------------------------------------------------------------------------
    def prepare(self, sample_rate: int, ring: np.ndarray, positions: np.ndarray) -> None:
        """Bind the ring (float32 [capacity]) and positions (int64 [2]) and compile the kernels;
        rendering is then driven by `render_available` (the worker thread, or a test)."""
        if ring.dtype != np.float32 or ring.ndim != 1 or positions.dtype != np.int64 or positions.shape != (2,):
            raise ValueError("GruLayer needs ring float32 [capacity] and positions int64 [2]")
        self._configure_rate(sample_rate)
        if ring.shape[0] < self.ahead_frames + self._frames.shape[0]:
            raise ValueError(f"GRU ring of {ring.shape[0]} frames is smaller than the render-ahead "
                             f"{self.ahead_frames} + one block {self._frames.shape[0]}")
        self.ring, self.positions = ring, positions
        warm_state = new_state(self.weights)
        gru_stream_sample(self.weights, warm_state, self._conditioning[:1] + 60.0, 1, 1.0, self._mu[:1])
        control_block(self._voices[0].control.copy(), self._conditioning[:1], self._envelope[:1])
        _decode_add(self._mu[:1], self._decode_table, self._envelope[:1], 0.0, self._audio[:1])

    def start(self, sample_rate: int, ring: np.ndarray, positions: np.ndarray,
              events: EventFollower | None = None) -> None:
        """Prepare, then render in a daemon worker thread until `stop`. With `threaded=False` (offline
        rendering) no thread starts: the caller runs `render_available()` before each block.
        `events`: the engine's event stream, followed before each rendered block (`follow_events`)."""
        self.prepare(sample_rate, ring, positions)
        self._follower = events
        if not self.threaded:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gru-layer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker thread and join it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.render_available()
            self._stop.wait(self.wait_s())

    def wait_s(self) -> float:
        """Seconds the worker sleeps: until the ring, drained at the device rate, holds half a block
        less than the render-ahead (the callback drains it in periods, so a worker woken the moment
        it first falls short would often find a period not yet taken), within `WAKE_S`. It then wakes
        about once per block it renders, and the ring stays far above the overload mark (half the
        render-ahead)."""
        fill = int(self.positions[0]) - int(self.positions[1])
        short = fill - self.ahead_frames + self._frames.shape[0] // 2
        return min(max(short / self.sample_rate, WAKE_S[0]), WAKE_S[1])

    # ---- events (control threads; never block) ---------------------------------------------------
    def _post(self, event: tuple) -> None:
        """Queue an event for the worker; a full queue counts and drops it."""
        if len(self._events) >= EVENT_CAPACITY:
            self.dropped_events += 1
        else:
            self._events.append(event)

    def note_on(self, note_id: int, pitch: float, velocity: float, at_frame: int | None = None,
                channel: int = -1) -> None:
        self._post((at_frame, "on", int(note_id), float(pitch), float(velocity), channel_slot(channel)))

    def note_off(self, note_id: int, at_frame: int | None = None,
                 fallback: tuple[int, float, int] | None = None) -> None:
        self._post((at_frame, "off", int(note_id), fallback))

    def note_pitch(self, note_id: int, pitch: float, glide_s: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "pitch", int(note_id), float(pitch), max(float(glide_s), 0.0)))

    def pitch_bend(self, semitones: float, at_frame: int | None = None, channel: int = -1) -> None:
        self._post((at_frame, "bend", float(semitones), channel_slot(channel)))

    def timbre_xy(self, x: float, y: float, glide_s: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "xy", min(max(float(x), 0.0), 1.0), min(max(float(y), 0.0), 1.0),
                             max(float(glide_s), 0.0)))

    def set_glide(self, seconds: float) -> None:
        self.glide_s = max(float(seconds), 0.0)

    def set_legato(self, legato: bool) -> None:
        """One voice: a note while another is held glides (True) or retriggers (False)."""
        self.legato = bool(legato)

    def set_voices(self, n_voices: int) -> None:
        """Play up to `n_voices` (1..MAX_VOICES) notes at once from the next rendered sample: the
        sounding notes are released and voices beyond the new count stop. The states are allocated
        here, off the worker thread."""
        n_voices = self._checked_voices(n_voices)
        self._post((None, "voices", n_voices, self._new_voices(len(self._voices), n_voices)))

    @staticmethod
    def _checked_voices(n_voices) -> int:
        if not 1 <= int(n_voices) <= MAX_VOICES:
            raise ValueError(f"GruLayer: voices must be 1..{MAX_VOICES}, got {n_voices}")
        return int(n_voices)

    def _new_voices(self, first: int, stop: int) -> list[GruVoice]:
        return [GruVoice(self.weights, self._seed + index, self.model_rate_hz, self.attack_s, self.release_s,
                         self.smooth_s) for index in range(first, stop)]

    def set_temperature(self, temperature: float, at_frame: int | None = None) -> None:
        """Sample from softmax(logits / temperature) from `at_frame` on (0 = argmax); a negative or
        NaN temperature is a ValueError."""
        if not float(temperature) >= 0.0:
            raise ValueError(f"GruLayer: temperature must be >= 0, got {temperature}")
        self._post((at_frame, "temperature", float(temperature)))

    def set_mix_gain(self, gain: float, at_frame: int | None = None) -> None:
        """The engine's gain for this layer (`/mix/gru`) from `at_frame` on: at 0 the GRU is not computed."""
        self._post((at_frame, "mix", max(float(gain), 0.0)))

    @property
    def kernel_path(self) -> str:
        """Which GRU kernel path runs (`models.gru_stream.kernel_path`, e.g. 'int8_dot/avx2')."""
        return kernel_path(self._voices[0].gru)

    @property
    def n_voices(self) -> int:
        return len(self._voices)

    def panic(self) -> None:
        self._post((None, "panic"))

    def note_off_pitch(self, pitch: float, at_frame: int | None = None, channel: int = -1,
                       fallback: tuple[int, float, int] | None = None) -> None:
        """Release the held notes at `pitch` (their glide target) on MIDI `channel` (-1: any)."""
        self._post((at_frame, "off_pitch", float(pitch), channel_slot(channel), fallback))

    def release_channel(self, at_frame: int | None = None, channel: int = -1,
                        fallback: tuple[int, float, int] | None = None) -> None:
        """Release every held note on MIDI `channel` (-1: all)."""
        self._post((at_frame, "off_channel", channel_slot(channel), fallback))

    def follow_events(self) -> int:
        """Apply the engine's published records since the last call (each at its frame, or the
        block it was published for, plus `latency_frames`); returns how many were read. Records
        the follower lost by falling a ring behind count in `dropped_events`."""
        if self._follower is None:
            return 0
        missed = self._follower.missed
        records = self._follower.drain()
        self.dropped_events += self._follower.missed - missed
        for record in records:
            apply_event(self, record)
        return len(records)

    def is_active(self) -> bool:
        return any(voice.held or voice.control[C_ENV] > 0.0 for voice in self._voices + self._tails)

    def _newest(self) -> GruVoice:
        """The voice of the newest note (held first)."""
        return max(self._voices, key=lambda voice: (voice.held, voice.order))

    def snapshot(self) -> dict:
        """Smoothed parameters of the newest note at the last rendered sample: pitch (MIDI, without
        bend), bend (semitones), x, y, envelope (0..1); the sampling temperature, held notes, the
        voices (count, sounding, steals, shed under overload), late and dropped events, whether a GRU runs, the kernel path
        and the samples rendered and computed (voice-samples) (for status/debugging). `held` lists the
        pitches (glide targets) of the voices' held notes, oldest first."""
        control = self._newest().control
        held = [float(voice.control[C_PITCH_TARGET])
                for voice in sorted(self._voices, key=lambda voice: voice.order) if voice.held]
        return {"voices": len(self._voices), "sounding_voices": sum(voice.sounding() for voice in self._voices),
                "steals": self.steals, "shed_voices": self.shed_voices, "pitch": float(control[C_PITCH]), "bend": float(control[C_BEND]), "x": float(control[C_X]),
                "y": float(control[C_Y]), "envelope": float(control[C_ENV]), "temperature": self.temperature,
                "held": held, "late_events": self.late_events,
                "dropped_events": self.dropped_events,
                "computing": any(self._computing(voice) for voice in self._voices + self._tails),
                "kernel_path": self.kernel_path, "rendered_samples": self._next_sample,
                "computed_samples": self.computed_samples}

    # ---- rendering (worker thread) ---------------------------------------------------------------
    def render_available(self, max_blocks: int = 8, min_frames: int = 0) -> int:
        """Render blocks while the ring holds fewer than `ahead_frames` frames, or `min_frames` if
        more (offline: the engine's next block), at most `max_blocks`; returns the frames written."""
        ring, positions = self.ring, self.positions
        capacity = ring.shape[0]
        ahead = max(self.ahead_frames, int(min_frames))
        total = 0
        for _ in range(max_blocks):
            written, read = int(positions[0]), int(positions[1])
            if read > written:  # the consumer skipped ahead: jump with it
                positions[0] = written = read
            if written - read >= ahead or capacity - (written - read) < self._frames.shape[0]:
                break
            self._overloaded = self.threaded and 2 * (written - read) < self.ahead_frames  # offline: no deadline
            if self._overloaded:
                self._shed()
            n_frames = self._render_block()
            start = written % capacity
            first = min(n_frames, capacity - start)
            ring[start:start + first] = self._frames[:first]
            ring[:n_frames - first] = self._frames[first:n_frames]
            positions[0] = written + n_frames
            total += n_frames
        return total

    def _hand_over(self, voice: GruVoice) -> None:
        """`voice`'s note fades out on a tail voice, or stops at once while overloaded."""
        if not self._overloaded:
            hand_over(self._tails, voice, self.model_rate_hz)
        elif voice.control[C_ENV] > 0.0:
            voice.control[C_ENV] = 0.0
            self.shed_voices += 1

    def _shed(self) -> None:
        """Behind real time: stop the tail voices and the released voices at once."""
        for voice in self._tails + [voice for voice in self._voices if not voice.held]:
            if voice.sounding():
                voice.control[C_ENV] = voice.control[C_ENV_TARGET] = 0.0
                self.shed_voices += 1

    def _event_sample(self, at_frame: int | None) -> int:
        if at_frame is None:
            return self._next_sample
        ratio_up, ratio_down = self._resampler.up, self._resampler.down
        return -(-int(at_frame) * ratio_down // ratio_up) - self._resampler.delay_input_samples

    def _render_block(self) -> int:
        """One block of model samples -> resampled frames in self._frames; returns their number."""
        self.follow_events()
        while self._events:
            event = self._events.popleft()
            if len(self._pending) >= EVENT_CAPACITY:
                self.dropped_events += 1
                continue
            self._event_count += 1
            heapq.heappush(self._pending, (self._event_sample(event[0]), self._event_count, event[1:]))
        start, n = self._next_sample, self.block_samples
        offset = 0
        while offset < n:
            while self._pending and self._pending[0][0] <= start + offset:
                sample, _, event = heapq.heappop(self._pending)
                self.late_events += sample < start + offset
                self._apply(event)
            stop = n if not self._pending else min(n, self._pending[0][0] - start)
            self._render_segment(offset, stop)
            offset = stop
        self._next_sample = start + n
        return self._resampler.process(self._audio, self._frames)

    def _computing(self, voice: GruVoice) -> bool:
        """True while the voice's GRU runs: its note sounds and the mix gain is up (or fading out)."""
        return voice.sounding() and (self._mix_gain > 0.0 or self._mute_left > 0)

    def _render_segment(self, begin: int, end: int) -> None:
        conditioning, envelope, mu = self._conditioning[begin:end], self._envelope[begin:end], self._mu[begin:end]
        voices = self._voices + self._tails
        computing = [self._computing(voice) for voice in voices]
        if self._mix_gain <= 0.0:
            self._mute_left = max(self._mute_left - (end - begin), 0)
        self._audio[begin:end] = 0.0
        for voice, compute in zip(voices, computing):
            sounding = voice.sounding()
            control_block(voice.control, conditioning, envelope)
            if not compute:
                voice.stale = voice.stale or sounding
                continue
            if voice.stale:
                voice.reset()
            gru_stream_sample(self.weights, voice.gru, conditioning, self.control_interval, self.temperature, mu)
            self.computed_samples += end - begin
            _decode_add(mu, self._decode_table, envelope, self.gain, self._audio[begin:end])

    def _samples(self, seconds: float) -> int:
        return int(round(seconds * self.model_rate_hz))

    def _apply(self, event: tuple) -> None:
        kind = event[0]
        if kind == "on":
            velocity = min(max(event[3], 0.0), 127.0) / 127.0
            if len(self._voices) == 1:
                self._mono_on(event[1], event[2], velocity, event[4])
            else:
                self._poly_on(event[1], event[2], velocity, event[4])
        elif kind == "off":
            self._release_where(lambda voice: voice.note_id == event[1], event[2])
        elif kind == "off_pitch":
            pitch, slot = event[1], event[2]
            self._release_where(lambda voice: (slot == 0 or voice.slot == slot)
                                and abs(voice.control[C_PITCH_TARGET] - pitch) < 1e-6, event[3])
        elif kind == "off_channel":
            slot = event[1]
            self._release_where(lambda voice: slot == 0 or voice.slot == slot, event[2])
        elif kind == "pitch":
            for voice in self._voices:
                if voice.note_id == event[1] and voice.sounding():
                    voice.glide(GLIDES[0], event[2], self._samples(event[3]))
        elif kind == "bend":
            slot = event[2]
            if slot == 0:
                self._bends[:] = event[1]
            else:
                self._bends[slot] = event[1]
            for voice in self._voices:
                voice.control[C_BEND_TARGET] = self._bends[voice.slot]
        elif kind == "xy":
            n_samples = self._samples(event[3] if event[3] > 0.0 else self.smooth_s)
            for voice in self._voices:
                voice.glide(GLIDES[1], event[1], n_samples)
                voice.glide(GLIDES[2], event[2], n_samples)
        elif kind == "temperature":
            self.temperature = event[1]
        elif kind == "mix":
            if event[1] <= 0.0 < self._mix_gain and any(map(self._computing, self._voices)):  # fade out
                self._mute_left = self._samples(MUTE_TAIL_S)
            self._mix_gain = event[1]
        elif kind == "voices":
            self._voices = self._voices[:event[1]] + event[2]
            for voice in self._voices:
                voice.held = False
                voice.control[C_ENV_TARGET] = 0.0
        elif kind == "panic":
            self._pending = []
            for voice in self._voices + self._tails:
                voice.held = False
                control = voice.control
                control[C_ENV_TARGET] = 0.0
                control[C_ENV] = min(control[C_ENV], 0.005 * self.model_rate_hz * control[C_ENV_DOWN])

    def _start_note(self, voice: GruVoice, note_id: int, pitch: float, velocity: float, slot: int) -> None:
        """`voice` plays note `note_id` at `pitch` on channel `slot` at once (from a fresh recurrent
        state, at its channel's bend, when it was silent)."""
        self._set_channel(voice, slot)
        if voice.control[C_ENV] <= 0.0:
            voice.reset()
            voice.control[C_BEND] = voice.control[C_BEND_TARGET]
        voice.glide(GLIDES[0], pitch, 0)
        self._note_count += 1
        voice.note_id, voice.held, voice.order = note_id, True, self._note_count
        voice.control[C_ENV_TARGET] = velocity

    def _set_channel(self, voice: GruVoice, slot: int) -> None:
        voice.slot = slot
        voice.control[C_BEND_TARGET] = self._bends[slot]

    def _poly_on(self, note_id: int, pitch: float, velocity: float, slot: int) -> None:
        voice, stolen = allocate(self._voices, note_id)
        if stolen:
            self.steals += 1
            self._hand_over(voice)
        self._start_note(voice, note_id, pitch, velocity, slot)

    def _mono_on(self, note_id: int, pitch: float, velocity: float, slot: int) -> None:
        voice = self._voices[0]
        if voice.held and self.legato:
            self._set_channel(voice, slot)
            voice.glide(GLIDES[0], pitch, self._samples(self.glide_s))
            self._note_count += 1
            voice.note_id, voice.order = note_id, self._note_count
            voice.control[C_ENV_TARGET] = velocity
            return
        if voice.held:  # retrigger: a fresh state and attack; the cut note fades out on a tail
            self._hand_over(voice)
        self._start_note(voice, note_id, pitch, velocity, slot)

    def _release_where(self, matches, fallback: tuple[int, float, int] | None) -> None:
        """Release the held notes `matches(voice)` picks; one voice instead glides to `fallback`
        (id, pitch, MIDI channel) when there is one (last-note priority)."""
        for voice in self._voices:
            if not (voice.held and matches(voice)):
                continue
            if len(self._voices) == 1:
                self._mono_off(voice.note_id, fallback)
            else:
                voice.held = False
                voice.control[C_ENV_TARGET] = 0.0

    def _mono_off(self, note_id: int, fallback: tuple[int, float, int] | None) -> None:
        """The sounding note `note_id` ends: glide to `fallback` (id, pitch, MIDI channel), or release."""
        voice = self._voices[0]
        if not voice.held or voice.note_id != note_id:
            return
        if fallback is None:
            voice.held = False
            voice.control[C_ENV_TARGET] = 0.0
        else:
            voice.note_id = fallback[0]
            self._set_channel(voice, channel_slot(fallback[2]))
            voice.glide(GLIDES[0], fallback[1], self._samples(self.glide_s))
