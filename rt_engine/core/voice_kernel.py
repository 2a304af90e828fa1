"""The block kernel: one Numba `nogil` render of a whole stereo block from preallocated state.

`render_block` drains the command ring (`rt_engine.core.commands`) into the pending schedule, applies
the commands due in this block at their exact sample offsets, renders every voice (band-limited
windowed-sinc interpolation of the nearest rendered pitch, ADSR, per-sample glides and bends,
timbre crossfades across bank slots), mixes the stream layer's ring (the GRU voice), applies the
smoothed layer and master gains and a zero-latency peak limiter. It never allocates.

Public API
- `make_sinc_table(n_phases, half_taps, cutoff) -> float32 [n_phases + 1, 2 * half_taps]`
- `interpolate(row, positions, table)` / `interpolate_ref(...)`: band-limited read of a buffer.
- `limit(stereo, ceiling, release_coef, gain_state)` / `limit_ref(...)`: the peak limiter.
- `due_order(pending, n_pending, block_start, block_end, out)`: Numba twin of
  `rt_engine.core.commands.pending_order_ref`.
- `render_block(...)`: the kernel (argument list documented on the function).
- Layout constants of the state arrays: `P_*` (params), `V_*` (voice fields), `C_*` (channel
  fields), `S_*` (slot fields).

Bank layout (prepared off the audio thread by the bank manager): every row of every slot is
`[HEAD_PAD zeros | audio ... | loop tail]`; the region `[loop_start, loop_end)` is a crossfaded loop
and the `half_taps` frames after `loop_end` repeat those after `loop_start`, so a voice wraps its
position from `loop_end` back by `loop_end - loop_start` without a discontinuity.

Band-limiting: banks come from 16 kHz models, so at the device rate they hold nothing above
8 kHz; a voice reading at ratio r moves that to 8 r kHz, alias-free up to r = fs / 16 kHz
(3.0 at 48 kHz: +19 semitones from the rendered pitch, always the case with +-2 semitone bends).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from rt_engine.core.commands import (FIRST_LAYER_KIND, GAIN_GRU, GAIN_MASTER, GAIN_SAMPLER, N_CHANNELS, CommandKind,
                               Counter)
from models.kernel_cache import drop_stale_cache

drop_stale_cache(__name__)

HEAD_PAD = 8
"""Zero frames before each bank row's audio (>= HALF_TAPS)."""
HALF_TAPS = 4
N_TAPS = 2 * HALF_TAPS
"""Taps of the kernel's windowed-sinc interpolator (a compile-time constant: unrolled)."""

# --- params: float64 [N_PARAMS]
P_SAMPLE_RATE = 0
P_GAIN_SAMPLER_T, P_GAIN_SAMPLER = 1, 2      # target / current (linear)
P_GAIN_GRU_T, P_GAIN_GRU = 3, 4
P_GAIN_MASTER_T, P_GAIN_MASTER = 5, 6
P_GAIN_SMOOTH = 7          # one-pole coefficient per frame for gains
P_LIMIT_GAIN = 8           # limiter gain state
P_LIMIT_CEILING = 9        # linear peak ceiling (< 1.0 = below 0 dBFS)
P_LIMIT_RELEASE = 10       # limiter release coefficient per frame
P_ATTACK_S, P_DECAY_S, P_SUSTAIN, P_RELEASE_S = 11, 12, 13, 14
P_VELOCITY_EXPONENT = 15   # gain = (velocity / 127) ** exponent
P_BEND_SMOOTH = 16         # one-pole coefficient per frame for pitch bends
P_FADE_FRAMES = 17         # steal / sound-off fade length (frames)
P_XFADE_FRAMES = 18        # timbre crossfade length (frames)
P_TIMBRE_X, P_TIMBRE_Y = 19, 20
P_TIMBRE_TX, P_TIMBRE_TY = 21, 22
P_TIMBRE_FRAMES_LEFT = 23  # glide frames remaining
P_GRID_N = 24              # grid nodes per side (spacing 1 / (n - 1))
P_LOOP_START, P_LOOP_END = 25, 26   # loop region in each bank row (frames)
P_GRU_PRESENT = 27         # 1 when a stream layer feeds the ring
P_EXACT_SLOT = 28          # slot id of the selected exact bank (-1: blend the grid at the point)
P_TIMBRE_GENERATION = 29   # newest timbre request applied: older bank selections are ignored
P_GRID_ATTACK_S, P_GRID_DECAY_S, P_GRID_SUSTAIN, P_GRID_RELEASE_S = 30, 31, 32, 33  # grid envelope
N_PARAMS = 34

