-- 0007_restored.sql - a `restored` row: the broker found the database behind its
-- own high-water mark (a restore from backup, or lost data) and the operator chose
-- to continue (`accordd --accept-restore`)
--
-- The row is chained to the last row the database still holds, takes the sequence
-- number after the highest one the broker ever handed out (so no seq is used
-- twice), names the lost rows and their head hash in `reason`, and is signed with
-- the broker's signing key, so `accord-audit verify` accepts that one gap and
-- reports it.

ALTER TABLE accord_log DROP CONSTRAINT accord_log_event_check;
ALTER TABLE accord_log ADD CONSTRAINT accord_log_event_check
    CHECK (event IN ('shared', 'withheld', 'refused', 'acknowledged', 'queried', 'checkpoint',
                     'restored'));
