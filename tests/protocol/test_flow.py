"""mailsuite.protocol.flow on a StringTransport."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from mailsuite.protocol.flow import InputThrottle


def test_pauses_only_past_the_mark_while_held_and_resumes_at_half_or_when_released() -> None:
    transport = StringTransport()
    throttle = InputThrottle(transport, 1000)
    throttle.update(held=False, buffered=5000)  # input can be handled: never paused
    assert transport.producerState == "producing"
    throttle.update(held=True, buffered=1000)
    assert transport.producerState == "producing"
    throttle.update(held=True, buffered=1001)
    assert transport.producerState == "paused" and throttle.paused
    throttle.update(held=True, buffered=501)  # hysteresis: still above half
    assert transport.producerState == "paused"
    throttle.update(held=True, buffered=500)
    assert transport.producerState == "producing" and not throttle.paused
    throttle.update(held=True, buffered=2000)
    assert transport.producerState == "paused"
    throttle.update(held=False, buffered=2000)  # the command finished: read again at once
    assert transport.producerState == "producing"


def test_each_change_is_told_once() -> None:
    """pauseProducing/resumeProducing are not repeated (a TLS transport counts them)."""
    calls: list[str] = []

    class Recording:
        def pauseProducing(self) -> None:
            calls.append("pause")

        def resumeProducing(self) -> None:
            calls.append("resume")

    throttle = InputThrottle(Recording(), 10)
    for _ in range(3):
        throttle.update(held=True, buffered=100)
    for _ in range(3):
        throttle.update(held=False, buffered=100)
    assert calls == ["pause", "resume"]
