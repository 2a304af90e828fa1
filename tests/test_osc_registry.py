"""The OSC registry validates messages and translates them into EngineControl calls (no sockets).

`RecordingEngine` lives here and is shared by the other control tests (server, MIDI, patches).
"""
from __future__ import annotations

import math
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from rt_engine.osc import osc_registry
from rt_engine.osc.osc_registry import (MIDI_NOTE_ID_BASE, NOT_FOUND, REGISTRY, ServerHooks, dispatch,
                                    markdown, status_pairs)


class RecordingEngine:
    """A fake EngineControl: records every call as (method name, arguments dict)."""

    sample_rate = 48000

    def __init__(self, presets: tuple[str, ...] = ("bright", "dark", "warm"), t0: float | None = None):
        self.presets = list(presets)
        self.t0 = time.time() if t0 is None else t0
        self.calls: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.fail_with: Exception | None = None
        self.n_timed = 0
        self.n_late = 0

    def _record(self, method: str, **kwargs) -> bool:
        if self.fail_with is not None:
            raise self.fail_with
        at_frame = kwargs.get("at_frame")
        with self.lock:
            self.calls.append((method, kwargs))
            if at_frame is not None:
                self.n_timed += 1
                self.n_late += at_frame < self.frame_for_time(time.time())
        return True

    def named(self, name: str) -> list[dict]:
        with self.lock:
            return [kwargs for call, kwargs in self.calls if call == name]

    def frame_for_time(self, unix_time_s):
        return int(round((unix_time_s - self.t0) * self.sample_rate))

    def note_on(self, pitch, velocity, note_id=-1, channel=-1, at_frame=None):
        return self._record("note_on", pitch=pitch, velocity=velocity, note_id=note_id, channel=channel,
                            at_frame=at_frame)

    def note_off(self, pitch=None, note_id=None, channel=-1, at_frame=None):
        assert (pitch is None) != (note_id is None), "exactly one of pitch, note_id"
        return self._record("note_off", pitch=pitch, note_id=note_id, channel=channel, at_frame=at_frame)

    def note_pitch(self, note_id, pitch, glide_s=0.0, at_frame=None):
        return self._record("note_pitch", note_id=note_id, pitch=pitch, glide_s=glide_s, at_frame=at_frame)

    def pitch_bend(self, channel, semitones, at_frame=None):
        return self._record("pitch_bend", channel=channel, semitones=semitones, at_frame=at_frame)

    def sustain(self, channel, down, at_frame=None):
        return self._record("sustain", channel=channel, down=down, at_frame=at_frame)

    def all_notes_off(self, channel=-1, at_frame=None):
        return self._record("all_notes_off", channel=channel, at_frame=at_frame)

    def all_sound_off(self, channel=-1, at_frame=None):
        return self._record("all_sound_off", channel=channel, at_frame=at_frame)

    def reset_controllers(self, channel=-1, at_frame=None):
        return self._record("reset_controllers", channel=channel, at_frame=at_frame)

    def timbre_xy(self, x, y, glide_s=0.0, at_frame=None):
        return self._record("timbre_xy", x=x, y=y, glide_s=glide_s, at_frame=at_frame)

    def timbre_preset(self, name):
        if name not in self.presets:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(self.presets)}")
        self._record("timbre_preset", name=name)

    def timbre_audio(self, path, on_done, on_fail):
        self._record("timbre_audio", path=path)
        if path.endswith(".wav"):
            on_done()
        else:
            on_fail(f"cannot read {path}")

    def gru_glide(self, seconds, at_frame=None):
        return self._record("gru_glide", seconds=seconds, at_frame=at_frame)

    def gru_temperature(self, value, at_frame=None):
        return self._record("gru_temperature", value=value, at_frame=at_frame)

    def gru_voices(self, n_voices):
        return self._record("gru_voices", n_voices=n_voices)

    def set_gain(self, layer, gain, at_frame=None):
        return self._record("set_gain", layer=layer, gain=gain, at_frame=at_frame)

    def set_polyphony(self, n_voices):
        self._record("set_polyphony", n_voices=n_voices)

    def panic(self):
        self._record("panic")

    def status(self):
        with self.lock:
            counts: dict[str, int] = {}
            for name, _ in self.calls:
                counts[name] = counts.get(name, 0) + 1
            n_calls = len(self.calls)
        held = counts.get("note_on", 0) - counts.get("note_off", 0)
        return {"bank_state": "ready", "latency_s": 0.00533, "voices": max(held, 0), "gru_active": False,
                "cpu": 0.125, "xruns": 0, "sample_rate": self.sample_rate, "block": 256,
                "commands": n_calls, "timed": self.n_timed, "late": self.n_late,
                **{f"calls_{name}": n for name, n in counts.items()}}

    def preset_names(self):
        return list(self.presets)


