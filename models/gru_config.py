"""The GRU voice's architecture (`GruSynthConfig`), without torch: the runtime loads a GRU checkpoint
from its config and safetensors arrays alone (`models.gru_stream.load_stream_weights`); `models.gru`
builds the torch model from the same config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

CONDITIONING_NAMES = ("x", "y", "pitch")
"""Raw conditioning channels, in order: timbre x in [0, 1], timbre y in [0, 1], MIDI pitch."""


@dataclass(frozen=True)
class GruSynthConfig:
    """Architecture of `GruSynth` (saved in its checkpoint)."""

    n_layers: int = 3
    hidden_size: int = 256
    n_classes: int = 256
    """Mu-law classes (256 = 8 bits)."""
    embedding_size: int = 64
    """Size of the previous sample's embedding."""
    conditioning_size: int = 32
    """Size of the projected conditioning (x, y, pitch) features."""
    use_period_feature: bool = True
    """Add the normalised pitch period (samples) to the conditioning features."""
    pitch_min: float = 21.0
    pitch_range: float = 87.0
    """MIDI pitch normalisation: (pitch - pitch_min) / pitch_range maps A0..C8 to [0, 1]."""
    period_scale_samples: float = 100.0
    """Period feature = sample_rate / f0_hz / period_scale_samples."""
    sample_rate: int = 16000
    oscillator_harmonics: int = 0
    """K: sin/cos of k times the fundamental's phase, k = 1..K, enter the first layer every sample
    (0 = the paper's RNN3 input: previous sample and conditioning only)."""
    timbre_grid_size: int = 0
    """0: the timbre features are (x, y) themselves. N > 0: they are the timbre grid's conditioning
    vector at (x, y) (N x N nodes of `timbre_grid_dim`, read bilinearly as the banks' G reads it;
    the nodes are a buffer of the checkpoint), so the voice sees the timbre the GAN renders there."""
    timbre_grid_dim: int = 0
    """Size of each timbre grid node (the GAN's conditioning h); > 0 exactly when timbre_grid_size is."""
    template_harmonics: int = 0
    """M > 0: the timbre template (`models.gru_template`): the harmonics 1..M of G's note at each grid
    node, template pitch and frame of the note (a checkpoint buffer of `template_shape`), enter the
    first layer every sample as the cycle and its quadrature at the oscillator's phase (needs
    oscillator_harmonics >= 1). 0: no template."""
    template_grid_size: int = 0
    """N of the template table (the timbre grid's size); > 0 exactly when template_harmonics is."""
    template_pitches: tuple = ()
    """MIDI pitches of the template table, ascending; non-empty exactly when template_harmonics > 0."""
    template_frame_s: tuple = ()
    """Times (s since the note's onset, ascending) of the template's frames, read linearly in the
    note's age so the template follows the note's envelope and evolution; empty: one frame, the
    note's mean. Only with template_harmonics > 0."""
    age_feature_s: float = 0.0
    """> 0: the note's age (seconds since its onset, clamped to this) joins the conditioning
    features as age / age_feature_s, so the voice can play the note's envelope (it is trained on
    windows that start anywhere in a note, from a fresh state); 0: no age feature."""
    template_residual: bool = False
    """True: the template's cycle is the voice's prediction of each sample; the voice reads the
    previous residual's class and its softmax is over the residual's classes (`models.gru_template`);
    needs template_harmonics > 0."""

    def __post_init__(self) -> None:
        for name in ("n_layers", "hidden_size", "n_classes", "embedding_size", "conditioning_size", "sample_rate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GruSynthConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.oscillator_harmonics, int) or isinstance(self.oscillator_harmonics, bool) \
                or self.oscillator_harmonics < 0:
            raise ValueError(f"GruSynthConfig.oscillator_harmonics must be an integer >= 0, got {self.oscillator_harmonics!r}")
        if self.n_classes < 2:
            raise ValueError(f"GruSynthConfig.n_classes must be >= 2, got {self.n_classes}")
        for name in ("timbre_grid_size", "timbre_grid_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GruSynthConfig.{name} must be an integer >= 0, got {value!r}")
        if (self.timbre_grid_size > 0) != (self.timbre_grid_dim > 0) or self.timbre_grid_size == 1:
            raise ValueError("GruSynthConfig: timbre_grid_size (>= 2) and timbre_grid_dim are both set or "
                             f"both 0, got {self.timbre_grid_size} and {self.timbre_grid_dim}")
        for name in ("template_harmonics", "template_grid_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GruSynthConfig.{name} must be an integer >= 0, got {value!r}")
        object.__setattr__(self, "template_pitches", tuple(float(p) for p in self.template_pitches))
        object.__setattr__(self, "template_frame_s", tuple(float(t) for t in self.template_frame_s))
        if any(b <= a for a, b in zip(self.template_frame_s, self.template_frame_s[1:])) \
                or any(t < 0 for t in self.template_frame_s):
            raise ValueError(f"GruSynthConfig.template_frame_s must ascend from >= 0, got {self.template_frame_s}")
        if self.template_harmonics:
            if self.oscillator_harmonics < 1:
                raise ValueError("GruSynthConfig: the timbre template needs the oscillator (oscillator_harmonics >= 1)")
            if self.template_grid_size < 2 or not self.template_pitches:
                raise ValueError("GruSynthConfig: template_harmonics > 0 needs template_grid_size >= 2 and "
                                 f"template_pitches, got {self.template_grid_size} and {self.template_pitches}")
            if any(b <= a for a, b in zip(self.template_pitches, self.template_pitches[1:])):
                raise ValueError(f"GruSynthConfig.template_pitches must ascend, got {self.template_pitches}")
        elif self.template_grid_size or self.template_pitches or self.template_residual or self.template_frame_s:
            raise ValueError("GruSynthConfig: template_grid_size, template_pitches, template_frame_s and "
                             "template_residual are set only with template_harmonics > 0")
        if not (isinstance(self.age_feature_s, (int, float)) and self.age_feature_s >= 0):
            raise ValueError(f"GruSynthConfig.age_feature_s must be a number >= 0, got {self.age_feature_s!r}")
        if not (self.pitch_range > 0 and self.period_scale_samples > 0):
            raise ValueError("GruSynthConfig.pitch_range and period_scale_samples must be positive")

    @property
    def template_shape(self) -> tuple:
        """Shape of the template table: (N, N, P, F, 2M), F = max(len(template_frame_s), 1)."""
        return (self.template_grid_size, self.template_grid_size, len(self.template_pitches),
                max(len(self.template_frame_s), 1), 2 * self.template_harmonics)

    @property
    def n_timbre_features(self) -> int:
        """Timbre features: (x, y), or the grid's conditioning vector at (x, y)."""
        return self.timbre_grid_dim if self.timbre_grid_size else 2

    @property
    def n_features(self) -> int:
        """Number of conditioning features after `conditioning_features`: timbre, pitch, period, age."""
        return self.n_timbre_features + (2 if self.use_period_feature else 1) + (1 if self.age_feature_s else 0)

    @property
    def input_size(self) -> int:
        """Input size of the first GRU layer: embedding + projected conditioning + oscillator (2K)
        + template (cycle, quadrature) when there is one."""
        return (self.embedding_size + self.conditioning_size + 2 * self.oscillator_harmonics
                + (2 if self.template_harmonics else 0))

    @classmethod
    def preset(cls, name: str) -> "GruSynthConfig":
        """A named size: "3x256" (the paper's RNN3, default), "2x256", "2x128", "1x64" (tests)."""
        try:
            n_layers, hidden_size = (int(part) for part in name.lower().split("x"))
        except ValueError:
            raise ValueError(f"unknown GRU preset {name!r}; choose one of {list(GRU_PRESETS)}") from None
        if name.lower() not in GRU_PRESETS:
            raise ValueError(f"unknown GRU preset {name!r}; choose one of {list(GRU_PRESETS)}")
        return dataclasses.replace(cls(), n_layers=n_layers, hidden_size=hidden_size,
                                   embedding_size=min(64, hidden_size), conditioning_size=min(32, hidden_size))


GRU_PRESETS = ("3x256", "2x256", "2x128", "1x64")
