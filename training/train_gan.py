"""Train the instance-conditioned GAN G(z, pitch, h), D(x, pitch, h) on a note store with a frozen
pitch-invariant feature extractor f (GANStrument Eq. 1), plus a declared CPU-budget shortcut.

Each step draws instances i (training notes) with h_i = f(x_i), a neighbour j uniformly from the
k nearest neighbours A_i of i in f-space, and conditions both G and D on (pitch(x_j), h_i): x_j is
the real sample (non-saturating logistic loss, lazy R1 on reals, pixel-normed z, EMA of G).
Reconstruction shortcut (declared in the config as `lambda_reconstruction`): because the SoundFont
render gives every instrument at every pitch, G(z, pitch(x_j), h_i) also gets an L1 loss toward
the real note of i's instrument at pitch(x_j) (when that note exists). D starts training
`discriminator_warmup_steps` before G's adversarial term starts at `adversarial_start_step`, so G is
never pushed by an untrained D. This converges in about an hour on the 2-core CPU.

Config file (JSON): {"data": store, "features": features checkpoint folder,
                     "model": {GanConfig fields}, "train": {TrainGanSettings fields}}
Run folder: config_resolved.json, log.jsonl, losses.png, samples/ (spectrogram PNGs, WAVs),
checkpoint/ (resume), model/ (a complete model folder: gan/, features/, presets.json).

Public API: TrainGanSettings, run_from_cli(args), train_gan(config_path, out_dir, resume) -> dict,
            knn_indices(features, k) -> int64 [n, k], build_presets(...) -> dict
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.preset_envelopes import preset_envelopes
from training.train_features import (
    RunLog,
    any_rank,
    average_gradients,
    load_run_config,
    optimizer_tensors,
    precompute_log_mels,
    restore_optimizer,
)

PLOTTED_LOSSES = ("l1_reconstruction", "g_adversarial", "d_loss", "d_accuracy", "r1")
"""The log.jsonl keys drawn in losses.png (d_accuracy: share of the batch D classifies right)."""

DEFAULT_CORNER_PROGRAMS = (0, 48, 56, 73)
"""Corner presets of the default timbre square: grand piano, string ensemble, trumpet, flute."""


@dataclass(frozen=True)
class TrainGanSettings:
    batch_size: int = 16
    steps: int = 100_000
    max_minutes: float = 0.0
    learning_rate_g: float = 1e-3
    learning_rate_d: float = 1e-3
    adam_beta1_g: float = 0.0
    lambda_reconstruction: float = 1.0
    lambda_adversarial: float = 0.05
    adversarial_start_step: int = 300
    discriminator_warmup_steps: int = 0
    """D trains alone this many steps before G's adversarial term starts at adversarial_start_step."""
    adversarial_batch_size: int = 0
    """Notes of each batch the adversarial losses use (0: all): D costs ~2x G per note on CPU."""
    r1_gamma: float = 1.0
    r1_every: int = 8
    k_neighbours: int = 20
    ema_decay: float = 0.998
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every_s: float = 180.0
    seed: int = 0
    threads: int = 1


