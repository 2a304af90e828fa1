"""The monophonic GRU voice: a `StreamLayer` (rt_engine.layer_api) that streams the Sound Model
Factory GRU at 16 kHz, resamples it to the device rate and writes it ahead of the audio callback.

A worker thread (or, offline, the caller via `render_available`) renders blocks of `block_samples`
model samples while the ring holds fewer than `ahead_frames` frames. Each block: events due in it are applied at their exact model sample
(splitting the block), the control kernel smooths (pitch, x, y, bend, envelope) per sample, the
nogil GRU kernel (`models.gru_stream`) samples mu-law classes, which are decoded, enveloped,
resampled (`rt_engine.stream_resampler`) and copied into the ring. All buffers are preallocated;
the heavy work runs in nogil kernels, so the thread holds the GIL only briefly per block.

Timing: an event's `at_frame` is the absolute output frame (= ring frame) at which its effect
should be heard. It is applied at model sample ceil(at_frame * rate_in / rate_out) - resampler delay,
so the change reaches the ring exactly at `at_frame`. `latency_frames` (the render-ahead plus one block
plus the resampler delay) is what the engine adds to events so that they arrive before that sample
is rendered; events that arrive later apply at the next unrendered sample (counted in `late_events`).

Voice: last-note priority over held notes; a new note while one sounds glides over the portamento
time (`set_glide`), from silence it starts at once from a fresh recurrent state; `note_pitch` glides
the sounding note; `timbre_xy` moves (x, y) linearly over `glide_s` (or a 5 ms smoothing); pitch bend
is smoothed by a one-pole (5 ms); the amplitude envelope is a linear attack/release, so the output is
exactly zero once released and the GRU stops running (idle costs only the resampler). The sampling
temperature (`set_temperature`, 0 = argmax) steps at its event's sample, unsmoothed: a new
temperature changes only how the next classes are drawn, so the step itself makes no click.

Mix gain (`set_mix_gain`, the engine's `/mix/gru`): at gain 0 the GRU is not computed (the control
smoothers still run, so pitch, timbre and envelope stay current); it runs on for `MUTE_TAIL_S` after
the gain reaches 0 (the engine's 5 ms gain smoothing fades it out meanwhile). When the gain rises again
a sounding note restarts from a fresh recurrent state at that sample, as from silence.

Bounds: pending events wait in a heap (ordered by model sample, then arrival; O(log n) per event) of at
most `EVENT_CAPACITY`; held notes (the last-note-priority stack) are at most `HELD_CAPACITY`, the
oldest dropped first. Overflowing events are counted in `dropped_events`.
"""
from __future__ import annotations

import collections
import heapq
import threading
from pathlib import Path

import numba
import numpy as np

from models.gru_stream import gru_stream_sample, kernel_path, new_state
from models.mu_law import mu_law_decode_table, mu_law_zero
from rt_engine.stream_resampler import StreamResampler

# control-state fields (float64 [N_CONTROL])
(C_PITCH, C_PITCH_STEP, C_PITCH_LEFT, C_PITCH_TARGET, C_X, C_X_STEP, C_X_LEFT, C_X_TARGET,
 C_Y, C_Y_STEP, C_Y_LEFT, C_Y_TARGET, C_BEND, C_BEND_TARGET, C_BEND_COEFF,
 C_ENV, C_ENV_TARGET, C_ENV_UP, C_ENV_DOWN) = range(19)
N_CONTROL = 19
EVENT_CAPACITY = 1024
"""Events waiting for the worker thread (queued, and pending in the heap); more are counted in
`dropped_events` and dropped."""
HELD_CAPACITY = 32
"""Held notes remembered for last-note priority; a new note beyond them forgets the oldest."""
MUTE_TAIL_S = 0.05
"""Seconds the GRU keeps running after its mix gain reaches 0 (10 time constants of the engine's
5 ms gain smoothing: -87 dB)."""
_GLIDES = ((C_PITCH, C_PITCH_STEP, C_PITCH_LEFT, C_PITCH_TARGET), (C_X, C_X_STEP, C_X_LEFT, C_X_TARGET),
           (C_Y, C_Y_STEP, C_Y_LEFT, C_Y_TARGET))


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
        for value, step, left, target in _GLIDES:
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
def _decode_into(mu, decode_table, envelope, gain, audio):
    """audio[t] = decode_table[mu[t]] * envelope[t] * gain for t < len(mu)."""
    for t in range(mu.shape[0]):
        audio[t] = decode_table[mu[t]] * envelope[t] * gain


