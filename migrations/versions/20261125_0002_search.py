"""Search over prompts and ids for the dashboard, fast at a million tasks.

Written by hand, per database, because autogenerate cannot describe these objects.
tracker.tasks.models.SEARCH_OBJECT_PREFIXES names them, and migrations/env.py must pass
`include_name=lambda name, type_, parents: not is_search_object(name)` to
context.configure so that `alembic check` leaves them out.

- SQLite: an FTS5 table with external content (the prompts are not stored twice), kept
  in step with `tasks` by three triggers. Prefix indexes for 2 to 5 characters make a
  search for a half-typed word ("sun*") a lookup rather than a walk over every term.
- PostgreSQL: a stored generated column `search_vector` = to_tsvector('simple',
  user_prompt) (word search, no stemming, no stop words: prompts are in any language)
  with a GIN index, and pattern-ops B-trees so that `upstream_id LIKE 'abc%'` uses an
  index whatever the database's collation.

Ids are searched through the B-tree indexes migration 0001 made (exact) and, on
SQLite, a range over them (prefix).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_UP = [
    """CREATE VIRTUAL TABLE tasks_fts USING fts5(
        user_prompt,
        content='tasks',
        content_rowid='id',
        tokenize='unicode61 remove_diacritics 2',
        prefix='2 3 4 5'
    )""",
    """CREATE TRIGGER tasks_fts_after_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO tasks_fts(rowid, user_prompt) VALUES (new.id, new.user_prompt);
    END""",
    """CREATE TRIGGER tasks_fts_after_delete AFTER DELETE ON tasks BEGIN
        INSERT INTO tasks_fts(tasks_fts, rowid, user_prompt)
        VALUES ('delete', old.id, old.user_prompt);
    END""",
    """CREATE TRIGGER tasks_fts_after_update AFTER UPDATE OF user_prompt ON tasks BEGIN
        INSERT INTO tasks_fts(tasks_fts, rowid, user_prompt)
        VALUES ('delete', old.id, old.user_prompt);
        INSERT INTO tasks_fts(rowid, user_prompt) VALUES (new.id, new.user_prompt);
    END""",
    # index the rows that exist already
    "INSERT INTO tasks_fts(tasks_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS tasks_fts_after_update",
    "DROP TRIGGER IF EXISTS tasks_fts_after_delete",
    "DROP TRIGGER IF EXISTS tasks_fts_after_insert",
    "DROP TABLE IF EXISTS tasks_fts",
]

POSTGRES_UP = [
    # stored, so that checking a row costs no to_tsvector: a search for a common word walks
    # the newest rows and tests each, a rare one takes the GIN index; both stay cheap
    "ALTER TABLE tasks ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, user_prompt)) STORED",
    "CREATE INDEX ix_tasks_search_prompt ON tasks USING gin (search_vector)",
    "CREATE INDEX ix_tasks_search_upstream_id ON tasks (upstream_id varchar_pattern_ops)",
    "CREATE INDEX ix_tasks_search_source_task_id ON tasks (source_task_id varchar_pattern_ops)",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_tasks_search_source_task_id",
    "DROP INDEX IF EXISTS ix_tasks_search_upstream_id",
    "DROP INDEX IF EXISTS ix_tasks_search_prompt",
    "ALTER TABLE tasks DROP COLUMN IF EXISTS search_vector",
]


def _statements(sqlite: list[str], postgres: list[str]) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite
    if dialect == "postgresql":
        return postgres
    return []


def upgrade() -> None:
    for statement in _statements(SQLITE_UP, POSTGRES_UP):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(SQLITE_DOWN, POSTGRES_DOWN):
        op.execute(statement)
