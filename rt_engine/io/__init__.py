"""Audio and MIDI input/output: the backends (JACK, PortAudio, null), the native callbacks, MIDI input and its map."""
