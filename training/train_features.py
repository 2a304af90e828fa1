"""Train the pitch-invariant feature extractor f (GANStrument Eq. 2-3), plus the run helpers the
GAN trainer shares: config files, resumable checkpoints (safetensors, optimiser state included),
a JSONL log and loss-curve plots.

Config file (JSON):
    {"data": "data/fluidr3", "model": {FeatureConfig fields}, "train": {TrainFeaturesSettings fields}}
Run folder (`--out`, default runs/features):
    config_resolved.json, log.jsonl, losses.png, checkpoint/ (resume), features/ (the export:
    FeatureConfig + FeatureModel weights + metrics in metadata.json)

Public API:
    TrainFeaturesSettings, run_from_cli(args), train_features(config_path, out_dir, resume) -> dict
    load_run_config(path, model_class, settings_class) -> (data_path, model_config, settings, raw)
    precompute_log_mels(store, indices, config, batch_size) -> float32 tensor [n, n_mels, n_frames]
    optimizer_tensors(optimizer, prefix) / restore_optimizer(optimizer, tensors, prefix)
    average_gradients(module, context)   all-reduce mean of gradients under torchrun (no-op alone)
    any_rank(flag, context) -> bool      a stop flag agreed by all ranks
    RunLog(out_dir)   .write(record), .plot(path)
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config_files import build_dataclass, read_config_json

EVAL_PITCH_MODULUS = 7
"""Notes of training instruments whose pitch % 7 == 3 are held out of f's training, for its metrics."""


@dataclass(frozen=True)
class TrainFeaturesSettings:
    batch_size: int = 64
    steps: int = 1500
    learning_rate: float = 1e-3
    probe_steps: int = 600
    log_every: int = 25
    checkpoint_every_s: float = 120.0
    seed: int = 0
    threads: int = 1


def load_run_config(path, model_class, settings_class):
    """Read a run config JSON: returns (data path, model config, settings, raw dict). Unknown
    fields and bad values raise ValueError naming the file."""
    raw = read_config_json(path)
    if "data" not in raw:
        raise ValueError(f"{path}: expected an object with 'data', 'model' and 'train'")
    configs = [build_dataclass(cls, raw.get(key, {}), f"{path} [{key}]")
               for key, cls in (("model", model_class), ("train", settings_class))]
    return raw["data"], configs[0], configs[1], raw


def precompute_log_mels(store, indices: np.ndarray, config, batch_size: int = 256):
    """Normalised log-mels of store notes `indices`: float32 tensor [n, n_mels, n_frames]."""
    import torch
    from tqdm import tqdm

    from models.features import log_mel

    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(indices), batch_size), desc="log-mel", leave=False):
            audio = torch.from_numpy(np.asarray(store.audio[indices[start:start + batch_size]]))
            chunks.append(log_mel(audio, config))
    if not chunks:
        raise ValueError(f"{store.path}: no notes to compute log-mels of")
    return torch.cat(chunks)


def optimizer_tensors(optimizer, prefix: str) -> dict:
    """Adam-style optimiser state as flat tensors `{prefix}.{param_index}.{name}` (safetensors-safe)."""
    import torch

    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"{prefix}.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def restore_optimizer(optimizer, tensors: dict, prefix: str) -> None:
    """Inverse of `optimizer_tensors`: load the flat tensors back into `optimizer`."""
    state_dict = optimizer.state_dict()
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


def average_gradients(module, context) -> None:
    """Average `module`'s gradients over the torchrun ranks (`training.distributed` context); a
    no-op in a single process. Used instead of DDP's reducer because R1 needs a double backward,
    which DistributedDataParallel does not support; the arithmetic is the same."""
    if not context.enabled:
        return
    import torch.distributed as dist

    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= context.world_size


def any_rank(flag: bool, context) -> bool:
    """True when `flag` is true on any rank (all ranks must call it); `flag` alone in one process."""
    if not context.enabled:
        return bool(flag)
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