def run_from_cli(args) -> int:
    """Entry for `latentsynth train gan --config FILE [--out DIR] [--resume]`."""
    summary = train_gan(args.config, args.out or "runs/gan", resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0


def knn_indices(features, k: int, chunk: int = 1024):
    """Indices `int64 [n, k]` of the k nearest rows (L2, self included) of `features` [n, dim]."""
    import torch

    k = min(k, features.shape[0])
    squared = (features ** 2).sum(1)
    rows = []
    for start in range(0, features.shape[0], chunk):
        block = features[start:start + chunk]
        distance = squared[start:start + chunk, None] - 2 * block @ features.T + squared[None, :]
        rows.append(torch.topk(distance, k, dim=1, largest=False).indices)
    return torch.cat(rows)


def build_presets(store, note_indices: np.ndarray, h, corner_programs=DEFAULT_CORNER_PROGRAMS) -> dict:
    """Presets = mean h of each training instrument (program order), named by GM program.
    `h` is float32 [len(note_indices), h_dim]. Returns the presets.json record; a store rendered
    from one soundfont that is at hand also gets each program's envelope (`training.preset_envelopes`)."""
    from training.sf2_render import GM_PROGRAM_NAMES

    by_name: dict[str, list[int]] = {}
    for row, note in enumerate(note_indices):
        by_name.setdefault(store.instrument[note], []).append(row)
    presets, programs = {}, {}
    for instrument in sorted(by_name, key=lambda name: (int(name.rsplit(":", 1)[1]), name)):
        program = int(instrument.rsplit(":", 1)[1])
        name = GM_PROGRAM_NAMES[program]
        if name in presets:
            name = f"{name}_{instrument.rsplit(':', 1)[0].lower()}"
        presets[name] = np.asarray(h[by_name[instrument]]).mean(0).round(6).tolist()
        programs[name] = program
    corners = [next(n for n, p in programs.items() if p == program) for program in corner_programs
               if program in programs.values()]
    if len(corners) != 4:  # a data set without the default corners: the first presets, cycled
        corners = [list(presets)[i % len(presets)] for i in range(4)]
    record = {"presets": presets, "programs": programs, "corners": corners}
    fonts = store.attributes.get("render_config", {}).get("sf2_paths", [])
    if len(fonts) == 1 and Path(fonts[0]).is_file():  # one font: each program's release is its own
        record["envelopes"] = preset_envelopes(fonts[0], programs, progress=False)
    return record


def train_gan(config_path, out_dir, resume: bool = False) -> dict:
    """Train G and D (see module docstring); writes checkpoints, samples, and model/ export."""
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    from models.checkpoint import load_metadata, load_tensors, save_checkpoint
    from models.features import load_feature_extractor
    from models.gan import Discriminator, Generator, r1_penalty
    from models.model_config import GanConfig
    from training.distributed import cleanup_distributed, setup_distributed
    from training.note_dataset import NoteStore

    data_path, config, settings, raw = load_run_config(config_path, GanConfig, TrainGanSettings)
    context = setup_distributed()  # torchrun: one process per rank, gradients averaged each step
    device = context.device
    features_path = Path(raw.get("features", ""))
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = NoteStore(data_path)
    extractor = load_feature_extractor(features_path)
    config = dataclasses.replace(config, sample_rate=store.sample_rate, n_samples=store.n_samples,
                                 h_dim=extractor.config.h_dim)
    _check_same_representation(config, extractor.config, features_path)
    if context.is_main:
        (out_dir / "config_resolved.json").write_text(json.dumps(
            {"data": data_path, "features": str(features_path), "model": dataclasses.asdict(config),
             "train": dataclasses.asdict(settings), "source_config": str(config_path),
             "world_size": context.world_size}, indent=2))

    notes = store.indices("train")
    x_all = precompute_log_mels(store, notes, config)
    with torch.no_grad():
        h_all = torch.cat([extractor(x_all[i:i + 512]) for i in range(0, len(notes), 512)])
    neighbours = knn_indices(h_all, settings.k_neighbours)
    pitch_class = torch.from_numpy(store.pitch[notes] - config.min_pitch)
    instrument = torch.from_numpy(store.instrument_ids[notes])
    target_of = torch.full((int(store.instrument_ids.max()) + 1, config.n_pitches), -1, dtype=torch.long)
    target_of[instrument, pitch_class] = torch.arange(len(notes))
    presets = build_presets(store, notes, h_all.numpy())

    generator, discriminator = Generator(config), Discriminator(config)
    ema = Generator(config)
    ema.load_state_dict(generator.state_dict())
    ema.requires_grad_(False)
    for module in (generator, discriminator, ema):
        module.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.learning_rate_g, betas=(settings.adam_beta1_g, 0.99),
                             eps=1e-8)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=settings.learning_rate_d, betas=(0.0, 0.99), eps=1e-8)
    step, seconds_before = 0, 0.0
    checkpoint_dir = out_dir / "checkpoint"
    if resume and (checkpoint_dir / "model.safetensors").is_file():
        tensors = load_tensors(checkpoint_dir)
        for prefix, module in (("g.", generator), ("d.", discriminator), ("ema.", ema)):
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        restore_optimizer(opt_g, tensors, "opt_g")
        restore_optimizer(opt_d, tensors, "opt_d")
        metadata = load_metadata(checkpoint_dir)
        step, seconds_before = int(metadata.get("step", 0)), float(metadata.get("train_seconds", 0.0))
    from models.gan_bank import log_mel_to_audio

    log_mel_to_audio(np.zeros((1, config.n_mels, config.n_frames), np.float32), config, pitches=[60])  # import + compile now
    rng = torch.Generator().manual_seed(settings.seed + step + 100_003 * context.rank)
    log = RunLog(out_dir)
    started = time.monotonic()

    def elapsed_s() -> float:
        return seconds_before + time.monotonic() - started

    def save() -> None:
        tensors = {f"g.{k}": v for k, v in generator.state_dict().items()}
        tensors.update({f"d.{k}": v for k, v in discriminator.state_dict().items()})
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
        tensors.update(optimizer_tensors(opt_g, "opt_g"))
        tensors.update(optimizer_tensors(opt_d, "opt_d"))
        save_checkpoint(checkpoint_dir, config, tensors, {"step": step, "train_seconds": elapsed_s()})
        export_model(out_dir / "model", config, ema, features_path, presets,
                     {"step": step, "train_seconds": elapsed_s(), "data": data_path,
                      "features": str(features_path), "settings": dataclasses.asdict(settings)})

    last_save = time.monotonic()
    bar = tqdm(total=settings.steps, initial=step, desc="train gan", disable=not context.is_main)
    while step < settings.steps and not any_rank(bool(settings.max_minutes and elapsed_s() > 60 * settings.max_minutes),
                                                 context):
        i = torch.randint(0, len(notes), (settings.batch_size,), generator=rng)
        j = neighbours[i, torch.randint(0, neighbours.shape[1], (settings.batch_size,), generator=rng)]
        target = target_of[instrument[i], pitch_class[j]]
        has_target = target >= 0
        p, h, x_real = pitch_class[j].to(device), h_all[i].to(device), x_all[j].to(device)
        x_target = x_all[target[has_target]].to(device)
        generator_adversarial = step >= settings.adversarial_start_step
        train_discriminator = step >= settings.adversarial_start_step - settings.discriminator_warmup_steps
        z = torch.randn(settings.batch_size, config.z_dim, generator=rng).to(device)
        fake = generator(z, p, h)
        logs = {"step": step + 1}
        has_target = has_target.to(device)
        reconstruction = F.l1_loss(fake[has_target], x_target) if bool(has_target.any()) else fake.sum() * 0
        loss_g = settings.lambda_reconstruction * reconstruction
        logs["l1_reconstruction"] = float(reconstruction.detach())
        n_adv = settings.adversarial_batch_size or settings.batch_size
        if generator_adversarial:
            g_adv = F.softplus(-discriminator(fake[:n_adv], p[:n_adv], h[:n_adv])).mean()
            loss_g = loss_g + settings.lambda_adversarial * g_adv
            logs["g_adversarial"] = float(g_adv.detach())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        average_gradients(generator, context)
        opt_g.step()
        if train_discriminator:
            p, h, x_real = p[:n_adv], h[:n_adv], x_real[:n_adv]
            d_fake = discriminator(fake[:n_adv].detach(), p, h)
            d_real = discriminator(x_real, p, h)
            loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
            logs["d_loss"] = float(loss_d.detach())
            logs["d_accuracy"] = float(((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2)
            if step % settings.r1_every == 0:
                r1 = r1_penalty(discriminator, x_real, p, h)
                loss_d = loss_d + settings.r1_gamma / 2 * settings.r1_every * r1
                logs["r1"] = float(r1.detach())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            average_gradients(discriminator, context)
            opt_d.step()
        with torch.no_grad():
            for ema_param, param in zip(ema.parameters(), generator.parameters()):
                ema_param.lerp_(param, 1.0 - settings.ema_decay)
        step += 1
        bar.update(1)
        if not context.is_main:
            continue
        if step % settings.log_every == 0:
            logs["train_seconds"] = round(elapsed_s(), 1)
            log.write(logs)
            bar.set_postfix(l1=f"{logs['l1_reconstruction']:.3f}")
        if step % settings.sample_every == 0:
            try:  # samples are a by-product: a failure is logged, never the end of a long run
                write_samples(out_dir / "samples", step, ema, store, x_all, notes, h_all, target_of, instrument, config)
                log.plot(out_dir / "losses.png", PLOTTED_LOSSES)
            except Exception as error:  # noqa: BLE001
                log.write({"step": step, "sample_error": f"{type(error).__name__}: {error}"})
                tqdm.write(f"train gan: writing samples failed at step {step}: {error}")
        if time.monotonic() - last_save > settings.checkpoint_every_s:
            save()
            last_save = time.monotonic()
    bar.close()
    if context.is_main:
        save()
        log.plot(out_dir / "losses.png", PLOTTED_LOSSES)
    cleanup_distributed(context)
    return {"out": str(out_dir), "step": step, "train_seconds": round(elapsed_s(), 1),
            "model": str(out_dir / "model")}


def _check_same_representation(config, feature_config, features_path: Path) -> None:
    from models.model_config import SPECTRAL_FIELDS

    for name in SPECTRAL_FIELDS:
        if getattr(config, name) != getattr(feature_config, name):
            raise ValueError(f"{features_path}: feature extractor has {name}={getattr(feature_config, name)}, "
                             f"GAN config has {getattr(config, name)}")


def export_model(model_dir: Path, config, ema, features_path: Path, presets: dict, metadata: dict) -> None:
    """Write a complete model folder (gan/ = EMA generator, features/ copied, presets.json,
    manifest.json naming the "gan" timbre source),
    replacing the previous export only once the new one is fully written."""
    from models.checkpoint import save_checkpoint

    temporary = model_dir.with_name(model_dir.name + ".partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    save_checkpoint(temporary / "gan", config, ema.state_dict(), metadata)
    shutil.copytree(features_path, temporary / "features")
    (temporary / "presets.json").write_text(json.dumps(presets))
    (temporary / "manifest.json").write_text(json.dumps({"bank_source": "gan"}))
    if model_dir.exists():
        shutil.rmtree(model_dir)
    temporary.rename(model_dir)


def write_samples(folder: Path, step: int, generator, store, x_all, notes, h_all, target_of, instrument,
                  config, pitches=(36, 48, 60, 72, 84), n_instruments: int = 4) -> None:
    """Spectrogram PNG (real above generated, per instrument x pitch) and WAVs of generated notes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile
    import torch

    from models.gan_bank import log_mel_to_audio

    folder.mkdir(parents=True, exist_ok=True)
    device = next(generator.parameters()).device
    chosen = np.unique(instrument.numpy())[:: max(1, len(np.unique(instrument.numpy())) // n_instruments)][:n_instruments]
    classes = torch.tensor([p - config.min_pitch for p in pitches])
    fig, axes = plt.subplots(2 * len(chosen), len(pitches), figsize=(2 * len(pitches), 2.2 * len(chosen)), squeeze=False)
    with torch.no_grad():
        for row, inst in enumerate(chosen):
            source = int(target_of[inst, 60 - config.min_pitch]) if target_of[inst, 60 - config.min_pitch] >= 0 \
                else int(torch.nonzero(instrument == inst)[0])
            h = h_all[source].expand(len(pitches), -1).to(device)
            z = torch.randn(len(pitches), config.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
            fake = generator(z, classes.to(device), h).cpu()
            for col, pitch_class in enumerate(classes):
                real_index = int(target_of[inst, pitch_class])
                if real_index >= 0:
                    axes[2 * row, col].imshow(x_all[real_index].numpy(), origin="lower", aspect="auto", vmin=-1.2, vmax=1.6)
                axes[2 * row + 1, col].imshow(fake[col].numpy(), origin="lower", aspect="auto", vmin=-1.2, vmax=1.6)
                axes[2 * row, col].set_title(f"{store.instrument[notes[source]]} p{int(pitch_class) + config.min_pitch}", fontsize=6)
            audio = log_mel_to_audio(fake.numpy(), config, pitches=list(pitches))
            soundfile.write(folder / f"step{step:06d}_inst{int(inst)}.wav", audio.reshape(-1), config.sample_rate)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    fig.tight_layout()
    fig.savefig(folder / f"step{step:06d}.png", dpi=70)
    plt.close(fig)
