-- Every message a run recorded (bars, plans, evidence, decisions, fills,
-- feedback), in the order it was seen: enough to replay and audit the run.
-- (run, topic, n) is the key, so a batch written twice after a lost reply,
-- or a message recorded again after a redelivery, is stored once.

CREATE TABLE IF NOT EXISTS records (
    run TEXT NOT NULL,
    n BIGINT NOT NULL,
    topic TEXT NOT NULL,
    msg_key TEXT NOT NULL,
    source TEXT NOT NULL,
    time BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run, topic, n)
);