# --- voices: float64 [n_voices + n_tail, N_VOICE_FIELDS]
V_STATE = 0        # FREE / HELD / RELEASED / FADING
V_STAGE = 1        # 0 attack, 1 decay-sustain
V_ENV = 2
V_FADE = 3         # fade gain while FADING (1 -> 0)
V_FADE_STEP = 4
V_NOTE_ID = 5
V_CHANNEL = 6      # channel slot 0..16
V_PITCH = 7        # base pitch (MIDI), glides towards V_PITCH_TARGET
V_PITCH_TARGET = 8
V_PITCH_STEP = 9   # semitones per frame while gliding
V_KEY_PITCH = 10   # pitch of the note-on (note-off by pitch matches it)
V_ROW = 11
V_POS = 12         # read position in the row (frames, fractional)
V_GAIN = 13        # velocity gain
V_PAN_L, V_PAN_R = 14, 15
V_START = 16       # absolute frame of the note-on
V_SUSTAINED = 17   # released while the pedal was down
V_RATIO = 18       # cached read increment
V_RATIO_PITCH = 19 # total pitch the cached ratio belongs to
N_VOICE_FIELDS = 20
FREE, HELD, RELEASED, FADING = 0.0, 1.0, 2.0, 3.0
N_TAIL_VOICES = 16
"""Extra voice rows that only play out the fades of stolen voices."""

# --- channels: float64 [N_CHANNELS, N_CHANNEL_FIELDS]
C_BEND_T, C_BEND, C_SUSTAIN = 0, 1, 2
N_CHANNEL_FIELDS = 3

# --- slots: float64 [n_slots, N_SLOT_FIELDS]; written by the bank manager except S_USAGE
S_KIND, S_X, S_Y = 0, 1, 2
S_USAGE = 3   # written by the kernel: target + voice weights on the slot after the last block
S_SEEN = 4    # written by the kernel: absolute frame at the end of the block S_USAGE belongs to
S_ATTACK_S, S_DECAY_S, S_SUSTAIN, S_RELEASE_S = 5, 6, 7, 8  # the bank's envelope (s, s, level, s)
SLOT_EMPTY, SLOT_GRID, SLOT_EXACT = 0.0, 1.0, 2.0
N_SLOT_FIELDS = 9

SILENCE_LEVEL = 1e-4  # a released voice below this envelope level (-80 dB) is freed


def make_sinc_table(n_phases: int = 512, half_taps: int = HALF_TAPS, cutoff: float = 0.45,
                    kaiser_beta: float = 7.0) -> np.ndarray:
    """Kaiser-windowed sinc taps, float32 [n_phases + 1, 2 * half_taps].

    Row p holds the taps for fractional position p / n_phases: tap k weighs sample
    `floor(pos) - half_taps + 1 + k`. `cutoff` is in cycles per sample (0.5 = Nyquist); each row
    is normalised to unit DC gain."""
    if n_phases < 1 or half_taps < 1 or not 0.0 < cutoff <= 0.5:
        raise ValueError(f"bad sinc table spec: n_phases={n_phases}, half_taps={half_taps}, "
                         f"cutoff={cutoff}")
    frac = np.arange(n_phases + 1)[:, None] / n_phases
    k = np.arange(2 * half_taps)[None, :]
    distance = k - (half_taps - 1) - frac
    window = np.kaiser(2 * half_taps * 64 + 1, kaiser_beta)
    window_at = np.interp(distance, np.linspace(-half_taps, half_taps, window.size), window)
    taps = 2 * cutoff * np.sinc(2 * cutoff * distance) * window_at
    taps /= taps.sum(axis=1, keepdims=True)
    return taps.astype(np.float32)


def interpolate_ref(row: np.ndarray, positions: np.ndarray, table: np.ndarray) -> np.ndarray:
    """NumPy reference: band-limited read of `row` (float32 [n_frames]) at fractional
    `positions` (float64 [n], frames, each >= half_taps - 1 and < n_frames - half_taps);
    returns float64 [n]."""
    n_phases = table.shape[0] - 1
    half_taps = table.shape[1] // 2
    base = np.floor(positions).astype(np.int64)
    phase = np.floor((positions - base) * n_phases + 0.5).astype(np.int64)
    index = base[:, None] - (half_taps - 1) + np.arange(2 * half_taps)[None, :]
    return (row[index].astype(np.float64) * table[phase].astype(np.float64)).sum(axis=1)


@numba.njit(cache=True, nogil=True, inline="always", fastmath=True)
def _dot_taps(row, position, table, n_phases):
    """One band-limited read of float32 `row` at `position` (frames, >= 0): N_TAPS products
    accumulated in float32 (the kernel's inner loop)."""
    base = int(position)
    phase = int((position - base) * n_phases + 0.5)
    first = base - (HALF_TAPS - 1)
    acc = np.float32(0.0)
    for k in range(N_TAPS):
        acc += row[first + k] * table[phase, k]
    return acc


@numba.njit(cache=True, nogil=True)
def interpolate(row, positions, table):
    """Numba twin of `interpolate_ref` (same signature and result; the table must have
    `N_TAPS` columns)."""
    n_phases = table.shape[0] - 1
    out = np.empty(positions.shape[0])
    for i in range(positions.shape[0]):
        out[i] = _dot_taps(row, positions[i], table, n_phases)
    return out


