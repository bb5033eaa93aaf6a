"""The action idempotency ledger on a SQLite file: leases, takeover of an expired
lease, the recorded result, and its place outside rebuild, verify and swap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, select, update

from projections import db, migrate
from projections.replay import rebuild, targets, verify
from workflows.actions.ledger import (
    LEDGER_TABLE,
    ActionLedger,
    LedgerKey,
    action_ledger,
    ledger_engine,
)

KEY = LedgerKey("acme", "core.noop", 1, "order-7")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    address = f"sqlite:///{tmp_path / 'p.db'}"
    migrate.upgrade(address)
    yield address


@pytest.fixture
def ledger(url: str) -> Iterator[ActionLedger]:
    book = ActionLedger(ledger_engine(url), lease_ms=30_000)
    yield book
    book.close()


def expire(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(update(action_ledger).values(lease_expires_ms=0))


def test_one_holder_at_a_time_then_the_recorded_output_for_everyone(
    ledger: ActionLedger,
) -> None:
    first = ledger.claim(KEY, "a", "run-1", "root.steps[0]", 1)
    assert first.held
    busy = ledger.claim(KEY, "b", "run-2", "root.steps[0]", 1)
    assert not busy.held and busy.output is None
    assert busy.busy_holder == "a" and busy.busy_until_ms > 0
    assert ledger.renew(KEY, "a") and not ledger.renew(KEY, "b")
    assert ledger.record(KEY, "a", {"n": 1}) == {"n": 1}
    for holder in ("b", "c"):
        again = ledger.claim(KEY, holder, "run-3", "root.steps[0]", 1)
        assert not again.held and again.output == {"n": 1}
    # Another tenant, action version or key is another entry.
    for other in (
        LedgerKey("globex", "core.noop", 1, "order-7"),
        LedgerKey("acme", "core.noop", 2, "order-7"),
        LedgerKey("acme", "core.noop", 1, "order-8"),
    ):
        assert ledger.claim(other, "d", "run-4", "root.steps[0]", 1).held


def test_an_expired_lease_is_taken_over_and_the_first_success_wins(ledger: ActionLedger) -> None:
    assert ledger.claim(KEY, "dead", "run-1", "root.steps[0]", 1).held
    expire(ledger.engine)
    assert ledger.claim(KEY, "next", "run-1", "root.steps[0]", 1).held
    # The dead holder may not renew what is no longer its lease.
    assert not ledger.renew(KEY, "dead")
    assert ledger.record(KEY, "next", {"n": 2}) == {"n": 2}
    # A late finisher gets the recorded result, not its own.
    assert ledger.record(KEY, "dead", {"n": 3}) == {"n": 2}


def test_a_released_key_is_free_at_once(ledger: ActionLedger) -> None:
    assert ledger.claim(KEY, "a", "run-1", "root.steps[0]", 1).held
    ledger.release(KEY, "b")  # not the holder: nothing changes
    assert not ledger.claim(KEY, "b", "run-1", "root.steps[0]", 2).held
    ledger.release(KEY, "a")
    assert ledger.claim(KEY, "b", "run-1", "root.steps[0]", 2).held


def test_rebuild_keeps_the_ledger_verify_ignores_it_and_swap_carries_it(
    url: str, ledger: ActionLedger, tmp_path: Path
) -> None:
    assert ledger.claim(KEY, "a", "run-1", "root.steps[0]", 1).held
    ledger.record(KEY, "a", {"n": 1})
    assert LEDGER_TABLE not in {table.name for table in verify.COMPARED}

    live = db.engine(url)
    rebuild.reset(live)
    assert LEDGER_TABLE in inspect(live).get_table_names()
    with live.connect() as conn:
        assert conn.execute(select(action_ledger.c.output)).scalars().all() == [{"n": 1}]

    shadow = targets.shadow_url(url)
    shadow_engine = db.engine(shadow)
    rebuild.reset(shadow_engine)
    # The rebuilt database compares equal although only the live one has a ledger.
    assert verify.compare(live, shadow_engine) == []
    live.dispose()
    shadow_engine.dispose()
    targets.swap(url, shadow)
    assert ledger.claim(KEY, "b", "run-2", "root.steps[0]", 1).output == {"n": 1}
