"""MIDI messages (built with mido, an independent encoder) become the right engine calls."""
from __future__ import annotations

import json

import mido
import pytest
from hypothesis import given, settings, strategies as st

from rt_engine.io.midi_map import (DEFAULT_MAP_PATH, MidiMapper, load_midi_map, midi_note_id,
                                parse_midi_map)
from rt_engine.osc.osc_registry import MIDI_NOTE_ID_BASE
from tests.test_osc_registry import RecordingEngine


def mapper(map_data: dict | None = None) -> MidiMapper:
    midi_map = load_midi_map() if map_data is None else parse_midi_map(map_data, "<test>")
    return MidiMapper(RecordingEngine(presets=("bright", "dark", "warm")), midi_map)


def send(m: MidiMapper, kind: str, **fields) -> bool:
    return m.handle(mido.Message(kind, **fields).bytes())


def cc(m: MidiMapper, channel: int, control: int, value: int) -> bool:
    return send(m, "control_change", channel=channel, control=control, value=value)


def test_note_on_and_off_carry_channel_and_a_per_channel_id():
    m = mapper()
    send(m, "note_on", channel=3, note=60, velocity=100)
    send(m, "note_off", channel=3, note=60, velocity=64)
    send(m, "note_on", channel=4, note=61, velocity=0)  # velocity 0 is a release
    on, release = m.engine.named("note_on")  # the engine decides that velocity 0 is off
    assert on == {"pitch": 60.0, "velocity": 100.0, "note_id": MIDI_NOTE_ID_BASE + 3 * 128 + 60,
                  "channel": 3, "at_frame": None}
    assert (release["velocity"], release["note_id"], release["channel"]) == (0.0, midi_note_id(4, 61), 4)
    offs = m.engine.named("note_off")
    assert [(o["note_id"], o["channel"]) for o in offs] == [(midi_note_id(3, 60), 3)]


@pytest.mark.parametrize("wheel, semitones", [(0, 0.0), (8191, 2.0), (-8192, -2.0), (4096, 2.0 * 4096 / 8191),
                                              (-4096, -1.0)])
def test_pitch_bend_spans_plus_minus_two_semitones_by_default(wheel, semitones):
    m = mapper()
    send(m, "pitchwheel", channel=5, pitch=wheel)
    (bend,) = m.engine.named("pitch_bend")
    assert bend["channel"] == 5 and bend["semitones"] == pytest.approx(semitones, abs=1e-12)


def rpn_bend_range(m: MidiMapper, channel: int, semitones: int, cents: int | None = None) -> None:
    cc(m, channel, 101, 0)
    cc(m, channel, 100, 0)
    cc(m, channel, 6, semitones)
    if cents is not None:
        cc(m, channel, 38, cents)


def test_rpn_zero_sets_the_bend_range_and_rebends_a_bent_channel():
    m = mapper()
    send(m, "pitchwheel", channel=0, pitch=8191)
    rpn_bend_range(m, 0, 12, 50)
    bends = [b["semitones"] for b in m.engine.named("pitch_bend")]
    assert bends == pytest.approx([2.0, 12.0, 12.5])
    send(m, "pitchwheel", channel=0, pitch=-8192)
    assert m.engine.named("pitch_bend")[-1]["semitones"] == pytest.approx(-12.5)
    send(m, "pitchwheel", channel=1, pitch=-8192)  # other channels keep ±2
    assert m.engine.named("pitch_bend")[-1]["semitones"] == pytest.approx(-2.0)


def test_data_entry_msb_resets_cents_and_is_ignored_without_rpn_zero():
    m = mapper()
    rpn_bend_range(m, 0, 7, 25)
    cc(m, 0, 6, 3)
    assert m.bend_semitones(0) == 0.0 and m.channels[0].bend_range == 3.0
    cc(m, 0, 101, 127)
    cc(m, 0, 100, 127)  # RPN null
    assert not cc(m, 0, 6, 24)
    cc(m, 0, 99, 0)  # an NRPN selection also detaches data entry
    assert not cc(m, 0, 6, 24)
    assert m.channels[0].bend_range == 3.0


def test_timbre_ccs_move_one_coordinate_and_keep_the_other():
    m = mapper()
    cc(m, 0, 1, 127)
    cc(m, 0, 74, 0)
    cc(m, 0, 2, 127)
    points = [(c["x"], c["y"]) for c in m.engine.named("timbre_xy")]
    assert points == [(1.0, 0.5), (1.0, 0.0), (1.0, 1.0)]


def test_sustain_pedal_calls_the_engine_only_when_it_changes():
    m = mapper()
    for value in (0, 100, 127, 64, 63, 0):
        cc(m, 2, 64, value)
    assert [(s["channel"], s["down"]) for s in m.engine.named("sustain")] == [(2, True), (2, False)]


