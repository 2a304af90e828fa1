"""One-shot fidelity: hand the model one note of an instrument it never trained on and compare the
bank it makes with that instrument's real notes across the keyboard (`latentsynth eval
--one-shot-fidelity --sf2 FONT`).

Per GM program of the font (bank 0, programs `FidelityConfig.programs`): the font's note at the
reference pitch (MIDI 60) goes through the one-shot timbre path of the model
(`GanBankSource.conditioning_for` of a sound file: read, trimmed, preprocessed, then f) and the
bank is rendered at the comparison pitches (MIDI 36-84 every 4 semitones). Beside it, at the same
pitches: the one-shot resampled (a plain sampler), the preset nearest in f, the preset of the same
GM name (when the model has it), and the bank with the own-sample blend
(`models.own_sample_blend`) for each of BLEND_CANDIDATES, centred as the live path centres it (on
the input's estimated pitch) and on the known reference pitch. Distance: RMS log-mel difference (dB) over the
first 0.5 s to the font's real note at each pitch (`training.evaluation.log_mel_distance_db`),
averaged over the pitches. The font is rendered at the model's own rate and note length and
preprocessed as the training data is. With the model's hypernetwork (hyper/), the bank of the
refined G is scored too, and with a source that refines one-shots at test time
(`models.one_shot_refinement`) the bank of the refined h, each alone and with `FidelityConfig.blend`
on top; `ablation` in the JSON (and the figure's heading) lists each subset's rows: model, + H,
+ refinement, each with the blend, resampled, best preset.

Each subset's summary also holds the pyin pitch accuracy (±50 cents) of the bank a one-shot plays
live, beside that of the font's own notes (percussive and unpitched programs fail both).

Programs p with p % held_out_every == held_out_every - 1 are held out of every choice (the blend's
default is picked on the others) and reported apart.

Public API:
    FidelityConfig                       frozen dataclass of what is compared
    DEFAULT_SF2                          Debian's TimGM6mb (package timgm6mb-soundfont)
    BLEND_CANDIDATES                     own-sample blend settings compared
    is_held_out(program, config) -> bool
    head_distance_db(a [n, n_samples], b [n, n_samples], config, seconds) -> float64 [n] (dB)
    render_font_notes(sf2, programs, pitches, sample_rate, n_samples, velocity) -> {program: {pitch: [n_samples]}}
    instrument_fidelity(source, h, one_shot, real, preset_bank, ...) -> dict   one instrument's distances
    summarise(records) -> dict                                              per-method means and win shares
    ablation(summary, blend) -> list[dict]                                  the ablation rows of one subset
    played_bank_key(banks, config) -> str                                   the bank a one-shot plays live
    evaluate_one_shot_fidelity(model_dir, sf2, out_dir, config) -> dict     renders the font, writes JSON + PNG
    fidelity_of_notes(source, font_notes, out_dir, config) -> dict          the same on given notes
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from tqdm import tqdm

from models.bank_source import TimbreRequest
from models.features import log_mel
from models.gan_bank import GanBankSource
from models.model_config import denormalise_log_mel
from models.one_shot import load_one_shot
from models.one_shot_refinement import REFINEMENT_STEPS
from models.own_sample_blend import (DEFAULT_BLEND, OwnSampleBlend, blend_rows, blend_text, estimate_pitch_midi,
                                     own_sample_weights, resample_to_pitch)
from training.evaluation import log_mel_distance_db, pitch_accuracy
from training.sf2_render import (GM_PROGRAM_NAMES, SILENCE_PEAK, open_soundfont, preprocess_note,
                                 render_program_notes)

DEFAULT_SF2 = "/usr/share/sounds/sf2/TimGM6mb.sf2"
BLEND_CANDIDATES = (OwnSampleBlend(0.5, 0.0), OwnSampleBlend(1.0, 2.0), OwnSampleBlend(3.0, 2.0),
                    OwnSampleBlend(6.0, 2.0), OwnSampleBlend(9.0, 2.0), OwnSampleBlend(12.0, 2.0))
"""Own-sample blend settings the evaluation compares (interval, crossfade in semitones)."""
REFERENCE_PITCH_SUFFIX = "_at_reference_pitch"
"""Key suffix of a blend centred on the known reference pitch instead of the input's estimated
pitch: what a user who names the input's pitch would get (not a choice the live path can make)."""
FIGURE_PITCHES = (36, 48, 60, 72, 84)
REFINED_SUFFIX = "_refined"
"""Key suffix of a bank rendered from h refined at test time (`models.one_shot_refinement`)."""


