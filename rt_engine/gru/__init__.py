"""The GRU voices: the stream layer, its voices and its resampler."""