class Replies:
    """Collects reply(address, args) calls."""

    def __init__(self):
        self.sent: list[tuple[str, list]] = []

    def __call__(self, address, args):
        self.sent.append((address, list(args)))

    def fails(self) -> list[list]:
        return [args for address, args in self.sent if address == "/fail"]


def run(address, *args, at_frame=None, engine=None, hooks=osc_registry.NO_HOOKS):
    engine = engine or RecordingEngine()
    replies = Replies()
    ok = dispatch(engine, address, list(args), at_frame, replies, hooks)
    return ok, engine, replies


VALID_EXAMPLES = [
    ("/note/on", (60.5, 100.0), "note_on", {"pitch": 60.5, "velocity": 100.0, "note_id": -1}),
    ("/note/on", (60, 100, 7), "note_on", {"pitch": 60.0, "velocity": 100.0, "note_id": 7}),
    ("/note/off", (60.0,), "note_off", {"pitch": 60.0, "note_id": None}),
    ("/note/off", (7,), "note_off", {"pitch": None, "note_id": 7}),
    ("/note/pitch", (7, 62.0, 0.25), "note_pitch", {"note_id": 7, "pitch": 62.0, "glide_s": 0.25}),
    ("/note/pitch", (7.0, 62.0), "note_pitch", {"note_id": 7, "pitch": 62.0, "glide_s": 0.0}),
    ("/timbre/xy", (0.25, 0.75), "timbre_xy", {"x": 0.25, "y": 0.75, "glide_s": 0.0}),
    ("/timbre/xy", (1, 0, 2), "timbre_xy", {"x": 1.0, "y": 0.0, "glide_s": 2.0}),
    ("/timbre/preset", ("dark",), "timbre_preset", {"name": "dark"}),
    ("/gru/glide", (0.1,), "gru_glide", {"seconds": 0.1}),
    ("/gru/temperature", (0.7,), "gru_temperature", {"value": 0.7}),
    ("/gru/temperature", (0,), "gru_temperature", {"value": 0.0}),
    ("/gru/voices", (3,), "gru_voices", {"n_voices": 3}),
    ("/mix/sampler", (0.5,), "set_gain", {"layer": "sampler", "gain": 0.5}),
    ("/mix/gru", (0,), "set_gain", {"layer": "gru", "gain": 0.0}),
    ("/master/gain", (1.5,), "set_gain", {"layer": "master", "gain": 1.5}),
    ("/polyphony", (32.0,), "set_polyphony", {"n_voices": 32}),
    ("/panic", (), "panic", {}),
]


@pytest.mark.parametrize("address, args, method, expected", VALID_EXAMPLES)
def test_valid_message_calls_the_engine_once_with_converted_arguments(address, args, method, expected):
    ok, engine, replies = run(address, *args, at_frame=480)
    assert ok and replies.sent == []
    assert len(engine.calls) == 1
    name, kwargs = engine.calls[0]
    assert name == method
    for key, value in expected.items():
        assert kwargs[key] == value and type(kwargs[key]) is type(value), key
    if "at_frame" in kwargs:
        assert kwargs["at_frame"] == (480 if REGISTRY[address].timed else None)


def test_every_registered_address_has_a_valid_example_or_a_reply_test():
    covered = {example[0] for example in VALID_EXAMPLES} | {"/timbre/audio", "/status", "/sync", "/notify"}
    assert covered == set(REGISTRY)


def test_unknown_address_fails_with_command_not_found():
    ok, engine, replies = run("/no/such", 1.0)
    assert not ok and engine.calls == []
    assert replies.sent == [("/fail", ["/no/such", NOT_FOUND])]


