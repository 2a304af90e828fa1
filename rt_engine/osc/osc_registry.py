"""The OSC address registry: one entry per address with its argument spec, and `dispatch`.

Every address latentsynth answers is declared here once, with its arguments (names, types, ranges,
units, what happens out of range), its replies and its errors. `dispatch` validates one decoded
message against that spec and translates it into `EngineControl` calls; it never touches sockets,
so it is tested without them and reused by the offline score renderer. `docs/osc.md` is generated
from this table:

    python3 -m rt_engine.osc.osc_registry --markdown > docs/osc.md

Validation rules, common to every address:
- ints and floats are accepted for every number (Pd sends only floats); an int argument given as a
  float must be integral (`3.0` is 3, `3.5` is an error); OSC True/False count as 1/0;
- NaN and infinities are errors; an out-of-range number is either clamped (documented per argument)
  or an error;
- missing required arguments, extra arguments and wrong types are errors;
- every error replies `/fail <address> <reason>`; an unknown address replies
  `/fail <address> "Command not found"`.

Public API: `ArgSpec`, `Form`, `Command`, `ServerHooks`, `REGISTRY` (address -> Command),
`dispatch(engine, address, args, at_frame, reply, hooks=None) -> bool`, `markdown() -> str`,
`MIDI_NOTE_ID_BASE` (note ids at or above it belong to MIDI input).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rt_engine.core.control_api import EngineControl
from rt_engine.osc.osc_guard import GuardConfig, clip_text

Reply = Callable[[str, Sequence[Any]], None]
"""reply(address, args): sends one OSC message back to the client(s)."""

NOT_FOUND = "Command not found"
GUARD = GuardConfig()
"""The OSC server's default limits, as the docs state them."""
MAX_NOTE_ID = (1 << 30) - 1
"""Largest note id an OSC client may use (ids above are reserved for MIDI input)."""
MIDI_NOTE_ID_BASE = 1 << 30
"""MIDI input gives note `n` on channel `c` (0-based) the id MIDI_NOTE_ID_BASE + 128 * c + n."""
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
MAX_GLIDE_S = 60.0
MAX_TEMPERATURE = 2.0
"""Highest sampling temperature of the GRU voice (/gru/temperature)."""
MAX_GAIN = 4.0
MAX_POLYPHONY = 1024
MAX_GRU_VOICES = 16
"""Most GRU voices (rt_engine.gru.gru_layer.MAX_VOICES)."""
MAX_AHEAD_S = 60.0
"""A bundle timetag further ahead than this (seconds) is rejected."""
MAX_BUNDLE_DEPTH = 8
"""Deepest bundle nesting accepted."""
MAX_ECHOED_ADDRESS = 64
"""An unknown address is echoed in its /fail cut to this many characters."""


class ArgError(ValueError):
    """A message's arguments do not fit the address's spec; the text is the /fail reason."""


@dataclass(frozen=True)
class ArgSpec:
    """One OSC argument: `kind` is "float", "int" or "string"; numbers have an inclusive range
    [low, high] (None: unbounded) and `clamp` says whether out-of-range values are clamped
    (True) or rejected (False)."""

    name: str
    kind: str
    doc: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    clamp: bool = False
    optional: bool = False
    default: float | int | str | None = None


@dataclass(frozen=True)
class Form:
    """One accepted argument layout of an address. `keyword`: the form starts with this literal
    string argument (e.g. `/note/off id 3`). `int_typed`: the form is chosen only when the first
    argument arrives OSC-int-typed (`i`/`h`), so `/note/off 60.0` and `/note/off 60i` differ."""

    args: tuple[ArgSpec, ...]
    keyword: str | None = None
    int_typed: bool = False
    doc: str = ""

    def signature(self) -> str:
        """The form as it is written in the docs, e.g. `pitch:f velocity:f [id:i]`."""
        parts = [f'"{self.keyword}"'] if self.keyword else []
        for arg in self.args:
            text = f"{arg.name}:{arg.kind[0]}"
            parts.append(f"[{text}]" if arg.optional else text)
        return " ".join(parts)


