"""The Sound Model Factory's sample-level GRU synthesiser (RNN3: 3 GRU layers x 256, mu-law softmax).

One step predicts the distribution of the next 8-bit mu-law sample from the previous sample and the
conditioning (x, y, pitch):

    e_t = Embedding(prev_mu_t)                                  [embedding_size]
    c_t = tanh(W_c features(x_t, y_t, pitch_t) + b_c)           [conditioning_size]
    o_t = (sin k phi_t, cos k phi_t) for k = 1..K               [2K] (K = oscillator_harmonics)
    s_t = (cycle, quadrature) of the timbre template at phi_t   [2]  (with template_harmonics M > 0)
    h_t = GRU_stack([e_t, c_t, o_t, s_t], h_{t-1})              n_layers x [hidden_size]
    logits_t = W_o h_t^{(last)} + b_o                           [n_classes]
    with template_residual: prev_mu_t is the class of x_{t-1} - cycle_{t-1}, logits_t are over the
    classes of the residual x_t - p_t, p_t = cycle_t the prediction (`models.gru_template`)

`features` (`conditioning_features`): the timbre, either x and y as given (in [0, 1]) or, with a
timbre grid (`timbre_grid_size` > 0), the grid's conditioning vector h(x, y) read bilinearly from the
`timbre_grid` buffer [N, N, D] (the nodes the banks' generator reads); the MIDI pitch normalised as
(pitch - pitch_min) / pitch_range, and optionally the pitch period in samples, normalised
(sample_rate / f0_hz / period_scale_samples), and optionally the note's age (seconds since onset,
clamped to age_feature_s, over age_feature_s). Log-f0 is affine in the MIDI number, so a linear layer
already sees it; the period is the non-linear pitch feature a sample-level model needs.

The oscillator input o_t (K = 0 is the paper's plain model) is a sample-rate clock at the conditioned
pitch: phi_t = phi_0 + sum_{s <= t} 2 pi f0(pitch_s) / sample_rate (radians), the phase of the fundamental
of the sample being predicted. In training, phi_0 is measured from the target audio
(`training.gru_dataset.window_phase`), so the clock is in phase with the note's fundamental; when
playing, the clock starts at 0 and the GRU's output locks to it, so pitch and glides follow the
parameter sample by sample (as an NSF/DDSP source signal does) instead of being inferred from the
previous samples alone.

The template input s_t (`models.gru_template`) carries the timbre the same way: the harmonics of G's
note at the grid point and pitch (a table [N, N, P, 2M] measured on G's renders, a buffer of the
checkpoint, read bilinearly at (x, y) and linearly in pitch), summed at the oscillator's phase into
one cycle of that note's waveform and its quadrature. With `template_residual` the cycle is also the
prediction p_t of the sample: the embedding reads the previous residual's class, the logits are over
the mu-law classes of the residual x_t - p_t (LPCNet's excitation), and the voice plays
clip(p_t + decode(e_t), -1, 1): a zero residual plays its grid point's harmonics.

The input layout is chosen for streaming (`models.gru_stream`): the first GRU layer's input matrix
splits into an embedding part, folded into a [n_classes, 3 * hidden] lookup table, and a conditioning
part evaluated at control rate; the oscillator part is a [3 * hidden, 2K] matrix applied per sample.

Checkpoints: `save_gru(folder, model, metadata)` / `load_gru(folder)` through `models.checkpoint`
(safetensors + JSON config `GruSynthConfig` + JSON metadata).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.checkpoint import CheckpointError, load_config, load_metadata, load_state_into, save_checkpoint
from models.gru_config import CONDITIONING_NAMES, GruSynthConfig
from models.gru_template import DIRECTION_FLOOR
from models.mu_law import mu_law_decode_torch, mu_law_encode_torch, mu_law_zero
from models.pitch import A4_HZ, A4_MIDI



def _midi_to_hz(pitch: torch.Tensor) -> torch.Tensor:
    """`models.pitch.midi_to_hz` on a tensor (same dtype and shape)."""
    return A4_HZ * torch.exp2((pitch - A4_MIDI) / 12.0)


def grid_lookup(nodes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`models.timbre_grid.bilinear_lookup` in torch: nodes [N, N, D] (rows y, columns x), x and y
    [...] in [0, 1] (clipped) -> [..., D]."""
    last = nodes.shape[0] - 1
    column, row = x.clamp(0.0, 1.0) * last, y.clamp(0.0, 1.0) * last
    c0 = column.floor().long().clamp(max=last - 1)
    r0 = row.floor().long().clamp(max=last - 1)
    fx, fy = (column - c0).unsqueeze(-1), (row - r0).unsqueeze(-1)
    return ((1 - fx) * (1 - fy) * nodes[r0, c0] + fx * (1 - fy) * nodes[r0, c0 + 1]
            + (1 - fx) * fy * nodes[r0 + 1, c0] + fx * fy * nodes[r0 + 1, c0 + 1])


