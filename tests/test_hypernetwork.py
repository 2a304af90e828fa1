"""The hypernetwork H: zero offsets are G itself, the tiny run trains, resumes and lowers its loss,
one-shot banks use H exactly when the model folder has hyper/, and the own-sample blend switch."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from models.bank_source import TimbreRequest
from models.checkpoint import CheckpointError, load_metadata, load_tensors, save_checkpoint
from models.gan import load_generator
from models.gan_bank import GanBankSource, load_source
from models.hypernetwork import (HyperNetwork, RefinedGenerator, fixed_z, hyper_config_for, load_hypernetwork,
                                 refined_generate)
from models.one_shot import load_one_shot
from models.own_sample_blend import BLEND_ENVIRONMENT, DEFAULT_BLEND, OwnSampleBlend, blend_text, parse_blend
from models.pitch import midi_to_hz
from rt_engine.subcommands import serve_command
from rt_engine.cli import main as cli_main
from tests.test_gan_bank import make_tiny_model
from tests.test_train_gan import _write_harmonic_store
from training.train_hyper import train_hyper

CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"
TINY_LAYERS = ("blocks.1.conv", "blocks.2.conv", "to_spectrogram")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("hyper_model") / "model")


def _nonzero_hyper(generator, seed: int = 1) -> HyperNetwork:
    """An H whose offsets are not zero (its row heads randomised)."""
    torch.manual_seed(seed)
    network = HyperNetwork(hyper_config_for(generator, hidden_dim=16, rank=2, layers=TINY_LAYERS))
    for head in network.rows:
        torch.nn.init.normal_(head.weight, std=0.5)
    return network.eval()


def _one_shot_file(path: Path, sample_rate: int = 16_000, n_samples: int = 4096, pitch: int = 60) -> Path:
    t = np.arange(n_samples) / sample_rate
    f0_hz = float(midi_to_hz(pitch))
    tone = sum(np.cos(2 * np.pi * k * f0_hz * t) / k for k in range(1, 8)) * np.exp(-3 * t)
    soundfile.write(path, (tone / np.abs(tone).max()).astype(np.float32), sample_rate, subtype="FLOAT")
    return path


def test_zero_offsets_reproduce_the_generator_exactly(tiny_model):
    generator = load_generator(tiny_model / "gan")
    network = HyperNetwork(hyper_config_for(generator, hidden_dim=16, rank=2, layers=TINY_LAYERS))
    h = torch.randn(3, generator.config.h_dim)
    with torch.no_grad():
        offsets = network(h, torch.randn(3, generator.config.h_dim))
    assert all(float(d.abs().max()) == 0.0 for d in offsets.values())
    z, pitches = fixed_z(generator.config.z_dim).expand(3, -1), torch.tensor([10, 30, 50])
    with torch.no_grad():
        expected = generator(z, pitches, h)
        refined = refined_generate(generator, {name: d[0] for name, d in offsets.items()}, z, pitches, h)
        fixed = RefinedGenerator(generator, {name: d[0] for name, d in offsets.items()})(z, pitches, h)
    assert torch.equal(refined, expected) and torch.equal(fixed, expected)


def test_nonzero_offsets_change_only_through_the_modulated_weights(tiny_model):
    generator = load_generator(tiny_model / "gan")
    before = {name: p.clone() for name, p in generator.state_dict().items()}
    network = _nonzero_hyper(generator)
    h = torch.randn(1, generator.config.h_dim)
    with torch.no_grad():
        offsets = {name: d[0] for name, d in network(h, h).items()}
        z, pitch = fixed_z(generator.config.z_dim), torch.tensor([40])
        assert not torch.allclose(refined_generate(generator, offsets, z, pitch, h), generator(z, pitch, h))
    assert all(torch.equal(before[name], p) for name, p in generator.state_dict().items())
    assert max(float(d.abs().max()) for d in offsets.values()) <= network.config.max_offset


def test_a_hypernetwork_for_another_generator_is_a_clear_error(tiny_model, tmp_path):
    generator = load_generator(tiny_model / "gan")
    network = _nonzero_hyper(generator)
    config = network.config
    wrong = type(config)(**{**config.__dict__, "layer_shapes": ((3, 3),) * len(config.layers)})
    save_checkpoint(tmp_path / "hyper", wrong, network.state_dict())
    with pytest.raises(CheckpointError, match="does not match"):
        load_hypernetwork(tmp_path / "hyper", generator)


def _tiny_config(tmp_path: Path, model_dir: Path, **train) -> Path:
    raw = json.loads((CONFIGS / "hyper_tiny.json").read_text())
    raw["data"], raw["model_dir"] = str(tmp_path / "store"), str(model_dir)
    raw["train"].update(train)
    path = tmp_path / "hyper_tiny.json"
    path.write_text(json.dumps(raw))
    return path


def test_tiny_training_lowers_its_loss_checkpoints_and_resumes(tiny_model, tmp_path):
    _write_harmonic_store(tmp_path / "store")
    run = tmp_path / "run"
    summary = train_hyper(_tiny_config(tmp_path, tiny_model, steps=4), run)
    assert summary["step"] == load_metadata(run / "checkpoint")["step"] == 4
    saved = load_tensors(run / "checkpoint")
    train_hyper(_tiny_config(tmp_path, tiny_model, steps=4), run, resume=True)  # nothing left to do
    assert all(np.array_equal(saved[k].numpy(), v.numpy()) for k, v in load_tensors(run / "checkpoint").items())
    summary = train_hyper(_tiny_config(tmp_path, tiny_model, steps=60, eval_every=30), run, resume=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(2, 61, 2))
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    validation = summary["validation"]  # the store's held-out instrument, at neighbours' pitches
    assert validation["val_recon_other"] < validation["base_recon_other"]
    assert (run / "losses.png").stat().st_size > 0
    assert load_metadata(run / "hyper")["step"] == 60
    load_hypernetwork(run / "hyper", load_generator(tiny_model / "gan"))


def test_adversarial_fine_tuning_starts_from_h_and_d_trains_both_and_resumes(tiny_model, tmp_path):
    """The second stage: H starts from a trained hyper/, D from a GAN run's `d.` weights; both
    change, D's loss and accuracy are logged, and a resumed run carries D and its optimiser."""
    from models.gan import Discriminator

    _write_harmonic_store(tmp_path / "store")
    generator = load_generator(tiny_model / "gan")
    start = _nonzero_hyper(generator)
    save_checkpoint(tmp_path / "trained_hyper", start.config, start.state_dict())
    torch.manual_seed(3)
    discriminator = Discriminator(generator.config)
    save_checkpoint(tmp_path / "gan_run", generator.config, {f"d.{k}": v for k, v in discriminator.state_dict().items()})
    config = _tiny_config(tmp_path, tiny_model, steps=8, r1_every=4, initial_hyper=str(tmp_path / "trained_hyper"),
                          discriminator=str(tmp_path / "gan_run"), lambda_adversarial=1.0)
    run = tmp_path / "adversarial"
    train_hyper(config, run)
    saved = load_tensors(run / "checkpoint")
    assert any(k.startswith("opt_d.") for k in saved)
    assert not torch.equal(saved["d.blocks.0.weight"], discriminator.state_dict()["blocks.0.weight"])
    trained = load_hypernetwork(run / "hyper", generator).state_dict()
    assert not all(torch.equal(trained[k], v) for k, v in start.state_dict().items())
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("d_loss" in r and "h_adversarial" in r and "d_accuracy" in r for r in records)
    train_hyper(_tiny_config(tmp_path, tiny_model, steps=10, initial_hyper=str(tmp_path / "trained_hyper"),
                             discriminator=str(tmp_path / "gan_run")), run, resume=True)
    assert load_metadata(run / "checkpoint")["step"] == 10


