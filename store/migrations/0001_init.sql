-- One schema for SQLite and PostgreSQL: plain types, explicit keys.

-- Every load, refusal, publish, pull, yank, trust change and quarantine.
-- Each record carries the hash of the one before it, so an edited or
-- deleted record breaks the chain (`garden audit verify`).
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    module TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- Published components: name@version -> content digest.
CREATE TABLE IF NOT EXISTS components (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    publisher TEXT NOT NULL,
    size BIGINT NOT NULL,
    published_at TEXT NOT NULL,
    yanked BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);

CREATE INDEX IF NOT EXISTS components_digest ON components (digest);
