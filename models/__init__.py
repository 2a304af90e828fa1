"""latentsynth's DSP core (spectral representations, Numba inversion kernels) and networks."""
