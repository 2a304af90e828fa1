"""Train the HyperGANStrument hypernetwork H on a note store with the model folder's G and f frozen
(`latentsynth train hyper --config FILE [--out DIR] [--resume]`).

Each step draws instances i (training notes) with h_i = f(x_i) and h_init,i = f(G(h_i, z, p_i)) at
their own pitch p_i (precomputed once: G and f are frozen), H predicts offsets Delta_i, and the
refined G renders x_fine = G(h_i, z, p'; W * (1 + Delta_i)) with the fixed z (`fixed_z`). With
probability p_recon the pitch p' is the input's own (x' = x_i), else that of a neighbour j drawn
uniformly from the k nearest of i in f-space (instance conditioning). Loss (HyperGANStrument Eq. 4):
lambda_timbre * ||f(x_fine) - h_i||^2 + lambda_recon * ||x_fine - x_i||^2 at the own pitch, plus a
declared shortcut: at a neighbour's pitch, lambda_recon_other_pitch * ||x_fine - x_k||^2 toward the
real note k of i's instrument at p' (the SoundFont render holds every instrument at every pitch;
0 is the paper's setting), plus lambda_offset * mean(Delta^2).

Adversarial fine-tuning (HyperGANStrument's second stage; `discriminator` names `train gan`'s
checkpoint folder, `initial_hyper` the trained H it starts from, e.g.
training/configs/hyper_adversarial.json): the loss gains lambda_adversarial * softplus(-D(x_fine, p', h_i))
and the projection D trains beside H on the batch's real notes at their own pitches (non-saturating
loss, lazy R1), as in `train gan`; G and f stay frozen.

Validation (every `eval_every` steps, and at the end): the same reconstruction losses on the
store's held-out ('valid') instruments, at their own and at neighbours' pitches, with H and with
G alone (Delta = 0), so a run shows whether H helps notes it never trained on.

Config file (JSON): {"data": store, "model_dir": folder with gan/ and features/,
                     "model": {HyperConfig fields but layer_shapes}, "train": {TrainHyperSettings fields}}
Run folder: config_resolved.json, log.jsonl, losses.png, checkpoint/ (resume: H, Adam state, step),
hyper/ (the export: HyperConfig + H weights + metadata with the validation losses); copy it into a
model folder as `hyper/` to make one-shot banks use it.

Public API: TrainHyperSettings, run_from_cli(args), train_hyper(config_path, out_dir, resume) -> dict
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from models.checkpoint import load_metadata, load_tensors, save_checkpoint
from models.features import load_feature_extractor
from models.gan import Discriminator, load_generator, r1_penalty
from models.hypernetwork import (HyperNetwork, first_reconstruction_features, fixed_z, hyper_config_for,
                                 load_hypernetwork, offset_norm, refined_generate)
from training.config_files import build_dataclass, read_config_json
from training.distributed import cleanup_distributed, setup_distributed
from training.note_dataset import NoteStore
from training.train_features import (RunLog, any_rank, average_gradients, optimizer_tensors, precompute_log_mels,
                                     restore_optimizer)
from training.train_gan import knn_indices

PLOTTED_LOSSES = ("loss", "timbre", "recon_own", "recon_other", "val_recon_own", "val_recon_other", "h_adversarial",
                  "d_loss")


@dataclass(frozen=True)
class TrainHyperSettings:
    batch_size: int = 16
    steps: int = 20_000
    max_minutes: float = 0.0
    learning_rate: float = 1e-3
    p_recon: float = 0.2
    """Probability of rendering at the input's own pitch (else a kNN neighbour's)."""
    lambda_timbre: float = 1.0
    lambda_recon: float = 100.0
    lambda_recon_other_pitch: float = 0.0
    """Declared shortcut: reconstruction toward i's instrument's real note at a neighbour's pitch."""
    lambda_offset: float = 0.0
    k_neighbours: int = 20
    z_seed: int = 0
    n_validation: int = 48
    eval_every: int = 250
    log_every: int = 25
    checkpoint_every_s: float = 180.0
    seed: int = 0
    threads: int = 1
    initial_hyper: str = ""
    """A hyper/ folder H starts from (the adversarial stage fine-tunes a trained H); "": from zero offsets."""
    discriminator: str = ""
    """`train gan`'s checkpoint/ folder, whose `d.` weights start the projection D: non-empty turns the
    run into HyperGANStrument's adversarial fine-tuning (D trains too, with R1)."""
    lambda_adversarial: float = 1.0
    learning_rate_d: float = 1e-4
    r1_gamma: float = 1.0
    r1_every: int = 8