def limit_ref(stereo: np.ndarray, ceiling: float, release_coef: float,
              gain_state: np.ndarray) -> np.ndarray:
    """NumPy reference of the zero-latency peak limiter: `stereo` float64 [2, n] -> float64
    [2, n] whose peaks never exceed `ceiling` (linear). Instant attack, one-pole release
    (`release_coef` per frame). `gain_state` float64 [1] carries the gain across blocks."""
    out = np.empty_like(stereo)
    gain = gain_state[0]
    for i in range(stereo.shape[1]):
        peak = max(abs(stereo[0, i]), abs(stereo[1, i]))
        wanted = ceiling / peak if peak > ceiling else 1.0
        gain = wanted if wanted < gain else wanted + (gain - wanted) * release_coef
        out[:, i] = stereo[:, i] * gain
    gain_state[0] = gain
    return out


@numba.njit(cache=True, nogil=True)
def _limit_inplace(left, right, n, ceiling, release_coef, gain):
    for i in range(n):
        a, b = left[i], right[i]
        if not (math.isfinite(a) and math.isfinite(b)):
            left[i] = 0.0
            right[i] = 0.0
            continue
        peak = max(abs(a), abs(b))
        wanted = ceiling / peak if peak > ceiling else 1.0
        gain = wanted if wanted < gain else wanted + (gain - wanted) * release_coef
        left[i] = a * gain
        right[i] = b * gain
    return gain


@numba.njit(cache=True, nogil=True)
def limit(stereo, ceiling, release_coef, gain_state):
    """Numba twin of `limit_ref` (same signature and result)."""
    out = stereo.copy()
    gain_state[0] = _limit_inplace(out[0], out[1], out.shape[1], ceiling, release_coef,
                                   gain_state[0])
    return out


@numba.njit(cache=True, nogil=True)
def due_order(pending, n_pending, block_start, block_end, out):
    """Indices (into `out`, int64 [>= n_pending]) of the pending records due before `block_end`,
    sorted by (effective frame, seq); returns how many. Twin of `pending_order_ref`."""
    n_due = 0
    for j in range(n_pending):
        if max(pending[j]["frame"], block_start) < block_end:
            out[n_due] = j
            n_due += 1
    for i in range(1, n_due):  # insertion sort: the due list is short and mostly ordered
        key = out[i]
        key_frame = max(pending[key]["frame"], block_start)
        key_seq = pending[key]["seq"]
        j = i - 1
        while j >= 0:
            other = out[j]
            other_frame = max(pending[other]["frame"], block_start)
            if other_frame < key_frame or (other_frame == key_frame and pending[other]["seq"] < key_seq):
                break
            out[j + 1] = other
            j -= 1
        out[j + 1] = key
    return n_due


@numba.njit(cache=True, nogil=True, inline="always")
def _copy_record(src, i, dst, j):
    dst[j]["kind"] = src[i]["kind"]
    dst[j]["channel"] = src[i]["channel"]
    dst[j]["frame"] = src[i]["frame"]
    dst[j]["seq"] = src[i]["seq"]
    dst[j]["note_id"] = src[i]["note_id"]
    dst[j]["a"] = src[i]["a"]
    dst[j]["b"] = src[i]["b"]
    dst[j]["c"] = src[i]["c"]


@numba.njit(cache=True, nogil=True)
def _slot_targets(params, slots, target):
    """Slot weights for the current timbre: the selected exact bank (`P_EXACT_SLOT`) while it is
    live, else bilinear weights of the grid nodes around the timbre point."""
    n_slots = slots.shape[0]
    x, y = params[P_TIMBRE_X], params[P_TIMBRE_Y]
    for s in range(n_slots):
        target[s] = 0.0
    exact = int(params[P_EXACT_SLOT])
    if 0 <= exact < n_slots and slots[exact, S_KIND] == SLOT_EXACT:
        target[exact] = 1.0
        return
    last = params[P_GRID_N] - 1.0
    gx, gy = min(max(x, 0.0), 1.0) * last, min(max(y, 0.0), 1.0) * last
    ix = min(max(int(math.floor(gx)), 0), int(last) - 1)
    iy = min(max(int(math.floor(gy)), 0), int(last) - 1)
    fx, fy = gx - ix, gy - iy
    for corner in range(4):
        cx = ix + (corner & 1)
        cy = iy + (corner >> 1)
        weight = (fx if corner & 1 else 1.0 - fx) * (fy if corner >> 1 else 1.0 - fy)
        if weight <= 0.0:
            continue
        for s in range(n_slots):
            if (slots[s, S_KIND] == SLOT_GRID and abs(slots[s, S_X] * last - cx) < 1e-6
                    and abs(slots[s, S_Y] * last - cy) < 1e-6):
                target[s] += weight
                break


