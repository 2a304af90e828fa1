"""HyperGANStrument's pitch-invariant hypernetwork H: per-layer offsets of the generator's weights
predicted from the one-shot's features, so the frozen G(z, pitch, h) renders closer to the input.

H takes h = f(x) (the input's pitch-invariant feature) and h_init = f(G(h, z, p)) (the feature of
G's first reconstruction at the input's pitch p) and predicts, for each modulated layer l of G, a
channel-pair offset Delta_l [out, in] (shared over the kernel's positions, as HyperStyle does),
applied as W_l * (1 + Delta_l). The layers are G's later (high-resolution) convolutions, where
timbre detail lives and the offsets cost the least. Architecture (HyperStyle's, sized for a CPU):
a shallow MLP maps [h, h_init, h - h_init] to an embedding e [hidden]; one Shared Refinement
Block (a linear layer shared by all modulated layers) refines e + a learned per-layer embedding;
per-layer heads turn it into a rank-`rank` factorisation Delta_l = A_l B_l^T, bounded by
max_offset * tanh(. / max_offset). The row factor A_l starts at zero, so a fresh H gives
Delta = 0 and reproduces G exactly.

G stays frozen and unchanged: a refined G is G's own modules called with replaced weights
(`torch.func.functional_call`), one set of offsets per one-shot.

Public API:
    HyperConfig                 frozen dataclass (layers and their (out, in) shapes included)
    hyper_config_for(generator, **fields) -> HyperConfig   shapes read from G's weights
    HyperNetwork(config)        (h [b, h_dim], h_init [b, h_dim]) -> {layer: Delta [b, out, in]}
    fixed_z(z_dim, seed) -> float32 [1, z_dim]   the one noise vector the bank path and H use
    modulated_weights(generator, offsets) -> {param name: W * (1 + Delta)}  (offsets of one instance)
    refined_generate(generator, offsets, z, pitch_classes, h) -> [b, n_mels, n_frames]
    RefinedGenerator(generator, offsets)   a G-shaped callable with the refined weights fixed
    first_reconstruction_features(generator, extractor, h, pitch_classes, z) -> h_init [b, h_dim]
    offset_norm(offsets) -> scalar   mean squared offset (a regulariser keeping H near G)
    load_hypernetwork(folder, generator) -> HyperNetwork (eval mode), checked against G's shapes
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from models.checkpoint import CheckpointError, load_config, load_state_into

DEFAULT_LAYERS = ("blocks.3.conv", "blocks.4.conv", "blocks.5.conv", "to_spectrogram")
"""G's modulated layers: the three highest-resolution blocks' convolutions and the output 1x1 conv."""


@dataclass(frozen=True)
class HyperConfig:
    """Sizes of H. `layers` are module names of G holding a conv `weight` [out, in, k, k];
    `layer_shapes` their (out, in), filled from G by `hyper_config_for`."""

    h_dim: int = 64
    hidden_dim: int = 256
    rank: int = 8
    max_offset: float = 0.5
    layers: tuple = DEFAULT_LAYERS
    layer_shapes: tuple = ()

    def __post_init__(self):
        if len(self.layer_shapes) != len(self.layers) or not self.layers:
            raise ValueError(f"need one (out, in) shape per layer, got {len(self.layer_shapes)} for "
                             f"{len(self.layers)} layers")
        if self.h_dim <= 0 or self.hidden_dim <= 0 or self.rank <= 0 or not self.max_offset > 0:
            raise ValueError(f"invalid hypernetwork sizes in {self}")


def _weight_name(layer: str) -> str:
    return f"{layer}.weight"


def hyper_config_for(generator: nn.Module, **fields) -> HyperConfig:
    """A HyperConfig for `generator` (h_dim and the layers' (out, in) shapes read from it);
    `fields` set the other HyperConfig fields. An unknown layer name is a ValueError."""
    layers = tuple(fields.pop("layers", DEFAULT_LAYERS))
    parameters = dict(generator.named_parameters())
    missing = [layer for layer in layers if _weight_name(layer) not in parameters]
    if missing:
        raise ValueError(f"generator has no layers {missing}; conv layers: "
                         f"{[n[:-7] for n, p in parameters.items() if n.endswith('.weight') and p.dim() == 4]}")
    shapes = tuple(tuple(parameters[_weight_name(layer)].shape[:2]) for layer in layers)
    return HyperConfig(h_dim=int(generator.config.h_dim), layers=layers, layer_shapes=shapes, **fields)


class HyperNetwork(nn.Module):
    """H(h, h_init) -> {layer name: Delta [batch, out, in]} (see the module docstring)."""

    def __init__(self, config: HyperConfig):
        super().__init__()
        self.config = config
        hidden, rank = config.hidden_dim, config.rank
        self.embed = nn.Sequential(nn.Linear(3 * config.h_dim, hidden), nn.LeakyReLU(0.2),
                                   nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.layer_embedding = nn.Parameter(0.1 * torch.randn(len(config.layers), hidden))
        self.shared_refinement = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.rows = nn.ModuleList(nn.Linear(hidden, out * rank) for out, _ in config.layer_shapes)
        self.columns = nn.ModuleList(nn.Linear(hidden, n_in * rank) for _, n_in in config.layer_shapes)
        for head in self.rows:  # Delta = A B^T starts at 0 (A = 0) while dLoss/dA is not 0 (B != 0)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, h: torch.Tensor, h_init: torch.Tensor) -> dict[str, torch.Tensor]:
        config = self.config
        e = self.embed(torch.cat([h, h_init, h - h_init], dim=1))  # [batch, hidden]
        offsets = {}
        for index, (layer, (out, n_in)) in enumerate(zip(config.layers, config.layer_shapes)):
            refined = self.shared_refinement(e + self.layer_embedding[index])
            a = self.rows[index](refined).view(-1, out, config.rank)
            b = self.columns[index](refined).view(-1, n_in, config.rank)
            raw = torch.bmm(a, b.transpose(1, 2)) / config.rank
            offsets[layer] = config.max_offset * torch.tanh(raw / config.max_offset)
        return offsets


def fixed_z(z_dim: int, seed: int = 0) -> torch.Tensor:
    """The noise vector `float32 [1, z_dim]` drawn from `seed`: the bank path renders every note of
    a bank with it, and H trains on it (HyperGANStrument fixes z; the paper's is 0)."""
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(int(seed)))


def modulated_weights(generator: nn.Module, offsets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """G's weights W [out, in, k, k] of the layers in `offsets` (each Delta [out, in], one instance)
    as W * (1 + Delta): {parameter name: tensor}."""
    parameters = dict(generator.named_parameters())
    return {_weight_name(layer): parameters[_weight_name(layer)] * (1.0 + delta[:, :, None, None])
            for layer, delta in offsets.items()}


def refined_generate(generator: nn.Module, offsets: dict[str, torch.Tensor], z: torch.Tensor,
                     pitch_classes: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """G(z [b, z_dim], pitch_classes int [b], h [b, h_dim]) with the weights W * (1 + Delta) of one
    instance's `offsets` ({layer: [out, in]}): normalised log-mel [b, n_mels, n_frames]."""
    return functional_call(generator, modulated_weights(generator, offsets), (z, pitch_classes, h))


class RefinedGenerator:
    """G with one instance's refined weights fixed: called like G, (z, pitch_classes, h) ->
    [b, n_mels, n_frames]; `config` is G's."""

    def __init__(self, generator: nn.Module, offsets: dict[str, torch.Tensor]):
        self.generator = generator
        self.config = generator.config
        with torch.no_grad():
            self.weights = {name: w.detach() for name, w in modulated_weights(generator, offsets).items()}

    def __call__(self, z: torch.Tensor, pitch_classes: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return functional_call(self.generator, self.weights, (z, pitch_classes, h))


def first_reconstruction_features(generator: nn.Module, extractor: nn.Module, h: torch.Tensor,
                                  pitch_classes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """h_init = f(G(h, z, p)): `h` [b, h_dim], `pitch_classes` int [b], `z` [1, z_dim] (shared)
    -> float32 [b, h_dim]."""
    return extractor(generator(z.expand(len(h), -1), pitch_classes, h))


def load_hypernetwork(folder, generator: nn.Module) -> HyperNetwork:
    """H from a checkpoint folder (config.json holds a HyperConfig), eval mode. Bad files, or layers
    whose shapes do not match `generator`'s, raise CheckpointError naming the folder."""
    config = load_config(folder, HyperConfig)
    parameters = dict(generator.named_parameters())
    for layer, shape in zip(config.layers, config.layer_shapes):
        weight = parameters.get(_weight_name(layer))
        if weight is None or tuple(weight.shape[:2]) != tuple(shape):
            raise CheckpointError(f"{folder}: layer {layer} {tuple(shape)} does not match the generator's "
                                  f"{None if weight is None else tuple(weight.shape[:2])}")
    if config.h_dim != generator.config.h_dim:
        raise CheckpointError(f"{folder}: h_dim {config.h_dim} does not match the generator's {generator.config.h_dim}")
    network = HyperNetwork(config)
    load_state_into(network, folder)
    network.eval()
    return network


def offset_norm(offsets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared offset over all layers (scalar): a regulariser keeping H near G."""
    return torch.stack([delta.pow(2).mean() for delta in offsets.values()]).mean()