def _numeric_slots():
    """(address, form, index) of every numeric argument of every plain or keyword form (int-typed
    forms are chosen by an int first argument, so a float there selects another form)."""
    for command in REGISTRY.values():
        for form in command.forms:
            for index, spec in enumerate(form.args):
                if spec.kind != "string" and not (form.int_typed and index == 0):
                    yield command.address, form, index


def _valid_args(form):
    """Mid-range values for each argument of `form` (keyword first), int-typed where required."""
    values = [] if form.keyword is None else [form.keyword]
    for spec in form.args:
        if spec.kind == "string":
            values.append("dark")
        else:
            low = spec.low if spec.low is not None else 0
            high = spec.high if spec.high is not None else low + 2
            mid = low + (high - low) / 2
            values.append(int(mid) if spec.kind == "int" else float(mid))
    return values


@pytest.mark.parametrize("address, form, index", list(_numeric_slots()))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_number_fails_naming_the_argument(address, form, index, bad):
    args = _valid_args(form)
    args[index + (form.keyword is not None)] = bad
    ok, engine, replies = run(address, *args)
    assert not ok and engine.calls == []
    (fail,) = replies.fails()
    assert fail[0] == address and form.args[index].name in fail[1]


@pytest.mark.parametrize("address, form, index", list(_numeric_slots()))
def test_out_of_range_number_is_clamped_or_fails_as_the_spec_says(address, form, index):
    spec = form.args[index]
    for bound, outside in ((spec.low, -1e6), (spec.high, 1e6)):
        if bound is None:
            continue
        args = _valid_args(form)
        args[index + (form.keyword is not None)] = (bound + outside) if spec.kind == "float" \
            else int(bound + outside)
        ok, engine, replies = run(address, *args)
        if spec.clamp:
            assert ok and replies.sent == []
            assert bound in engine.calls[0][1].values()
        else:
            assert not ok and engine.calls == []
            assert spec.name in replies.fails()[0][1] and "out of range" in replies.fails()[0][1]


@pytest.mark.parametrize("bad", [-0.01, 2.01, 3])
def test_gru_temperature_outside_0_to_2_fails_naming_the_range(bad):
    ok, engine, replies = run("/gru/temperature", bad, at_frame=480)
    assert not ok and engine.calls == []
    assert replies.sent == [("/fail", ["/gru/temperature", f"temperature {float(bad)} out of range [0, 2]"])]


def test_gru_temperature_bounds_are_accepted_and_timed():
    for value in (0.0, 2):
        ok, engine, replies = run("/gru/temperature", value, at_frame=960)
        assert ok and replies.sent == []
        assert engine.named("gru_temperature") == [{"value": float(value), "at_frame": 960}]


def test_pd_style_float_ids_are_accepted_when_integral_and_rejected_otherwise():
    ok, engine, _ = run("/note/off", "id", 12.0)
    assert ok and engine.calls == [("note_off", {"pitch": None, "note_id": 12, "channel": -1,
                                                 "at_frame": None})]
    ok, engine, replies = run("/note/pitch", 12.5, 60.0)
    assert not ok and "integer" in replies.fails()[0][1]


def test_note_off_forms_tell_pitch_from_id():
    assert run("/note/off", 60.0)[1].named("note_off") == [{"pitch": 60.0, "note_id": None, "channel": -1,
                                                           "at_frame": None}]
    assert run("/note/off", 60)[1].named("note_off")[0]["note_id"] == 60
    assert run("/note/off", "pitch", 61)[1].named("note_off")[0]["pitch"] == 61.0
    ok, engine, replies = run("/note/off", "velocity", 3)
    assert not ok and "unknown form" in replies.fails()[0][1]


def test_velocity_zero_and_small_velocities_reach_the_engine_which_decides():
    assert run("/note/on", 64.0, 0.0)[1].calls == [("note_on", {"pitch": 64.0, "velocity": 0.0, "note_id": -1,
                                                                "channel": -1, "at_frame": None})]
    assert run("/note/on", 64.0, 0, 9)[1].named("note_on")[0]["note_id"] == 9


def test_wrong_argument_count_or_type_fails_without_calling_the_engine():
    for address, args, words in [("/note/on", (60.0,), "missing"), ("/panic", (1,), "too many"),
                                 ("/timbre/xy", ("a", 0.5), "must be a number"),
                                 ("/timbre/preset", (3,), "must be a string"),
                                 ("/timbre/preset", ("",), "empty"),
                                 ("/note/on", (60.0, b"\x01"), "must be a number")]:
        ok, engine, replies = run(address, *args)
        assert not ok and engine.calls == [], address
        assert words in replies.fails()[0][1], (address, replies.sent)