class RunLog:
    """Append-only JSONL log of scalar records, and a loss-curve plot of it."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / "log.jsonl"

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self, png_path: Path, keys: tuple[str, ...]) -> None:
        """Plot each key of `keys` against "step" into `png_path`, one panel per key."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.records()
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), squeeze=False)
        for axis, key in zip(axes[:, 0], keys):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                axis.plot(*zip(*points))
            axis.set_ylabel(key)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(png_path, dpi=80)
        plt.close(fig)


def run_from_cli(args) -> int:
    """Entry for `latentsynth train features --config FILE [--out DIR] [--resume]`."""
    summary = train_features(args.config, args.out or "runs/features", resume=args.resume)
    print(json.dumps(summary, indent=2))
    return 0


def _feature_split(store):
    """(train note indices, eval note indices, instrument class of each store note or -1)."""
    train_notes = store.indices("train")
    names = sorted({store.instrument[n] for n in train_notes})
    class_of = {name: i for i, name in enumerate(names)}
    classes = np.asarray([class_of.get(name, -1) for name in store.instrument], dtype=np.int64)
    held = (store.pitch[train_notes] % EVAL_PITCH_MODULUS) == 3
    return train_notes[~held], train_notes[held], classes, names


def train_features(config_path, out_dir, resume: bool = False) -> dict:
    """Train f, C_i, C_p by alternating Eq. 2 and Eq. 3; then measure instrument accuracy and a
    pitch probe re-trained on frozen f, on held-out pitches. Returns the metrics."""
    import torch
    from tqdm import tqdm

    from models.checkpoint import load_metadata, load_tensors, save_checkpoint
    from models.features import FeatureModel
    from models.model_config import FeatureConfig
    from training.distributed import cleanup_distributed, setup_distributed
    from training.note_dataset import NoteStore

    data_path, model_config, settings, raw = load_run_config(config_path, FeatureConfig, TrainFeaturesSettings)
    context = setup_distributed()  # torchrun: one process per rank, gradients averaged each step
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = NoteStore(data_path)
    train_notes, eval_notes, classes, names = _feature_split(store)
    model_config = dataclasses.replace(model_config, n_instruments=len(names), sample_rate=store.sample_rate,
                                       n_samples=store.n_samples)
    if context.is_main:
        (out_dir / "config_resolved.json").write_text(json.dumps(
            {"data": data_path, "model": dataclasses.asdict(model_config), "train": dataclasses.asdict(settings),
             "source_config": str(config_path), "raw": raw, "world_size": context.world_size}, indent=2))
    model = FeatureModel(model_config).to(context.device)
    extractor_params = list(model.extractor.parameters()) + list(model.instrument_head.parameters())
    opt_f = torch.optim.Adam(extractor_params, lr=settings.learning_rate, betas=(0.5, 0.99))
    opt_p = torch.optim.Adam(model.pitch_head.parameters(), lr=settings.learning_rate, betas=(0.5, 0.99))
    step = 0
    checkpoint_dir = out_dir / "checkpoint"
    if resume and (checkpoint_dir / "model.safetensors").is_file():
        tensors = load_tensors(checkpoint_dir)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        restore_optimizer(opt_f, tensors, "opt_f")
        restore_optimizer(opt_p, tensors, "opt_p")
        step = int(load_metadata(checkpoint_dir).get("step", 0))
    x_train = precompute_log_mels(store, train_notes, model_config)
    instrument_train = torch.from_numpy(classes[train_notes])
    pitch_train = torch.from_numpy(store.pitch[train_notes] - model_config.min_pitch)
    log = RunLog(out_dir)
    generator = torch.Generator().manual_seed(settings.seed + step + 100_003 * context.rank)

    def save():
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update(optimizer_tensors(opt_f, "opt_f"))
        tensors.update(optimizer_tensors(opt_p, "opt_p"))
        save_checkpoint(checkpoint_dir, model_config, tensors, {"step": step})

    last_save = time.monotonic()
    bar = tqdm(total=settings.steps, initial=step, desc="train features", disable=not context.is_main)
    while step < settings.steps:
        batch = torch.randint(0, len(train_notes), (settings.batch_size,), generator=generator)
        x_batch = x_train[batch].to(context.device)
        loss_f, logs = model.extractor_loss(x_batch, instrument_train[batch].to(context.device))
        opt_f.zero_grad(set_to_none=True)
        loss_f.backward()
        average_gradients(model, context)
        opt_f.step()
        loss_p, logs_p = model.pitch_loss(x_batch, pitch_train[batch].to(context.device))
        opt_p.zero_grad(set_to_none=True)
        loss_p.backward()
        average_gradients(model, context)
        opt_p.step()
        step += 1
        bar.update(1)
        if not context.is_main:
            continue
        if step % settings.log_every == 0:
            log.write({"step": step, **logs, **logs_p})
            bar.set_postfix(acc_i=f"{logs['acc_instrument']:.2f}", acc_p=f"{logs_p['acc_pitch']:.2f}")
        if time.monotonic() - last_save > settings.checkpoint_every_s:
            save()
            last_save = time.monotonic()
    bar.close()
    cleanup_distributed(context)
    if not context.is_main:
        return {"out": str(out_dir), "step": step, "rank": context.rank}
    save()
    log.plot(out_dir / "losses.png", ("ce_instrument", "kl_pitch", "ce_pitch", "acc_instrument", "acc_pitch"))
    model.cpu()
    metrics = evaluate_features(model, store, eval_notes, classes, x_train, pitch_train, settings)
    save_checkpoint(out_dir / "features", model_config, model.state_dict(),
                    {"step": step, "data": data_path, "instruments": names, "metrics": metrics})
    return {"out": str(out_dir), "step": step, **metrics}