@numba.njit(cache=True, nogil=True)
def _voice_targets(slots, row_ready, target, row, x, y, out):
    """Per-voice slot weights [n_slots]: the slot targets restricted to slots whose `row` is
    ready, normalised; else the nearest slot (in the timbre plane) holding the row."""
    n_slots = slots.shape[0]
    total = 0.0
    for s in range(n_slots):
        out[s] = target[s] if (row_ready[s, row] and slots[s, S_KIND] != SLOT_EMPTY) else 0.0
        total += out[s]
    if total > 0.0:
        for s in range(n_slots):
            out[s] /= total
        return
    best, best_distance = -1, 1e9
    for s in range(n_slots):
        if row_ready[s, row] and slots[s, S_KIND] != SLOT_EMPTY:
            distance = (slots[s, S_X] - x) ** 2 + (slots[s, S_Y] - y) ** 2
            if distance < best_distance:
                best, best_distance = s, distance
    if best >= 0:
        out[best] = 1.0


@numba.njit(cache=True, nogil=True)
def _nearest_row(row_pitch, slots, row_ready, pitch):
    """Nearest rendered pitch row that some live slot holds (else the nearest row)."""
    best, best_any = -1, 0
    best_distance, best_any_distance = 1e9, 1e9
    for r in range(row_pitch.shape[0]):
        distance = abs(row_pitch[r] - pitch)
        if distance < best_any_distance:
            best_any, best_any_distance = r, distance
        if distance < best_distance:
            for s in range(slots.shape[0]):
                if row_ready[s, r] and slots[s, S_KIND] != SLOT_EMPTY:
                    best, best_distance = r, distance
                    break
    return best if best >= 0 else best_any


@numba.njit(cache=True, nogil=True)
def _set_envelope(params, attack_s, decay_s, sustain, release_s):
    params[P_ATTACK_S] = max(attack_s, 0.0)
    params[P_DECAY_S] = max(decay_s, 0.0)
    params[P_SUSTAIN] = min(max(sustain, 0.0), 1.0)
    params[P_RELEASE_S] = max(release_s, 0.0)


@numba.njit(cache=True, nogil=True)
def _start_fade(voices, v, fade_frames):
    level = voices[v, V_FADE] if voices[v, V_STATE] == FADING else 1.0
    voices[v, V_STATE] = FADING
    voices[v, V_FADE] = level
    voices[v, V_FADE_STEP] = level / max(fade_frames, 1.0)


@numba.njit(cache=True, nogil=True)
def _release(voices, channels, v):
    if voices[v, V_STATE] != HELD:
        return
    if channels[int(voices[v, V_CHANNEL]), C_SUSTAIN] > 0.5:
        voices[v, V_SUSTAINED] = 1.0
    else:
        voices[v, V_STATE] = RELEASED


@numba.njit(cache=True, nogil=True)
def _steal(voices, voice_w, w_step, n_pool, frame, sample_rate, fade_frames, counters):
    """Pick a pool voice for a new note: a free one, else the quietest released one, else the
    quietest held one weighted towards the oldest. A stolen voice's sound moves to a tail row
    and fades out there."""
    victim, victim_score = -1, 1e18
    for v in range(n_pool):
        if voices[v, V_STATE] == FREE:
            return v
    for v in range(n_pool):
        if voices[v, V_STATE] == RELEASED or voices[v, V_STATE] == FADING:
            score = voices[v, V_ENV] * voices[v, V_GAIN]
            if score < victim_score:
                victim, victim_score = v, score
    if victim < 0:
        for v in range(n_pool):
            age_s = (frame - voices[v, V_START]) / sample_rate
            score = voices[v, V_ENV] * voices[v, V_GAIN] / (1.0 + age_s)
            if score < victim_score:
                victim, victim_score = v, score
    tail, tail_left = -1, 1e18
    for t in range(n_pool, voices.shape[0]):
        left = voices[t, V_FADE] if voices[t, V_STATE] == FADING else -1.0
        if left < tail_left:
            tail, tail_left = t, left
    if tail >= 0:
        voices[tail, :] = voices[victim, :]
        voice_w[tail, :] = voice_w[victim, :]
        w_step[tail, :] = w_step[victim, :]
        _start_fade(voices, tail, fade_frames)
    counters[Counter.STEALS] += 1
    return victim