Handler = Callable[[EngineControl, str, dict, "int | None", Reply, "ServerHooks"], None]


@dataclass(frozen=True)
class Command:
    """One OSC address: its accepted forms, what it does, what it replies, which errors it gives
    beyond the common ones, and whether it honours bundle timetags (`timed`)."""

    address: str
    forms: tuple[Form, ...]
    doc: str
    handler: Handler
    replies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    timed: bool = True


@dataclass(frozen=True)
class ServerHooks:
    """What the OSC server adds to a dispatch: `set_notify(on, port)` registers/unregisters the
    sender (at its own UDP port, or at `port` of its host when not None) for notifications;
    `server_status()` returns the server's own counters for /status.reply; `check_sound(path)`
    returns the file /timbre/audio may read for `path` or raises ValueError with the reason
    (None: any path, as in offline rendering of the operator's own score)."""

    set_notify: Callable[[bool, "int | None"], None] | None = None
    server_status: Callable[[], dict] | None = None
    check_sound: Callable[[str], str] | None = None


NO_HOOKS = ServerHooks()


# ----------------------------------------------------------------------------- validation

def _is_int_typed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(spec: ArgSpec, value: Any) -> float | int:
    """Validate and convert one numeric argument to `spec` (ints/floats/bools accepted)."""
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        raise ArgError(f"{spec.name} must be a number, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ArgError(f"{spec.name} must be a finite number, got {value}")
    if spec.kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise ArgError(f"{spec.name} must be an integer, got {value}")
            value = int(value)
    else:
        value = float(value)
    low, high = spec.low, spec.high
    if (low is not None and value < low) or (high is not None and value > high):
        if not spec.clamp:
            raise ArgError(f"{spec.name} {value} out of range [{_fmt(low, '-inf')}, {_fmt(high, 'inf')}]")
        value = min(max(value, low if low is not None else value), high if high is not None else value)
        value = int(value) if spec.kind == "int" else float(value)
    return value


def _string(spec: ArgSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise ArgError(f"{spec.name} must be a string, got {type(value).__name__} {value!r}")
    if not value:
        raise ArgError(f"{spec.name} must not be empty")
    return value


def validate(form: Form, args: Sequence[Any]) -> dict:
    """Check `args` (decoded OSC values, keyword excluded) against `form`: returns name -> value,
    with defaults filled in for absent optional arguments. Raises ArgError naming the argument."""
    specs = form.args
    n_required = sum(not spec.optional for spec in specs)
    if len(args) < n_required:
        missing = ", ".join(spec.name for spec in specs[len(args):n_required])
        raise ArgError(f"missing argument(s): {missing} (expects {form.signature()})")
    if len(args) > len(specs):
        raise ArgError(f"too many arguments: got {len(args)}, expects {form.signature() or 'none'}")
    values = {}
    for i, spec in enumerate(specs):
        if i >= len(args):
            values[spec.name] = spec.default
        elif spec.kind == "string":
            values[spec.name] = _string(spec, args[i])
        else:
            values[spec.name] = _number(spec, args[i])
    return values


def choose_form(command: Command, args: Sequence[Any]) -> tuple[Form, Sequence[Any]]:
    """Pick the form of `command` that `args` use; returns it and the arguments after any keyword.
    Keyword forms match a leading string; int-typed forms match a leading OSC int; otherwise the
    first plain form applies."""
    keywords = [form.keyword for form in command.forms if form.keyword is not None]
    if keywords and args and isinstance(args[0], str):
        for form in command.forms:
            if form.keyword == args[0]:
                return form, args[1:]
        raise ArgError(f"unknown form {args[0]!r}: expects a number or one of "
                       f"{', '.join(map(repr, keywords))}")
    if args and _is_int_typed(args[0]):
        for form in command.forms:
            if form.keyword is None and form.int_typed:
                return form, args
    for form in command.forms:
        if form.keyword is None and not form.int_typed:
            return form, args
    raise ArgError(f"expects one of: {'; '.join(form.signature() for form in command.forms)}")


# ----------------------------------------------------------------------------- handlers

def _note_on(engine, address, v, at_frame, reply, hooks):
    note_id = -1 if v["id"] is None else v["id"]
    engine.note_on(v["pitch"], v["velocity"], note_id=note_id, at_frame=at_frame)  # 0: off


def _note_off(engine, address, v, at_frame, reply, hooks):
    if "id" in v:
        engine.note_off(note_id=v["id"], at_frame=at_frame)
    else:
        engine.note_off(pitch=v["pitch"], at_frame=at_frame)


def _note_pitch(engine, address, v, at_frame, reply, hooks):
    engine.note_pitch(v["id"], v["pitch"], glide_s=v["glide_s"], at_frame=at_frame)


def _timbre_xy(engine, address, v, at_frame, reply, hooks):
    engine.timbre_xy(v["x"], v["y"], glide_s=v["glide_s"], at_frame=at_frame)


def _timbre_preset(engine, address, v, at_frame, reply, hooks):
    try:
        engine.timbre_preset(v["name"])
    except KeyError as error:
        raise ArgError(str(error.args[0]) if error.args else f"unknown preset {v['name']!r}") from None


def _timbre_audio(engine, address, v, at_frame, reply, hooks):
    path = v["path"]
    readable = path
    if hooks.check_sound is not None:
        try:
            readable = hooks.check_sound(path)
        except ValueError as error:
            raise ArgError(str(error)) from None
    engine.timbre_audio(readable, on_done=lambda: reply("/done", [address, path]),
                        on_fail=lambda reason: reply("/fail", [address, str(reason)]))


def _gru_glide(engine, address, v, at_frame, reply, hooks):
    engine.gru_glide(v["seconds"], at_frame=at_frame)


def _gru_temperature(engine, address, v, at_frame, reply, hooks):
    engine.gru_temperature(v["temperature"], at_frame=at_frame)


def _gru_voices(engine, address, v, at_frame, reply, hooks):
    engine.gru_voices(v["n"])


def _gain(layer: str) -> Handler:
    def handler(engine, address, v, at_frame, reply, hooks):
        engine.set_gain(layer, v["gain"], at_frame=at_frame)
    return handler


def _polyphony(engine, address, v, at_frame, reply, hooks):
    engine.set_polyphony(v["n"])


def _panic(engine, address, v, at_frame, reply, hooks):
    engine.panic()


def status_pairs(status: dict) -> list:
    """Flatten a status dict into OSC key/value arguments: the DESIGN.md keys first, in their
    order, then the rest sorted. bools become 0/1; values that are not numbers become strings."""
    first = ["voices", "gru_active", "cpu", "xruns", "sample_rate", "block", "latency_s", "bank_state"]
    keys = [k for k in first if k in status] + sorted(k for k in status if k not in first)
    pairs: list = []
    for key in keys:
        value = status[key]
        if isinstance(value, bool):
            value = int(value)
        elif not isinstance(value, (int, float, str)):
            value = str(value)
        pairs += [str(key), value]
    return pairs


def _status(engine, address, v, at_frame, reply, hooks):
    status = dict(engine.status())
    if hooks.server_status is not None:
        status.update(hooks.server_status())
    reply("/status.reply", status_pairs(status))


def _sync(engine, address, v, at_frame, reply, hooks):
    reply("/synced", [v["id"]])


def _notify(engine, address, v, at_frame, reply, hooks):
    if hooks.set_notify is None:
        raise ArgError("notifications need the OSC server")
    try:
        hooks.set_notify(bool(v["on"]), v["port"])
    except RuntimeError as error:
        raise ArgError(str(error)) from None
    reply("/done", [address, v["on"]])


# ----------------------------------------------------------------------------- the table

def _glide(doc: str = "glide time") -> ArgSpec:
    return ArgSpec("glide_s", "float", doc, "s", 0.0, MAX_GLIDE_S, clamp=True, optional=True, default=0.0)


_PITCH = ArgSpec("pitch", "float", "MIDI note number, fractional allowed (60 = C4, 60.5 = a quarter "
                 "tone above)", "MIDI", 0.0, 127.0)
_ID = ArgSpec("id", "int", "note id chosen by the client", "", 0, MAX_NOTE_ID)


def _gain_command(address: str, layer: str, what: str) -> Command:
    gain = ArgSpec("gain", "float", "linear gain; 0 skips rendering the layer", "linear", 0.0, MAX_GAIN,
                   clamp=True)
    return Command(address, (Form((gain,)),), f"Gain of {what}.", _gain(layer))


COMMANDS: tuple[Command, ...] = (
    Command("/note/on", (Form((
        _PITCH,
        ArgSpec("velocity", "float", "0 releases the note (like MIDI); a positive velocity below 1 "
                "plays at 1", "MIDI", 0.0, 127.0, clamp=True),
        ArgSpec("id", "int", "note id for /note/off id and /note/pitch; without it the engine "
                "derives the id from the pitch", "", 0, MAX_NOTE_ID, optional=True)),),),
        "Start a note on the sampler layer and the GRU voice.", _note_on),
    Command("/note/off", (
        Form((_PITCH,), doc="a float-typed number is a pitch: releases the notes at that pitch "
             "(what Pd sends)"),
        Form((_ID,), int_typed=True, doc="an int-typed number (OSC `i`) is a note id"),
        Form((_PITCH,), keyword="pitch", doc="explicit form of the pitch release"),
        Form((_ID,), keyword="id", doc="explicit form of the id release: use this from Pd, "
             "whose numbers are all floats")),
        "Release a note, by pitch or by id.", _note_off,
        errors=('unknown form: the first argument is a string other than "pitch" or "id"',)),
    Command("/note/pitch", (Form((_ID, _PITCH, _glide("glide time to the new pitch"))),),
            "Glide a held note to a new pitch.", _note_pitch),
    Command("/timbre/xy", (Form((
        ArgSpec("x", "float", "horizontal position on the timbre grid", "", 0.0, 1.0, clamp=True),
        ArgSpec("y", "float", "vertical position on the timbre grid", "", 0.0, 1.0, clamp=True),
        _glide("glide time to the new point"))),),
        "Move to a point of the 2-D timbre grid.", _timbre_xy),
    Command("/timbre/preset", (Form((ArgSpec("name", "string", "preset name"),)),),
            "Switch to a named timbre preset (not timed: acts on arrival).", _timbre_preset,
            errors=("unknown preset: the reason lists the known names",), timed=False),
    Command("/timbre/audio", (Form((ArgSpec("path", "string", "sound file on the server's disk, "
                                            "inside a folder the operator allowed (`--sounds DIR`)"),)),),
            "Derive a timbre from a one-shot sound file; returns at once, replies when playable "
            "(not timed: acts on arrival). The file must resolve (symbolic links followed) to a "
            "regular file inside an allowed folder and be a sound file whose header says "
            "8 to 192 kHz, at most 8 channels and at most 10 s; this is checked before it is read.",
            _timbre_audio,
            replies=("/done /timbre/audio <path> when the timbre is playable",),
            errors=("outside the allowed sound folders (the same reason whether or not the path "
                    "exists); not a regular file, not a sound file, a rate, channel count or length "
                    "out of bounds; sent later, when known: a failed render, `superseded by a newer timbre "
                    "request` (another timbre was asked for before this one played), or the bank worker "
                    "restarted (it crashed or passed its memory limit) while rendering it",),
            timed=False),
    Command("/gru/glide", (Form((ArgSpec("seconds", "float", "portamento between legato notes", "s",
                                         0.0, MAX_GLIDE_S, clamp=True),)),),
            "Portamento time between legato notes of a one-voice GRU layer (`/gru/voices 1`).", _gru_glide),
    Command("/gru/temperature", (Form((ArgSpec(
        "temperature", "float", "the GRU samples each 16 kHz sample from softmax(logits / temperature): "
        "0 = argmax (cleanest, steadiest pitch), 1 = the trained distribution, higher = breathier",
        "", 0.0, MAX_TEMPERATURE),)),),
            "Sampling temperature of the GRU voices, applied at its sample (no smoothing). "
            "The start value is the model's `sampling_temperature` (metadata.json) or 1, or "
            "`--gru-temperature`.", _gru_temperature),
    Command("/gru/voices", (Form((ArgSpec("n", "int", "notes the GRU layer plays at once (default 4)", "voices",
                                          1, MAX_GRU_VOICES),)),),
            "Number of GRU voices, each with its own recurrent state, pitch, glide and envelope; one "
            "voice is monophonic with last-note priority. Sounding GRU notes are released "
            "(not timed: acts on arrival).", _gru_voices, timed=False),
    _gain_command("/mix/sampler", "sampler", "the sampler (GAN bank) layer"),
    _gain_command("/mix/gru", "gru", "the GRU voice layer"),
    _gain_command("/master/gain", "master", "the master output (before the limiter)"),
    Command("/polyphony", (Form((ArgSpec("n", "int", "sampler voice-pool size", "voices", 1,
                                         MAX_POLYPHONY),)),),
            "Change the sampler's voice-pool size live (not timed: acts on arrival).", _polyphony,
            timed=False),
    Command("/panic", (Form(()),), "Stop everything now: all voices fade out, scheduled commands "
            "are dropped (not timed: acts on arrival).", _panic, timed=False),
    Command("/status", (Form(()),), "Ask for the engine's state.", _status,
            replies=("/status.reply key value key value ...: voices (i), gru_active (i 0/1), cpu "
                     "(f, callback load 0..1), xruns (i), sample_rate (i, Hz), block (i, frames), "
                     "latency_s (f, s), bank_state (s), then the rest sorted by key: bank_seconds (f, s, "
                     "the latest exact bank from request to last row), the engine's counters (e.g. commands, "
                     "dropped, late) and the server's (osc_*)",), timed=False),
    Command("/sync", (Form((ArgSpec("id", "int", "any number, echoed back", "", INT32_MIN,
                                    INT32_MAX),)),),
            "Round trip: the reply means every earlier message from this client was received and "
            "queued (not timed).", _sync, replies=("/synced <id>",), timed=False),
    Command("/notify", (Form((
        ArgSpec("on", "int", "1 registers for notifications, 0 unregisters", "", 0, 1),
        ArgSpec("port", "int", "UDP port that receives the notifications, accepted from this "
                "machine only (for clients that cannot receive on their sending socket, e.g. Max's "
                "udpsend; from other hosts the operator gives `--reply-port`; ignored over TCP)", "",
                1, 65535, optional=True)),),),
            "Register the sender for notifications: a registered client also receives every reply "
            "and /fail the server sends to any client, within the reply budget of the client that "
            f"caused it. At most {GUARD.max_notify} clients; a registration ends when its client has "
            f"sent nothing for {GUARD.notify_idle_s:g} s, or its TCP connection closes (not timed).",
            _notify,
            replies=("/done /notify <on>",),
            errors=("too many notify clients", "a port from another host"), timed=False),
)

REGISTRY: dict[str, Command] = {command.address: command for command in COMMANDS}


def dispatch(engine: EngineControl, address: str, args: Sequence[Any], at_frame: int | None,
             reply: Reply, hooks: ServerHooks = NO_HOOKS) -> bool:
    """Validate one OSC message and call `engine`. `args` are decoded OSC values (int, float,
    str, bool, ...); `at_frame` is the absolute output frame (device rate) for timed commands
    (None: next block). Replies go through `reply(address, args)`. Returns True when the message
    was valid and accepted, False when it was answered by /fail (an asynchronous /fail, from
    /timbre/audio, may still follow a True). Never raises for bad
    input; an exception from the engine is answered by /fail naming it."""
    command = REGISTRY.get(address)
    if command is None:
        reply("/fail", [clip_text(str(address), MAX_ECHOED_ADDRESS), NOT_FOUND])
        return False
    try:
        form, rest = choose_form(command, args)
        values = validate(form, rest)
    except ArgError as error:
        reply("/fail", [address, str(error)])
        return False
    try:
        command.handler(engine, address, values, at_frame if command.timed else None, reply, hooks)
    except ArgError as error:
        reply("/fail", [address, str(error)])
        return False
    except Exception as error:  # the engine's problem must not kill the control thread
        reply("/fail", [address, f"engine error: {type(error).__name__}: {error}"])
        return False
    return True


# ----------------------------------------------------------------------------- docs

def _fmt(value: float | None, unbounded: str = "-inf") -> str:
    if value is None:
        return unbounded
    return str(int(value)) if float(value).is_integer() else str(value)


def _range_text(spec: ArgSpec) -> str:
    if spec.kind == "string":
        return "non-empty"
    if spec.low is None and spec.high is None:
        return "any"
    text = f"{_fmt(spec.low, '-inf')} .. {_fmt(spec.high, 'inf')}"
    return text + (" (clamped)" if spec.clamp else " (else /fail)")


def markdown() -> str:
    """The OSC reference (docs/osc.md) as Markdown, generated from COMMANDS."""
    lines = [
        "# latentsynth OSC reference",
        "",
        "<!-- Generated by `python3 -m rt_engine.osc.osc_registry --markdown > docs/osc.md`; "
        "do not edit by hand. -->",
        "",
        "The server listens on UDP and TCP port 57130 (`latentsynth serve --osc-port N`). TCP "
        "packets are OSC 1.0 size-prefixed (int32 big-endian length, then the packet) or, when "
        "a connection's first byte is 0xC0, SLIP-framed (OSC 1.1). Replies go to the sender "
        "(over TCP: on its connection); with `--reply-port P` UDP replies go to port P of the "
        "sender's host instead; clients registered with `/notify 1` also get every reply. "
        "`serve` binds 127.0.0.1 unless started with `--bind ADDR`; with `--password` a TCP "
        "connection must first send `/password <password>` (reply `/done /password`; anything "
        "else is answered by `/fail #tcp <reason>` and the connection closed) and UDP is accepted "
        f"from this machine only. TCP connections are capped ({GUARD.tcp_per_host} per host, "
        f"{GUARD.tcp_total} in all; at the cap, the host's connection idle longest is closed if it "
        f"has been idle {_fmt(GUARD.tcp_partial_s)} s, else the new one is refused), closed after "
        f"{_fmt(GUARD.tcp_idle_s)} s without traffic (`--tcp-idle-s`) or when a packet is not whole "
        f"{_fmt(GUARD.tcp_partial_s)} s after its first byte (`--tcp-partial-s`), and a client that "
        f"leaves more than {GUARD.tcp_output_limit_bytes} bytes of replies unread is disconnected.",
        "",
        "## Rules for every address",
        "",
        "- Types: `f` float, `i` int, `s` string. Ints and floats are accepted for every number "
        "(Pd sends only floats); an int argument sent as a float must be integral (`3.0`). OSC "
        "`T`/`F` count as 1/0. `[arg]` is optional.",
        "- NaN and infinities are rejected. An out-of-range number is clamped where the table says "
        "so, otherwise rejected.",
        "- Every error replies `/fail <address> <reason>`. An unknown address replies "
        '`/fail <address> "Command not found"`. Bytes that are not OSC reply '
        "`/fail #packet <reason>`; bad TCP framing replies `/fail #tcp <reason>` and closes the "
        "connection; the server keeps running.",
        "- Successful commands reply nothing, except where listed (no reply per note).",
        "- Bundles honour timetags: a future bundle plays sample-accurately "
        "(`engine.frame_for_time`), an immediate or past one at the next block (a past one is "
        f"counted as late). A bundle more than {_fmt(MAX_AHEAD_S)} s ahead is rejected with "
        f"`/fail #bundle <reason>`. Nested bundles are allowed ({MAX_BUNDLE_DEPTH} levels). "
        "Commands marked \"not timed\" act on arrival.",
        "- A command the engine's full queue drops is counted (`dropped` in `/status.reply`), not "
        "answered.",
        f"- Limits per client (one UDP sender address or one TCP connection): "
        f"{_fmt(GUARD.rate_per_s)} messages per second (bursts of {_fmt(GUARD.burst)}; all clients "
        f"together {_fmt(GUARD.global_rate_per_s)} per second); beyond, messages are dropped, counted "
        f"(`osc_dropped`) and answered by at most one `/fail #rate <reason>` per second. Replies stay "
        f"within {_fmt(GUARD.reply_ratio)} times the bytes the client sent plus a small allowance "
        f"({_fmt(GUARD.reply_allowance_bytes)} bytes, refilled at {_fmt(GUARD.reply_refill_bytes_per_s)} "
        f"bytes per second); replies beyond are dropped and counted (`osc_replies_over_budget`). "
        f"`/fail` texts are at most {GUARD.max_fail_text} characters.",
        f"- Dated commands (future timetags) are bounded: {GUARD.max_dated_per_source} ahead per "
        f"client, {GUARD.max_dated_total} in all, so immediate commands and `/panic` always find room; "
        f"one beyond is dropped, counted (`osc_dated_dropped`) and answered by one `/fail <address> "
        f"<reason>` per packet.",
        f"- Note ids from OSC are 0 .. {MAX_NOTE_ID}; MIDI input uses ids "
        f"{MIDI_NOTE_ID_BASE} + 128 * channel + note.",
        "",
        "## Addresses",
        "",
    ]
    for command in COMMANDS:
        lines += [f"### `{command.address}`", ""]
        for form in command.forms:
            sig = form.signature()
            line = f"- `{command.address}{' ' + sig if sig else ''}`"
            lines.append(line + (f": {form.doc}" if form.doc else ""))
        lines += ["", command.doc, ""]
        specs = {}
        for form in command.forms:
            for spec in form.args:
                specs.setdefault(spec.name, spec)
        if specs:
            lines += ["| argument | type | range | unit | default | meaning |",
                      "|---|---|---|---|---|---|"]
            for spec in specs.values():
                default = "" if not spec.optional else repr(spec.default) if spec.default is not None \
                    else "none"
                lines.append(f"| `{spec.name}` | {spec.kind} | {_range_text(spec)} | {spec.unit} | "
                             f"{default} | {spec.doc} |")
            lines.append("")
        lines.append("Replies: " + ("; ".join(f"`{r}`" for r in command.replies) if command.replies
                                    else "none on success") + ".")
        common = "wrong argument count or type, NaN/inf"
        if any(spec.kind != "string" and not spec.clamp for spec in specs.values()):
            common += ", out of range"
        errors = [common] * bool(specs) + list(command.errors)
        if errors:
            lines.append("Errors (`/fail " + command.address + " <reason>`): " + "; ".join(errors) + ".")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python3 -m rt_engine.osc.osc_registry --markdown`: print the OSC reference."""
    parser = argparse.ArgumentParser(description="latentsynth OSC address registry")
    parser.add_argument("--markdown", action="store_true", help="print docs/osc.md to stdout")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    for command in COMMANDS:
        for form in command.forms:
            print(command.address, form.signature())
    return 0


if __name__ == "__main__":
    sys.exit(main())
