"""The engine: the one nogil block kernel (`voice_kernel.render_block`, the hot path), the event stream it drains, the held-note table and the control API."""
