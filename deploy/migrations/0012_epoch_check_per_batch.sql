-- 0012_epoch_check_per_batch.sql - a log row's key epoch is checked once per batch
--
-- Every log row names the key epoch its payload is sealed under, and that epoch
-- must exist. 0001 said so with a foreign key, which PostgreSQL checks row by
-- row: for each row written, a query of accord_epoch with a row lock. Profiled
-- under the benchmark, those checks took 18% of the writing backend's CPU, and
-- that backend's time per row is what bounds how many records a second the
-- broker commits.
--
-- The same rule now holds through one check per statement: the broker writes a
-- batch as one COPY, and a trigger looks at all its new rows at once. The foreign
-- key's other half, that an epoch named by rows cannot be removed, already holds:
-- accord_epoch refuses UPDATE and DELETE (0001). It refused TRUNCATE ... CASCADE
-- only because the cascade reached the log; from here on it refuses TRUNCATE
-- itself, and so does accord_epoch_seal, which nothing else stopped.
-- A row naming an epoch that does not exist is refused with the foreign key's
-- own SQLSTATE (23503), as before.
--
-- Dropping the constraint reads nothing and takes a moment, whatever the log's size.
ALTER TABLE accord_log DROP CONSTRAINT IF EXISTS accord_log_key_epoch_fkey;

CREATE FUNCTION accord_log_epochs_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    SELECT n.key_epoch INTO missing
      FROM accord_new_rows n
     WHERE n.key_epoch IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM accord_epoch e WHERE e.epoch = n.key_epoch)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'accord: a log row names key epoch %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER accord_log_epochs_exist AFTER INSERT ON accord_log
    REFERENCING NEW TABLE AS accord_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accord_log_epochs_exist();

CREATE TRIGGER accord_epoch_no_truncate BEFORE TRUNCATE ON accord_epoch
    FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change();
CREATE TRIGGER accord_epoch_seal_no_truncate BEFORE TRUNCATE ON accord_epoch_seal
    FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change();