def test_one_shot_banks_use_the_hypernetwork_exactly_when_the_folder_has_one(tmp_path):
    plain_dir = make_tiny_model(tmp_path / "plain")
    hyper_dir = make_tiny_model(tmp_path / "hyper")
    network = _nonzero_hyper(load_generator(hyper_dir / "gan"))
    save_checkpoint(hyper_dir / "hyper", network.config, network.state_dict())
    wav = _one_shot_file(tmp_path / "one.wav")
    pitches = [40, 84]
    banks = {}
    for name, folder in (("plain", plain_dir), ("hyper", hyper_dir)):
        source = GanBankSource.from_dir(folder)
        source.own_sample_blend = None
        h = source.conditioning_for(TimbreRequest("audio", path=str(wav)))
        stacked = np.repeat(h[None], len(pitches), axis=0)
        banks[name] = (source.render_pitches(h, pitches), source.render_conditioning(stacked, pitches),
                       source.one_shot_generator(h), source, stacked)
    bank, plain_g, refined, _, _ = banks["plain"]
    assert refined is None and np.array_equal(bank, plain_g)
    bank, plain_g, refined, source, stacked = banks["hyper"]
    assert isinstance(refined, RefinedGenerator)
    assert np.array_equal(bank, source.render_conditioning(stacked, pitches, generator=refined))
    assert not np.allclose(bank, plain_g, atol=1e-3)
    preset = source.render_bank(TimbreRequest("preset", name="organ"), pitches)  # presets: G itself
    assert np.array_equal(preset, source.render_conditioning(np.repeat(source.presets["organ"][None], 2, 0), pitches))


