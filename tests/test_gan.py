"""Generator and projection discriminator: shapes, conditioning, R1, checkpoints."""
import pytest
import torch
from torch import nn

from models.checkpoint import CheckpointError, save_checkpoint
from torch.nn import functional as F

from models.gan import Discriminator, Generator, load_generator, r1_penalty, upsampled_conv3x3
from models.model_config import GanConfig

TINY = GanConfig(n_samples=4096, n_mels=32, h_dim=8, z_dim=4, pitch_embedding_dim=8, style_dim=16,
                 channels=(16, 8, 4), discriminator_channels=(4, 8, 8), projection_dim=8)


def _inputs(batch=3):
    torch.manual_seed(0)
    return torch.randn(batch, TINY.z_dim), torch.tensor([0, 40, 87])[:batch], torch.randn(batch, TINY.h_dim)


def test_generator_renders_one_spectrogram_per_request():
    z, p, h = _inputs()
    out = Generator(TINY)(z, p, h)
    assert out.shape == (3, TINY.n_mels, TINY.n_frames)
    assert torch.isfinite(out).all()


def test_generator_output_depends_on_pitch_and_on_h():
    generator = Generator(TINY)
    z, p, h = _inputs()
    with torch.no_grad():
        base = generator(z, p, h)
        other_pitch = generator(z, torch.tensor([1, 41, 86]), h)
        other_h = generator(z, p, h + 1.0)
    assert (base - other_pitch).abs().amax(dim=(1, 2)).min() > 1e-4
    assert (base - other_h).abs().amax(dim=(1, 2)).min() > 1e-4


def test_upsampled_convolution_equals_upsampling_then_convolving():
    """The stride-2 transposed convolution G's blocks run is conv3x3(nearest 2x upsample(x)),
    including the borders, on odd and even sizes."""
    torch.manual_seed(1)
    for height, width in ((4, 2), (5, 3), (16, 8)):
        x, weight = torch.randn(2, 6, height, width), torch.randn(5, 6, 3, 3)
        reference = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
        assert torch.allclose(upsampled_conv3x3(x, weight), reference, atol=1e-5, rtol=1e-5)


def test_generator_blocks_equal_upsample_concat_template_convolve():
    """Each upsampling block equals the plain recipe (upsample, concatenate the pitch template at the
    output resolution, conv3x3, FiLM, leaky ReLU) computed from the block's own weights, gradients too."""
    generator = Generator(TINY)
    z, p, h = _inputs()
    style = generator.style(torch.cat([z, generator.pitch_embedding(p), h], dim=1))
    block = generator.blocks[1]
    x = torch.randn(3, TINY.channels[0], 4, 3, requires_grad=True)
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    template = generator.templates.at(p, up.shape[2], up.shape[3])
    scale, shift = block.film(style)[:, :, None, None].chunk(2, dim=1)
    reference = F.leaky_relu(block.conv(torch.cat([up, template], 1)) * (1 + scale) + shift, 0.2)
    out = block(x, style, generator.templates, p)
    assert torch.allclose(out, reference, atol=1e-5)
    (grad_out,) = torch.autograd.grad(out.square().sum(), x)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    assert torch.allclose(grad_out, grad_reference, atol=1e-4)


def test_discriminator_scores_each_note_and_projects_h():
    discriminator = Discriminator(TINY)
    x = torch.randn(3, TINY.n_mels, TINY.n_frames)
    _, p, h = _inputs()
    with torch.no_grad():
        logits = discriminator(x, p, h)
        shifted = discriminator(x, p, h * 2)
    assert logits.shape == (3,)
    assert not torch.allclose(logits, shifted)


def test_fresh_discriminator_logits_depend_on_its_input():
    """At full size (six blocks) PyTorch's default init left the logits almost constant in x
    (spread 1e-4 over random inputs), so D could not learn; the He init gives ~0.07."""
    config = GanConfig()
    torch.manual_seed(0)
    x = 0.5 * torch.randn(32, config.n_mels, config.n_frames)
    with torch.no_grad():
        logits = Discriminator(config)(x, torch.full((32,), 40), torch.zeros(32, config.h_dim))
    assert logits.std() > 0.01


class _LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so R1 = ||w||^2."""

    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(shape))

    def forward(self, x, pitch_classes, h):
        return (x * self.weight).flatten(1).sum(1)


def test_r1_penalty_equals_the_squared_input_gradient_norm():
    critic = _LinearCritic((TINY.n_mels, TINY.n_frames))
    x = torch.randn(4, TINY.n_mels, TINY.n_frames)
    penalty = r1_penalty(critic, x, torch.zeros(4, dtype=torch.long), torch.zeros(4, TINY.h_dim))
    assert float(penalty.detach()) == pytest.approx(float(critic.weight.detach().pow(2).sum()), rel=1e-5)
    penalty.backward()
    torch.testing.assert_close(critic.weight.grad, 2 * critic.weight.detach())


def test_config_rejects_mel_counts_the_blocks_cannot_reach():
    with pytest.raises(ValueError, match="divisible"):
        GanConfig(n_mels=30, channels=(8, 8, 8))


def test_generator_checkpoint_round_trip_and_mismatch_error(tmp_path):
    generator = Generator(TINY)
    save_checkpoint(tmp_path / "gan", TINY, generator.state_dict())
    z, p, h = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(load_generator(tmp_path / "gan")(z, p, h), generator(z, p, h))
    other = GanConfig(**{**TINY.__dict__, "channels": (8, 8, 4)})
    save_checkpoint(tmp_path / "bad", other, generator.state_dict())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_generator(tmp_path / "bad")
