"""Per-pitch banks: the manager in the audio process, the worker process that renders them, their layout, disk cache and tuning."""
