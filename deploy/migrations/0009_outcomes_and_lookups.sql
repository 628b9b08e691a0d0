-- 0009_outcomes_and_lookups.sql - referral outcomes and "who is involved" lookups
--
-- Three new events join the chain:
--
-- * `outcome`: a share's recipient reported what became of it (received,
--   accepted, declined, closed). from_agency is the reporter, to_agency the
--   share's publisher when the rule sends outcomes back (to_sender), else NULL;
--   record_type, record_id, subject_tag and rule_ids are the share's; reason is
--   the status; refers_to is the share's id. The payload (encrypted like a
--   share's) is the OutcomeNotice the publisher receives, with its fields.
-- * `looked-up`: an agency asked who is involved with a child. from_agency asked,
--   subject_tag names the child, purpose is the purpose given, rule_ids holds the
--   agreement's lookup id, reason says how many agencies were disclosed. No
--   payload: the answer is derived from the log and can be derived again.
-- * `notified`: an agency named in a lookup's answer is told who looked
--   (notify: true). to_agency is told, from_agency looked, refers_to is the
--   looked-up row's id; the payload is the LookupNotice delivered.
--
-- `outcome` and `notified` rows are delivered like shares: pending above their
-- recipient's cursor (record_type '@outcome' or '@notified' in accord_cursor,
-- names no record type can take) until acknowledged.

ALTER TABLE accord_log ADD COLUMN refers_to uuid;

ALTER TABLE accord_log DROP CONSTRAINT accord_log_event_check;
ALTER TABLE accord_log ADD CONSTRAINT accord_log_event_check
    CHECK (event IN ('shared', 'withheld', 'refused', 'acknowledged', 'queried', 'checkpoint',
                     'restored', 'outcome', 'looked-up', 'notified'));

-- "What has been reported on share S", and the overdue report's anti-join.
CREATE INDEX accord_log_refers_to ON accord_log (refers_to) WHERE refers_to IS NOT NULL;

DROP VIEW accord_log_meta;
DROP VIEW accord_log_chain;

CREATE VIEW accord_log_meta AS
    SELECT seq, share_id, at, event, from_agency, to_agency, record_type, record_id,
           subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason,
           agreement_hash, key_epoch, acked_seqs, refers_to
      FROM accord_log;

CREATE VIEW accord_log_chain AS
    SELECT seq, share_id, at, event, from_agency, to_agency, record_type, record_id,
           subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason,
           agreement_hash, key_epoch, nonce, payload, signature, prev_hash, entry_hash,
           content_hash, acked_seqs, refers_to
      FROM accord_log;

GRANT SELECT ON accord_log_meta, accord_log_chain TO accord_reader;
