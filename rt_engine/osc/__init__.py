"""The OSC service: codec, server, guard (rate, size and client limits), the address registry and the sound folders."""