@dataclass(frozen=True)
class FidelityConfig:
    """What the one-shot fidelity evaluation compares."""

    reference_pitch: int = 60
    pitches: tuple[int, ...] = tuple(range(36, 85, 4))
    programs: tuple[int, ...] = tuple(range(112))
    held_out_every: int = 4
    seconds: float = 0.5
    velocity: int = 100
    n_figure_instruments: int = 4
    blend: OwnSampleBlend | None = DEFAULT_BLEND
    """The own-sample blend of the ablation's blend rows (None: no blend rows)."""
    refinement_steps: int = REFINEMENT_STEPS
    """Test-time refinement steps of the refined rows (0: no refinement rows)."""


def is_held_out(program: int, config: FidelityConfig) -> bool:
    """Whether GM `program` is in the held-out subset (every `held_out_every`-th program)."""
    return program % config.held_out_every == config.held_out_every - 1


def head_distance_db(a: np.ndarray, b: np.ndarray, config, seconds: float) -> np.ndarray:
    """`log_mel_distance_db` over the first `seconds` (s) of notes a and b `[n, n_samples]` at
    config.sample_rate: float64 [n] (dB)."""
    n = int(round(seconds * config.sample_rate))
    return log_mel_distance_db(np.asarray(a)[:, :n], np.asarray(b)[:, :n], config)


def render_font_notes(sf2_path, programs, pitches, sample_rate: int, n_samples: int, velocity: int) -> dict:
    """The font's notes of each GM `program` (bank 0) at MIDI `pitches`, `n_samples` at
    `sample_rate` (Hz), preprocessed as the training data (peak 1.0, 0.1 s exponential fade):
    {program: {pitch: float32 [n_samples]}}; silent renders are left out."""
    synth, sfid = open_soundfont(sf2_path, sample_rate)
    notes = {}
    for program in programs:
        raw = render_program_notes(synth, sfid, int(program), list(pitches), velocity, n_samples)
        notes[int(program)] = {int(p): preprocess_note(audio, sample_rate, 0.1, 5.0)
                               for p, audio in zip(pitches, raw) if np.max(np.abs(audio)) >= SILENCE_PEAK}
    return notes


