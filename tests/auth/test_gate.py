"""The hashing gate: one check per account, slots, clean sources first, the kept slot, the bound."""

from __future__ import annotations


import pytest
from twisted.internet import defer

from mailsuite.auth.gate import GateFull, HashGate, Ticket

from .conftest import failure, result


class Standing(dict[str, int]):
    """Failures per source, as the throttle would count them."""

    def __call__(self, source: str) -> int:
        return self.get(source, 0)


def test_one_check_per_account_until_the_account_is_released() -> None:
    """Releasing the slot lets other accounts run; the same account waits for release_account."""
    gate = HashGate(4, Standing())
    first = result(gate.enter("192.0.2.1", "alice"))
    second = gate.enter("192.0.2.2", "alice")
    other = gate.enter("192.0.2.2", "bob")
    assert not second.called and isinstance(result(other), Ticket)
    first.release_slot()
    assert not second.called
    first.release_account()
    assert isinstance(result(second), Ticket)


def test_slots_bound_running_checks() -> None:
    gate = HashGate(2, Standing())
    tickets = [gate.enter(f"192.0.2.{n}", f"user{n}") for n in range(5)]
    assert [d.called for d in tickets] == [True, True, False, False, False]
    assert gate.running == 2 and gate.waiting == 3
    result(tickets[0]).release_slot()
    assert [d.called for d in tickets] == [True, True, True, False, False]


def test_sources_with_fewer_failures_go_first_as_they_stand_when_chosen() -> None:
    """Order is failures now, then checks running for the source, then arrival."""
    standing = Standing({"198.51.100.1": 5, "198.51.100.2": 2})
    gate = HashGate(1, standing)
    holder = result(gate.enter("203.0.113.9", "x"))
    worst = gate.enter("198.51.100.1", "a")
    middle = gate.enter("198.51.100.2", "b")
    clean = gate.enter("203.0.113.7", "c")
    holder.release_account()
    assert clean.called and not middle.called and not worst.called
    standing["198.51.100.2"] = 9  # failed meanwhile (other connections): now behind the other source
    result(clean).release_account()
    assert worst.called and not middle.called


def test_one_slot_is_kept_for_a_lone_clean_check() -> None:
    """A failing source's checks share slots - 1; a clean source's single check starts at once."""
    gate = HashGate(2, Standing({"198.51.100.1": 3}))
    guesses = [gate.enter("198.51.100.1", f"victim{n}") for n in range(3)]
    assert [d.called for d in guesses] == [True, False, False]
    assert isinstance(result(gate.enter("203.0.113.7", "alice")), Ticket)
    assert gate.running == 2


def test_a_clean_source_with_several_checks_waiting_does_not_get_the_kept_slot() -> None:
    """Many checks at once from one IP, failed or not yet, are a storm's shape, not a user's."""
    gate = HashGate(2, Standing({"198.51.100.1": 3}))
    result(gate.enter("198.51.100.1", "victim"))
    user = result(gate.enter("203.0.113.7", "alice"))
    storm = [gate.enter("198.51.100.2", f"user{n}") for n in range(2)]
    user.release_account()
    assert not any(d.called for d in storm)
    assert isinstance(result(gate.enter("203.0.113.8", "bob")), Ticket)


def test_with_one_slot_nothing_is_kept() -> None:
    gate = HashGate(1, Standing({"198.51.100.1": 3}))
    assert isinstance(result(gate.enter("198.51.100.1", "victim")), Ticket)


def test_full_queue_turns_away_the_worst() -> None:
    """A better newcomer takes the worst waiting check's place; a worse one is refused at once."""
    standing = Standing({"198.51.100.1": 9, "198.51.100.2": 1})
    gate = HashGate(1, standing, max_waiting=2)
    result(gate.enter("203.0.113.1", "held"))
    bad = gate.enter("198.51.100.1", "a")
    meh = gate.enter("198.51.100.2", "b")
    assert isinstance(failure(gate.enter("198.51.100.1", "c")).value, GateFull)
    good = gate.enter("203.0.113.7", "d")
    assert isinstance(failure(bad).value, GateFull)
    assert not meh.called and not good.called and gate.waiting == 2


def test_cancelling_a_waiting_check_withdraws_it() -> None:
    gate = HashGate(1, Standing())
    holder = result(gate.enter("192.0.2.1", "a"))
    gone = gate.enter("192.0.2.2", "b")
    gone.cancel()
    assert isinstance(failure(gone).value, defer.CancelledError)
    assert gate.waiting == 0
    holder.release_account()
    assert gate.running == 0


@pytest.mark.parametrize("twice", [True, False])
def test_releases_count_once(twice: bool) -> None:
    gate = HashGate(1, Standing())
    ticket = result(gate.enter("192.0.2.1", "a"))
    ticket.release_account()
    if twice:
        ticket.release_slot()
        ticket.release_account()
    assert gate.running == 0
    assert isinstance(result(gate.enter("192.0.2.1", "a")), Ticket)


def test_guesses_do_not_start_while_a_lone_clean_check_hashes() -> None:
    """argon2id uses every core: a guess started next to a user's check would only slow it down."""
    gate = HashGate(3, Standing({"198.51.100.1": 3}))
    user = result(gate.enter("203.0.113.7", "alice"))
    guess = gate.enter("198.51.100.1", "victim")
    assert not guess.called
    other_user = gate.enter("203.0.113.8", "bob")  # clean: not held back
    assert other_user.called
    user.release_slot()
    result(other_user).release_slot()
    assert guess.called


def test_a_known_check_goes_first_and_does_not_wait_for_its_account() -> None:
    """The user's login from a usual place passes guesses at their account and the account's hold."""
    gate = HashGate(2, Standing({"198.51.100.1": 5}))
    guess = result(gate.enter("198.51.100.1", "alice"))  # holds alice (hashing, or in a failure's delay)
    guess.release_slot()
    queued = gate.enter("198.51.100.2", "alice")
    user = gate.enter("192.0.2.1", "alice", known=True)
    assert isinstance(result(user), Ticket) and not queued.called
