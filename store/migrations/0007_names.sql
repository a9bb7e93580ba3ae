-- Names are owned: the first publisher of a name owns it, and others publish
-- under it only with the owner's signed delegation. Every existing name goes
-- to its earliest publisher.
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    claimed_at TEXT NOT NULL
);
INSERT INTO names (name, owner, claimed_at)
    SELECT c.name, c.publisher, c.published_at FROM components c
    WHERE c.published_at = (SELECT MIN(d.published_at) FROM components d WHERE d.name = c.name)
    ON CONFLICT (name) DO NOTHING;

-- A delegation: the owner's signed statement that `delegate` may publish
-- under `name`.
CREATE TABLE IF NOT EXISTS delegations (
    name TEXT NOT NULL,
    delegate TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (name, delegate)
);

-- The registry's own settings: its id, which signed yanks and delegations
-- name so that they cannot be replayed at another registry.
CREATE TABLE IF NOT EXISTS registry_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Counts of what anonymous clients did (pulls, refused uploads): bounded,
-- unlike one audit record per request.
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
