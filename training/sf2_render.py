"""Render an NSynth-like note set from General MIDI SoundFonts with tinysoundfont.

Every melodic GM program (0-111 by default: percussive 112-119 and sound effects 120-127 are left
out) x MIDI pitches x velocities is rendered as a held one-shot note at the model rate, then
preprocessed as GANStrument does: amplitude normalisation (peak 1.0) and an exponential fade-out.
Notes a program cannot play (silent renders) are dropped and counted.

Public API:
    RenderConfig                         frozen dataclass of everything that shapes the data
    gm_family(program) -> int            GM instrument family (groups of 8 programs), 0..15
    GM_FAMILY_NAMES                      the 16 family names
    GM_PROGRAM_NAMES                     the 128 program names (snake_case)
    preprocess_note(audio, ...) -> audio peak-normalise + exponential fade-out (`models.one_shot`)
    render_program_notes(synth, sfid, program, pitches, velocity, n_samples) -> [n, n_samples]
    render_soundfonts(config, out_dir)   render all fonts into a note store (see note_dataset)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.one_shot import preprocess_note
from training.sf2_check import check_pdta, vet_soundfont

GM_FAMILY_NAMES = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic", "percussive", "sound_effects",
)
GM_PROGRAM_NAMES = (
    "acoustic_grand_piano", "bright_acoustic_piano", "electric_grand_piano", "honky_tonk_piano",
    "electric_piano_1", "electric_piano_2", "harpsichord", "clavinet",
    "celesta", "glockenspiel", "music_box", "vibraphone",
    "marimba", "xylophone", "tubular_bells", "dulcimer",
    "drawbar_organ", "percussive_organ", "rock_organ", "church_organ",
    "reed_organ", "accordion", "harmonica", "tango_accordion",
    "nylon_guitar", "steel_guitar", "jazz_guitar", "clean_guitar",
    "muted_guitar", "overdriven_guitar", "distortion_guitar", "guitar_harmonics",
    "acoustic_bass", "fingered_bass", "picked_bass", "fretless_bass",
    "slap_bass_1", "slap_bass_2", "synth_bass_1", "synth_bass_2",
    "violin", "viola", "cello", "contrabass",
    "tremolo_strings", "pizzicato_strings", "orchestral_harp", "timpani",
    "string_ensemble_1", "string_ensemble_2", "synth_strings_1", "synth_strings_2",
    "choir_aahs", "voice_oohs", "synth_voice", "orchestra_hit",
    "trumpet", "trombone", "tuba", "muted_trumpet",
    "french_horn", "brass_section", "synth_brass_1", "synth_brass_2",
    "soprano_sax", "alto_sax", "tenor_sax", "baritone_sax",
    "oboe", "english_horn", "bassoon", "clarinet",
    "piccolo", "flute", "recorder", "pan_flute",
    "blown_bottle", "shakuhachi", "whistle", "ocarina",
    "square_lead", "sawtooth_lead", "calliope_lead", "chiff_lead",
    "charang_lead", "voice_lead", "fifths_lead", "bass_lead",
    "new_age_pad", "warm_pad", "polysynth_pad", "choir_pad",
    "bowed_pad", "metallic_pad", "halo_pad", "sweep_pad",
    "rain_fx", "soundtrack_fx", "crystal_fx", "atmosphere_fx",
    "brightness_fx", "goblins_fx", "echoes_fx", "sci_fi_fx",
    "sitar", "banjo", "shamisen", "koto",
    "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle_bell", "agogo", "steel_drums", "woodblock",
    "taiko_drum", "melodic_tom", "synth_drum", "reverse_cymbal",
    "guitar_fret_noise", "breath_noise", "seashore", "bird_tweet",
    "telephone_ring", "helicopter", "applause", "gunshot",
)
"""General MIDI program names (0..127), snake_case: preset names of rendered instruments."""
SILENCE_PEAK = 1e-4
"""A raw render whose peak is below this (about -80 dBFS) counts as silent and is dropped."""


@dataclass(frozen=True)
class RenderConfig:
    """What to render and how. `validation_programs` are held out of the training split."""

    sf2_paths: tuple[str, ...]
    sample_rate: int = 32_000
    """The default model's rate (Hz): notes keep their timbre up to 16 kHz."""
    seconds: float = 1.0
    pitches: tuple[int, ...] = tuple(range(21, 109))
    velocities: tuple[int, ...] = (100,)
    programs: tuple[int, ...] = tuple(range(112))
    validation_programs: tuple[int, ...] = (9, 19, 29, 39, 49, 59, 69, 79, 89, 99, 109)
    fade_seconds: float = 0.1
    fade_decay: float = 5.0

    @property
    def n_samples(self) -> int:
        """Note length (samples)."""
        return int(round(self.seconds * self.sample_rate))


