"""Queue test fixtures (defined in tests/queue/helpers.py)."""

from tests.queue.helpers import dns, make_queue, sink  # noqa: F401
