-- 0006_rule_index.sql - auditors' rule filter through an index
--
-- An auditor's `rule` filter was `$n = ANY(rule_ids)`, which no index can answer:
-- each page walked the log from the asker's last sequence number, with the
-- broker's loop (and every agency) waiting behind it. The broker now asks
-- `rule_ids @> ARRAY[$n::text]`, which a GIN index answers. GIN's pending list
-- (fastupdate, on by default) keeps the cost to each log insert small.

CREATE INDEX accord_log_rule_ids ON accord_log USING gin (rule_ids);
