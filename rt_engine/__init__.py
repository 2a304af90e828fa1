"""latentsynth's running instrument: CLI, audio backends, engine, OSC/MIDI control, bank manager."""
