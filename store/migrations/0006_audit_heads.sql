-- Signed heads of the audit chain: each writer's key signs the newest record
-- it appended (sequence number and hash), so a log cut short or rolled back
-- is told from an intact one. One row per signer, only ever moving forward.
CREATE TABLE IF NOT EXISTS audit_heads (
    signer TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