@numba.njit(cache=True, nogil=True)
def _apply(cmd, frame, voices, voice_w, w_step, channels, params, counters, slots, row_ready,
           row_pitch, target, work):
    """Apply one command record at absolute `frame`."""
    kind = cmd["kind"]
    slot = cmd["channel"] + 1
    n_pool = voices.shape[0] - N_TAIL_VOICES
    sample_rate = params[P_SAMPLE_RATE]
    if kind == CommandKind.NOTE_ON:
        pitch, velocity, note_id = cmd["a"], cmd["b"], cmd["note_id"]
        for v in range(n_pool):  # re-strike of a held note releases it
            if (voices[v, V_STATE] == HELD and voices[v, V_NOTE_ID] == note_id
                    and voices[v, V_CHANNEL] == slot and (note_id >= 0 or voices[v, V_KEY_PITCH] == pitch)):
                voices[v, V_STATE] = RELEASED
        v = _steal(voices, voice_w, w_step, n_pool, frame, sample_rate, params[P_FADE_FRAMES],
                   counters)
        row = _nearest_row(row_pitch, slots, row_ready, pitch)
        pan = min(max(0.5 + 0.3 * (pitch - 64.0) / 44.0, 0.2), 0.8)
        voices[v, :] = 0.0
        voices[v, V_STATE] = HELD
        voices[v, V_NOTE_ID] = note_id
        voices[v, V_CHANNEL] = slot
        voices[v, V_PITCH] = pitch
        voices[v, V_PITCH_TARGET] = pitch
        voices[v, V_KEY_PITCH] = pitch
        voices[v, V_ROW] = row
        voices[v, V_POS] = HEAD_PAD
        voices[v, V_GAIN] = (min(max(velocity, 0.0), 127.0) / 127.0) ** params[P_VELOCITY_EXPONENT]
        voices[v, V_PAN_L] = math.cos(0.5 * math.pi * pan)
        voices[v, V_PAN_R] = math.sin(0.5 * math.pi * pan)
        voices[v, V_START] = frame
        voices[v, V_RATIO_PITCH] = -1e9
        _voice_targets(slots, row_ready, target, row, params[P_TIMBRE_X], params[P_TIMBRE_Y], work)
        voice_w[v, :] = work[: voice_w.shape[1]]
        w_step[v, :] = 0.0
    elif kind == CommandKind.NOTE_OFF_PITCH or kind == CommandKind.NOTE_OFF_ID:
        for v in range(voices.shape[0]):
            if kind == CommandKind.NOTE_OFF_ID:
                match = voices[v, V_NOTE_ID] == cmd["note_id"]
            else:
                match = abs(voices[v, V_KEY_PITCH] - cmd["a"]) < 1e-6 and (slot == 0 or voices[v, V_CHANNEL] == slot)
            if match:
                _release(voices, channels, v)
    elif kind == CommandKind.NOTE_PITCH:
        frames = max(cmd["b"] * sample_rate, 1.0)
        for v in range(voices.shape[0]):
            if voices[v, V_NOTE_ID] == cmd["note_id"] and voices[v, V_STATE] != FREE:
                voices[v, V_PITCH_TARGET] = cmd["a"]
                voices[v, V_PITCH_STEP] = (cmd["a"] - voices[v, V_PITCH]) / frames
    elif kind == CommandKind.PITCH_BEND:
        for c in range(N_CHANNELS):
            if slot == 0 or c == slot:
                channels[c, C_BEND_T] = cmd["a"]
    elif kind == CommandKind.SUSTAIN or kind == CommandKind.RESET_CONTROLLERS:
        down = cmd["a"] > 0.5 and kind == CommandKind.SUSTAIN
        for c in range(N_CHANNELS):
            if slot == 0 or c == slot:
                channels[c, C_SUSTAIN] = 1.0 if down else 0.0
                if kind == CommandKind.RESET_CONTROLLERS:
                    channels[c, C_BEND_T] = 0.0
        if not down:
            for v in range(voices.shape[0]):
                if voices[v, V_SUSTAINED] > 0.5 and (slot == 0 or voices[v, V_CHANNEL] == slot):
                    voices[v, V_SUSTAINED] = 0.0
                    if voices[v, V_STATE] == HELD:
                        voices[v, V_STATE] = RELEASED
    elif kind == CommandKind.ALL_NOTES_OFF:
        for v in range(voices.shape[0]):
            if slot == 0 or voices[v, V_CHANNEL] == slot:
                _release(voices, channels, v)
    elif kind == CommandKind.ALL_SOUND_OFF or kind == CommandKind.PANIC:
        for v in range(voices.shape[0]):
            if voices[v, V_STATE] != FREE and (slot == 0 or kind == CommandKind.PANIC or voices[v, V_CHANNEL] == slot):
                _start_fade(voices, v, params[P_FADE_FRAMES])
    elif kind == CommandKind.TIMBRE_XY:
        params[P_TIMBRE_GENERATION] = max(params[P_TIMBRE_GENERATION], float(cmd["note_id"]))
        if params[P_EXACT_SLOT] >= 0.0:  # back to the grid and its envelope
            params[P_EXACT_SLOT] = -1.0
            _set_envelope(params, params[P_GRID_ATTACK_S], params[P_GRID_DECAY_S],
                          params[P_GRID_SUSTAIN], params[P_GRID_RELEASE_S])
        params[P_TIMBRE_TX] = cmd["a"]
        params[P_TIMBRE_TY] = cmd["b"]
        params[P_TIMBRE_FRAMES_LEFT] = max(math.floor(cmd["c"] * sample_rate), 0.0)
        if params[P_TIMBRE_FRAMES_LEFT] == 0.0:
            params[P_TIMBRE_X] = params[P_TIMBRE_TX]
            params[P_TIMBRE_Y] = params[P_TIMBRE_TY]
    elif kind == CommandKind.SET_GAIN:
        layer = cmd["channel"]
        index = P_GAIN_SAMPLER_T if layer == GAIN_SAMPLER else (P_GAIN_GRU_T if layer == GAIN_GRU else P_GAIN_MASTER_T)
        if layer == GAIN_SAMPLER or layer == GAIN_GRU or layer == GAIN_MASTER:
            params[index] = max(cmd["a"], 0.0)
    elif kind == CommandKind.SELECT_BANK:
        s = cmd["note_id"]
        if cmd["a"] >= params[P_TIMBRE_GENERATION] and 0 <= s < slots.shape[0] and slots[s, S_KIND] == SLOT_EXACT:
            params[P_TIMBRE_GENERATION] = cmd["a"]
            params[P_EXACT_SLOT] = s
            _set_envelope(params, slots[s, S_ATTACK_S], slots[s, S_DECAY_S], slots[s, S_SUSTAIN],
                          slots[s, S_RELEASE_S])
    counters[Counter.COMMANDS] += 1