class GruLayer:
    """Monophonic GRU voice streaming into the engine's ring (see the module docstring)."""

    def __init__(self, weights, model_rate_hz: int = 16000, *, temperature: float = 1.0,
                 control_interval: int = 16, block_samples: int = 64, ahead_s: float = 0.02,
                 attack_s: float = 0.005, release_s: float = 0.08, smooth_s: float = 0.005,
                 gain: float = 1.0, seed: int = 0, sample_rate: int = 48000, threaded: bool = True):
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
        self.late_events = 0
        self.dropped_events = 0
        self._gru = new_state(weights, seed=seed)
        self._decode_table = mu_law_decode_table(weights.table.shape[0])
        self._control = np.zeros(N_CONTROL, np.float64)
        self._control[[C_PITCH, C_PITCH_TARGET]] = 60.0
        self._control[[C_X, C_X_TARGET, C_Y, C_Y_TARGET]] = 0.5
        self._control[C_BEND_COEFF] = np.exp(-1.0 / max(smooth_s * model_rate_hz, 1e-9))
        self._control[C_ENV_UP] = 1.0 / max(attack_s * model_rate_hz, 1.0)
        self._control[C_ENV_DOWN] = 1.0 / max(release_s * model_rate_hz, 1.0)
        self._held: list[list[float]] = []
        self._events: collections.deque = collections.deque()
        self._pending: list[tuple] = []  # heap of (model sample, arrival count, event)
        self._mix_gain = 1.0
        self._mute_left = 0              # model samples still computed after the mix gain reached 0
        self._stale = False              # samples were skipped while sounding: restart before computing
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
        self._configure_rate(sample_rate)

    @classmethod
    def from_dir(cls, folder: str | Path, compression: str = "int8", **options) -> "GruLayer":
        """Load a GRU checkpoint folder (`models.gru.save_gru`) as a layer; int8 or fp32 weights."""
        from models.gru import load_gru  # heavy: torch, only to load a checkpoint
        from models.gru_stream import stream_weights

        model = load_gru(folder)
        return cls(stream_weights(model, compression), model.config.sample_rate, **options)

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
        control_block(self._control.copy(), self._conditioning[:1], self._envelope[:1])
        _decode_into(self._mu[:1], self._decode_table, self._envelope[:1], 0.0, self._audio[:1])

    def start(self, sample_rate: int, ring: np.ndarray, positions: np.ndarray) -> None:
        """Prepare, then render in a daemon worker thread until `stop`. With `threaded=False` (offline
        rendering) no thread starts: the caller runs `render_available()` before each block."""
        self.prepare(sample_rate, ring, positions)
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
        idle_wait_s = 0.25 * self.block_samples / self.model_rate_hz
        while not self._stop.is_set():
            if self.render_available() == 0:
                self._stop.wait(idle_wait_s)

    # ---- events (control threads; never block) ---------------------------------------------------
    def _post(self, event: tuple) -> None:
        """Queue an event for the worker; a full queue counts and drops it."""
        if len(self._events) >= EVENT_CAPACITY:
            self.dropped_events += 1
        else:
            self._events.append(event)

    def note_on(self, pitch: float, velocity: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "on", float(pitch), float(velocity)))

    def note_off(self, pitch: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "off", float(pitch)))

    def note_pitch(self, pitch: float, glide_s: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "pitch", float(pitch), max(float(glide_s), 0.0)))

    def pitch_bend(self, semitones: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "bend", float(semitones)))

    def timbre_xy(self, x: float, y: float, glide_s: float, at_frame: int | None = None) -> None:
        self._post((at_frame, "xy", min(max(float(x), 0.0), 1.0), min(max(float(y), 0.0), 1.0),
                             max(float(glide_s), 0.0)))

    def set_glide(self, seconds: float) -> None:
        self.glide_s = max(float(seconds), 0.0)

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
        return kernel_path(self._gru)

    def panic(self) -> None:
        self._post((None, "panic"))

    def is_active(self) -> bool:
        return bool(self._held) or self._control[C_ENV] > 0.0

    def snapshot(self) -> dict:
        """Smoothed parameters at the last rendered sample: pitch (MIDI, without bend), bend
        (semitones), x, y, envelope (0..1), sampling temperature, plus held notes, late and dropped
        events, whether the GRU runs, its kernel path and the samples rendered and computed
        (for status/debugging)."""
        control = self._control
        return {"pitch": float(control[C_PITCH]), "bend": float(control[C_BEND]), "x": float(control[C_X]),
                "y": float(control[C_Y]), "envelope": float(control[C_ENV]), "temperature": self.temperature,
                "held": [entry[0] for entry in self._held], "late_events": self.late_events,
                "dropped_events": self.dropped_events, "computing": self._computing(),
                "kernel_path": self.kernel_path, "rendered_samples": self._next_sample,
                "computed_samples": self.computed_samples}

    # ---- rendering (worker thread) ---------------------------------------------------------------
    def render_available(self, max_blocks: int = 8) -> int:
        """Render blocks while the ring holds fewer than `ahead_frames` frames (at most `max_blocks`);
        returns the frames written."""
        ring, positions = self.ring, self.positions
        capacity = ring.shape[0]
        total = 0
        for _ in range(max_blocks):
            written, read = int(positions[0]), int(positions[1])
            if read > written:  # the consumer skipped ahead: jump with it
                positions[0] = written = read
            if written - read >= self.ahead_frames or capacity - (written - read) < self._frames.shape[0]:
                break
            n_frames = self._render_block()
            start = written % capacity
            first = min(n_frames, capacity - start)
            ring[start:start + first] = self._frames[:first]
            ring[:n_frames - first] = self._frames[first:n_frames]
            positions[0] = written + n_frames
            total += n_frames
        return total

    def _event_sample(self, at_frame: int | None) -> int:
        if at_frame is None:
            return self._next_sample
        ratio_up, ratio_down = self._resampler.up, self._resampler.down
        return -(-int(at_frame) * ratio_down // ratio_up) - self._resampler.delay_input_samples

    def _render_block(self) -> int:
        """One block of model samples -> resampled frames in self._frames; returns their number."""
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

    def _computing(self) -> bool:
        """True while the GRU runs: a note sounds and the mix gain is up (or fading out)."""
        sounding = self._control[C_ENV] > 0.0 or self._control[C_ENV_TARGET] > 0.0
        return sounding and (self._mix_gain > 0.0 or self._mute_left > 0)

    def _render_segment(self, begin: int, end: int) -> None:
        conditioning, envelope = self._conditioning[begin:end], self._envelope[begin:end]
        sounding = self._control[C_ENV] > 0.0 or self._control[C_ENV_TARGET] > 0.0
        computing = self._computing()
        if self._mix_gain <= 0.0:
            self._mute_left = max(self._mute_left - (end - begin), 0)
        control_block(self._control, conditioning, envelope)
        if computing:
            if self._stale:
                self._reset_voice()
                self._stale = False
            gru_stream_sample(self.weights, self._gru, conditioning, self.control_interval, self.temperature,
                              self._mu[begin:end])
            self.computed_samples += end - begin
            _decode_into(self._mu[begin:end], self._decode_table, envelope, self.gain, self._audio[begin:end])
        else:
            self._stale = self._stale or sounding
            self._audio[begin:end] = 0.0

    def _glide(self, fields: tuple, target: float, seconds: float) -> None:
        value, step, left, goal = fields
        n_samples = int(round(seconds * self.model_rate_hz))
        self._control[goal] = target
        if n_samples < 1:
            self._control[value], self._control[left] = target, 0.0
        else:
            self._control[step] = (target - self._control[value]) / n_samples
            self._control[left] = float(n_samples)

    def _apply(self, event: tuple) -> None:
        kind, control = event[0], self._control
        if kind == "on":
            pitch, velocity = event[1], event[2]
            sounding = bool(self._held)
            others = [entry for entry in self._held if entry[0] != pitch]
            self._held = others[max(len(others) - HELD_CAPACITY + 1, 0):] + [[pitch, pitch]]
            if sounding:
                self._glide(_GLIDES[0], pitch, self.glide_s)
            else:
                if control[C_ENV] <= 0.0:
                    self._reset_voice()
                self._glide(_GLIDES[0], pitch, 0.0)
            control[C_ENV_TARGET] = min(max(velocity, 0.0), 127.0) / 127.0
        elif kind == "off":
            index = next((i for i, entry in enumerate(self._held) if event[1] in entry), None)
            if index is None:
                return
            was_top = index == len(self._held) - 1
            del self._held[index]
            if not self._held:
                control[C_ENV_TARGET] = 0.0
            elif was_top:
                self._glide(_GLIDES[0], self._held[-1][1], self.glide_s)
        elif kind == "pitch":
            if self._held:
                self._held[-1][1] = event[1]
                self._glide(_GLIDES[0], event[1], event[2])
        elif kind == "bend":
            control[C_BEND_TARGET] = event[1]
        elif kind == "xy":
            seconds = event[3] if event[3] > 0.0 else self.smooth_s
            self._glide(_GLIDES[1], event[1], seconds)
            self._glide(_GLIDES[2], event[2], seconds)
        elif kind == "temperature":
            self.temperature = event[1]
        elif kind == "mix":
            if event[1] <= 0.0 < self._mix_gain and self._computing():  # fade out what sounds
                self._mute_left = int(round(MUTE_TAIL_S * self.model_rate_hz))
            self._mix_gain = event[1]
        elif kind == "panic":
            self._held = []
            self._pending = []
            control[C_ENV_TARGET] = 0.0
            control[C_ENV] = min(control[C_ENV], 0.005 * self.model_rate_hz * control[C_ENV_DOWN])

    def _reset_voice(self) -> None:
        """Fresh recurrent state (hidden, held conditioning, oscillator phase, previous sample = silence);
        the RNG runs on."""
        self._gru.hidden[:] = 0.0
        self._gru.phase[0] = 0.0
        self._gru.cond_gates[:] = 0.0
        self._gru.counters[0] = mu_law_zero(self.weights.table.shape[0])
        self._gru.counters[1] = 0