def conditioning_features(conditioning: torch.Tensor, config: GruSynthConfig,
                          timbre_grid: torch.Tensor | None = None, age_s: torch.Tensor | None = None) -> torch.Tensor:
    """Conditioning [..., 3] = (x, y, MIDI pitch) -> float32 features [..., config.n_features];
    `timbre_grid` [N, N, D] is needed when config.timbre_grid_size > 0, `age_s` [...] (seconds since
    the note's onset) when config.age_feature_s > 0."""
    if conditioning.shape[-1] != 3:
        raise ValueError(f"conditioning must end in 3 channels {CONDITIONING_NAMES}, got shape {tuple(conditioning.shape)}")
    conditioning = conditioning.to(torch.float32)
    x, y, pitch = conditioning.unbind(-1)
    features = [(pitch - config.pitch_min) / config.pitch_range]
    if config.use_period_feature:
        features.append(config.sample_rate / _midi_to_hz(pitch) / config.period_scale_samples)
    if config.age_feature_s:
        features.append(age_s.to(torch.float32).clamp(0.0, config.age_feature_s) / config.age_feature_s)
    other = torch.stack(features, dim=-1)
    timbre = grid_lookup(timbre_grid, x, y) if config.timbre_grid_size else torch.stack([x, y], dim=-1)
    return torch.cat([timbre, other], dim=-1)


def oscillator_phase(pitch: torch.Tensor, sample_rate: int, start_phase: torch.Tensor | None = None) -> torch.Tensor:
    """Phase (radians, wrapped to [0, 2 pi)) of a clock at MIDI `pitch` [batch, time], one value per
    step: phi_t = start_phase + sum_{s <= t} 2 pi f0(pitch_s) / sample_rate, accumulated in float64.
    start_phase: [batch] radians (default 0). Returns float32 [batch, time]."""
    pitch = pitch.to(torch.float64)
    increment = 2.0 * torch.pi * _midi_to_hz(pitch) / float(sample_rate)
    phase = torch.cumsum(increment, dim=-1)
    if start_phase is not None:
        phase = phase + start_phase.to(torch.float64)[:, None]
    return torch.remainder(phase, 2.0 * torch.pi).to(torch.float32)


