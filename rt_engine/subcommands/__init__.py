"""The `latentsynth` subcommands other than training (`rt_engine.cli` dispatches to them)."""
