"""A row written by two PostgreSQL transactions at once: neither fails, the answer is the
one the writes made in turn.

Two compactors on one store save their cursor at the same time (``compact_cursor``); two
servers starting on one new database store the same defaults; two deletes of one path while
moving in remember it; two admins make a token of one name. A look-then-write lets both
pass the look: the second then met a unique violation (CI of stop 29: a compactor died).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from castore.metadata.repo import MetadataRepo
from castore.metadata.rows import TokenRow

from ..backends import PostgresCluster

REPLACE_CURSOR = ["DELETE FROM settings WHERE name = 'compact_cursor'",
                  "INSERT INTO settings (name, value) VALUES ('compact_cursor', 'theirs')"]


def _waits_for_a_lock(admin: psycopg.Connection, name: str) -> bool:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (name,)).fetchone()
    return row is not None and row[0] > 0


def _while_another_transaction_writes(dsn: str, statements: list[str], write: object) -> list[BaseException]:
    """Run ``write()`` in a thread while another transaction has run ``statements`` and not
    committed yet; commit once ``write`` waits for it. What ``write`` raised."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            write()  # type: ignore[operator]
        except BaseException as error:  # noqa: BLE001 - reported to the test
            failures.append(error)

    with psycopg.connect(dsn) as other, psycopg.connect(dsn, autocommit=True) as admin:
        database = other.info.dbname
        for statement in statements:
            other.execute(statement)  # type: ignore[arg-type]
        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while not _waits_for_a_lock(admin, database):
            assert time.monotonic() < deadline and thread.is_alive(), "the write never waited for the other"
            time.sleep(0.01)
        other.commit()
        thread.join(30)
    return failures


@pytest.fixture
def database(postgres: PostgresCluster) -> Iterator[tuple[str, MetadataRepo]]:
    """A new PostgreSQL database (its psycopg connection string) and a repository on it."""
    url = postgres.new_database()
    repo = MetadataRepo(url)
    yield postgres.dsn(url), repo
    repo.close()
    postgres.recycle(url)


@pytest.mark.parametrize("existing", [True, False], ids=["replaced", "new"])
def test_set_setting_waits_for_another_writer_and_wins(database: tuple[str, MetadataRepo], existing: bool) -> None:
    dsn, repo = database
    if existing:
        repo.set_setting("compact_cursor", "first")
    failures = _while_another_transaction_writes(dsn, REPLACE_CURSOR, lambda: repo.set_setting("compact_cursor", "mine"))
    assert failures == []
    assert repo.settings()["compact_cursor"] == "mine"


def test_init_settings_keeps_what_another_writer_stored(database: tuple[str, MetadataRepo]) -> None:
    dsn, repo = database
    failures = _while_another_transaction_writes(
        dsn, REPLACE_CURSOR, lambda: repo.init_settings({"compact_cursor": "default", "other": "2"}))
    assert failures == []
    assert {k: v for k, v in repo.settings().items() if k in ("compact_cursor", "other")} == {
        "compact_cursor": "theirs", "other": "2"}


@pytest.mark.parametrize(("theirs", "mine", "kept"), [(30, 20, 30), (20, 30, 30)])
def test_remember_deletion_keeps_the_later_of_two_at_once(database: tuple[str, MetadataRepo], theirs: int, mine: int,
                                                         kept: int) -> None:
    dsn, repo = database
    failures = _while_another_transaction_writes(
        dsn, [f"INSERT INTO deletions (path, version) VALUES ('/a', {theirs})"], lambda: repo.remember_deletion("/a", mine))
    assert failures == []
    assert repo.deletion("/a") == kept


def test_add_token_of_a_name_another_admin_just_took_says_so(database: tuple[str, MetadataRepo]) -> None:
    dsn, repo = database
    answers: list[bool] = []
    failures = _while_another_transaction_writes(
        dsn, ["INSERT INTO tokens (name, role, digest, created) VALUES ('ci', 'read', 'theirs', 1)"],
        lambda: answers.append(repo.add_token(TokenRow("ci", "admin", "mine", 2))))
    assert failures == [] and answers == [False]
    assert [(t.name, t.role, t.digest) for t in repo.tokens()] == [("ci", "read", "theirs")]