def _one_shot_conditioning(source: GanBankSource, note: np.ndarray,
                           folder: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """h of `note` through the source's one-shot path (a sound file), unrefined and (when the source
    refines one-shots, else None) refined at test time, and the note as that path reads it:
    (h [dim], refined h [dim] | None, note [n_samples])."""
    path = folder / "one_shot.wav"
    soundfile.write(path, note, source.sample_rate, subtype="FLOAT")
    h = source.conditioning_for(TimbreRequest("audio", path=str(path), refine=False))
    refined = source.conditioning_for(TimbreRequest("audio", path=str(path))) if source.refines_one_shots else None
    return h, refined, load_one_shot(path, source.sample_rate, source.n_samples)


def instrument_fidelity(source: GanBankSource, h: np.ndarray, one_shot: np.ndarray, real: dict,
                        preset_bank, same_name: str | None, config: FidelityConfig, keep_notes: bool = False,
                        h_refined: np.ndarray | None = None) -> dict:
    """Distances (dB, mean over the pitches) of each bank to the real notes `real` {pitch: [n_samples]}
    for one instrument whose one-shot `one_shot` [n_samples] gave conditioning `h` [dim] (and, refined
    at test time, `h_refined`). `preset_bank(name, pitches)` renders a preset's bank (cached by the caller)."""
    pitches = [p for p in config.pitches if p in real]
    target = np.stack([real[p] for p in pitches])
    source_pitch = estimate_pitch_midi(one_shot, source.sample_rate)
    names = source.preset_names()
    nearest = names[int(np.argmin([((source.presets[name] - h) ** 2).sum() for name in names]))]
    stacked = np.repeat(np.asarray(h)[None], len(pitches), axis=0)
    generated = source.render_conditioning(stacked, pitches)
    refined_generator = source.one_shot_generator(h)
    banks = {"model": generated,
             "resampled": np.stack([resample_to_pitch(one_shot, p - config.reference_pitch, source.sample_rate)
                                    for p in pitches]),
             "nearest_preset": preset_bank(nearest, pitches)}
    if same_name is not None:
        banks["same_named_preset"] = preset_bank(same_name, pitches)
    own = (np.stack([resample_to_pitch(one_shot, p - source_pitch, source.sample_rate) for p in pitches])
           if np.isfinite(source_pitch) else None)
    for blend in BLEND_CANDIDATES:  # as the one-shot bank path blends (`blend_own_sample`), rows resampled once
        key = _blend_key(blend)
        banks[key] = generated if own is None else blend_rows(generated, own,
                                                              own_sample_weights(pitches, source_pitch, blend))
        banks[key + REFERENCE_PITCH_SUFFIX] = blend_rows(generated, banks["resampled"],
                                                         own_sample_weights(pitches, config.reference_pitch, blend))
    hyper = "model_hyper" if refined_generator is not None else "model"
    if refined_generator is not None:
        banks["model_hyper"] = source.render_conditioning(stacked, pitches, generator=refined_generator)
    if h_refined is not None:
        banks[hyper + REFINED_SUFFIX] = source.render_conditioning(
            np.repeat(np.asarray(h_refined)[None], len(pitches), axis=0), pitches, generator=refined_generator)
    for key in ("model_hyper", hyper + REFINED_SUFFIX):
        if key in banks and config.blend is not None:  # as the bank path blends: an unpitched input plays G only
            banks[_blend_key(config.blend, key)] = banks[key] if own is None else blend_rows(
                banks[key], own, own_sample_weights(pitches, source_pitch, config.blend))
    flat = head_distance_db(np.concatenate(list(banks.values())), np.tile(target, (len(banks), 1)), source.config,
                            config.seconds).reshape(len(banks), len(pitches))
    distances = dict(zip(banks, flat))
    played = played_bank_key(banks, config)
    record = {"pitches": pitches, "estimated_source_pitch": round(source_pitch, 2),
              "played_bank": played,
              "pitch_accuracy": {"played_bank": pitch_accuracy(banks[played], pitches, source.sample_rate)[0],
                                 "real": pitch_accuracy(target, pitches, source.sample_rate)[0]},
              "nearest_preset": nearest, "same_named_preset": same_name,
              "distance_db": {name: float(d.mean()) for name, d in distances.items()},
              "distance_db_by_pitch": {name: [round(float(v), 2) for v in d] for name, d in distances.items()}}
    presets = [record["distance_db"][k] for k in ("nearest_preset", "same_named_preset") if k in record["distance_db"]]
    record["distance_db"]["best_preset"] = min(presets)
    if keep_notes:
        record["notes"] = {"real": target, "model": generated, "resampled": banks["resampled"]}
        if "model_hyper" in banks:
            record["notes"]["model_hyper"] = banks["model_hyper"]
    return record


def played_bank_key(banks: dict, config: FidelityConfig) -> str:
    """Key of the bank a one-shot plays live among `banks`: the most refined generated bank
    (H, then test-time refinement), with the blend on top when `config.blend` is set."""
    generated = [key for key in ("model", "model_refined", "model_hyper", "model_hyper" + REFINED_SUFFIX)
                 if key in banks][-1]
    return generated if config.blend is None else _blend_key(config.blend, generated)


def _blend_key(blend: OwnSampleBlend, bank: str = "model") -> str:
    """Key of `bank` (model, model_hyper, ..._refined) with the own-sample blend `blend` on top."""
    return f"{bank}_blend_{blend.interval_semitones:g}_{blend.crossfade_semitones:g}"


def ablation(summary: dict, blend: OwnSampleBlend | None) -> list[dict]:
    """The ablation rows of one subset's `summarise` output: model, + H, + test-time refinement, and
    each with the blend, then resampled and best preset; each {row, key, mean_distance_db,
    beats_resampling_and_best_preset} (the share only for the model's banks), rows the run has no
    bank for left out (without H, the refinement rows are G's)."""
    banks = [("model", "model"), ("model + H", "model_hyper"), ("model + H + refinement", "model_hyper" + REFINED_SUFFIX),
             ("model + refinement", "model" + REFINED_SUFFIX)]
    rows = list(banks)
    if blend is not None:
        rows += [(f"{label.replace('model + ', '').replace('model', 'G')} + blend {blend_text(blend)}",
                  _blend_key(blend, key)) for label, key in banks]
    rows += [("resampled", "resampled"), ("best preset", "best_preset")]
    means, wins = summary.get("mean_distance_db", {}), summary.get("beats_resampling_and_best_preset", {})
    return [{"row": label, "key": key, "mean_distance_db": round(means[key], 3),
             "beats_resampling_and_best_preset": None if key not in wins else round(wins[key], 3)}
            for label, key in rows if key in means]


def summarise(records: list[dict]) -> dict:
    """Per-method mean distance (dB) over instruments, and for the model and each blend the share
    of instruments where it is closer than both the resampled one-shot and the best preset."""
    if not records:
        return {"n_instruments": 0}
    methods = sorted({name for r in records for name in r["distance_db"]})
    means = {name: float(np.mean([r["distance_db"][name] for r in records if name in r["distance_db"]]))
             for name in methods}
    wins = {name: float(np.mean([r["distance_db"][name] < min(r["distance_db"]["resampled"],
                                                               r["distance_db"]["best_preset"]) for r in records]))
            for name in methods if name.startswith("model")}
    return {"n_instruments": len(records), "mean_distance_db": means, "beats_resampling_and_best_preset": wins}


def evaluate_one_shot_fidelity(model_dir, sf2_path, out_dir, config: FidelityConfig = FidelityConfig(),
                               progress: bool = True) -> dict:
    """Run the evaluation of the model at `model_dir` on the font `sf2_path` (rendered at the
    model's rate); writes one_shot_fidelity.json and one_shot_fidelity.png into `out_dir` and
    returns the metrics."""
    started = time.monotonic()
    source = GanBankSource.from_dir(model_dir)
    source.refinement_steps = config.refinement_steps
    pitches = sorted(set(config.pitches) | {config.reference_pitch})
    font = render_font_notes(sf2_path, config.programs, pitches, source.sample_rate, source.n_samples,
                             config.velocity)
    metrics = fidelity_of_notes(source, font, out_dir, config, progress)
    metrics.update(model=str(model_dir), sf2=str(sf2_path), eval_seconds=round(time.monotonic() - started, 1))
    (Path(out_dir) / "one_shot_fidelity.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def fidelity_of_notes(source: GanBankSource, font: dict, out_dir, config: FidelityConfig = FidelityConfig(),
                      progress: bool = True) -> dict:
    """The evaluation on real notes `font` {program: {pitch: float32 [n_samples]}} at the source's
    rate: programs without a note at the reference pitch are skipped. Writes one_shot_fidelity.json
    and one_shot_fidelity.png into `out_dir`; returns the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blend_setting, source.own_sample_blend = source.own_sample_blend, None  # blended here, for every setting
    programs = [p for p in config.programs if p in font and config.reference_pitch in font[p]]
    held_out = [p for p in programs if is_held_out(p, config)]
    figure_programs = held_out[::max(1, len(held_out) // config.n_figure_instruments)][:config.n_figure_instruments]
    preset_banks = {}

    def preset_bank(name, bank_pitches):
        key = (name, tuple(bank_pitches))
        if key not in preset_banks:
            preset_banks[key] = source.render_pitches(source.presets[name], bank_pitches)
        return preset_banks[key]

    records = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for program in tqdm(programs, desc="one-shot fidelity", disable=not progress):
                name = GM_PROGRAM_NAMES[program]
                h, h_refined, one_shot = _one_shot_conditioning(source, font[program][config.reference_pitch],
                                                                Path(folder))
                record = instrument_fidelity(source, h, one_shot, font[program], preset_bank,
                                             name if name in source.presets else None, config,
                                             keep_notes=program in figure_programs, h_refined=h_refined)
                records.append({"program": program, "instrument": name, "held_out": is_held_out(program, config),
                                **record})
    finally:
        source.own_sample_blend = blend_setting
    figure = [r.pop("notes") for r in records if "notes" in r]
    development = summarise([r for r in records if not r["held_out"]])
    options = ["model"] + [_blend_key(b) for b in BLEND_CANDIDATES]
    chosen = min(options, key=lambda key: development.get("mean_distance_db", {}).get(key, np.inf))
    held_out_summary = summarise([r for r in records if r["held_out"]])
    for summary, subset in ((development, [r for r in records if not r["held_out"]]),
                            (held_out_summary, [r for r in records if r["held_out"]])):
        if subset:  # pyin over the comparison pitches: the played bank beside the real notes (the ceiling)
            summary["pitch_accuracy"] = {kind: float(np.mean([r["pitch_accuracy"][kind] for r in subset]))
                                         for kind in ("played_bank", "real")}
    metrics = {
        "sample_rate": source.sample_rate, "config": asdict(config), "n_instruments": len(records),
        "held_out_rule": f"program % {config.held_out_every} == {config.held_out_every - 1}",
        "held_out_programs": held_out,
        "blend_candidates": {_blend_key(b): asdict(b) for b in BLEND_CANDIDATES},
        "chosen_on_development": chosen,
        "development": development, "held_out": held_out_summary,
        "hypernetwork": source.hyper is not None,
        "ablation": {"development": ablation(development, config.blend),
                     "held_out": ablation(held_out_summary, config.blend)},
        "per_instrument": records,
    }
    (out_dir / "one_shot_fidelity.json").write_text(json.dumps(metrics, indent=2))
    write_fidelity_figure([r for r in records if r["program"] in figure_programs], figure, source.config,
                          out_dir / "one_shot_fidelity.png", metrics["ablation"]["held_out"])
    return metrics


def write_fidelity_figure(records: list[dict], notes: list[dict], spectral_config, png_path: Path,
                          ablation_rows: list[dict] = ()) -> None:
    """Log-mel spectrograms (dB) of the real notes, the model's bank (and the refined G's, with H)
    and the resampled one-shot at FIGURE_PITCHES for each instrument in `records` (rows: instrument
    x kind), headed by the held-out `ablation_rows` (mean distance dB, share beating both), into `png_path`."""
    import matplotlib  # plotting only: matplotlib is heavy and needed nowhere else here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ("real", "model", "model_hyper", "resampled") if notes and "model_hyper" in notes[0] \
        else ("real", "model", "resampled")
    n_rows = max(1, len(records)) * len(kinds)
    fig, axes = plt.subplots(n_rows, len(FIGURE_PITCHES), figsize=(2.2 * len(FIGURE_PITCHES), 1.4 * n_rows + 1.0),
                             squeeze=False)
    for index, (record, bank) in enumerate(zip(records, notes)):
        for k, kind in enumerate(kinds):
            for column, pitch in enumerate(FIGURE_PITCHES):
                axis = axes[index * len(kinds) + k, column]
                axis.set_xticks([])
                axis.set_yticks([])
                if pitch in record["pitches"]:
                    note = bank[kind][record["pitches"].index(pitch)][None]
                    with torch.no_grad():
                        nepers = denormalise_log_mel(log_mel(torch.from_numpy(note), spectral_config),
                                                     spectral_config)[0].numpy()
                    axis.imshow(20.0 / np.log(10.0) * nepers, origin="lower", aspect="auto", vmin=-80, vmax=30)
                if column == 0:
                    axis.set_ylabel(f"{record['instrument'][:14]}\n{kind}", fontsize=6)
                if index == 0 and k == 0:
                    axis.set_title(f"MIDI {pitch}", fontsize=7)
    cells = [f"{row['row']}: {row['mean_distance_db']:.2f} dB"
             + ("" if row["beats_resampling_and_best_preset"] is None
                else f" ({100 * row['beats_resampling_and_best_preset']:.0f} %)") for row in ablation_rows]
    table = "\n".join("   ".join(cells[start:start + 3]) for start in range(0, len(cells), 3))
    fig.suptitle("one-shot at MIDI 60 -> bank: real vs model (vs model + H) vs resampled (log-mel dB)\n"
                 f"held out, distance (share beating resampling and the best preset):\n{table}", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1.0 - 1.0 / (1.4 * n_rows + 1.0)))
    fig.savefig(png_path, dpi=60)
    plt.close(fig)

