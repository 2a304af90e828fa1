"""Test-time refinement of a one-shot's conditioning: a few gradient steps on h so that the
generator (refined by H when the model has one) reproduces the input's own log-mel at the input's
own pitch. h is pitch-invariant, so what it learns at one pitch carries to the whole keyboard.

    h <- Adam step on  mean((G(h, z, p_input) - x)^2) + anchor * mean((h - h_f)^2)

x is the input's normalised log-mel (`models.features.log_mel`), h_f = f(input) the start and
anchor, z the bank's fixed noise, G's (and H's offsets') weights frozen.

Each choice is measured by `NUMBA_NUM_THREADS=1 python3 bench/refinement_sweep.py --programs 12`:
the bank's distance to TimGM6mb's real notes at the keys beyond the own-sample blend (|pitch - 60|
>= 11; a font the model never trained on, one-shot at MIDI 60), on 12 of its development programs
(p % 4 != 3). H alone: 10.48 dB.
- what to refine: h 9.93 dB; H's offsets 10.23; both 10.09; h through G alone, without H, 10.57;
- steps and rate: 10 / 20 / 30 steps 10.26 / 9.93 / 9.96 at lr 0.02; lr 0.05 10.43;
- targets: adding the input resampled by +-3 / 5 / 7 semitones as targets at those pitches
  10.66 / 10.95 / 11.26 (resampling's timbre shift misleads h);
- loss: adding HyperGANStrument's timbre loss ||f(G(h)) - f(x)||^2 at weight 1 / 10 / 100:
  9.86 / 10.05 / 10.42 (weight 1 stays within 0.1 dB of the reconstruction alone on two more sets
  of 28 programs: not used).
The shipped 20 steps at lr 0.02 take about 0.17 s on one core.
`latentsynth eval --one-shot-fidelity` reports the whole bank, with and without, on the held-out programs.

The live path serves a one-shot in two stages (`rt_engine.banks.bank_manager`): the held pitches
of the bank of h_f first (what `/done` waits for), then the refined bank, which the engine
crossfades to when its held rows land, as it does from grid nodes to an exact bank.

Public API:
    REFINEMENT_STEPS, REFINEMENT_LEARNING_RATE, REFINEMENT_ANCHOR
    REFINEMENT_ENVIRONMENT      environment variable a bank worker reads the step count from
    parse_refinement(text) -> int   'on' (REFINEMENT_STEPS), 'off' (0) or a step count
    refine_conditioning(generator, h, target, pitch_class, z, steps, learning_rate, anchor) -> float32 [dim]
"""
from __future__ import annotations

import numpy as np

REFINEMENT_STEPS = 20
"""Adam steps on h per one-shot: the time budget (about 0.17 s on one core for the shipped G). A
step count, not a wall-time limit, so that one input always gives the same h (and the same cached
bank) on a busy machine too."""
REFINEMENT_LEARNING_RATE = 0.02
REFINEMENT_ANCHOR = 0.1
"""Weight of the pull back towards f(input), per squared unit of h."""
REFINEMENT_ENVIRONMENT = "LATENTSYNTH_ONE_SHOT_REFINEMENT"
MAX_STEPS = 1000
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


def parse_refinement(text: str) -> int:
    """The user's `--one-shot-refinement`: 'on' (REFINEMENT_STEPS), 'off' (0) or a step count in
    [0, MAX_STEPS]. Raises ValueError naming the accepted forms."""
    value = str(text).strip().lower()
    if value == "on":
        return REFINEMENT_STEPS
    if value == "off":
        return 0
    try:
        steps = int(value)
    except ValueError:
        raise ValueError(f"expected on, off or a step count, got {text!r}") from None
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"step count must be within 0..{MAX_STEPS}, got {steps}")
    return steps


def refine_conditioning(generator, h: np.ndarray, target, pitch_class, z, steps: int = REFINEMENT_STEPS,
                        learning_rate: float = REFINEMENT_LEARNING_RATE,
                        anchor: float = REFINEMENT_ANCHOR) -> np.ndarray:
    """h refined at the input's own pitch (see the module docstring).

    generator: G-shaped callable (z [1, z_dim], pitch_classes int [1], h [1, dim]) -> normalised
    log-mel [1, n_mels, n_frames], whose weights do not require gradients; h: float32 [dim], f of
    the input; target: the input's normalised log-mel [1, n_mels, n_frames]; pitch_class: int [1],
    the input's pitch class; z: [1, z_dim]; `steps` Adam steps of `learning_rate`.
    Returns float32 [dim] (h itself, copied, for 0 steps).
    """
    import torch  # heavy: loaded with the networks (models.gan_bank), not by reading the settings

    start = torch.from_numpy(np.asarray(h, dtype=np.float32).copy())[None]
    refined = start.clone()
    first_moment, second_moment = torch.zeros_like(start), torch.zeros_like(start)
    for step in range(1, int(steps) + 1):
        with torch.enable_grad():
            variable = refined.clone().requires_grad_(True)
            loss = (generator(z, pitch_class, variable) - target).pow(2).mean()
            loss = loss + anchor * (variable - start).pow(2).mean()
            (gradient,) = torch.autograd.grad(loss, variable)
        # Adam (beta 0.9 / 0.999, eps 1e-8) written out: torch.optim.Adam's first construction in a
        # process costs 0.8 s, which the first one-shot would wait for
        first_moment.mul_(ADAM_BETAS[0]).add_(gradient, alpha=1.0 - ADAM_BETAS[0])
        second_moment.mul_(ADAM_BETAS[1]).addcmul_(gradient, gradient, value=1.0 - ADAM_BETAS[1])
        corrected = first_moment / (1.0 - ADAM_BETAS[0] ** step)
        scale = (second_moment / (1.0 - ADAM_BETAS[1] ** step)).sqrt_().add_(ADAM_EPSILON)
        refined = refined - learning_rate * corrected / scale
    return refined[0].numpy().astype(np.float32)
