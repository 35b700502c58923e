"""The write journal: a retried delivery does not apply again what its cut attempt applied."""
from __future__ import annotations

from broker.scripting.journal import Journal, active, recording


class Store:
    """Counts how often each write really ran."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def write(self, journal: Journal, uri: str, body: str = "") -> str:
        def run() -> str:
            self.applied.append(uri)
            return f"answer {len(self.applied)}"
        return journal.run("RestApiPut", [uri, body], run)


def test_same_calls_in_the_same_order_are_replayed_not_applied_again():
    store, journal = Store(), Journal("OnStoredInstance")
    journal.begin_attempt()
    first = [store.write(journal, "/a"), store.write(journal, "/b")]  # ... then the process is killed
    journal.begin_attempt()
    second = [store.write(journal, "/a"), store.write(journal, "/b"), store.write(journal, "/c")]

    assert store.applied == ["/a", "/b", "/c"]
    assert second[:2] == first  # the recorded answers
    assert journal.replayed == 2 and journal.labels == ["RestApiPut /a", "RestApiPut /b", "RestApiPut /c"]


def test_from_the_first_difference_on_every_write_runs():
    store, journal = Store(), Journal()
    journal.begin_attempt()
    store.write(journal, "/a", "1")
    store.write(journal, "/b")
    journal.begin_attempt()
    store.write(journal, "/a", "2")  # another body: a different call
    store.write(journal, "/b")       # would have matched, but the attempt has diverged
    assert store.applied == ["/a", "/b", "/a", "/b"]
    assert journal.replayed == 0

    journal.begin_attempt()  # a third attempt follows the second one's record
    store.write(journal, "/a", "2")
    assert store.applied == ["/a", "/b", "/a", "/b"] and journal.replayed == 1


def test_a_write_inside_a_write_belongs_to_the_outer_one():
    store, journal = Store(), Journal()
    journal.begin_attempt()

    def outer() -> str:
        store.write(journal, "/nested")
        store.applied.append("/outer")
        return "outer answer"

    journal.run("RestApiPost", ["/outer", ""], outer)
    assert journal.labels == ["RestApiPost /outer"]
    journal.begin_attempt()
    assert journal.run("RestApiPost", ["/outer", ""], outer) == "outer answer"
    assert store.applied == ["/nested", "/outer"]


def test_a_failed_write_is_not_recorded():
    journal = Journal()
    journal.begin_attempt()

    def fails() -> None:
        raise RuntimeError("transport error")

    try:
        journal.run("HttpDelete", ["http://peer/x"], fails)
    except RuntimeError:
        pass
    assert journal.writes == []


def test_recording_sets_the_journal_of_this_thread_and_restores_the_previous_one():
    outer, inner = Journal("a"), Journal("b")
    assert active() is None
    with recording(outer):
        with recording(inner):
            assert active() is inner
        assert active() is outer
    assert active() is None