def _interpolation(points: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, f) per element of `value` [...]: clamped to [points[0], points[-1]] (points [n] ascending)
    it lies at (1 - f) points[k] + f points[k + 1]; k = 0, f = 0 for a single point."""
    if len(points) == 1:
        return torch.zeros(value.shape, dtype=torch.int64, device=value.device), torch.zeros_like(value)
    clamped = value.clamp(float(points[0]), float(points[-1]))
    k = (torch.searchsorted(points, clamped.contiguous(), right=True) - 1).clamp(0, len(points) - 2)
    return k, (clamped - points[k]) / (points[k + 1] - points[k])


def template_lookup(table: torch.Tensor, pitches: torch.Tensor, frame_s: torch.Tensor, conditioning: torch.Tensor,
                    age_s: torch.Tensor | None, sample_rate: int) -> torch.Tensor:
    """`models.gru_template.template_coefficients` in torch: table [N, N, P, F, 2M], pitches [P] (MIDI,
    ascending), frame_s [F] (s since onset, ascending), conditioning [..., 3] (x, y, pitch), age_s
    [...] (s since the note's onset; None reads frame 0) -> float32 [..., 2M], harmonics at or above
    Nyquist zeroed; blended in polar form as the reference is. Gathers the 4 x 2 x 2 table rows it
    blends (no [..., P, F, 2M] intermediate)."""
    size, _, n_pitches, n_frames, width = table.shape
    x, y, pitch = conditioning.to(torch.float32).unbind(-1)
    column = x.clamp(0.0, 1.0) * (size - 1)
    row = y.clamp(0.0, 1.0) * (size - 1)
    c0 = column.floor().clamp(max=size - 2).to(torch.int64)
    r0 = row.floor().clamp(max=size - 2).to(torch.int64)
    fx, fy = column - c0, row - r0
    k, fk = _interpolation(pitches, pitch)
    if age_s is None:
        age_s = torch.zeros_like(pitch)
    a, fa = _interpolation(frame_s, age_s.to(torch.float32))
    k1, a1 = (k + 1).clamp(max=n_pitches - 1), (a + 1).clamp(max=n_frames - 1)
    rows = table.reshape(-1, width // 2, 2)
    magnitude = torch.zeros(*pitch.shape, width // 2, dtype=table.dtype, device=table.device)
    direction = torch.zeros(*pitch.shape, width // 2, 2, dtype=table.dtype, device=table.device)
    for r, c, w_xy in ((r0, c0, (1 - fx) * (1 - fy)), (r0, c0 + 1, fx * (1 - fy)),
                       (r0 + 1, c0, (1 - fx) * fy), (r0 + 1, c0 + 1, fx * fy)):
        for p, w_p in ((k, 1 - fk), (k1, fk)):
            for t, w_t in ((a, 1 - fa), (a1, fa)):
                entry = rows[((r * size + c) * n_pitches + p) * n_frames + t]  # [..., M, 2]
                length = entry.norm(dim=-1)
                weight = (w_xy * w_p * w_t).unsqueeze(-1)
                magnitude = magnitude + weight * length
                direction = direction + weight.unsqueeze(-1) * entry / length.clamp(min=1e-30).unsqueeze(-1)
    coefficients = (direction * (magnitude / direction.norm(dim=-1).clamp(min=DIRECTION_FLOOR)).unsqueeze(-1)
                    ).flatten(-2)
    harmonics = torch.arange(1, width // 2 + 1, dtype=torch.float32, device=table.device)
    audible = (harmonics * _midi_to_hz(pitch).unsqueeze(-1) < sample_rate / 2).to(torch.float32)
    return coefficients * audible.repeat_interleave(2, dim=-1)


def template_features(coefficients: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """(cycle, quadrature) of template coefficients [..., 2M] at `phase` [...] (radians):
    float32 [..., 2] (`models.gru_template.template_signal` in torch)."""
    a, b = coefficients[..., 0::2], coefficients[..., 1::2]
    angles = phase.to(torch.float32).unsqueeze(-1) * torch.arange(1, a.shape[-1] + 1, dtype=torch.float32,
                                                                  device=phase.device)
    cos, sin = torch.cos(angles), torch.sin(angles)
    return torch.stack([(a * cos - b * sin).sum(-1), (a * sin + b * cos).sum(-1)], dim=-1)


def oscillator_features(phase: torch.Tensor, n_harmonics: int) -> torch.Tensor:
    """(sin k phi, cos k phi) for k = 1..n_harmonics: phase [..., time] -> float32 [..., time, 2K]."""
    parts = []
    for k in range(1, n_harmonics + 1):
        parts += [torch.sin(k * phase), torch.cos(k * phase)]
    return torch.stack(parts, dim=-1)


class GruSynth(nn.Module):
    """Sample-level GRU over 8-bit mu-law audio, conditioned per sample on (x, y, pitch)."""

    def __init__(self, config: GruSynthConfig = GruSynthConfig()):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.n_classes, config.embedding_size)
        self.conditioning_projection = nn.Linear(config.n_features, config.conditioning_size)
        if config.timbre_grid_size:  # the timbre grid's nodes (set by `set_timbre_grid`; saved with the weights)
            self.register_buffer("timbre_grid", torch.zeros(config.timbre_grid_size, config.timbre_grid_size,
                                                            config.timbre_grid_dim))
        if config.template_harmonics:  # the timbre template (set by `set_template`; saved with the weights)
            self.register_buffer("timbre_template", torch.zeros(config.template_shape))
        self.gru = nn.GRU(config.input_size, config.hidden_size, num_layers=config.n_layers, batch_first=True)
        self.output = nn.Linear(config.hidden_size, config.n_classes)

    def set_timbre_grid(self, nodes) -> None:
        """Copy the timbre grid's nodes float [N, N, D] (`models.timbre_grid.TimbreGrid.nodes`)."""
        expected = (self.config.timbre_grid_size, self.config.timbre_grid_size, self.config.timbre_grid_dim)
        nodes = torch.as_tensor(nodes, dtype=torch.float32)
        if not self.config.timbre_grid_size or tuple(nodes.shape) != expected:
            raise ValueError(f"GruSynth: timbre grid nodes must be {expected}, got {tuple(nodes.shape)}")
        with torch.no_grad():
            self.timbre_grid.copy_(nodes)

    def set_template(self, table) -> None:
        """Copy the timbre template float [N, N, P, F, 2M] (`models.gru_template.template_table`)."""
        config = self.config
        expected = config.template_shape
        table = torch.as_tensor(table, dtype=torch.float32)
        if not config.template_harmonics or tuple(table.shape) != expected:
            raise ValueError(f"GruSynth: the timbre template must be {expected}, got {tuple(table.shape)}")
        with torch.no_grad():
            self.timbre_template.copy_(table)

    @property
    def latency_samples(self) -> int:
        """The model is causal sample by sample: no look-ahead."""
        return 0

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zero recurrent state, float32 [n_layers, batch, hidden_size]."""
        weight = self.output.weight
        return torch.zeros(self.config.n_layers, batch, self.config.hidden_size, dtype=weight.dtype, device=weight.device)

    def forward(self, prev_mu: torch.Tensor, conditioning: torch.Tensor, state: torch.Tensor | None = None,
                phase: torch.Tensor | None = None, with_prediction: bool = False, residual_inputs: bool = False,
                start_age: torch.Tensor | None = None):
        """Teacher-forced pass.

        prev_mu: int64 [batch, time] previous mu-law classes; conditioning: float32 [batch, time, 3]
        (x, y, MIDI pitch); state: [n_layers, batch, hidden] or None (zeros); phase: float [batch, time]
        oscillator phase (radians) of each predicted sample, or None = `oscillator_phase` from 0
        (ignored when oscillator_harmonics = 0); start_age: int [batch] samples between the note's onset
        and the first predicted sample (default 0; the note's age at step t, which the age feature and
        the template's frames read, is (start_age + t) / sample_rate seconds).
        Returns (logits float32 [batch, time, n_classes], state [n_layers, batch, hidden]); with
        `with_prediction`, (logits, prediction, state): prediction float32 [batch, time] is the
        template prediction p_t the logits' residual classes are relative to (zeros without
        template_residual: the logits are over the sample's own classes). A template-residual voice
        takes the previous samples' own classes and converts them to the residual's classes with the
        cycle one sample earlier (at each step's conditioning), or, with `residual_inputs`, takes the
        residual's classes as they are (as it does generating, and as the kernel does).
        """
        if prev_mu.dim() != 2 or conditioning.dim() != 3 or conditioning.shape[:2] != prev_mu.shape:
            raise ValueError(f"GruSynth.forward: prev_mu must be [batch, time] and conditioning [batch, time, 3], "
                             f"got {tuple(prev_mu.shape)} and {tuple(conditioning.shape)}")
        config = self.config
        signal = None
        if config.oscillator_harmonics:
            if phase is None:
                phase = oscillator_phase(conditioning[..., 2], config.sample_rate)
            elif phase.shape != prev_mu.shape:
                raise ValueError(f"GruSynth.forward: phase must be [batch, time] {tuple(prev_mu.shape)}, "
                                 f"got {tuple(phase.shape)}")
            phase = phase.to(torch.float32)
        age_s = None  # the note's age (s) per sample: the age feature's and the template's clock
        if config.age_feature_s or len(config.template_frame_s) > 1:
            steps = torch.arange(prev_mu.shape[1], device=prev_mu.device)[None, :]
            first = torch.zeros(prev_mu.shape[0], 1, dtype=torch.int64, device=prev_mu.device) if start_age is None \
                else start_age.reshape(-1, 1).to(prev_mu.device)
            age_s = ((first + steps).to(torch.float64) / config.sample_rate).to(torch.float32)
        if config.template_harmonics:
            pitches = torch.tensor(config.template_pitches, dtype=torch.float32, device=phase.device)
            frame_s = torch.tensor(config.template_frame_s or (0.0,), dtype=torch.float32, device=phase.device)
            coefficients = template_lookup(self.timbre_template, pitches, frame_s, conditioning, age_s,
                                           config.sample_rate)
            signal = template_features(coefficients, phase)
        if config.template_residual and not residual_inputs:
            increment = 2.0 * torch.pi * _midi_to_hz(conditioning[..., 2].to(torch.float32)) / config.sample_rate
            previous_signal = template_features(coefficients, phase - increment)
            prev_mu = mu_law_encode_torch(mu_law_decode_torch(prev_mu, config.n_classes) - previous_signal[..., 0],
                                          config.n_classes)
        inputs = [self.embedding(prev_mu),
                  torch.tanh(self.conditioning_projection(conditioning_features(
                      conditioning, config, getattr(self, "timbre_grid", None),
                      age_s if config.age_feature_s else None)))]
        if config.oscillator_harmonics:
            inputs.append(oscillator_features(phase, config.oscillator_harmonics))
        if signal is not None:
            inputs.append(signal)
        hidden, state = self.gru(torch.cat(inputs, dim=-1), state)
        logits = self.output(hidden)
        if not with_prediction:
            return logits, state
        prediction = signal[..., 0] if config.template_residual \
            else torch.zeros(prev_mu.shape, dtype=logits.dtype, device=logits.device)
        return logits, prediction, state

    @torch.no_grad()
    def sample(self, conditioning: torch.Tensor, temperature: float = 1.0, state: torch.Tensor | None = None,
               seed: int = 0, first_mu: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-running generation, one sample at a time.

        conditioning: float32 [batch, time, 3]; temperature > 0 scales the logits (0 = argmax; for a
        template-residual voice the distribution's mean residual, as the streaming kernel plays);
        first_mu: the previous class before the first step (default: silence; the residual's class for a
        template-residual voice).
        Returns (mu int64 [batch, time], state [n_layers, batch, hidden]).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        batch, n_steps = conditioning.shape[:2]
        previous = torch.full((batch, 1), mu_law_zero(self.config.n_classes) if first_mu is None else int(first_mu),
                              dtype=torch.int64)
        samples = torch.empty(batch, n_steps, dtype=torch.int64)
        phase = oscillator_phase(conditioning[..., 2], self.config.sample_rate)
        for step in range(n_steps):
            logits, prediction, state = self.forward(previous, conditioning[:, step:step + 1], state,
                                                     phase[:, step:step + 1], with_prediction=True,
                                                     residual_inputs=True, start_age=torch.full((batch,), step))
            logits = logits[:, 0]
            n_classes = self.config.n_classes
            if temperature == 0 and self.config.template_residual:  # the mean residual (`gru_stream`)
                residual = torch.softmax(logits.to(torch.float64), dim=-1) @ mu_law_decode_torch(
                    torch.arange(n_classes), n_classes).to(torch.float64)
                previous = None
            elif temperature == 0:
                previous = logits.argmax(dim=-1, keepdim=True)
            else:
                probabilities = torch.softmax(logits / temperature, dim=-1)
                previous = torch.multinomial(probabilities, 1, generator=generator)
            if self.config.template_residual:  # play p + e; read back the residual of what was played
                if previous is not None:
                    residual = mu_law_decode_torch(previous, n_classes)[:, 0].to(torch.float64)
                played = mu_law_encode_torch(prediction.to(torch.float64) + residual[:, None], n_classes)
                previous = mu_law_encode_torch(mu_law_decode_torch(played, n_classes).to(torch.float64)
                                               - prediction.to(torch.float64), n_classes)
                samples[:, step] = played[:, 0]
            else:
                samples[:, step] = previous[:, 0]
        return samples, state


def prediction_loss(logits: torch.Tensor, prediction: torch.Tensor, targets: torch.Tensor,
                    residual: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GRU's training loss on one pass: logits [batch, time, Q], prediction [batch, time] (see
    `GruSynth.forward`), targets int64 [batch, time] mu-law classes of the samples.

    Without `residual`: cross-entropy of the targets; with it, of the residual's classes
    encode(decode(target) - p_t). Returns (loss, the same detached, top-1 accuracy)."""
    n_classes = logits.shape[-1]
    if residual:
        targets = mu_law_encode_torch(mu_law_decode_torch(targets, n_classes) - prediction.detach(), n_classes)
    loss = nn.functional.cross_entropy(logits.reshape(-1, n_classes), targets.reshape(-1))
    accuracy = (logits.detach().argmax(-1) == targets).float().mean()
    return loss, loss.detach(), accuracy


def teacher_forcing_loss(model: GruSynth, mu: torch.Tensor, conditioning: torch.Tensor,
                         phase: torch.Tensor | None = None, start_age: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss (`prediction_loss`) of predicting mu[:, 1:] from mu[:, :-1].

    mu: int64 [batch, time + 1] classes; conditioning: float32 [batch, time, 3] aligned with the targets
    (the conditioning of step t goes with the prediction of mu[:, t + 1]); phase: [batch, time] oscillator
    phase of the targets and start_age their first one's age in samples (see `GruSynth.forward`).
    """
    logits, prediction, _ = model(mu[:, :-1], conditioning, phase=phase, with_prediction=True, start_age=start_age)
    return prediction_loss(logits, prediction, mu[:, 1:], model.config.template_residual)[0]


def save_gru(folder: str | Path, model: GruSynth, metadata: dict | None = None) -> Path:
    """Write `model` as a checkpoint folder (safetensors + config.json + metadata.json); the timbre
    template is stored in float16 (measured harmonics to about 1e-3 of their level, half the bytes)
    and read back into float32."""
    tensors = dict(model.state_dict())
    if "timbre_template" in tensors:
        tensors["timbre_template"] = tensors["timbre_template"].half()
    return save_checkpoint(folder, model.config, tensors, metadata)


def load_gru(folder: str | Path) -> GruSynth:
    """Rebuild a `GruSynth` from a checkpoint folder; a bad folder raises `CheckpointError` naming it."""
    config = load_config(folder, GruSynthConfig)
    model = GruSynth(config)
    load_state_into(model, folder)
    model.eval()
    return model


def load_gru_metadata(folder: str | Path) -> dict:
    """The checkpoint's metadata.json ({} when absent)."""
    return load_metadata(folder)


__all__ = ["GruSynth", "conditioning_features",
           "oscillator_phase", "oscillator_features",
           "prediction_loss", "teacher_forcing_loss", "save_gru", "load_gru", "load_gru_metadata",
           "CheckpointError"]