def gm_family(program: int) -> int:
    """GM instrument family of `program` (0..127): groups of 8 programs, 0..15."""
    if not 0 <= program <= 127:
        raise ValueError(f"GM program must be in 0..127, got {program}")
    return program // 8


def open_soundfont(path: str | Path, sample_rate: int):
    """A tinysoundfont `Synth` at `sample_rate` (Hz) with the font at `path` loaded: (synth, sfid).
    A missing or unreadable font raises FileNotFoundError/ValueError naming the file; the font is
    vetted first (`training.sf2_check.vet_soundfont`), so a hostile one cannot crash the caller."""
    import tinysoundfont

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"soundfont not found: {path}")
    vet_soundfont(path)
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    try:
        sfid = synth.sfload(str(path))
    except Exception as error:  # tinysoundfont raises several types for bad files
        raise ValueError(f"cannot load soundfont {path}: {error}") from error
    return synth, sfid


def render_program_notes(synth, sfid: int, program: int, pitches: Sequence[int], velocity: int,
                         n_samples: int) -> np.ndarray:
    """Raw mono renders of `program` (bank 0) held for `n_samples` at each MIDI pitch:
    float32 `[len(pitches), n_samples]`, not normalised. Voices are silenced between notes."""
    notes = np.zeros((len(pitches), n_samples), dtype=np.float32)
    try:
        synth.program_select(0, sfid, 0, program)
    except Exception as error:
        raise ValueError(f"soundfont has no program {program} in bank 0: {error}") from error
    for row, pitch in enumerate(pitches):
        synth.noteon(0, int(pitch), int(velocity))
        stereo = np.frombuffer(synth.generate(n_samples), dtype=np.float32).reshape(n_samples, 2)
        notes[row] = stereo.mean(axis=1)
        synth.sounds_off()
        synth.generate(512)  # flush released voices so the next note starts clean
    return notes


def render_soundfonts(config: RenderConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Render every font x program x velocity x pitch of `config` into a note store at `out_dir`
    (written to a temporary folder, renamed at the end). Returns a summary dict with the number
    of notes kept and of silent renders dropped."""
    from tqdm import tqdm

    from training.note_dataset import NoteStoreWriter

    for path in config.sf2_paths:  # fail before any work on a missing or broken font
        if not Path(path).is_file():
            raise FileNotFoundError(f"soundfont not found: {path}")
        check_pdta(path)
    n_samples = config.n_samples
    held_out = set(config.validation_programs)
    total = len(config.sf2_paths) * len(config.programs) * len(config.velocities)
    n_dropped = 0
    with NoteStoreWriter(out_dir, n_samples=n_samples, sample_rate=config.sample_rate,
                         attributes={"source": "sf2", "render_config": _config_record(config)}) as writer:
        bar = tqdm(total=total, desc="render-sf2 programs", disable=not progress)
        for font_index, path in enumerate(config.sf2_paths):
            synth, sfid = open_soundfont(path, config.sample_rate)
            font_name = Path(path).stem
            for program in config.programs:
                instrument = f"{font_name}:{program:03d}"
                for velocity in config.velocities:
                    raw = render_program_notes(synth, sfid, program, config.pitches, velocity, n_samples)
                    for pitch, audio in zip(config.pitches, raw):
                        if np.max(np.abs(audio)) < SILENCE_PEAK:
                            n_dropped += 1
                            continue
                        writer.append(
                            preprocess_note(audio, config.sample_rate, config.fade_seconds, config.fade_decay),
                            pitch=int(pitch), instrument=instrument, family=gm_family(program),
                            velocity=int(velocity), source=font_name,
                            split="valid" if program in held_out else "train",
                        )
                    bar.update(1)
        bar.close()
        writer.attributes["n_silent_dropped"] = n_dropped
        n_kept = writer.n_notes
    return {"n_notes": n_kept, "n_silent_dropped": n_dropped, "out": str(out_dir)}


def _config_record(config: RenderConfig) -> dict:
    return {
        "sf2_paths": [str(Path(p)) for p in config.sf2_paths], "sample_rate": config.sample_rate,
        "seconds": config.seconds, "pitches": list(config.pitches), "velocities": list(config.velocities),
        "programs": list(config.programs), "validation_programs": list(config.validation_programs),
        "fade_seconds": config.fade_seconds, "fade_decay": config.fade_decay,
    }