def test_osc_booleans_count_as_numbers():
    ok, engine, _ = run("/timbre/xy", True, False)
    assert ok and engine.named("timbre_xy")[0]["x"] == 1.0


def test_ids_at_the_midi_range_are_rejected_so_osc_and_midi_notes_never_collide():
    ok, _, replies = run("/note/on", 60.0, 90.0, MIDI_NOTE_ID_BASE)
    assert not ok and "id" in replies.fails()[0][1]


def test_unknown_preset_fails_with_the_engines_message():
    ok, engine, replies = run("/timbre/preset", "nope")
    assert not ok and engine.calls == []
    (fail,) = replies.fails()
    assert fail[0] == "/timbre/preset" and "nope" in fail[1] and "bright" in fail[1]


def test_timbre_audio_replies_done_or_fail_when_the_engine_calls_back():
    _, _, replies = run("/timbre/audio", "/tmp/kick.wav")
    assert replies.sent == [("/done", ["/timbre/audio", "/tmp/kick.wav"])]
    _, _, replies = run("/timbre/audio", "/tmp/kick.mp9")
    assert replies.sent == [("/fail", ["/timbre/audio", "cannot read /tmp/kick.mp9"])]


def test_status_reply_is_key_value_pairs_in_design_order_with_server_counters():
    hooks = ServerHooks(server_status=lambda: {"osc_packets": 5})
    ok, engine, replies = run("/status", hooks=hooks)
    assert ok
    (address, args), = replies.sent
    assert address == "/status.reply" and len(args) % 2 == 0
    pairs = dict(zip(args[0::2], args[1::2]))
    assert args[0:16:2] == ["voices", "gru_active", "cpu", "xruns", "sample_rate", "block", "latency_s",
                            "bank_state"]
    assert pairs["gru_active"] == 0 and type(pairs["gru_active"]) is int
    assert pairs["osc_packets"] == 5 and pairs["bank_state"] == "ready"
    assert args[16::2] == sorted(args[16::2])


def test_status_pairs_turn_odd_values_into_strings():
    assert status_pairs({"voices": 2, "extra": [1, 2]}) == ["voices", 2, "extra", "[1, 2]"]


def test_sync_echoes_its_id_and_notify_needs_the_server():
    assert run("/sync", -5)[2].sent == [("/synced", [-5])]
    ok, _, replies = run("/notify", 1)
    assert not ok and replies.fails()[0][0] == "/notify"
    seen = []
    hooks = ServerHooks(set_notify=lambda on, port: seen.append((on, port)))
    _, _, replies = run("/notify", 1.0, hooks=hooks)
    run("/notify", 0, 57131.0, hooks=hooks)
    assert seen == [(True, None), (False, 57131)] and replies.sent == [("/done", ["/notify", 1])]


def test_engine_exception_becomes_a_fail_reply():
    engine = RecordingEngine()
    engine.fail_with = RuntimeError("queue exploded")
    ok, _, replies = run("/note/on", 60.0, 100.0, engine=engine)
    assert not ok and "queue exploded" in replies.fails()[0][1]


def test_markdown_documents_every_address_and_argument():
    text = markdown()
    for command in REGISTRY.values():
        assert f"### `{command.address}`" in text
        for form in command.forms:
            for spec in form.args:
                assert f"`{spec.name}`" in text


_values = st.one_of(st.integers(-2 ** 40, 2 ** 40), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=8), st.booleans(), st.none(), st.binary(max_size=4))


@settings(max_examples=300, deadline=None)
@given(address=st.sampled_from(sorted(REGISTRY) + ["/nope", ""]), args=st.lists(_values, max_size=4))
def test_dispatch_never_raises_and_reports_failure_consistently(address, args):
    ok, engine, replies = run(address, *args)
    if not ok:
        assert len(replies.fails()) == 1 and engine.calls == []
    else:
        assert engine.calls or address in ("/status", "/sync")
        assert replies.fails() == [] or address == "/timbre/audio"  # its /fail comes later
