"""Count XLA compilations with a `jax.monitoring` listener (never by timing)."""

import contextlib

import jax


@contextlib.contextmanager
def compiles():
    """Yield a list that collects one entry per backend compilation inside the block."""
    events = []

    def listener(event, duration, **_):
        if event.endswith("backend_compile_duration"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
