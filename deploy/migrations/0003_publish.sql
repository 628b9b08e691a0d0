-- 0003_publish.sql - which records each agency has had accepted, for idempotency
--
-- Publishing the same (agency, record_id) again returns the first result and shares
-- nothing twice; the same id with other content is refused DUPLICATE_CONFLICT.
-- Refused records are not kept here: a publisher may correct one and send it again
-- under the same id.

CREATE TABLE accord_publish (
    from_agency  text   NOT NULL,
    record_id    text   NOT NULL,
    content_hash bytea  NOT NULL,   -- BLAKE2b-256 of the record as published
    seq          bigint NOT NULL,   -- its first log row
    PRIMARY KEY (from_agency, record_id)
);

GRANT SELECT, INSERT ON accord_publish TO accord_writer;
