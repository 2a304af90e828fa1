"""Training runs on a tiny generated note store: features, then the GAN; checkpoints; resume."""
import json
from pathlib import Path

import numpy as np
import pytest

from models.bank_source import TimbreRequest
from models.checkpoint import load_metadata, load_tensors
from models.gan_bank import GanBankSource
from training.note_dataset import NoteStoreWriter
from training.train_features import train_features
from training.train_gan import knn_indices, train_gan

CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"
N_SAMPLES = 4096


def _write_harmonic_store(path: Path) -> None:
    """Three 'instruments' (harmonic roll-offs 1, 2, 3) x MIDI 48-59, one held out."""
    t = np.arange(N_SAMPLES) / 16_000
    with NoteStoreWriter(path, n_samples=N_SAMPLES, sample_rate=16_000) as writer:
        for instrument, rolloff in enumerate((1.0, 2.0, 3.0)):
            for pitch in range(48, 60):
                f0 = 440.0 * 2 ** ((pitch - 69) / 12)
                note = sum(np.sin(2 * np.pi * k * f0 * t) / k ** rolloff for k in range(1, 9)) * np.exp(-2 * t)
                writer.append(note / np.abs(note).max(), pitch=pitch, instrument=f"synth:{instrument:03d}",
                              family=0, velocity=100, source="synth", split="valid" if instrument == 2 else "train")


def _tiny_config(tmp_path: Path, name: str, **overrides) -> Path:
    raw = json.loads((CONFIGS / name).read_text())
    raw["data"] = str(tmp_path / "store")
    if "features" in raw:
        raw["features"] = str(tmp_path / "features_run" / "features")
    raw["model"]["n_samples"] = N_SAMPLES
    raw["train"].update(overrides)
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    _write_harmonic_store(tmp_path / "store")
    summary = train_features(_tiny_config(tmp_path, "features_tiny.json"), tmp_path / "features_run")
    return tmp_path, summary


def test_feature_training_exports_a_checkpoint_with_its_metrics(trained):
    tmp_path, summary = trained
    metadata = load_metadata(tmp_path / "features_run" / "features")
    assert metadata["step"] == summary["step"] == 6
    for key in ("instrument_accuracy", "pitch_probe_accuracy"):
        assert 0.0 <= metadata["metrics"][key] <= 1.0
    assert (tmp_path / "features_run" / "losses.png").is_file()
    assert json.loads((tmp_path / "features_run" / "config_resolved.json").read_text())["model"]["n_instruments"] == 2


def test_gan_training_checkpoints_resumes_and_exports_a_playable_model(trained):
    tmp_path, _ = trained
    run = tmp_path / "gan_run"
    train_gan(_tiny_config(tmp_path, "gan_tiny.json", steps=4, sample_every=4), run)
    assert load_metadata(run / "checkpoint")["step"] == 4
    assert sorted(p.name for p in (run / "samples").iterdir() if p.suffix == ".png") == ["step000004.png"]
    saved = load_tensors(run / "checkpoint")

    train_gan(_tiny_config(tmp_path, "gan_tiny.json", steps=4), run, resume=True)  # nothing left to do
    resumed = load_tensors(run / "checkpoint")
    assert all(np.array_equal(saved[k].numpy(), resumed[k].numpy()) for k in saved)

    train_gan(_tiny_config(tmp_path, "gan_tiny.json", steps=6), run, resume=True)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    assert load_metadata(run / "model" / "gan")["step"] == 6
    source = GanBankSource.from_dir(run / "model")
    assert source.preset_names() == ["acoustic_grand_piano", "bright_acoustic_piano"]
    bank = source.render_bank(TimbreRequest("xy", x=0.3, y=0.6), [50, 55])
    assert bank.shape == (2, N_SAMPLES) and np.all(np.isfinite(bank))


def test_discriminator_warms_up_before_the_generator_feels_it(trained):
    tmp_path, _ = trained
    run = tmp_path / "gan_warmup"
    train_gan(_tiny_config(tmp_path, "gan_tiny.json", steps=6, log_every=1, sample_every=100,
                           adversarial_start_step=4, discriminator_warmup_steps=2), run)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "d_loss" in r] == [3, 4, 5, 6]
    assert [r["step"] for r in records if "g_adversarial" in r] == [5, 6]
    assert all(0.0 <= r["d_accuracy"] <= 1.0 for r in records if "d_loss" in r)


def test_knn_returns_the_nearest_rows_including_self():
    import torch

    points = torch.tensor([[0.0], [1.0], [10.0], [11.5]])
    assert knn_indices(points, 2, chunk=3).tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
