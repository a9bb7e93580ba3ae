-- Publishes waiting for the message broker (Redis) to come back, per
-- daemon, in the order they were made.

CREATE TABLE IF NOT EXISTS outbox (
    owner TEXT NOT NULL,
    n BIGINT NOT NULL,
    stream TEXT NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (owner, n)
);