@numba.njit(cache=True, nogil=True, fastmath=True)
def _render_voices(start, stop, voices, voice_w, w_step, params, banks, row_pitch, sinc_table,
                   bend_curve, mix):
    """Add frames [start, stop) of every sounding voice to `mix` float64 [2, block]."""
    n_phases = sinc_table.shape[0] - 1
    n_slots = banks.shape[0]
    sample_rate = params[P_SAMPLE_RATE]
    attack_step = 1.0 / max(params[P_ATTACK_S] * sample_rate, 1.0)
    sustain = params[P_SUSTAIN]
    decay_coef = 10.0 ** (-3.0 / max(params[P_DECAY_S] * sample_rate, 1.0))
    release_coef = 10.0 ** (-3.0 / max(params[P_RELEASE_S] * sample_rate, 1.0))
    loop_start, loop_end = params[P_LOOP_START], params[P_LOOP_END]
    loop_length = loop_end - loop_start
    for v in range(voices.shape[0]):
        state = voices[v, V_STATE]
        if state == FREE:
            continue
        row = int(voices[v, V_ROW])
        channel = int(voices[v, V_CHANNEL])
        env, stage, fade = voices[v, V_ENV], voices[v, V_STAGE], voices[v, V_FADE]
        fade_step = voices[v, V_FADE_STEP]
        pitch, position = voices[v, V_PITCH], voices[v, V_POS]
        pitch_step, pitch_target = voices[v, V_PITCH_STEP], voices[v, V_PITCH_TARGET]
        ratio, ratio_pitch = voices[v, V_RATIO], voices[v, V_RATIO_PITCH]
        row_semitones = row_pitch[row]
        gain_l = voices[v, V_GAIN] * voices[v, V_PAN_L]
        gain_r = voices[v, V_GAIN] * voices[v, V_PAN_R]
        n_active, only = 0, 0  # slots this voice reads during the block; the fast path reads one
        for s in range(n_slots):
            if voice_w[v, s] != 0.0 or w_step[v, s] != 0.0:
                n_active += 1
                only = s
        only_row = banks[only, row]
        only_w, only_dw = voice_w[v, only], w_step[v, only]
        for i in range(start, stop):
            if pitch_step != 0.0:
                pitch += pitch_step
                if (pitch_step > 0.0) == (pitch >= pitch_target):
                    pitch, pitch_step = pitch_target, 0.0
            total_pitch = pitch + bend_curve[channel, i]
            if total_pitch != ratio_pitch:
                ratio = 2.0 ** ((total_pitch - row_semitones) / 12.0)
                ratio_pitch = total_pitch
            if state == FADING:
                fade -= fade_step
                if fade <= 0.0:
                    state = FREE
                    break
            elif state == RELEASED:
                env *= release_coef
                if env < SILENCE_LEVEL:
                    state = FREE
                    break
            elif stage == 0.0:
                env += attack_step
                if env >= 1.0:
                    env, stage = 1.0, 1.0
            else:
                env = sustain + (env - sustain) * decay_coef
            if n_active == 1:
                value = (only_w + only_dw * i) * _dot_taps(only_row, position, sinc_table, n_phases)
            else:
                value = 0.0
                for s in range(n_slots):
                    weight = voice_w[v, s] + w_step[v, s] * i
                    if weight > 0.0:
                        value += weight * _dot_taps(banks[s, row], position, sinc_table, n_phases)
            value *= env * (fade if state == FADING else 1.0)
            mix[0, i] += value * gain_l
            mix[1, i] += value * gain_r
            position += ratio
            if position >= loop_end:
                position -= loop_length
        voices[v, V_STATE] = state
        voices[v, V_ENV], voices[v, V_STAGE], voices[v, V_FADE] = env, stage, fade
        voices[v, V_PITCH], voices[v, V_POS] = pitch, position
        voices[v, V_PITCH_STEP] = pitch_step
        voices[v, V_RATIO], voices[v, V_RATIO_PITCH] = ratio, ratio_pitch


