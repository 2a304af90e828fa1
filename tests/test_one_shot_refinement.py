"""Test-time refinement of a one-shot's h: the optimisation, the source's refined conditioning,
and the live two-stage load (unrefined held rows first, then the refined bank)."""
import time

import numpy as np
import pytest
import soundfile
import torch

from models.bank_source import TimbreRequest
from models.features import log_mel
from models.gan import Generator
from models.gan_bank import GanBankSource
from models.hypernetwork import fixed_z
from models.model_config import GanConfig
from models.one_shot import load_one_shot
from models.one_shot_refinement import REFINEMENT_STEPS, parse_refinement, refine_conditioning
from rt_engine.banks.bank_manager import BankManager
from rt_engine.core import voice_kernel as vk
from tests.test_gan_bank import make_tiny_model

TINY = GanConfig(n_samples=4096, n_mels=32, h_dim=8, z_dim=4, pitch_embedding_dim=8, style_dim=16,
                 channels=(16, 8, 4), discriminator_channels=(4, 8, 8), projection_dim=8)


def test_the_refinement_setting_reads_on_off_and_step_counts():
    assert (parse_refinement("on"), parse_refinement("OFF"), parse_refinement("7")) == (REFINEMENT_STEPS, 0, 7)
    for bad in ("-1", "lots", "5000"):
        with pytest.raises(ValueError, match="step count|on, off"):
            parse_refinement(bad)


def _reconstruction_error(generator, h, target, pitch_class, z):
    with torch.no_grad():
        return float((generator(z, pitch_class, torch.from_numpy(h)[None]) - target).pow(2).mean())


def test_refinement_moves_h_towards_the_target_at_its_pitch_and_leaves_g_alone():
    torch.manual_seed(0)
    generator = Generator(TINY).eval().requires_grad_(False)
    weights = [p.clone() for p in generator.parameters()]
    z, pitch_class = fixed_z(TINY.z_dim), torch.tensor([39])
    h = np.random.default_rng(0).standard_normal(TINY.h_dim).astype(np.float32)
    with torch.no_grad():
        target = generator(z, pitch_class, torch.randn(1, TINY.h_dim))
    refined = refine_conditioning(generator, h, target, pitch_class, z, steps=30, learning_rate=0.05, anchor=0.0)
    assert refined.dtype == np.float32 and refined.shape == h.shape
    assert (_reconstruction_error(generator, refined, target, pitch_class, z)
            < 0.7 * _reconstruction_error(generator, h, target, pitch_class, z))
    assert all(torch.equal(a, b) for a, b in zip(weights, generator.parameters()))
    np.testing.assert_array_equal(refine_conditioning(generator, h, target, pitch_class, z, steps=0), h)
    np.testing.assert_array_equal(refine_conditioning(generator, h, target, pitch_class, z, steps=30, learning_rate=0.05,
                                                      anchor=0.0), refined)  # one input, one h: its cached bank


def test_refinement_is_adam_on_h():
    """The written-out Adam step matches torch.optim.Adam's on the same loss."""
    torch.manual_seed(2)
    generator = Generator(TINY).eval().requires_grad_(False)
    z, pitch_class = fixed_z(TINY.z_dim), torch.tensor([10])
    h = torch.randn(1, TINY.h_dim)
    with torch.no_grad():
        target = generator(z, pitch_class, torch.randn(1, TINY.h_dim))
    variable = h.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([variable], lr=0.02)
    for _ in range(5):
        loss = (generator(z, pitch_class, variable) - target).pow(2).mean() + 0.1 * (variable - h).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    ours = refine_conditioning(generator, h[0].numpy(), target, pitch_class, z, steps=5, learning_rate=0.02, anchor=0.1)
    np.testing.assert_allclose(ours, variable.detach()[0].numpy(), atol=1e-5)


def _tone(path, rate, n_samples):
    t = np.arange(n_samples) / rate
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t)).astype(np.float32), rate,
                    subtype="FLOAT")


