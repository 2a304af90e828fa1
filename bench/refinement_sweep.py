"""Benchmark: the choices behind the one-shot's test-time refinement (`models.one_shot_refinement`).

For TimGM6mb development programs (p % 4 != 3, a font the model never trained on), the font's note
at MIDI 60 goes through the one-shot path (f, H's refined G) and the bank is rendered at the keys
beyond the own-sample blend (MIDI 36-84 every 4 with |pitch - 60| >= 11), where refinement matters.
Each variant refines for --steps Adam steps (torch.optim.Adam, lr and anchor as the shipped
refinement unless the variant says otherwise) and is scored by the log-mel distance to the font's
real notes over the first 0.5 s (dB, mean over programs; lower is better):
- none: H alone; h: the shipped refinement (also at 10 and 30 steps, and at lr 0.05);
- offsets / h+offsets: H's offsets refined instead of, or beside, h;
- G-h: h refined through G alone (no H);
- targets+-3/5/7: the input resampled by that many semitones added as targets at those pitches;
- timbre1/10/100: HyperGANStrument's timbre loss ||f(G(h)) - f(x)||^2 added at that weight.
Prints JSON: per-variant mean distance and the programs used.

    python3 bench/refinement_sweep.py [--programs 28] [--offset 0] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.features import log_mel  # noqa: E402 (after the checkout joins sys.path)
from models.gan_bank import log_mel_to_audio  # noqa: E402
from models.hypernetwork import first_reconstruction_features, fixed_z, refined_generate  # noqa: E402
from models.one_shot_refinement import REFINEMENT_ANCHOR, REFINEMENT_LEARNING_RATE  # noqa: E402
from models.own_sample_blend import resample_to_pitch  # noqa: E402
from models.timbre_sources import DEFAULT_MODEL_DIR, load_bank_source  # noqa: E402
from training.one_shot_fidelity import (DEFAULT_SF2, FidelityConfig, _one_shot_conditioning,  # noqa: E402
                                        head_distance_db, is_held_out, render_font_notes)

VARIANTS = {  # name: (refine h, refine offsets, use H, target shifts, timbre weight, steps factor, lr)
    "none": (False, False, True, (0,), 0.0, 1.0, REFINEMENT_LEARNING_RATE),
    "h": (True, False, True, (0,), 0.0, 1.0, REFINEMENT_LEARNING_RATE),
    "h_half_steps": (True, False, True, (0,), 0.0, 0.5, REFINEMENT_LEARNING_RATE),
    "h_1.5x_steps": (True, False, True, (0,), 0.0, 1.5, REFINEMENT_LEARNING_RATE),
    "h_lr0.05": (True, False, True, (0,), 0.0, 1.0, 0.05),
    "offsets": (False, True, True, (0,), 0.0, 1.0, REFINEMENT_LEARNING_RATE),
    "h+offsets": (True, True, True, (0,), 0.0, 1.0, REFINEMENT_LEARNING_RATE),
    "G-h": (True, False, False, (0,), 0.0, 1.0, REFINEMENT_LEARNING_RATE),
    **{f"targets+-{k}": (True, False, True, (-k, 0, k), 0.0, 1.0, REFINEMENT_LEARNING_RATE) for k in (3, 5, 7)},
    **{f"timbre{w:g}": (True, False, True, (0,), w, 1.0, REFINEMENT_LEARNING_RATE) for w in (1.0, 10.0, 100.0)},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=28, help="development programs, every third from --offset")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = load_bank_source(str(DEFAULT_MODEL_DIR))
    source.refinement_steps = 0
    config, generator, extractor = source.config, source.generator, source.extractor
    development = [p for p in range(112) if not is_held_out(p, FidelityConfig())]
    programs = development[args.offset::3][:args.programs]
    far = [p for p in range(36, 85, 4) if abs(p - 60) >= 11]
    font = render_font_notes(DEFAULT_SF2, programs, far + [60], config.sample_rate, config.n_samples, 100)
    z = fixed_z(config.z_dim)
    distances: dict[str, list[float]] = {name: [] for name in VARIANTS}
    used = []
    with tempfile.TemporaryDirectory() as folder:
        for program in programs:
            if not all(p in font[program] for p in far + [60]):
                continue
            used.append(program)
            h0, _, audio = _one_shot_conditioning(source, font[program][60], Path(folder))
            source_pitch = source._one_shots[h0.tobytes()][1]
            own = 60.0 if not np.isfinite(source_pitch) else float(source_pitch)
            h_start = torch.from_numpy(h0)[None]
            own_class = source._own_pitch_class(own)
            with torch.no_grad():
                start_offsets = {k: v[0] for k, v in source.hyper(
                    h_start, first_reconstruction_features(generator, extractor, h_start, own_class, z)).items()}
            real = np.stack([font[program][p] for p in far])
            for name, (on_h, on_offsets, use_h, shifts, timbre, steps_factor, lr) in VARIANTS.items():
                h = h_start.clone().requires_grad_(on_h)
                offsets = {k: v.clone().requires_grad_(on_offsets) for k, v in start_offsets.items()}
                classes = torch.cat([source._own_pitch_class(own + s) for s in shifts])
                targets = torch.cat([log_mel(torch.from_numpy(resample_to_pitch(audio, s, config.sample_rate))[None],
                                             config) for s in shifts])

                def render(pitch_classes, h_rows):
                    if not use_h:
                        return generator(z.expand(len(pitch_classes), -1), pitch_classes, h_rows)
                    return refined_generate(generator, offsets, z.expand(len(pitch_classes), -1), pitch_classes, h_rows)

                parameters = ([h] if on_h else []) + (list(offsets.values()) if on_offsets else [])
                if parameters:
                    optimiser = torch.optim.Adam(parameters, lr=lr)
                    for _ in range(int(round(args.steps * steps_factor))):
                        x = render(classes, h.expand(len(shifts), -1))
                        loss = (x - targets).pow(2).mean() + REFINEMENT_ANCHOR * (h - h_start).pow(2).mean()
                        if timbre:
                            loss = loss + timbre * (extractor(x) - h_start).pow(2).mean()
                        optimiser.zero_grad()
                        loss.backward()
                        optimiser.step()
                with torch.no_grad():
                    classes_far = torch.tensor([p - config.min_pitch for p in far])
                    x = render(classes_far, h.detach().expand(len(far), -1))
                bank = log_mel_to_audio(x.numpy(), config, pitches=far)
                distances[name].append(float(head_distance_db(bank, real, config, 0.5).mean()))
    print(json.dumps({"programs": used, "pitches": far, "steps": args.steps,
                      "mean_distance_db": {k: round(float(np.mean(v)), 3) for k, v in distances.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