def test_blend_settings_parse_and_print_back():
    assert parse_blend("on") == OwnSampleBlend() and parse_blend(" OFF ") is None
    assert parse_blend("4") == OwnSampleBlend(4.0, OwnSampleBlend().crossfade_semitones)
    assert parse_blend("3,0.5") == OwnSampleBlend(3.0, 0.5)
    assert blend_text(parse_blend("3,0.5")) == "3,0.5" and blend_text(None) == "off"
    for bad in ("maybe", "1,2,3", "-1", "nan", ""):
        with pytest.raises(ValueError, match="on, off"):
            parse_blend(bad)


def test_the_environment_setting_turns_the_workers_blend_off(tiny_model, monkeypatch):
    assert load_source(tiny_model).own_sample_blend == DEFAULT_BLEND
    monkeypatch.setenv(BLEND_ENVIRONMENT, "off")
    assert load_source(tiny_model).own_sample_blend is None


def test_generate_own_sample_blend_off_plays_generated_notes_at_the_inputs_pitch(tiny_model, tmp_path):
    wav = _one_shot_file(tmp_path / "one.wav")
    notes = {}
    for setting in ("on", "off"):
        out = tmp_path / f"{setting}.wav"
        assert cli_main(["generate", "--model", str(tiny_model), "--timbre", str(wav), "--pitch", "60",
                         "--own-sample-blend", setting, "--out", str(out)]) == 0
        notes[setting] = soundfile.read(out, dtype="float32")[0]
    source_note = load_one_shot(wav, 16_000, 4096)  # the input as the one-shot path reads it
    correlation = {k: float(np.corrcoef(v, source_note)[0, 1]) for k, v in notes.items()}
    assert correlation["on"] > 0.99 > correlation["off"]


def test_serve_refuses_a_bad_blend_setting_and_keeps_caches_apart(capsys):
    parser = argparse.ArgumentParser()
    serve_command.add_arguments(parser)
    assert serve_command.main(parser.parse_args(["--audio", "null", "--own-sample-blend", "sometimes"])) == 2
    assert "--own-sample-blend" in capsys.readouterr().err
    assert serve_command.own_sample_cache_dir(DEFAULT_BLEND) == "auto"
    off, other = serve_command.own_sample_cache_dir(None), serve_command.own_sample_cache_dir(OwnSampleBlend(3, 1))
    assert off != other and off.name.endswith("own-sample-off") and other.name.endswith("own-sample-3-1")


SHIPPED = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "default"


@pytest.mark.skipif(not (SHIPPED / "hyper" / "config.json").is_file(), reason="no hypernetwork shipped")
def test_the_shipped_hypernetwork_refines_a_one_shot_of_the_shipped_model(tmp_path):
    source = GanBankSource.from_dir(SHIPPED)
    source.own_sample_blend = None
    h = source.conditioning_for(TimbreRequest("audio", path=str(_one_shot_file(tmp_path / "one.wav", 32_000, 32_000))))
    refined = source.one_shot_generator(h)
    assert isinstance(refined, RefinedGenerator)
    bank = source.render_pitches(h, [48, 72])
    assert bank.shape == (2, 32_000) and np.all(np.isfinite(bank))
    assert not np.array_equal(bank, source.render_conditioning(np.repeat(h[None], 2, 0), [48, 72]))
