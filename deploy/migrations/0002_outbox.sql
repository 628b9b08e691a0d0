-- 0002_outbox.sql - deliveries waiting for their recipient's acknowledgement
--
-- One row per share until the recipient acknowledges it; written in the same
-- transaction as the share's log row and deleted in the same transaction as the
-- acknowledgement's. The Deliver frame is sealed (XChaCha20-Poly1305) with the
-- broker's outbox key, so the database never holds a record in clear. Unlike the
-- log, this table is meant to shrink.

CREATE TABLE accord_outbox (
    share_id    uuid PRIMARY KEY,
    seq         bigint NOT NULL,        -- the share's log sequence: delivery order
    to_agency   text   NOT NULL,
    from_agency text   NOT NULL,
    record_type text   NOT NULL,
    record_id   text,
    nonce       bytea  NOT NULL,
    frame       bytea  NOT NULL
);

CREATE INDEX accord_outbox_to_seq ON accord_outbox (to_agency, seq);

GRANT SELECT, INSERT, DELETE ON accord_outbox TO accord_writer;
GRANT SELECT (share_id, seq, to_agency, from_agency, record_type, record_id)
    ON accord_outbox TO accord_reader;
