-- 0008_log_is_the_queue.sql - deliveries come from the log itself
--
-- Until now each share also wrote a sealed copy of its Deliver frame to
-- accord_outbox (deleted again when acknowledged), an accord_publish row for
-- idempotency, and one `acknowledged` log row per share. From this version:
--
-- * What is pending for an agency is every `shared` row to it above its cursor
--   (accord_cursor, one row per recipient agency and record type) that the cursor
--   does not list as acknowledged out of order. The shared row's payload is
--   exactly what the recipient receives, encrypted under its epoch key; the broker
--   keeps a copy of that key (accord_epoch_broker, sealed with a key only the
--   broker holds) while the epoch still has unacknowledged shares, and deletes it
--   once they are all acknowledged.
-- * One chained `acknowledged` row per recipient per commit lists the share
--   sequence numbers it acknowledges (acked_seqs), and carries the time.
-- * A publish's first row carries content_hash, the BLAKE2b-256 of the record as
--   published: repeating a record is answered from the log's (from_agency,
--   record_id) index.
--
-- accord_outbox and accord_publish are kept, frozen: deliveries pending at the
-- migration are still sent from accord_outbox (and removed from it when
-- acknowledged), and records accepted before it still answer from accord_publish.

ALTER TABLE accord_log ADD COLUMN content_hash bytea;
ALTER TABLE accord_log ADD COLUMN acked_seqs bigint[];

ALTER TABLE accord_log ADD CONSTRAINT accord_log_acked_seqs_check
    CHECK (acked_seqs IS NULL OR event = 'acknowledged');

-- Acknowledgement rows of one agency in sequence order: "when was share S to X
-- acknowledged" is the first of them after S that lists S.
CREATE INDEX accord_log_ack_rows ON accord_log (to_agency, seq) WHERE event = 'acknowledged';

CREATE TABLE accord_cursor (
    to_agency   text     NOT NULL,
    record_type text     NOT NULL,
    acked_to    bigint   NOT NULL,              -- every share at or below is acknowledged
    acked_above bigint[] NOT NULL DEFAULT '{}', -- shares above it acknowledged out of order
    PRIMARY KEY (to_agency, record_type)
);

-- Cursors from what was pending in the outbox at the migration.
INSERT INTO accord_cursor (to_agency, record_type, acked_to, acked_above)
SELECT s.to_agency, s.record_type,
       coalesce(p.first - 1, max(s.seq)),
       coalesce(array_agg(s.seq ORDER BY s.seq)
                    FILTER (WHERE p.first IS NOT NULL AND s.seq > p.first
                            AND NOT EXISTS (SELECT 1 FROM accord_outbox o WHERE o.seq = s.seq)),
                '{}')
  FROM accord_log s
  LEFT JOIN (SELECT to_agency, record_type, min(seq) AS first
               FROM accord_outbox GROUP BY 1, 2) p USING (to_agency, record_type)
 WHERE s.event = 'shared' AND s.to_agency IS NOT NULL AND s.record_type IS NOT NULL
 GROUP BY s.to_agency, s.record_type, p.first;

-- The broker's own copy of an epoch key, for reading pending shares. Deleted
-- (crypto-erased) once every share of the epoch is acknowledged.
CREATE TABLE accord_epoch_broker (
    epoch      bigint PRIMARY KEY REFERENCES accord_epoch (epoch),
    nonce      bytea  NOT NULL,
    sealed_key bytea  NOT NULL                 -- XSalsa20-Poly1305 under the broker's key
);

GRANT SELECT, INSERT, UPDATE ON accord_cursor TO accord_writer;
GRANT SELECT ON accord_cursor TO accord_reader;
GRANT SELECT, INSERT, DELETE ON accord_epoch_broker TO accord_writer;

DROP VIEW accord_log_meta;
DROP VIEW accord_log_chain;

CREATE VIEW accord_log_meta AS
    SELECT seq, share_id, at, event, from_agency, to_agency, record_type, record_id,
           subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason,
           agreement_hash, key_epoch, acked_seqs
      FROM accord_log;

CREATE VIEW accord_log_chain AS
    SELECT seq, share_id, at, event, from_agency, to_agency, record_type, record_id,
           subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason,
           agreement_hash, key_epoch, nonce, payload, signature, prev_hash, entry_hash,
           content_hash, acked_seqs
      FROM accord_log;

-- One row per acknowledged share, whichever form its acknowledgement took: a row
-- of its own (before 0008) or a seq in a batch's acked_seqs.
CREATE VIEW accord_log_acks AS
    SELECT s.seq AS share_seq, s.share_id, s.from_agency, s.to_agency, s.record_type,
           s.record_id, a.seq AS ack_seq, a.at AS acknowledged_at
      FROM accord_log a
      CROSS JOIN LATERAL unnest(a.acked_seqs) AS u(seq)
      JOIN accord_log s ON s.seq = u.seq
     WHERE a.event = 'acknowledged' AND a.acked_seqs IS NOT NULL
    UNION ALL
    SELECT s.seq, s.share_id, s.from_agency, s.to_agency, s.record_type, s.record_id,
           a.seq, a.at
      FROM accord_log a
      JOIN accord_log s ON s.share_id = a.share_id AND s.event = 'shared'
     WHERE a.event = 'acknowledged' AND a.acked_seqs IS NULL;

GRANT SELECT ON accord_log_meta, accord_log_chain, accord_log_acks TO accord_reader;
GRANT SELECT ON accord_log_acks TO accord_writer;