def test_a_one_shot_refined_at_test_time_reconstructs_its_input_better(tmp_path):
    source = GanBankSource.from_dir(make_tiny_model(tmp_path / "model"))
    _tone(tmp_path / "tone.wav", source.sample_rate, source.n_samples)
    path = str(tmp_path / "tone.wav")
    plain = source.conditioning_for(TimbreRequest("audio", path=path, refine=False))
    refined = source.conditioning_for(TimbreRequest("audio", path=path))
    assert source.refines_one_shots and not np.allclose(plain, refined)
    audio = load_one_shot(path, source.sample_rate, source.n_samples)
    target = log_mel(torch.from_numpy(audio)[None], source.config)
    pitch_class, z = source._own_pitch_class(57.0), fixed_z(source.config.z_dim)
    assert (_reconstruction_error(source.generator, refined, target, pitch_class, z)
            < _reconstruction_error(source.generator, plain, target, pitch_class, z))
    assert source.render_pitches(refined, [57, 69]).shape == (2, source.n_samples)  # the refined h renders
    source.refinement_steps = 0
    np.testing.assert_array_equal(source.conditioning_for(TimbreRequest("audio", path=path)), plain)
    assert not source.refines_one_shots


def test_live_one_shots_answer_from_the_unrefined_held_rows_then_crossfade_to_the_refined_bank(tmp_path):
    """Stage one renders the held pitch's row of the unrefined h and answers on_done; the refined
    bank renders next into another slot and is selected after it, with every row."""
    banks = BankManager(str(make_tiny_model(tmp_path / "model")), 48_000, n_slots=6, pitches=[57, 69],
                        render_ahead=False, exact_delay_s=0.0, cache_dir=None)
    try:
        assert banks.wait_ready(60.0)
        selected, done, failed = [], [], []
        banks.bind(lambda slot, generation: selected.append((slot, generation)))
        banks.note_requested(69, [69])
        _tone(tmp_path / "tone.wav", 16_000, 4096)
        banks.request_audio(str(tmp_path / "tone.wav"), 3, lambda: done.append(len(selected)), failed.append)
        deadline = time.monotonic() + 60.0
        while len(selected) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert banks.wait_ready(60.0) and not failed
        [(first, _), (second, generation)] = selected
        assert done == [1] and generation == 3 and first != second
        assert banks.row_ready[first].tolist() == [0, 1]  # the unrefined stage: the held row only
        assert banks.row_ready[second].tolist() == [1, 1]
        assert banks.slots[second, vk.S_KIND] == vk.SLOT_EXACT
        assert not np.allclose(banks.banks[first, 1], banks.banks[second, 1])
        banks.request_audio(str(tmp_path / "tone.wav"), 4, lambda: done.append(len(selected)), failed.append)
        assert selected[-1] == (second, 4) and done[-1] == 3  # again: the refined bank at once
    finally:
        banks.close()


def test_generate_and_serve_take_the_refinement_setting(tmp_path, capsys):
    import argparse

    from rt_engine.cli import main as cli_main
    from rt_engine.subcommands import serve_command

    model = make_tiny_model(tmp_path / "model")
    _tone(tmp_path / "tone.wav", 16_000, 4096)
    notes = {}
    for setting in ("0", "off", "on"):
        out = tmp_path / f"{setting}.wav"
        assert cli_main(["generate", "--model", str(model), "--timbre", str(tmp_path / "tone.wav"), "--pitch", "90",
                         "--one-shot-refinement", setting, "--out", str(out)]) == 0
        notes[setting] = soundfile.read(out, dtype="float32")[0]
    np.testing.assert_array_equal(notes["0"], notes["off"])
    assert not np.allclose(notes["on"], notes["off"], atol=1e-3)  # MIDI 90 is generated: refinement shows
    parser = argparse.ArgumentParser()
    serve_command.add_arguments(parser)
    assert serve_command.main(parser.parse_args(["--audio", "null", "--one-shot-refinement", "always"])) == 2
    assert "--one-shot-refinement" in capsys.readouterr().err