def run_from_cli(args) -> int:
    """Entry for `latentsynth train hyper --config FILE [--out DIR] [--resume]`."""
    summary = train_hyper(args.config, args.out or "runs/hyper", resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0


def _prefixed(tensors: dict, prefix: str) -> dict:
    """The tensors whose names start with `prefix`, named without it (one network of a checkpoint)."""
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


def _load_config(path):
    raw = read_config_json(path)
    for key in ("data", "model_dir"):
        if key not in raw:
            raise ValueError(f"{path}: expected an object with 'data', 'model_dir', 'model' and 'train'")
    settings = build_dataclass(TrainHyperSettings, raw.get("train", {}), f"{path} [train]")
    return raw, settings


def _notes_tensors(store, notes, config, generator, extractor, z):
    """(x [n, n_mels, n_frames], h [n, h_dim], h_init [n, h_dim], pitch classes [n], instrument ids [n])."""
    x = precompute_log_mels(store, notes, config)
    pitch_class = torch.from_numpy(store.pitch[notes] - config.min_pitch)
    with torch.no_grad():
        h = torch.cat([extractor(x[i:i + 256]) for i in range(0, len(notes), 256)])
        h_init = torch.cat([first_reconstruction_features(generator, extractor, h[i:i + 64], pitch_class[i:i + 64], z)
                            for i in range(0, len(notes), 64)])
    return x, h, h_init, pitch_class, torch.from_numpy(store.instrument_ids[notes])


def _target_table(instrument, pitch_class, n_pitches):
    """[n_instrument_ids, n_pitches] row of each (instrument, pitch) note, -1 where the store has none."""
    table = torch.full((int(instrument.max()) + 1, n_pitches), -1, dtype=torch.long)
    table[instrument, pitch_class] = torch.arange(len(instrument))
    return table


def _draw(rng, n_notes, neighbours, pitch_class, instrument, target_of, batch_size, p_recon):
    """One batch: (instances i [b], render pitch classes [b], target rows [b] (-1: none), own-pitch mask [b])."""
    device = pitch_class.device  # draws on the CPU generator, then moved to the data's device
    i = torch.randint(0, n_notes, (batch_size,), generator=rng).to(device)
    j = neighbours[i, torch.randint(0, neighbours.shape[1], (batch_size,), generator=rng).to(device)]
    own = (torch.rand(batch_size, generator=rng) < p_recon).to(device)
    pitch = torch.where(own, pitch_class[i], pitch_class[j])
    target = torch.where(own, i, target_of[instrument[i], pitch])
    return i, pitch, target, own


def _render(generator, offsets, z, pitch, h):
    """x_fine [b, n_mels, n_frames]: each instance through G with its own offsets (one call each)."""
    return torch.cat([refined_generate(generator, {name: d[b] for name, d in offsets.items()}, z, pitch[b:b + 1],
                                       h[b:b + 1]) for b in range(len(pitch))])


def _recon_losses(x_fine, x, target, own):
    """Per-instance mean squared log-mel error toward the target rows: ([b], valid mask [b])."""
    has = target >= 0
    error = torch.zeros(len(target), device=x_fine.device)
    if bool(has.any()):
        error[has] = (x_fine[has] - x[target[has]]).pow(2).flatten(1).mean(1)
    return error, has


def hyper_loss(network, generator, extractor, z, batch, data, settings, discriminator=None):
    """The training loss (scalar), its parts {name: float} and x_fine [b, n_mels, n_frames] for one
    drawn `batch` on `data`; with `discriminator`, plus lambda_adversarial * softplus(-D(x_fine))."""
    i, pitch, target, own = batch
    x, h, h_init = data
    offsets = network(h[i], h_init[i])
    x_fine = _render(generator, offsets, z, pitch, h[i])
    timbre = (extractor(x_fine) - h[i]).pow(2).mean(1)
    error, has = _recon_losses(x_fine, x, target, own)
    weight = torch.where(own, settings.lambda_recon, settings.lambda_recon_other_pitch)
    loss = settings.lambda_timbre * timbre.mean() + (weight * error).mean()
    regulariser = offset_norm(offsets)
    loss = loss + settings.lambda_offset * regulariser
    logs = {}
    if discriminator is not None:
        adversarial = F.softplus(-discriminator(x_fine, pitch, h[i])).mean()
        loss = loss + settings.lambda_adversarial * adversarial
        logs["h_adversarial"] = float(adversarial.detach())
    own_has, other_has, error = own & has, ~own & has, error.detach()
    return loss, {"loss": float(loss.detach()), "timbre": float(timbre.mean().detach()),
                  "recon_own": float(error[own_has].mean()) if bool(own_has.any()) else None,
                  "recon_other": float(error[other_has].mean()) if bool(other_has.any()) else None,
                  "offset_ms": float(regulariser.detach()), **logs}, x_fine


def discriminator_loss(discriminator, x_fine, fake_pitch, h, x_real, real_pitch, settings, step: int):
    """D's loss (scalar) and its parts {name: float}: softplus(D(x_fine)) on the refined G's notes
    [b, n_mels, n_frames] at `fake_pitch` [b] + softplus(-D(x_real)) on real notes at `real_pitch`,
    both with the instances' h [b, h_dim], plus lazy R1 on the real notes every `r1_every` steps
    (r1_gamma / 2 * r1_every * R1), as `train gan` trains D."""
    d_fake = discriminator(x_fine.detach(), fake_pitch, h)
    d_real = discriminator(x_real, real_pitch, h)
    loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
    logs = {"d_loss": float(loss.detach()),
            "d_accuracy": float(((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2)}
    if step % settings.r1_every == 0:
        r1 = r1_penalty(discriminator, x_real, real_pitch, h)
        loss = loss + settings.r1_gamma / 2 * settings.r1_every * r1
        logs["r1"] = float(r1.detach())
    return loss, logs


def validation_losses(network, generator, extractor, z, batch, data) -> dict:
    """Mean squared log-mel error on a fixed held-out `batch` with H and with G alone:
    {val_recon_own, val_recon_other, base_recon_own, base_recon_other, val_timbre, base_timbre}
    (a recon key is absent when the batch has no such note)."""
    i, pitch, target, own = batch
    x, h, h_init = data
    with torch.no_grad():
        offsets = network(h[i], h_init[i])
        zero = {name: torch.zeros_like(d) for name, d in offsets.items()}
        out = {}
        for prefix, deltas in (("val", offsets), ("base", zero)):
            x_fine = _render(generator, deltas, z, pitch, h[i])
            error, has = _recon_losses(x_fine, x, target, own)
            for kind, mask in (("own", own & has), ("other", ~own & has)):
                if bool(mask.any()):
                    out[f"{prefix}_recon_{kind}"] = float(error[mask].mean())
            out[f"{prefix}_timbre"] = float((extractor(x_fine) - h[i]).pow(2).mean())
    return out


def train_hyper(config_path, out_dir, resume: bool = False) -> dict:
    """Train H (see the module docstring); writes checkpoints, the log, losses.png and hyper/."""
    raw, settings = _load_config(config_path)
    context = setup_distributed()  # torchrun: one process per rank, gradients averaged each step
    device = context.device
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model_dir = Path(raw["model_dir"])
    generator = load_generator(model_dir / "gan").to(device).requires_grad_(False)
    extractor = load_feature_extractor(model_dir / "features").to(device).requires_grad_(False)
    try:
        config = hyper_config_for(generator, **raw.get("model", {}))
    except TypeError as error:
        raise ValueError(f"{config_path} [model]: {error}") from error
    gan_config = generator.config
    store = NoteStore(raw["data"])
    if (store.sample_rate, store.n_samples) != (gan_config.sample_rate, gan_config.n_samples):
        raise ValueError(f"{raw['data']}: notes at {store.sample_rate} Hz x {store.n_samples}, the model's G "
                         f"renders {gan_config.sample_rate} Hz x {gan_config.n_samples}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        (out_dir / "config_resolved.json").write_text(json.dumps(
            {"data": raw["data"], "model_dir": str(model_dir), "model": dataclasses.asdict(config),
             "train": dataclasses.asdict(settings), "source_config": str(config_path),
             "world_size": context.world_size}, indent=2))
    z = fixed_z(gan_config.z_dim, settings.z_seed).to(device)
    train_notes, valid_notes = store.indices("train"), store.indices("valid")
    x, h, h_init, pitch_class, instrument = (t.to(device) for t in _notes_tensors(
        store, train_notes, gan_config, generator, extractor, z))
    neighbours = knn_indices(h, settings.k_neighbours)
    target_of = _target_table(instrument, pitch_class, gan_config.n_pitches)
    validation = None
    if len(valid_notes):
        vx, vh, vh_init, vpitch, vinstrument = (t.to(device) for t in _notes_tensors(
            store, valid_notes, gan_config, generator, extractor, z))
        vrng = torch.Generator().manual_seed(12_345)
        vbatch = _draw(vrng, len(valid_notes), knn_indices(vh, settings.k_neighbours), vpitch, vinstrument,
                       _target_table(vinstrument, vpitch, gan_config.n_pitches), settings.n_validation, 0.5)
        validation = (vbatch, (vx, vh, vh_init))

    network = HyperNetwork(config).to(device)
    if settings.initial_hyper:
        network.load_state_dict(load_hypernetwork(settings.initial_hyper, generator).state_dict())
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.learning_rate, betas=(0.9, 0.99))
    discriminator = optimizer_d = None
    if settings.discriminator:  # the adversarial fine-tuning: D starts from the GAN run's and trains beside H
        discriminator = Discriminator(gan_config).to(device)
        discriminator.load_state_dict(_prefixed(load_tensors(settings.discriminator), "d."))
        optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=settings.learning_rate_d, betas=(0.0, 0.99))
    step, seconds_before, last_validation = 0, 0.0, {}
    checkpoint_dir = out_dir / "checkpoint"
    if resume and (checkpoint_dir / "model.safetensors").is_file():
        tensors = load_tensors(checkpoint_dir)
        network.load_state_dict(_prefixed(tensors, "h."))
        restore_optimizer(optimizer, tensors, "opt")
        if discriminator is not None:
            discriminator.load_state_dict(_prefixed(tensors, "d."))
            restore_optimizer(optimizer_d, tensors, "opt_d")
        metadata = load_metadata(checkpoint_dir)
        step, seconds_before = int(metadata.get("step", 0)), float(metadata.get("train_seconds", 0.0))
        last_validation = metadata.get("validation", {})
    rng = torch.Generator().manual_seed(settings.seed + step + 100_003 * context.rank)
    log = RunLog(out_dir)
    started = time.monotonic()

    def elapsed_s() -> float:
        return seconds_before + time.monotonic() - started

    def validate() -> dict:
        if validation is None:
            return {}
        network.eval()
        values = validation_losses(network, generator, extractor, z, *validation)
        network.train()
        return values

    def save() -> None:
        metadata = {"step": step, "train_seconds": round(elapsed_s(), 1), "validation": last_validation,
                    "data": raw["data"], "model_dir": str(model_dir), "settings": dataclasses.asdict(settings)}
        tensors = {f"h.{k}": v for k, v in network.state_dict().items()}
        tensors.update(optimizer_tensors(optimizer, "opt"))
        if discriminator is not None:
            tensors.update({f"d.{k}": v for k, v in discriminator.state_dict().items()})
            tensors.update(optimizer_tensors(optimizer_d, "opt_d"))
        save_checkpoint(checkpoint_dir, config, tensors, metadata)
        save_checkpoint(out_dir / "hyper", config, network.state_dict(), metadata)

    last_save = time.monotonic()
    bar = tqdm(total=settings.steps, initial=step, desc="train hyper", disable=not context.is_main)
    network.train()
    while step < settings.steps and not any_rank(bool(settings.max_minutes and elapsed_s() > 60 * settings.max_minutes),
                                                 context):
        batch = _draw(rng, len(train_notes), neighbours, pitch_class, instrument, target_of, settings.batch_size,
                      settings.p_recon)
        loss, logs, x_fine = hyper_loss(network, generator, extractor, z, batch, (x, h, h_init), settings,
                                        discriminator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(network, context)
        optimizer.step()
        if discriminator is not None:
            i, pitch = batch[0], batch[1]
            loss_d, logs_d = discriminator_loss(discriminator, x_fine, pitch, h[i], x[i], pitch_class[i], settings, step)
            optimizer_d.zero_grad(set_to_none=True)
            loss_d.backward()
            average_gradients(discriminator, context)
            optimizer_d.step()
            logs.update(logs_d)
        step += 1
        bar.update(1)
        if not context.is_main:
            continue
        if step % settings.eval_every == 0:
            last_validation = validate()
            log.write({"step": step, **last_validation})
        if step % settings.log_every == 0:
            log.write({"step": step, "train_seconds": round(elapsed_s(), 1),
                       **{k: v for k, v in logs.items() if v is not None}})
            bar.set_postfix(loss=f"{logs['loss']:.3f}")
        if time.monotonic() - last_save > settings.checkpoint_every_s:
            save()
            log.plot(out_dir / "losses.png", PLOTTED_LOSSES)
            last_save = time.monotonic()
    bar.close()
    if context.is_main:
        last_validation = validate() or last_validation
        save()
        log.plot(out_dir / "losses.png", PLOTTED_LOSSES)
    cleanup_distributed(context)
    return {"out": str(out_dir), "step": step, "train_seconds": round(elapsed_s(), 1),
            "validation": last_validation, "hyper": str(out_dir / "hyper")}
