-- 0001_log.sql - the sharing log, its epoch keys, and the roles that may touch them
--
-- Applied by `accord migrate` or by accordd at start, inside one transaction,
-- once: the accord_schema table records which versions are in place.

CREATE TABLE accord_epoch (
    epoch        bigint PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    broker_key   bytea NOT NULL,          -- the broker's Ed25519 public key
    nonce_prefix bytea NOT NULL           -- 16 random bytes; nonces are prefix || counter
);

-- Each epoch key exists only sealed (crypto_box_seal) to every auditor's box key.
CREATE TABLE accord_epoch_seal (
    epoch      bigint NOT NULL REFERENCES accord_epoch (epoch),
    auditor    text   NOT NULL,
    box_key    bytea  NOT NULL,
    sealed_key bytea  NOT NULL,
    PRIMARY KEY (epoch, auditor)
);

CREATE TABLE accord_log (
    seq            bigint PRIMARY KEY,
    share_id       uuid        NOT NULL,
    at             timestamptz NOT NULL,
    event          text        NOT NULL
        CHECK (event IN ('shared', 'withheld', 'refused', 'acknowledged', 'queried',
                         'checkpoint')),
    from_agency    text        NOT NULL,
    to_agency      text,
    record_type    text,
    record_id      text,
    subject_tag    bytea,                 -- keyed BLAKE2b of the NHS number or local id
    rule_ids       text[]      NOT NULL DEFAULT '{}',
    purpose        text,
    lawful_basis   text,
    consent        text,
    error_code     text,
    reason         text,
    agreement_hash bytea       NOT NULL,
    key_epoch      bigint REFERENCES accord_epoch (epoch),
    nonce          bytea,
    payload        bytea,                 -- XChaCha20-Poly1305 ciphertext
    signature      bytea,                 -- checkpoints: Ed25519 over seq and prev_hash
    prev_hash      bytea       NOT NULL,
    entry_hash     bytea       NOT NULL
);

CREATE INDEX accord_log_share_id ON accord_log (share_id);
CREATE INDEX accord_log_subject_tag ON accord_log (subject_tag) WHERE subject_tag IS NOT NULL;
CREATE INDEX accord_log_from_at ON accord_log (from_agency, at);
CREATE INDEX accord_log_to_at ON accord_log (to_agency, at) WHERE to_agency IS NOT NULL;
CREATE INDEX accord_log_record ON accord_log (from_agency, record_id);

-- Append-only: nobody, whatever their grants, updates or deletes a log row.
CREATE FUNCTION accord_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accord: % on % is not allowed: the log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER accord_log_append_only BEFORE UPDATE OR DELETE ON accord_log
    FOR EACH ROW EXECUTE FUNCTION accord_refuse_change();
CREATE TRIGGER accord_log_no_truncate BEFORE TRUNCATE ON accord_log
    FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change();
CREATE TRIGGER accord_epoch_append_only BEFORE UPDATE OR DELETE ON accord_epoch
    FOR EACH ROW EXECUTE FUNCTION accord_refuse_change();
CREATE TRIGGER accord_epoch_seal_append_only BEFORE UPDATE OR DELETE ON accord_epoch_seal
    FOR EACH ROW EXECUTE FUNCTION accord_refuse_change();

-- What auditors' SQL tools may see: metadata, never payloads.
CREATE VIEW accord_log_meta AS
    SELECT seq, share_id, at, event, from_agency, to_agency, record_type, record_id,
           subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason,
           agreement_hash, key_epoch
      FROM accord_log;

-- What `accord-audit verify` reads: every column the hash chain covers. Payloads
-- appear only as ciphertext; their keys exist only sealed to auditors.
CREATE VIEW accord_log_chain AS
    SELECT seq, share_id, at, event, from_agency, to_agency, record_type, record_id,
           subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason,
           agreement_hash, key_epoch, nonce, payload, signature, prev_hash, entry_hash
      FROM accord_log;

-- Group roles (NOLOGIN): grant them to the login roles the broker and auditors use.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accord_writer') THEN
        CREATE ROLE accord_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accord_reader') THEN
        CREATE ROLE accord_reader NOLOGIN;
    END IF;
END
$$;

GRANT SELECT, INSERT ON accord_log, accord_epoch, accord_epoch_seal TO accord_writer;
GRANT SELECT ON accord_schema TO accord_writer, accord_reader;
GRANT SELECT ON accord_log_meta, accord_log_chain, accord_epoch, accord_epoch_seal
    TO accord_reader;
