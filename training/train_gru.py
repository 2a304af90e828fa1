"""`latentsynth train gru`: the Sound Model Factory's sample-level GRU, teacher-forced on GAN renders
over the SOM-adapted timbre grid.

    latentsynth train gru [--config training/configs/gru_default.json] [--out DIR] [--resume]
                          [--steps N] [--max-minutes M] [--model-size 3x256] [--model DIR]

`--out` is the exported model folder (default `<model_dir>/gru/`); the run folder is the config's
`run_dir`.

Pipeline: `<model_dir>/grid/` (from `train grid`) -> G renders every node x pitch (`gru_dataset`,
stored once in `dataset_dir`, reused) -> random 256(+1)-sample windows, per-sample conditioning
(x, y, pitch) -> cross-entropy over 256 mu-law classes (teacher forcing), Adam with warm-up and cosine
decay, gradient clipping. Clips are split by index: every `heldout_every`-th clip is held out for the
validation loss.

Run folder (`run_dir`): config.json (resolved), checkpoint/ (the model as a GRU checkpoint plus
optimizer.safetensors and state.json: step, loss history), loss.png, samples/step*_*.wav (free-running
renders at `sample_points`), log.jsonl. `--resume` continues from checkpoint/; `init_from` starts
a new run from another GRU checkpoint's weights (e.g. pre-trained on the procedural source). The
final model goes to `out`, its metadata holding the losses and the pitch accuracy of rendered notes. DDP-ready: under torchrun each rank draws its own windows, rank 0 writes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from models.own_sample_blend import estimate_pitch_midi
from rt_engine.banks.bank_tuning import measure_detune_cents, retune
from training.config_files import build_dataclass, read_config_json

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "gru_default.json"


@dataclass(frozen=True)
class GruTrainConfig:
    """Everything `train gru` does; saved in the run folder and the model's metadata."""

    model_size: str = "3x256"
    """A `GruSynthConfig.preset` name: 3x256 (the paper's), 2x256, 2x128, 1x64."""
    oscillator_harmonics: int = 2
    """K of the GRU's per-sample oscillator input (sin/cos of k x the fundamental's phase, k <= K);
    0 trains the paper's plain RNN3 input (see models/gru.py)."""
    template_harmonics: int = 0
    """M > 0: the voice reads the timbre template (`models.gru_template`), harmonics 1..M of G's
    note at every grid node x `pitches`, measured before training (cached in `dataset_dir`) and
    stored in the checkpoint; needs oscillator_harmonics >= 1. 0: no template."""
    template_frame_s: tuple = ()
    """Times (s since onset) of the template's frames, read in the note's age so it follows the
    note's envelope (`GruSynthConfig.template_frame_s`); empty: one frame, the note's mean."""
    age_feature_s: float = 0.0
    """> 0: the note's age (seconds since onset, clamped to this) is a conditioning feature, so the
    voice can learn the notes' envelopes (`GruSynthConfig.age_feature_s`); 0: none."""
    template_residual: bool = False
    """True: the template's cycle is the voice's prediction of each sample and it learns the residual
    (`models.gru_template`): a zero residual plays its grid point's harmonics. Needs
    template_harmonics > 0; trains from scratch (`init_from` must be a residual voice too)."""
    model_dir: str = "models/pretrained/default"
    grid_dir: str = ""
    """Timbre grid folder; empty = <model_dir>/grid."""
    timbre_features: str = "xy"
    """What the voice's timbre conditioning sees: "xy" (the grid point itself) or "grid" (the grid's
    conditioning vector h(x, y), the GAN's own timbre input; the nodes travel in the checkpoint)."""
    dataset_dir: str = "data/gru_default"
    """Rendered training set; built here if it does not exist yet, else reused as is."""
    pitches: tuple = (40, 45, 48, 52, 55, 57, 60, 62, 64, 67, 69, 72, 76, 79, 84)
    pitches_per_node: int = 0
    """0: every node x every pitch; k: k pitches per node, cycling through `pitches` (see gru_dataset)."""
    clip_start_s: float = 0.0
    clip_seconds: float = 1.0
    peak: float = 0.9
    render_seed: int = 0
    sample_rate: int = 16_000
    """The GRU's rate (Hz). G's renders are retuned as the banks are (`rt_engine.banks.bank_tuning`) and
    resampled to it; 0 keeps the GAN's rate. A sample-level GRU costs in proportion to its rate."""
    window: int = 256
    batch_size: int = 128
    steps: int = 100_000
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    final_learning_rate_ratio: float = 0.1
    """Cosine decay from learning_rate to learning_rate * this at `steps`."""
    grad_clip: float = 1.0
    input_noise_classes: float = 0.0
    """Standard deviation (mu-law classes) of Gaussian noise added to the previous-sample inputs
    (never to the targets): with exact inputs a sample-level model predicts the next sample from the
    last few and learns to ignore its conditioning; noisy inputs make the timbre and pitch
    conditioning carry the prediction. 0 trains on exact inputs."""
    heldout_every: int = 23
    """Every n-th clip is held out for the validation loss (0: none, validation on training clips)."""
    validation_batch: int = 64
    log_every: int = 50
    checkpoint_every: int = 500
    sample_every: int = 5000
    sample_seconds: float = 1.0
    sample_points: tuple = ((0.0, 0.0, 60.0), (1.0, 0.0, 60.0), (0.0, 1.0, 60.0), (1.0, 1.0, 60.0),
                            (0.5, 0.5, 48.0), (0.5, 0.5, 72.0))
    """(x, y, MIDI pitch) of the free-running sample renders and the pitch check."""
    sample_temperature: float = 1.0
    """Temperature of the sample renders and the exported model's default `sampling_temperature`
    (what `serve`/`render` start the GRU voice with)."""
    max_minutes: float = 0.0
    """Stop, checkpoint and export after this much training time (0: run all `steps`)."""
    threads: int = 0
    """torch.set_num_threads (0: torch's default)."""
    init_from: str = ""
    """A GRU checkpoint folder of the same size to start from (fine-tuning); ignored when resuming."""
    run_dir: str = "runs/gru"
    out: str = ""
    """Final model folder; empty = <model_dir>/gru."""
    seed: int = 0

    def __post_init__(self):
        for name in ("window", "batch_size", "steps", "log_every", "checkpoint_every", "sample_every", "validation_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"GruTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or not 0 < self.final_learning_rate_ratio <= 1:
            raise ValueError("learning_rate must be > 0 and final_learning_rate_ratio in (0, 1]")
        if self.timbre_features not in ("xy", "grid"):
            raise ValueError(f"timbre_features must be 'xy' or 'grid', got {self.timbre_features!r}")
        if any(len(point) != 3 for point in self.sample_points):
            raise ValueError(f"sample_points must be (x, y, pitch) triples, got {self.sample_points}")


def noisy_inputs(mu: np.ndarray, sigma_classes: float, rng: np.random.Generator, n_classes: int = 256) -> np.ndarray:
    """Classes `mu` [batch, time] plus rounded Gaussian noise of `sigma_classes`, clipped to
    0..n_classes-1 (same dtype; `mu` itself when sigma is 0)."""
    if sigma_classes <= 0:
        return mu
    noise = np.rint(rng.normal(0.0, sigma_classes, size=mu.shape))
    return np.clip(mu.astype(np.int64) + noise.astype(np.int64), 0, n_classes - 1).astype(mu.dtype)


def learning_rate_at(step: int, config: GruTrainConfig) -> float:
    """The learning rate for 0-based `step`: linear warm-up over `warmup_steps`, then cosine decay
    from `learning_rate` to `learning_rate * final_learning_rate_ratio` at `steps`."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    floor = config.final_learning_rate_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def pitch_report(notes: np.ndarray, pitches: np.ndarray, sample_rate: int) -> dict:
    """Pitch accuracy of rendered notes: the YIN pitch (`models.own_sample_blend.estimate_pitch_midi`)
    of each note's second half vs its MIDI pitch.
    notes: float [n, n_samples]; pitches: MIDI [n]. Returns per-note cents errors and the share
    within 50 cents (unvoiced notes count as misses)."""
    errors = [100.0 * (estimate_pitch_midi(note[len(note) // 2:], sample_rate, start_seconds=0.0) - float(pitch))
              for note, pitch in zip(notes, pitches)]  # nan where unpitched
    errors_array = np.array(errors)
    within = np.isfinite(errors_array) & (np.abs(np.nan_to_num(errors_array, nan=1e9)) <= 50)
    return {"cents_error": [None if not np.isfinite(e) else round(e, 1) for e in errors],
            "within_50_cents": float(within.mean()) if len(errors) else 0.0,
            "rms": [float(np.sqrt(np.mean(np.asarray(note, dtype=np.float64) ** 2))) for note in notes]}


def render_samples(model, config: GruTrainConfig, sample_rate: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Free-running notes at `config.sample_points`: (audio float32 [n_points, n_samples] at
    sample_rate, MIDI pitches [n_points])."""
    import torch

    from models.mu_law import mu_law_decode

    points = np.array(config.sample_points, dtype=np.float32)
    n_samples = int(round(config.sample_seconds * sample_rate))
    conditioning = torch.from_numpy(np.repeat(points[:, None, :], n_samples, axis=1))
    was_training = model.training
    model.eval()
    mu, _ = model.sample(conditioning, temperature=config.sample_temperature, seed=seed)
    model.train(was_training)
    return mu_law_decode(mu.numpy(), model.config.n_classes), points[:, 2]


def prepare_dataset(config: GruTrainConfig, progress: bool = True):
    """Open `config.dataset_dir`, rendering it first from the grid and the GAN if it does not exist."""
    from training.gru_dataset import GruDataset, GruDatasetConfig, build_gru_dataset
    from models.timbre_grid import load_grid
    from training.train_grid import load_conditioning_source

    folder = Path(config.dataset_dir)
    if not (folder / "index.json").is_file():
        grid_dir = Path(config.grid_dir) if config.grid_dir else Path(config.model_dir) / "grid"
        if not (grid_dir / "config.json").is_file():
            raise FileNotFoundError(f"timbre grid not found: {grid_dir} (make it with `latentsynth train grid`)")
        grid = load_grid(grid_dir)
        source = load_conditioning_source(config.model_dir)
        if grid.conditioning_dim != source.conditioning_dim:
            raise ValueError(f"grid {grid_dir} has conditioning_dim {grid.conditioning_dim}, the model in "
                             f"{config.model_dir} has {source.conditioning_dim}")
        data_config = GruDatasetConfig(pitches=tuple(config.pitches), pitches_per_node=config.pitches_per_node,
                                       clip_start_s=config.clip_start_s,
                                       clip_seconds=config.clip_seconds, peak=config.peak, seed=config.render_seed)

        rate = config.sample_rate or source.sample_rate

        def render(h: np.ndarray, pitches: np.ndarray) -> np.ndarray:
            return render_retuned(source, h, pitches, rate, seed=config.render_seed)

        build_gru_dataset(folder, grid.nodes, render, rate, data_config, progress=progress)
    dataset = GruDataset(folder, window=config.window)
    if config.sample_rate and dataset.sample_rate != config.sample_rate:
        raise ValueError(f"GRU dataset {folder} is at {dataset.sample_rate} Hz, the config asks for "
                         f"{config.sample_rate} Hz: point dataset_dir at a new folder to render it")
    return dataset


def render_retuned(source, h: np.ndarray, pitches: np.ndarray, sample_rate: int, seed: int = 0) -> np.ndarray:
    """G's notes for conditionings h [batch, dim] at MIDI pitches [batch], retuned to their nominal
    pitch as the engine's banks are, at `sample_rate` (Hz): float32 [batch, n_samples]."""
    audio = source.render_conditioning(h, pitches, seed=seed)
    audio = retune(audio, measure_detune_cents(audio, pitches, source.sample_rate))
    if sample_rate != source.sample_rate:
        ratio = Fraction(int(sample_rate), int(source.sample_rate))
        audio = resample_poly(audio, ratio.numerator, ratio.denominator, axis=1)
    return np.ascontiguousarray(audio, dtype=np.float32)


def prepare_template(config: GruTrainConfig, sample_rate: int, progress: bool = True) -> np.ndarray:
    """The timbre template table float32 [N, N, P, F, 2M] of the grid's nodes x `config.pitches`
    (`models.gru_template.template_table` on G's retuned renders at `sample_rate`, each whole note from
    its onset, so frames past the clips' end follow the note's release; at the clips' level), read from
    `dataset_dir/template_*.npy` when it was measured before with the same harmonics, frames, fit
    length (`MIN_FIT_S`) and render seed."""
    import hashlib

    from models.gru_template import MIN_FIT_S, template_table
    from training.train_grid import load_conditioning_source

    frames = hashlib.sha1(repr((tuple(float(t) for t in config.template_frame_s), MIN_FIT_S, "whole note"))
                          .encode()).hexdigest()[:8] if config.template_frame_s else f"mean{round(MIN_FIT_S * 1000)}ms"
    cache = Path(config.dataset_dir) / f"template_h{config.template_harmonics}_f{frames}_s{config.render_seed}.npy"
    pitches = sorted(int(p) for p in config.pitches)
    nodes = _grid_nodes(config)
    expected = (nodes.shape[0], nodes.shape[0], len(pitches), max(len(config.template_frame_s), 1),
                2 * config.template_harmonics)
    if cache.is_file():
        table = np.load(cache)
        if table.shape == expected:
            return table
    source = load_conditioning_source(config.model_dir)

    def render(h: np.ndarray, note_pitches: np.ndarray) -> np.ndarray:
        return render_retuned(source, h, note_pitches, sample_rate, seed=config.render_seed)

    table = template_table(nodes, pitches, render, sample_rate, config.template_harmonics,
                           frame_s=config.template_frame_s, peak=config.peak, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(cache.name + ".partial.npy")
    np.save(temporary, table)
    temporary.rename(cache)
    return table


def _optimizer_tensors(optimizer) -> dict:
    """Adam state as flat name -> tensor (for safetensors)."""
    import torch

    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def _restore_optimizer(optimizer, tensors: dict) -> None:
    state: dict = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _grid_nodes(config: GruTrainConfig) -> np.ndarray:
    """The timbre grid's nodes float32 [N, N, D] (config.grid_dir, else <model_dir>/grid)."""
    from models.timbre_grid import load_grid

    return np.asarray(load_grid(Path(config.grid_dir) if config.grid_dir else Path(config.model_dir) / "grid").nodes,
                      np.float32)


def xy_from_grid_map(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The affine map that best recovers a node's (x, y) from its conditioning vector (least squares
    over the grid nodes [N, N, D]): (weights [2, D], offset [2]), so (x, y) ~ weights @ h + offset."""
    size = nodes.shape[0]
    rows, columns = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    xy = np.stack([columns.ravel(), rows.ravel()], axis=1) / (size - 1)
    design = np.concatenate([nodes.reshape(size * size, -1), np.ones((size * size, 1))], axis=1)
    solution = np.linalg.lstsq(design.astype(np.float64), xy, rcond=None)[0]  # [D + 1, 2]
    return solution[:-1].T, solution[-1]


def _initialise_from(model, folder: Path) -> None:
    """Copy weights from GRU checkpoint `folder`; its architecture must equal `model`'s, except that
    - a source with fewer oscillator harmonics, or without the timbre template, is accepted: the
      input columns it lacks start at zero, so the warm-started model computes exactly what the
      source did;
    - a source conditioned on (x, y) can start a model conditioned on the grid's h(x, y): its (x, y)
      columns act through `xy_from_grid_map`, so the model starts close to what the source did."""
    import torch

    from models.checkpoint import CheckpointError, load_config
    from models.gru import load_gru

    source_config = load_config(folder, type(model.config))
    same_but_inputs = dataclasses.replace(source_config, oscillator_harmonics=model.config.oscillator_harmonics,
                                          timbre_grid_size=model.config.timbre_grid_size,
                                          timbre_grid_dim=model.config.timbre_grid_dim,
                                          template_harmonics=model.config.template_harmonics,
                                          template_grid_size=model.config.template_grid_size,
                                          template_pitches=model.config.template_pitches,
                                          template_frame_s=model.config.template_frame_s)
    grid_from_xy = model.config.timbre_grid_size > 0 and source_config.timbre_grid_size == 0
    if same_but_inputs != model.config or source_config.oscillator_harmonics > model.config.oscillator_harmonics \
            or (source_config.template_harmonics and source_config != model.config) \
            or (source_config.timbre_grid_size and not grid_from_xy and source_config != model.config):
        raise CheckpointError(f"{folder}: init_from holds a {source_config.n_layers}x{source_config.hidden_size} "
                              f"GRU ({source_config}), the run trains {model.config}")
    source = load_gru(folder).state_dict()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name == "gru.weight_ih_l0":
                value.zero_()
                value[:, :source[name].shape[1]] = source[name]
            elif name in ("timbre_grid", "timbre_template"):
                continue  # the run's own grid and template
            elif grid_from_xy and name.startswith("conditioning_projection."):
                weights, offset = (torch.as_tensor(a, dtype=torch.float32)
                                   for a in xy_from_grid_map(model.timbre_grid.numpy()))
                old_w, old_b = source["conditioning_projection.weight"], source["conditioning_projection.bias"]
                if name.endswith("weight"):
                    value[:, :weights.shape[1]] = old_w[:, :2] @ weights
                    value[:, weights.shape[1]:] = old_w[:, 2:]
                else:
                    value.copy_(old_b + old_w[:, :2] @ offset)
            else:
                value.copy_(source[name])


def save_training_state(folder: Path, model, optimizer, step: int, history: list, config: GruTrainConfig) -> None:
    """checkpoint/: the model (GRU checkpoint), optimizer.safetensors and state.json."""
    import os

    from safetensors.torch import save_file

    from models.gru import save_gru

    save_gru(folder, model, {"step": step, "train_config": dataclasses.asdict(config)})
    save_file({k: v.contiguous() for k, v in _optimizer_tensors(optimizer).items()}, str(folder / "optimizer.safetensors.tmp"))
    os.replace(folder / "optimizer.safetensors.tmp", folder / "optimizer.safetensors")
    (folder / "state.json.tmp").write_text(json.dumps({"step": step, "history": history}))
    os.replace(folder / "state.json.tmp", folder / "state.json")


def load_training_state(folder: Path, model, optimizer) -> tuple[int, list]:
    """Restore model + optimizer from checkpoint/; returns (step, history). Errors name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from models.checkpoint import CheckpointError, load_state_into

    state_path = folder / "state.json"
    if not state_path.is_file():
        raise CheckpointError(f"cannot resume: {state_path} not found")
    try:
        state = json.loads(state_path.read_text())
        step, history = int(state["step"]), list(state["history"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{state_path}: bad training state ({error})") from error
    load_state_into(model, folder)
    optimizer_file = folder / "optimizer.safetensors"
    if not optimizer_file.is_file():
        raise CheckpointError(f"cannot resume: {optimizer_file} not found")
    try:
        _restore_optimizer(optimizer, load_file(str(optimizer_file)))
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{optimizer_file}: cannot restore the optimizer ({error})") from error
    return step, history


def plot_losses(history: list, path: Path) -> None:
    """Training and validation cross-entropy (nats) against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [entry["step"] for entry in history]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(steps, [entry["loss"] for entry in history], label="train")
    axis.plot(steps, [entry["validation_loss"] for entry in history], label="validation (held-out clips)")
    axis.set_xlabel("step")
    axis.set_ylabel("cross-entropy (nats / sample)")
    axis.set_title("GRU teacher-forcing loss")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _evaluate(model, dataset, clips: np.ndarray, config: GruTrainConfig, device: str) -> tuple[float, float]:
    """(cross-entropy nats, top-1 accuracy) on a fixed batch of windows from `clips`."""
    import torch

    from models.gru import prediction_loss

    mu, conditioning, ages = dataset.sample_batch(np.random.default_rng(12345), config.validation_batch, clips=clips,
                                                  with_ages=True)
    mu_t = torch.from_numpy(mu).to(device)
    phase = _target_phase(model.config, dataset, mu, conditioning, device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits, prediction, _ = model(mu_t[:, :-1], torch.from_numpy(conditioning).to(device), phase=phase,
                                      with_prediction=True, start_age=torch.from_numpy(ages))
        _, cross_entropy, accuracy = prediction_loss(logits, prediction, mu_t[:, 1:], model.config.template_residual)
    model.train(was_training)
    return float(cross_entropy), float(accuracy)


def _target_phase(model_config, dataset, mu: np.ndarray, conditioning: np.ndarray, device: str):
    """The oscillator phase of a batch's targets, measured from the audio (`window_phase`), as a
    tensor [batch, window]; None for a model without the oscillator input."""
    import torch

    from training.gru_dataset import window_phase

    if not model_config.oscillator_harmonics:
        return None
    phase = window_phase(mu, conditioning[:, 0, 2], dataset.sample_rate, dataset.n_classes)
    return torch.from_numpy(phase).to(device)


def _write_samples(model, config: GruTrainConfig, sample_rate: int, folder: Path, step: int) -> dict:
    import soundfile

    notes, pitches = render_samples(model, config, sample_rate, seed=config.seed + step)
    folder.mkdir(parents=True, exist_ok=True)
    for index, (note, point) in enumerate(zip(notes, config.sample_points)):
        name = f"step{step:07d}_{index}_x{point[0]:.2f}_y{point[1]:.2f}_p{point[2]:g}.wav"
        soundfile.write(folder / name, note, sample_rate, subtype="PCM_16")
    return pitch_report(notes, pitches, sample_rate)


def train_gru(config: GruTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the GRU per `config`, export it to `out`, return the final report."""
    import torch
    from tqdm import tqdm

    from models.gru import GruSynth, GruSynthConfig, prediction_loss, save_gru
    from training.distributed import cleanup_distributed, setup_distributed, wrap_model

    if config.threads > 0:
        torch.set_num_threads(config.threads)
    context = setup_distributed()
    torch.manual_seed(config.seed)
    if context.is_main:
        dataset = prepare_dataset(config, progress=progress)
    if context.enabled:
        torch.distributed.barrier()  # rank 0 renders the data set once
    if not context.is_main:
        dataset = prepare_dataset(config, progress=False)
    model_config = dataclasses.replace(GruSynthConfig.preset(config.model_size), sample_rate=dataset.sample_rate,
                                       oscillator_harmonics=config.oscillator_harmonics,
                                       age_feature_s=float(config.age_feature_s))
    grid_nodes = _grid_nodes(config) if config.timbre_features == "grid" else None
    if grid_nodes is not None:
        model_config = dataclasses.replace(model_config, timbre_grid_size=grid_nodes.shape[0],
                                           timbre_grid_dim=grid_nodes.shape[2])
    template = None
    if config.template_harmonics:
        if context.is_main:
            template = prepare_template(config, dataset.sample_rate, progress=progress)
        if context.enabled:
            torch.distributed.barrier()  # rank 0 measures the template once
        if not context.is_main:
            template = prepare_template(config, dataset.sample_rate, progress=False)
        model_config = dataclasses.replace(model_config, template_harmonics=config.template_harmonics,
                                           template_grid_size=template.shape[0],
                                           template_pitches=tuple(sorted(float(p) for p in config.pitches)),
                                           template_frame_s=tuple(config.template_frame_s),
                                           template_residual=config.template_residual)
    model = GruSynth(model_config)
    if grid_nodes is not None:
        model.set_timbre_grid(grid_nodes)
    if template is not None:
        model.set_template(template)
    model = model.to(context.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    run_dir = Path(config.run_dir)
    checkpoint_dir = run_dir / "checkpoint"
    if resume:
        step, history = load_training_state(checkpoint_dir, model, optimizer)
    else:
        step, history = 0, []
        if config.init_from:
            _initialise_from(model, Path(config.init_from))
    wrapped = wrap_model(model, context)
    heldout = (np.arange(dataset.n_clips) % config.heldout_every == 0) if config.heldout_every else np.zeros(dataset.n_clips, bool)
    train_clips = np.flatnonzero(~heldout)
    validation_clips = np.flatnonzero(heldout) if heldout.any() else train_clips
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    started = time.time()
    running_loss, running_count = 0.0, 0
    bar = tqdm(total=config.steps, initial=step, desc="GRU", unit="step", disable=not (progress and context.is_main))
    model.train()
    while step < config.steps and not (config.max_minutes > 0 and time.time() - started > 60 * config.max_minutes):
        rng = np.random.default_rng([config.seed, context.rank, step])  # per step: resuming is exact
        mu, conditioning, ages = dataset.sample_batch(rng, config.batch_size, clips=train_clips, with_ages=True)
        mu_t = torch.from_numpy(mu).to(context.device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        phase = _target_phase(model_config, dataset, mu, conditioning, context.device)
        inputs = torch.from_numpy(noisy_inputs(mu[:, :-1], config.input_noise_classes, rng, dataset.n_classes))
        logits, prediction, _ = wrapped(inputs.to(context.device), torch.from_numpy(conditioning).to(context.device),
                                        phase=phase, with_prediction=True, start_age=torch.from_numpy(ages))
        loss = prediction_loss(logits, prediction, mu_t[:, 1:], model_config.template_residual)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        running_loss += float(loss.detach())
        running_count += 1
        bar.update(1)
        if not context.is_main:
            continue
        if step % config.log_every == 0 or step == config.steps:
            validation_loss, validation_accuracy = _evaluate(model, dataset, validation_clips, config, context.device)
            entry = {"step": step, "loss": running_loss / running_count, "validation_loss": validation_loss,
                     "validation_accuracy": validation_accuracy, "learning_rate": learning_rate_at(step - 1, config),
                     "seconds": round(time.time() - started, 1)}
            history.append(entry)
            running_loss, running_count = 0.0, 0
            with open(run_dir / "log.jsonl", "a") as log:
                log.write(json.dumps(entry) + "\n")
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{validation_loss:.3f}")
        if step % config.checkpoint_every == 0:
            save_training_state(checkpoint_dir, model, optimizer, step, history, config)
            if history:
                plot_losses(history, run_dir / "loss.png")
        if step % config.sample_every == 0:
            _write_samples(model, config, dataset.sample_rate, run_dir / "samples", step)
    bar.close()
    report: dict = {"step": step}
    if context.is_main:
        save_training_state(checkpoint_dir, model, optimizer, step, history, config)
        if history:
            plot_losses(history, run_dir / "loss.png")
        report.update({
            "model_size": config.model_size,
            "final": history[-1] if history else None,
            "pitch": _write_samples(model, config, dataset.sample_rate, run_dir / "samples", step),
            "sample_points": [list(point) for point in config.sample_points],
            "dataset": {"folder": str(dataset.folder), "n_clips": dataset.n_clips, "n_samples": dataset.n_samples,
                        "grid_size": dataset.index.get("grid_size"), "pitches": dataset.index.get("pitches")},
            "train_seconds_this_run": round(time.time() - started, 1),
        })
        out = Path(config.out) if config.out else Path(config.model_dir) / "gru"
        save_gru(out, model, {**report, "history": history, "train_config": dataclasses.asdict(config),
                              "conditioning": ["x", "y", "pitch"],
                              "sampling_temperature": config.sample_temperature})
        (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    cleanup_distributed(context)
    return report


def load_train_config(path: str | Path | None, overrides: dict[str, Any]) -> GruTrainConfig:
    """The config from JSON `path` (default gru_default.json) with non-None `overrides` applied."""
    path = Path(path) if path else DEFAULT_CONFIG
    return build_dataclass(GruTrainConfig, read_config_json(path), path, overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """GRU options beside train's --config/--out/--resume. `--model` (the model folder) is added by
    `training.train_grid.add_arguments`; `run_from_cli` reads it when present. No option overlaps the
    grid's, so one `train` parser can take both."""
    parser.add_argument("--steps", type=int, default=None, help="GRU: total training steps")
    parser.add_argument("--max-minutes", type=float, default=None, help="GRU: stop and export after this many minutes")
    parser.add_argument("--model-size", default=None, help="GRU size preset: 3x256 (default), 2x256, 2x128, 1x64")


def run_from_cli(args: argparse.Namespace) -> int:
    """Entry point for `latentsynth train gru` (args: .config, .out, .resume, and add_arguments')."""
    overrides = {
        "steps": getattr(args, "steps", None),
        "max_minutes": getattr(args, "max_minutes", None),
        "model_size": getattr(args, "model_size", None),
        "model_dir": getattr(args, "model", None),
        "out": getattr(args, "out", None),
    }
    config = load_train_config(getattr(args, "config", None), overrides)
    report = train_gru(config, resume=bool(getattr(args, "resume", False)))
    print(json.dumps({key: report.get(key) for key in ("step", "final", "pitch")}, indent=2))
    return 0