@numba.njit(cache=True, nogil=True)
def _bend_segment(channels, coef, start, stop, bend_curve):
    for c in range(N_CHANNELS):
        bend, bend_target = channels[c, C_BEND], channels[c, C_BEND_T]
        for i in range(start, stop):
            bend = bend_target + (bend - bend_target) * coef
            if abs(bend - bend_target) < 1e-7:
                bend = bend_target
            bend_curve[c, i] = bend
        channels[c, C_BEND] = bend


@numba.njit(cache=True, nogil=True)
def _ramp_weights(n_frames, voices, voice_w, w_step, params, slots, row_ready, target, work):
    """Per-voice slot-weight ramps for this block: towards the current targets, at most a full
    crossfade per `P_XFADE_FRAMES`, normalised at both ends of the block."""
    n_slots = slots.shape[0]
    max_delta = n_frames / max(params[P_XFADE_FRAMES], 1.0)
    for v in range(voices.shape[0]):
        if voices[v, V_STATE] == FREE:
            continue
        _voice_targets(slots, row_ready, target, int(voices[v, V_ROW]), params[P_TIMBRE_X],
                       params[P_TIMBRE_Y], work)
        total = 0.0
        for s in range(n_slots):
            delta = min(max(work[s] - voice_w[v, s], -max_delta), max_delta)
            work[s] = max(voice_w[v, s] + delta, 0.0)
            total += work[s]
        for s in range(n_slots):
            end = work[s] / total if total > 0.0 else 0.0
            w_step[v, s] = (end - voice_w[v, s]) / n_frames


