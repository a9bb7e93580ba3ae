-- Lineage written as a garden of daemons goes: each record carries the
-- position of the decision it comes from, and a row is only replaced by a
-- newer one, however the daemons' writes interleave.
ALTER TABLE lineage ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
