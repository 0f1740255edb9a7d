from storage import migrate


def test_migrations_match_the_table_definitions(sqlite_db):
    assert migrate.pending_differences(sqlite_db) == []


def test_upgrade_is_idempotent(sqlite_db):
    migrate.upgrade(sqlite_db)
    assert migrate.pending_differences(sqlite_db) == []