def test_channel_mode_messages_and_reset_controllers():
    m = mapper()
    send(m, "pitchwheel", channel=1, pitch=8191)
    cc(m, 1, 64, 127)
    cc(m, 1, 120, 0)
    cc(m, 1, 123, 0)
    cc(m, 1, 121, 0)
    names = [name for name, _ in m.engine.calls]
    assert names == ["pitch_bend", "sustain", "all_sound_off", "all_notes_off", "reset_controllers"]
    assert m.bend_semitones(1) == 0.0 and not m.channels[1].sustain
    cc(m, 1, 64, 127)  # the pedal state was reset, so a new press is a change
    assert m.engine.named("sustain")[-1]["down"] is True


def test_program_change_picks_the_preset_by_index_and_ignores_beyond_the_list():
    m = mapper()
    assert send(m, "program_change", channel=0, program=1)
    assert not send(m, "program_change", channel=0, program=3)
    assert m.engine.named("timbre_preset") == [{"name": "dark"}]


def test_mpe_member_channels_bend_48_semitones_and_notes_stay_apart():
    m = mapper({"mpe": {"enabled": True, "master_channel": 1}})
    send(m, "pitchwheel", channel=0, pitch=8191)  # master channel: ±2
    send(m, "pitchwheel", channel=5, pitch=8191)  # member: ±48
    assert [b["semitones"] for b in m.engine.named("pitch_bend")] == pytest.approx([2.0, 48.0])
    send(m, "note_on", channel=5, note=60, velocity=90)
    send(m, "note_on", channel=6, note=60, velocity=90)
    ids = {on["note_id"] for on in m.engine.named("note_on")}
    assert len(ids) == 2


def test_channel_filter_and_custom_cc_actions():
    m = mapper({"channels": [2], "cc": {"7": "master_gain", "5": "gru_glide"}})
    assert not send(m, "note_on", channel=0, note=60, velocity=90)
    assert cc(m, 1, 7, 127) and cc(m, 1, 5, 127)
    assert not cc(m, 1, 1, 127)  # CC1 is not in this map
    assert m.engine.named("set_gain") == [{"layer": "master", "gain": 1.0, "at_frame": None}]
    assert m.engine.named("gru_glide")[0]["seconds"] == 1.0


def test_gru_temperature_cc_maps_0_to_127_linearly_onto_0_to_2_with_its_frame():
    m = mapper({"cc": {"21": "gru_temperature"}})
    for value in (0, 1, 64, 127):
        assert m.handle(mido.Message("control_change", channel=0, control=21, value=value).bytes(),
                        at_frame=100 + value)
    calls = m.engine.named("gru_temperature")
    assert [call["value"] for call in calls] == pytest.approx([0.0, 2 / 127, 128 / 127, 2.0], abs=1e-12)
    assert [call["at_frame"] for call in calls] == [100, 101, 164, 227]


@pytest.mark.parametrize("data", [[], [0x90, 60], [0x90, 200, 1], [0xF8], [0xC0, 1, 2], [0x40, 1, 2]])
def test_malformed_or_system_messages_are_ignored(data):
    m = mapper()
    assert not m.handle(data)
    assert m.engine.calls == [] and m.n_ignored == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=4))
def test_arbitrary_bytes_never_raise(data):
    mapper().handle(data)


def test_the_shipped_default_map_is_design_md_s():
    midi_map = load_midi_map(DEFAULT_MAP_PATH)
    assert dict(midi_map.cc_actions) == {1: "timbre_x", 2: "timbre_y", 74: "timbre_y", 64: "sustain",
                                         120: "all_sound_off", 121: "reset_controllers", 123: "all_notes_off"}
    assert midi_map.bend_range_semitones == 2.0 and midi_map.channels is None and not midi_map.mpe_enabled


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    (json.dumps({"cc": {"1": "explode"}}), "unknown"),
    (json.dumps({"cc": {"6": "timbre_x"}}), "reserved"),
    (json.dumps({"cc": {"300": "timbre_x"}}), "CC number"),
    (json.dumps({"channels": [0]}), "channel 1..16"),
    (json.dumps({"pitch_bend_range_semitones": "two"}), "pitch_bend_range_semitones"),
    (json.dumps({"colour": "red"}), "unknown key"),
    (json.dumps([1, 2]), "JSON object"),
])
def test_bad_map_file_is_an_error_naming_the_file(tmp_path, content, words):
    path = tmp_path / "my_map.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=words) as info:
        load_midi_map(path)
    assert "my_map.json" in str(info.value)


def test_missing_map_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="nowhere.json"):
        load_midi_map(tmp_path / "nowhere.json")