def evaluate_features(model, store, eval_notes, classes, x_train, pitch_train, settings) -> dict:
    """Instrument accuracy of C_i(f(x)) on the held-out pitches `eval_notes`, and the accuracy of a
    fresh pitch probe (C_p's MLP shape) trained on frozen f for `settings.probe_steps` steps on a
    random 80 % of all training-instrument notes and tested on the other 20 % (every pitch class
    appears on both sides)."""
    import torch

    from models.features import classifier_mlp

    config = model.config
    model.eval()
    x_eval = precompute_log_mels(store, eval_notes, config)
    with torch.no_grad():
        h_train = torch.cat([model.extractor(x_train[i:i + 512]) for i in range(0, len(x_train), 512)])
        h_eval = torch.cat([model.extractor(x_eval[i:i + 512]) for i in range(0, len(x_eval), 512)])
        instrument_accuracy = float((model.instrument_head(h_eval).argmax(1)
                                     == torch.from_numpy(classes[eval_notes])).float().mean())
    h_all = torch.cat([h_train, h_eval])
    pitch_all = torch.cat([pitch_train, torch.from_numpy(store.pitch[eval_notes] - config.min_pitch)])
    generator = torch.Generator().manual_seed(settings.seed + 1)
    order = torch.randperm(len(h_all), generator=generator)
    n_fit = int(0.8 * len(order))
    fit, test = order[:n_fit], order[n_fit:]
    probe = classifier_mlp(config.h_dim, config.classifier_hidden, config.n_pitches)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    for _ in range(settings.probe_steps):
        batch = fit[torch.randint(0, n_fit, (256,), generator=generator)]
        loss = torch.nn.functional.cross_entropy(probe(h_all[batch]), pitch_all[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        probe_accuracy = float((probe(h_all[test]).argmax(1) == pitch_all[test]).float().mean())
    model.train()
    return {"instrument_accuracy": instrument_accuracy, "pitch_probe_accuracy": probe_accuracy,
            "n_eval_notes": int(len(eval_notes)), "n_probe_test_notes": int(len(test)),
            "chance_pitch_accuracy": 1.0 / config.n_pitches}
