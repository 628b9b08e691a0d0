-- 0013_rules_in_seq_index.sql - the log's primary key carries each row's rules
--
-- An auditor's page of rows under one rule (`accord-audit log --rule`) walks the
-- log in seq order from where the page starts and keeps the rows whose rule_ids
-- hold the rule. Under a rule that allowed one record in ten, that meant reading
-- some 2,000 whole rows (about 270 table pages on a 10,000,000-row log) to find a
-- page of 200: 11 to 14 ms, when the table pages were not already in PostgreSQL's
-- buffers, against the 10 ms an auditor's page may take.
--
-- The primary key on seq now carries rule_ids as well (INCLUDE: stored in the
-- index, not part of the key, so seq alone is still what is unique). The page
-- finds its seqs in the index alone and then reads only the rows it returns:
-- about 120 pages, 5 to 7 ms. Nothing else changes: the same index still answers
-- every lookup by seq, and each row written still makes one entry in it (a wider
-- one: the rule ids, a few dozen bytes).
--
-- Building it reads the log once and sorts one entry per row (12 s for
-- 10,000,000 rows on the project's 2-vCPU machine), with the broker stopped;
-- the old key is replaced in the same transaction, so an interrupted migration
-- leaves the schema as it was. It changes no row.
SET LOCAL maintenance_work_mem = '256MB';
CREATE UNIQUE INDEX accord_log_seq_rules ON accord_log (seq) INCLUDE (rule_ids);
ALTER TABLE accord_log
    DROP CONSTRAINT accord_log_pkey,
    ADD CONSTRAINT accord_log_pkey PRIMARY KEY USING INDEX accord_log_seq_rules;