@numba.njit(cache=True, nogil=True)
def render_block(out, n_frames, queue, queue_pos, pending, voices, voice_w, w_step, channels,
                 params, counters, slots, row_ready, row_pitch, banks, sinc_table, gru_ring,
                 gru_pos, mix, bend_curve, work, due):
    """Render one block of `n_frames` frames into `out` float32 [2, >= n_frames].

    State (all preallocated, updated in place):
    queue, queue_pos: the command ring (`COMMAND_DTYPE` [capacity], int64 [2] written/read);
    pending: the pending schedule (`COMMAND_DTYPE` [PENDING_CAPACITY]);
    voices float64 [n_pool + N_TAIL_VOICES, N_VOICE_FIELDS]; voice_w, w_step float64
    [n_voices, n_slots] (slot weights at block start and their per-frame ramps);
    channels float64 [N_CHANNELS, N_CHANNEL_FIELDS]; params float64 [N_PARAMS];
    counters int64 [Counter.N];
    slots float64 [n_slots, N_SLOT_FIELDS]; row_ready uint8 [n_slots, n_rows];
    row_pitch float64 [n_rows] (MIDI); banks float32 [n_slots, n_rows, n_bank_frames] at the
    device rate (layout in the module docstring); sinc_table float32 [n_phases + 1, n_taps];
    gru_ring float32 [capacity], gru_pos int64 [2] (written/read; read by this kernel);
    scratch: mix float64 [2, max_block], bend_curve float64 [N_CHANNELS, max_block],
    work float64 [>= 2 * n_slots], due int64 [PENDING_CAPACITY].
    """
    block_start = counters[Counter.FRAME]
    block_end = block_start + n_frames
    n_slots = slots.shape[0]
    target = work[n_slots:]

    # 1. drain the ring into the pending schedule
    capacity = queue.shape[0]
    n_pending = counters[Counter.PENDING]
    read, written = queue_pos[1], queue_pos[0]
    while read < written:
        record = queue[read % capacity]
        if record["skip_kernel"] != 0 or record["kind"] >= FIRST_LAYER_KIND:
            pass  # applied by the native callback already, or for the stream layers only
        elif n_pending < pending.shape[0]:
            _copy_record(queue, read % capacity, pending, n_pending)
            n_pending += 1
        else:
            counters[Counter.DROPPED] += 1
        read += 1
    queue_pos[1] = read

    # 2. timbre glide and slot-weight ramps (block rate; ramps are linear per frame)
    left = params[P_TIMBRE_FRAMES_LEFT]
    if left > 0.0:
        step = min(float(n_frames), left) / left
        params[P_TIMBRE_X] += (params[P_TIMBRE_TX] - params[P_TIMBRE_X]) * step
        params[P_TIMBRE_Y] += (params[P_TIMBRE_TY] - params[P_TIMBRE_Y]) * step
        params[P_TIMBRE_FRAMES_LEFT] = max(left - n_frames, 0.0)
    _slot_targets(params, slots, target)
    _ramp_weights(n_frames, voices, voice_w, w_step, params, slots, row_ready, target, work)

    # 3. commands at their exact offsets, voices rendered between them
    for i in range(n_frames):
        mix[0, i] = 0.0
        mix[1, i] = 0.0
    skip_sampler = params[P_GAIN_SAMPLER_T] <= 0.0 and params[P_GAIN_SAMPLER] < 1e-6
    n_due = due_order(pending, n_pending, block_start, block_end, due)
    cursor = 0
    panicked = False
    for d in range(n_due + 1):
        offset = n_frames
        if d < n_due:
            frame = pending[due[d]]["frame"]
            if 0 <= frame < block_start:
                counters[Counter.LATE] += 1
            offset = max(frame, block_start) - block_start
        if offset > cursor:
            _bend_segment(channels, params[P_BEND_SMOOTH], cursor, offset, bend_curve)
            if not skip_sampler:
                _render_voices(cursor, offset, voices, voice_w, w_step, params, banks, row_pitch,
                               sinc_table, bend_curve, mix)
            cursor = offset
        if d < n_due:
            record = pending[due[d]]
            panicked = panicked or record["kind"] == CommandKind.PANIC
            _apply(record, block_start + offset, voices, voice_w, w_step, channels, params,
                   counters, slots, row_ready, row_pitch, target, work)
    kept = 0
    if not panicked:
        for j in range(n_pending):
            if max(pending[j]["frame"], block_start) >= block_end:
                if kept != j:
                    _copy_record(pending, j, pending, kept)
                kept += 1
    counters[Counter.PENDING] = kept

    # 4. end-of-block weights, slot usage, voice count
    n_sounding = 0
    for s in range(n_slots):
        slots[s, S_USAGE] = target[s]
        slots[s, S_SEEN] = block_end
    for v in range(voices.shape[0]):
        if voices[v, V_STATE] == FREE:
            continue
        n_sounding += 1
        for s in range(n_slots):
            voice_w[v, s] = max(voice_w[v, s] + w_step[v, s] * n_frames, 0.0)
            w_step[v, s] = 0.0
            slots[s, S_USAGE] += voice_w[v, s]
    counters[Counter.VOICES] = n_sounding

    # 5. stream layer, gains, limiter
    ring_capacity = gru_ring.shape[0]
    available = gru_pos[0] - gru_pos[1] if params[P_GRU_PRESENT] > 0.0 else 0
    take = max(0, min(n_frames, available))
    if params[P_GRU_PRESENT] > 0.0 and take < n_frames:
        counters[Counter.GRU_UNDERRUNS] += n_frames - take
    smooth = params[P_GAIN_SMOOTH]
    gain_s, gain_g, gain_m = params[P_GAIN_SAMPLER], params[P_GAIN_GRU], params[P_GAIN_MASTER]
    target_s, target_g, target_m = params[P_GAIN_SAMPLER_T], params[P_GAIN_GRU_T], params[P_GAIN_MASTER_T]
    gru_read = gru_pos[1]
    for i in range(n_frames):
        gain_s = target_s + (gain_s - target_s) * smooth
        gain_g = target_g + (gain_g - target_g) * smooth
        gain_m = target_m + (gain_m - target_m) * smooth
        layer = gru_ring[(gru_read + i) % ring_capacity] * gain_g if i < take else 0.0
        mix[0, i] = (mix[0, i] * gain_s + layer) * gain_m
        mix[1, i] = (mix[1, i] * gain_s + layer) * gain_m
    # The read position tracks engine frames even through a shortfall (the layer then skips its
    # write position ahead), so the layer's frame-stamped events never drift.
    gru_pos[1] = gru_read + (n_frames if params[P_GRU_PRESENT] > 0.0 else take)
    params[P_GAIN_SAMPLER], params[P_GAIN_GRU], params[P_GAIN_MASTER] = gain_s, gain_g, gain_m
    params[P_LIMIT_GAIN] = _limit_inplace(mix[0], mix[1], n_frames, params[P_LIMIT_CEILING],
                                          params[P_LIMIT_RELEASE], params[P_LIMIT_GAIN])
    for i in range(n_frames):
        out[0, i] = mix[0, i]
        out[1, i] = mix[1, i]
    counters[Counter.FRAME] = block_end


@numba.njit(cache=True, nogil=True)
def adopt_voices(old_voices, old_w, new_voices, new_w, fade_frames):
    """Move the sounding voices of the old pool into a resized one (staged polyphony change;
    no allocation). Voices that no longer fit the pool fade out in the new tail rows, or are
    dropped when those are full."""
    n_new_pool = new_voices.shape[0] - N_TAIL_VOICES
    n_slots = min(old_w.shape[1], new_w.shape[1])
    dst, tail = 0, n_new_pool
    for v in range(old_voices.shape[0]):
        if old_voices[v, V_STATE] == FREE:
            continue
        fits_pool = dst < n_new_pool and old_voices[v, V_STATE] != FADING
        if not fits_pool and tail >= new_voices.shape[0]:
            continue
        target_row = dst if fits_pool else tail
        new_voices[target_row, :] = old_voices[v, :]
        new_w[target_row, :n_slots] = old_w[v, :n_slots]
        if fits_pool:
            dst += 1
        else:
            if new_voices[target_row, V_STATE] != FADING:
                _start_fade(new_voices, target_row, fade_frames)
            tail += 1
