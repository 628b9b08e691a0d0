-- 0005_lighter_log_indexes.sql - a cheaper event index for the busiest events
--
-- Every record shared to two agencies writes four log rows (two shared, two
-- acknowledged), and each row pays for every index on the log. Auditors find the
-- common events (shared, acknowledged) quickly by walking the log in sequence
-- order: half the log matches, so a page of 200 is a few hundred rows away. Only
-- the rare events (refused, withheld, queried, checkpoint) need an index that
-- yields them in sequence order, so only they are indexed.
--
-- Measured on 1,000,000 rows: a page of refusals 0.3 ms (index), of shares 4.7 ms
-- (sequence order). A BRIN index on `at` was tried as well and rejected: the
-- planner then walked the log for a window in the past (1 s instead of ms).

DROP INDEX accord_log_event_seq;
CREATE INDEX accord_log_event_seq ON accord_log (event, seq)
    WHERE event NOT IN ('shared', 'acknowledged');
