"""`GanBankSource`: per-pitch one-shot banks from the trained GAN, behind `models.bank_source.BankSource`
(registered as "gan" in `models.timbre_sources`).

A model folder holds
    gan/           GanConfig + generator weights (safetensors) + metadata
    features/      FeatureConfig + feature model weights: f turns a one-shot WAV into h
    presets.json   {"presets": {name: h [h_dim]}, "programs": {name: GM program}, "corners": [a, b, c, d],
                    "envelopes" (optional): {name: [attack s, decay s, sustain, release s]}}
    grid/          (optional) a SOM timbre grid (`models.timbre_grid`); else `xy` is bilinear
                   between the four corner presets: a at (0, 0), b at (1, 0), c at (0, 1), d at (1, 1)
    hyper/         (optional) the hypernetwork H (`models.hypernetwork`): a one-shot request gets
                   its own refined G, W * (1 + H(h, h_init)) with h_init = f(G(h, z, p)) at the
                   input's estimated pitch p, computed once per request; its bank renders with it,
                   from h refined at test time at p (`models.one_shot_refinement`)

torch loads with the networks, on first use (`GanBankSource.warm`, or the first render or one-shot):
the configs, presets and grid are read without it, so a start whose banks are all in the disk cache
(`rt_engine.banks.bank_cache`) never imports torch.

Rendering: h -> G(z, pitch, h) -> normalised log-mel -> mel magnitude -> linear magnitude -> phase
by PGHI then Fast Griffin-Lim (`models.phase_reconstruction`) -> peak-normalised waveform. The
mel -> linear step knows each note's pitch, so it starts from the pseudo-inverse solution masked by
the pitch's harmonic comb and fits the mel by multiplicative updates (`models.harmonic_inversion`):
128 mel bands cannot resolve the harmonics of low notes (MIDI 28-40), and this prior restores them.
Without a pitch, GANStrument's pseudo-inverse + projected gradient (`models.mel_inversion`).

Public API:
    GanBankSource.from_dir(model_dir) -> GanBankSource
        .sample_rate, .n_samples, .conditioning_dim, .preset_names()
        .render_bank(timbre, pitches) -> float32 [n, n_samples]
        .conditioning_for(timbre) -> float32 [conditioning_dim]
        .render_pitches(h [conditioning_dim], pitches) -> float32 [n, n_samples]
        .own_sample_blend   OwnSampleBlend | None: one-shot banks play the input near its pitch
        .refinement_steps   int: test-time refinement of a one-shot's h (`models.one_shot_refinement`), 0: off
        .refines_one_shots  bool: refinement_steps > 0 (a request's `refine` then matters)
        .hyper              HyperNetwork | None (from hyper/)
        .one_shot_generator(h [dim]) -> RefinedGenerator | None   H's refined G of a one-shot's h
        .render_conditioning(h [batch, dim], pitches int [batch], seed, generator=None) -> float32 [batch, n_samples]
        .render_spectrogram(h, pitches, seed) -> float32 [batch, n_mels, n_frames] (natural-log mel magnitude)
        .features_of_audio(audio [batch, n_samples]) -> float32 [batch, dim]
    interpolate_conditioning(hs [m, dim], weights [m]) -> [dim]   HyperGANStrument: h = sum_i a_i h_i
    bilinear_conditioning(corners [4, dim], x, y) -> [dim]
    log_mel_to_audio(log_mel_x [batch, n_mels, n_frames], config, pitches=None) -> float32 [batch, n_samples]
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from models.bank_source import TimbreRequest
from models.checkpoint import CheckpointError, load_config
from models.harmonic_inversion import HARMONIC_PRIOR_ITERATIONS, mel_inverter, mel_to_linear_harmonic
from models.model_config import FeatureConfig, GanConfig, denormalise_log_mel, mel_filterbank
from models.one_shot import load_one_shot
from models.own_sample_blend import (BLEND_ENVIRONMENT, DEFAULT_BLEND, blend_own_sample, estimate_pitch_midi,
                                     own_sample_weights, parse_blend)
from models.one_shot_refinement import REFINEMENT_ENVIRONMENT, REFINEMENT_STEPS, parse_refinement, refine_conditioning
from models.phase_reconstruction import griffin_lim
from models.pitch import midi_to_hz
from models.timbre_grid import load_grid

MEL_ITERATIONS = 16
"""Projected-gradient iterations of the mel -> linear solve after the pseudo-inverse start."""
PHASE_ITERATIONS = 4
"""Fast Griffin-Lim iterations after the PGHI start, a measured choice with the harmonic prior's
updates (`python3 bench/bank.py --threads 1 --inversion-iterations data/fluidr3_32k --notes 128`):
128 real notes taken to the model's log-mel and back are, with 20 harmonic-prior updates,
2.85 / 2.11 / 2.12 / 2.14 / 2.13 / 2.02 dB (standard error 0.07-0.09) from the originals after
0 / 3 / 4 / 6 / 8 / 16 iterations; with 30 updates 2.11 dB at both 4 and 6 iterations; pitch
accuracy the same at every count from 3 on. Each iteration costs about 26 ms of an 88-key bank on one core.
The low notes run more (`LOW_NOTE_PHASE_ITERATIONS`)."""
LOW_NOTE_BINS = 5.0
"""A note whose fundamental is under this many STFT bins (78 Hz at n_fft 2048 / 32 kHz, about MIDI 39)
has harmonics closer together than two Hann main lobes: PGHI's phase gradients are least reliable
there, and its Fast Griffin-Lim runs `LOW_NOTE_PHASE_ITERATIONS`."""
LOW_NOTE_PHASE_ITERATIONS = 8
"""Fast Griffin-Lim iterations of the low notes (see `LOW_NOTE_BINS`): 19 of an 88-key bank's keys
(MIDI 21-39), about 30 ms per bank on one core. The pyin pitch accuracy of the GAN's notes (`latentsynth
eval --model models/pretrained/default --pitch-step 2 --timbres 11`, 385 notes, every miss at MIDI
28-38) is 0.951 with it, and 0.956 / 0.948 / 0.951 at 10 / 12 / 16 (a note or two either way at
the bottom of the range); with 4 iterations for every note 0.938."""
GENERATOR_CHUNK = 8
"""Notes per generator call: small batches keep G's activations in cache (2.5x faster than 88 at once)."""
ONE_SHOT_MEMORY = 8
"""One-shot inputs kept (with their pitch and refined G) for later `render_pitches` calls."""
UNPITCHED_REFINEMENT_PITCH = 60
"""MIDI pitch of H's first reconstruction for a one-shot without a clear pitch."""


def log_mel_to_audio(log_mel_x: np.ndarray, config, pitches=None, mel_iterations: int = MEL_ITERATIONS,
                     phase_iterations: int = PHASE_ITERATIONS,
                     harmonic_iterations: int = HARMONIC_PRIOR_ITERATIONS) -> np.ndarray:
    """Normalised log-mel `[batch, n_mels, n_frames]` (G's output) -> waveforms float32
    `[batch, n_samples]` at config.sample_rate (Hz), each peak-normalised to 1.0.
    With `pitches` (MIDI, [batch]) the mel -> linear step uses the harmonic prior of each note's
    known pitch (`mel_to_linear_harmonic`, `harmonic_iterations` updates); without, GANStrument's
    pseudo-inverse + projected gradient (`models.mel_inversion.MelInverter`, `mel_iterations`).
    Phase: PGHI, then `phase_iterations` of Fast Griffin-Lim, or for notes of known pitch below
    `LOW_NOTE_BINS` `LOW_NOTE_PHASE_ITERATIONS` (never fewer than `phase_iterations`)."""
    mel = np.exp(denormalise_log_mel(np.asarray(log_mel_x, dtype=np.float32), config))
    floor = np.float32(config.log_floor)
    mel = np.where(mel <= floor * 1.0001, 0.0, mel).astype(np.float32)  # the floor means silence
    if pitches is None:
        linear = mel_inverter(config).invert(mel, n_iter=mel_iterations)
    else:
        f0_hz = midi_to_hz(pitches)
        linear = mel_to_linear_harmonic(mel, f0_hz, config, n_iter=harmonic_iterations)
    iterations = np.full(len(mel), phase_iterations)
    if pitches is not None:
        low = np.asarray(f0_hz) < LOW_NOTE_BINS * config.sample_rate / config.n_fft
        iterations[low] = max(phase_iterations, LOW_NOTE_PHASE_ITERATIONS)
    audio = np.empty((len(mel), config.n_samples), dtype=np.float32)
    for n_iter in np.unique(iterations):
        rows = np.flatnonzero(iterations == n_iter)
        audio[rows] = griffin_lim(linear[rows], config.n_samples, n_iter=int(n_iter), init="pghi",
                                  hop_length=config.hop_length)
    peak = np.abs(audio).max(axis=1, keepdims=True)
    return (audio / np.maximum(peak, 1e-9)).astype(np.float32)


def interpolate_conditioning(conditionings: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """HyperGANStrument's interpolation h = sum_i alpha_i h_i: `conditionings` [m, dim], `weights`
    [m] (not renormalised) -> float32 [dim]."""
    conditionings = np.asarray(conditionings, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    if conditionings.ndim != 2 or weights.shape != (conditionings.shape[0],):
        raise ValueError(f"need conditionings [m, dim] and weights [m], got {conditionings.shape}, {weights.shape}")
    return (weights[:, None] * conditionings).sum(0)


def bilinear_conditioning(corners: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear point between four corner conditionings [4, dim] (a at (0,0), b at (1,0), c at
    (0,1), d at (1,1)); x, y are clipped to [0, 1]. Returns float32 [dim]."""
    x, y = float(np.clip(x, 0.0, 1.0)), float(np.clip(y, 0.0, 1.0))
    weights = [(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y]
    return interpolate_conditioning(corners, weights)


class GanBankSource:
    """Banks of one-shot notes rendered by the GAN. Build with `from_dir`; the networks (G, f, H)
    load on first use (`warm`)."""

    def __init__(self, model_dir: str | Path, config: GanConfig, presets: dict, corners: list[str], grid=None):
        self.model_dir = str(model_dir)
        self.config = config
        self.presets = presets
        self.corners = corners
        self.grid = grid
        self.sample_rate = int(self.config.sample_rate)
        self.n_samples = int(self.config.n_samples)
        self.conditioning_dim = int(self.config.h_dim)
        self.envelopes: dict[str, tuple] = {}
        """Preset name -> (attack s, decay s, sustain, release s), measured from the training font
        (`training.preset_envelopes`); presets without one play the engine's default."""
        self.own_sample_blend = DEFAULT_BLEND
        """One-shot banks play the input itself near its pitch (`models.own_sample_blend`); None: off."""
        self.refinement_steps = REFINEMENT_STEPS
        """Test-time refinement steps of a one-shot's h (`models.one_shot_refinement`); 0: off."""
        self._one_shots: dict[bytes, tuple] = {}
        self._networks: tuple | None = None  # (G, f, H or None) once loaded

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "GanBankSource":
        """Read the configs of gan/ and features/, presets.json and grid/ (when present) from
        `model_dir`; missing or bad files raise CheckpointError naming the file (bad weights: when
        the networks load)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise CheckpointError(f"model folder not found: {model_dir}")
        config = load_config(model_dir / "gan", GanConfig)
        features = load_config(model_dir / "features", FeatureConfig)
        if features.h_dim != config.h_dim:
            raise CheckpointError(f"{model_dir / 'features'}: h_dim {features.h_dim} does not match "
                                  f"the generator's {config.h_dim}")
        presets, corners = _load_presets(model_dir / "presets.json", config.h_dim)
        grid = None
        if (model_dir / "grid").is_dir():
            grid = load_grid(model_dir / "grid")
            if grid.conditioning_dim != config.h_dim:
                raise CheckpointError(f"{model_dir / 'grid'}: conditioning_dim {grid.conditioning_dim} does not "
                                      f"match the generator's {config.h_dim}")
        source = cls(model_dir, config, presets, corners, grid)
        source.envelopes = _load_envelopes(model_dir / "presets.json", presets)
        return source

    def warm(self) -> None:
        """Load G, f and H (gan/, features/, hyper/ when present) now instead of at first use."""
        self._loaded_networks()

    def _loaded_networks(self) -> tuple:
        if self._networks is None:
            # heavy (torch): the networks load on first use, so cached banks play without them
            from models.features import load_feature_extractor
            from models.gan import load_generator
            from models.hypernetwork import load_hypernetwork

            folder = Path(self.model_dir)
            generator = load_generator(folder / "gan")
            extractor = load_feature_extractor(folder / "features")
            hyper = load_hypernetwork(folder / "hyper", generator) if (folder / "hyper").is_dir() else None
            for network in (generator, extractor, hyper):
                if network is not None:
                    network.requires_grad_(False)  # a source never trains them; refinement differentiates h only
            self._networks = (generator, extractor, hyper)
        return self._networks

    @property
    def generator(self):
        """G (`models.gan.Generator`), loaded on first use."""
        return self._loaded_networks()[0]

    @property
    def extractor(self):
        """f (`models.features.FeatureExtractor`), loaded on first use."""
        return self._loaded_networks()[1]

    @property
    def hyper(self):
        """H (`models.hypernetwork.HyperNetwork`) from hyper/, or None; loaded on first use."""
        return self._loaded_networks()[2]

    @property
    def refines_one_shots(self) -> bool:
        """Whether a sound file's bank is refined at test time (`TimbreRequest.refine`)."""
        return self.refinement_steps > 0

    def preset_names(self) -> list[str]:
        """Preset names in program-change order."""
        return list(self.presets)

    def preset_envelopes(self) -> dict[str, tuple]:
        """Preset name -> (attack s, decay s, sustain, release s) for the presets that have one."""
        return dict(self.envelopes)

    def features_of_audio(self, audio: np.ndarray) -> np.ndarray:
        """h = f(x) of notes `[batch, n_samples]` (preprocessed like the data): float32 [batch, dim]."""
        import torch  # heavy: loaded with the networks (see the module docstring)

        from models.features import log_mel

        with torch.no_grad():
            return self.extractor(log_mel(torch.from_numpy(np.array(audio, dtype=np.float32)), self.config)).numpy()

    def conditioning_for(self, timbre: TimbreRequest) -> np.ndarray:
        """h for a preset, a one-shot audio file (through f) or a grid point: float32 [conditioning_dim]."""
        if timbre.kind == "preset":
            if timbre.name not in self.presets:
                raise KeyError(f"unknown preset {timbre.name!r}; known: {', '.join(self.presets)}")
            return self.presets[timbre.name].copy()
        if timbre.kind == "audio":
            audio = load_one_shot(timbre.path, self.sample_rate, self.n_samples)
            h = self.features_of_audio(audio[None])[0]
            pitch = estimate_pitch_midi(audio, self.sample_rate)
            generator = self._refine(h, pitch)
            if timbre.refine and self.refines_one_shots:
                h = self._refined_conditioning(h, audio, pitch, generator)
            self._one_shots[h.tobytes()] = (audio, pitch, generator)
            while len(self._one_shots) > ONE_SHOT_MEMORY:
                self._one_shots.pop(next(iter(self._one_shots)))
            return h
        if timbre.kind == "xy":
            if not (np.isfinite(timbre.x) and np.isfinite(timbre.y)):
                raise ValueError(f"timbre point must be finite, got ({timbre.x}, {timbre.y})")
            if self.grid is not None:
                return np.asarray(self.grid.conditioning_at(timbre.x, timbre.y), dtype=np.float32)
            corners = np.stack([self.presets[name] for name in self.corners])
            return bilinear_conditioning(corners, timbre.x, timbre.y)
        raise ValueError(f"unknown timbre kind {timbre.kind!r}: use xy, preset or audio")

    def _own_pitch_class(self, source_pitch: float):
        """G's pitch class (torch int [1]) of a one-shot whose pitch is `source_pitch` (MIDI; nan:
        unpitched, UNPITCHED_REFINEMENT_PITCH)."""
        import torch  # heavy: loaded with the networks (see the module docstring)

        pitch = UNPITCHED_REFINEMENT_PITCH if not np.isfinite(source_pitch) else source_pitch
        low = self.config.min_pitch
        return torch.tensor([int(np.clip(round(pitch), low, low + self.config.n_pitches - 1)) - low])

    def _refined_conditioning(self, h: np.ndarray, audio: np.ndarray, source_pitch: float, generator) -> np.ndarray:
        """h [dim] of a one-shot `audio` [n_samples] refined at its own pitch by `refinement_steps`
        steps through `generator` (H's refined G, or G): float32 [dim]."""
        import torch  # heavy: loaded with the networks (see the module docstring)

        from models.features import log_mel
        from models.hypernetwork import fixed_z

        with torch.no_grad():  # not inference_mode: the refinement's autograd graph uses the target
            target = log_mel(torch.from_numpy(np.asarray(audio, dtype=np.float32))[None], self.config)
        return refine_conditioning(self.generator if generator is None else generator, h, target,
                                   self._own_pitch_class(source_pitch), fixed_z(self.config.z_dim),
                                   steps=self.refinement_steps)

    def _refine(self, h: np.ndarray, source_pitch: float) -> RefinedGenerator | None:
        """H's refined G for a one-shot's h [dim] whose pitch is `source_pitch` (MIDI; nan: unpitched),
        or None without hyper/."""
        if self.hyper is None:
            return None
        import torch  # heavy: loaded with the networks (see the module docstring)

        from models.hypernetwork import RefinedGenerator, first_reconstruction_features, fixed_z

        pitch_class = self._own_pitch_class(source_pitch)
        h_t = torch.from_numpy(np.asarray(h, dtype=np.float32))[None]
        with torch.inference_mode():
            h_init = first_reconstruction_features(self.generator, self.extractor, h_t, pitch_class,
                                                   fixed_z(self.config.z_dim))
            offsets = self.hyper(h_t, h_init)
        return RefinedGenerator(self.generator, {name: delta[0] for name, delta in offsets.items()})

    def one_shot_generator(self, h: np.ndarray) -> RefinedGenerator | None:
        """The refined G of the one-shot whose conditioning is `h` [dim] (`conditioning_for` of a
        sound file, among the last ONE_SHOT_MEMORY), else None (also without hyper/)."""
        one_shot = self._one_shots.get(np.asarray(h, dtype=np.float32).tobytes())
        return None if one_shot is None else one_shot[2]

    def _pitch_classes(self, pitches) -> np.ndarray:
        pitches = np.asarray(pitches)
        low, high = self.config.min_pitch, self.config.min_pitch + self.config.n_pitches - 1
        if pitches.ndim != 1 or pitches.size == 0:
            raise ValueError(f"pitches must be a non-empty 1-D list of MIDI numbers, got shape {pitches.shape}")
        if np.any(pitches != np.round(pitches)) or np.any((pitches < low) | (pitches > high)):
            bad = [p for p in pitches.tolist() if p != round(p) or not low <= p <= high]
            raise ValueError(f"pitches must be integer MIDI numbers in {low}..{high}, got {bad[:5]}")
        return pitches.astype(np.int64) - low

    def render_spectrogram(self, h: np.ndarray, pitches, seed: int = 0) -> np.ndarray:
        """G's output for conditionings `h` [batch, dim] at MIDI `pitches` [batch], one z from
        `seed` shared by the batch: natural-log mel magnitude float32 [batch, n_mels, n_frames]."""
        return denormalise_log_mel(self._generate(h, pitches, seed), self.config).astype(np.float32)

    def _generate(self, h: np.ndarray, pitches, seed: int, generator=None) -> np.ndarray:
        h = np.asarray(h, dtype=np.float32)
        classes = self._pitch_classes(pitches)
        if h.ndim != 2 or h.shape != (classes.size, self.conditioning_dim):
            raise ValueError(f"h must be [{classes.size}, {self.conditioning_dim}] for {classes.size} pitches, "
                             f"got shape {h.shape}")
        if not np.all(np.isfinite(h)):
            raise ValueError("conditioning h holds NaN or infinite values")
        import torch  # heavy: loaded with the networks (see the module docstring)

        from models.hypernetwork import fixed_z

        z = fixed_z(self.config.z_dim, seed)
        h, classes = torch.from_numpy(h), torch.from_numpy(classes)
        generator = self.generator if generator is None else generator
        with torch.inference_mode():
            out = [generator(z.expand(len(part), -1), part, h[start:start + GENERATOR_CHUNK])
                   for start, part in zip(range(0, len(classes), GENERATOR_CHUNK), classes.split(GENERATOR_CHUNK))]
        return torch.cat(out).numpy()

    def render_conditioning(self, h: np.ndarray, pitches, seed: int = 0, generator=None) -> np.ndarray:
        """Waveforms float32 [batch, n_samples] (peak 1.0) for conditionings h [batch, dim] at MIDI
        pitches [batch]; `generator`: a G-shaped callable instead of G (a `RefinedGenerator`)."""
        return log_mel_to_audio(self._generate(h, pitches, seed, generator), self.config, pitches=pitches)

    def render_pitches(self, h: np.ndarray, pitches: Sequence[int], seed: int = 0) -> np.ndarray:
        """One conditioning h [dim] at MIDI `pitches`: float32 [len(pitches), n_samples]. An h that
        came from a one-shot file renders with its refined G (with hyper/) and gets the own-sample
        blend (`own_sample_blend`) with that input."""
        pitches = list(pitches)
        one_shot = self._one_shots.get(np.asarray(h, dtype=np.float32).tobytes())
        if one_shot is None or self.own_sample_blend is None:
            return self.render_conditioning(np.repeat(np.asarray(h)[None], len(pitches), axis=0), pitches, seed,
                                            None if one_shot is None else one_shot[2])
        audio, source_pitch, generator = one_shot
        generated = np.arange(len(pitches))
        if np.isfinite(source_pitch):  # the keys that play the input itself are not generated
            generated = np.flatnonzero(own_sample_weights(pitches, source_pitch, self.own_sample_blend) < 1.0)
        notes = np.zeros((len(pitches), self.n_samples), dtype=np.float32)
        if generated.size:
            notes[generated] = self.render_conditioning(np.repeat(np.asarray(h)[None], generated.size, axis=0),
                                                        [pitches[row] for row in generated], seed, generator)
        return blend_own_sample(notes, pitches, audio, source_pitch, self.sample_rate, self.own_sample_blend)

    def render_bank(self, timbre: TimbreRequest, pitches: Sequence[int]) -> np.ndarray:
        """One timbre at MIDI `pitches`: float32 [len(pitches), n_samples], rows in the order asked."""
        return self.render_pitches(self.conditioning_for(timbre), pitches)


def load_source(model_dir: Path) -> GanBankSource:
    """The registry's entry point (`models.timbre_sources`). The own-sample blend is the user's
    setting in the environment (BLEND_ENVIRONMENT, set by `serve --own-sample-blend`), else DEFAULT_BLEND."""
    source = GanBankSource.from_dir(model_dir)
    if os.environ.get(BLEND_ENVIRONMENT):
        source.own_sample_blend = parse_blend(os.environ[BLEND_ENVIRONMENT])
    if os.environ.get(REFINEMENT_ENVIRONMENT):
        source.refinement_steps = parse_refinement(os.environ[REFINEMENT_ENVIRONMENT])
    return source


def _load_envelopes(path: Path, presets: dict) -> dict[str, tuple]:
    """presets.json's optional "envelopes": {name: [attack s, decay s, sustain, release s]}, each for
    a known preset, times >= 0 and sustain in [0, 1]; CheckpointError otherwise."""
    envelopes = json.loads(path.read_text()).get("envelopes", {})
    if not isinstance(envelopes, dict):
        raise CheckpointError(f"{path}: \"envelopes\" must map preset names to [attack, decay, sustain, release]")
    out = {}
    for name, envelope in envelopes.items():
        values = np.asarray(envelope, dtype=np.float64) if isinstance(envelope, list) else np.zeros(0)
        if (name not in presets or values.shape != (4,) or not np.all(np.isfinite(values))
                or np.any(values < 0) or values[2] > 1):
            raise CheckpointError(f"{path}: envelope of {name!r} must be a known preset's [attack s, decay s, "
                                  f"sustain 0..1, release s], got {envelope!r}")
        out[str(name)] = tuple(float(v) for v in values)
    return out


def _load_presets(path: Path, h_dim: int) -> tuple[dict[str, np.ndarray], list[str]]:
    if not path.is_file():
        raise CheckpointError(f"presets file not found: {path}")
    try:
        record = json.loads(path.read_text())
        presets = {str(name): np.asarray(h, dtype=np.float32) for name, h in record["presets"].items()}
        corners = [str(name) for name in record["corners"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: not a valid presets file ({error})") from error
    if not presets:
        raise CheckpointError(f"{path}: holds no presets")
    for name, h in presets.items():
        if h.shape != (h_dim,) or not np.all(np.isfinite(h)):
            raise CheckpointError(f"{path}: preset {name!r} must be {h_dim} finite numbers")
    if len(corners) != 4 or any(name not in presets for name in corners):
        raise CheckpointError(f"{path}: 'corners' must name four presets, got {corners}")
    return presets, corners
