/* ledger.h - the broker's writer of the sharing log: epochs, encryption, hash chain,
 * group commit */
#ifndef ACCORD_BROKER_LEDGER_H
#define ACCORD_BROKER_LEDGER_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/logrow.h"
#include "accord/policy.h"
#include "accord/rc.h"
#include "hwm.h"

typedef struct ledger_t ledger_t;

/* Where the log lives and how long the loop may wait for it. */
typedef struct {
    const char *conninfo;         /* libpq conninfo (copied) */
    int64_t connect_timeout_s;    /* libpq connect_timeout when conninfo names none */
    int64_t statement_timeout_ms; /* every statement on the connection */
    int64_t query_timeout_ms;     /* ledger_read and ledger_schema_version */
    bool read_only; /* accordd --check: no migration, and the session refuses every write */
} ledger_limits_t;

/* Connects to PostgreSQL (bounded by limits->connect_timeout_s unless the conninfo
 * sets connect_timeout), applies pending migrations (read_only: refuses a schema
 * older than this build instead, and makes the session read-only), then sets the
 * statement timeout and reads the chain head. sign_secret (64 bytes) and outbox_key (32
 * bytes) are copied into locked memory. */
ACC_NODISCARD acc_rc_t ledger_open(ledger_t **out, const ledger_limits_t *limits,
                                   const uint8_t *sign_secret, const uint8_t *outbox_key,
                                   acc_err_t *err);
/* Wipes the epoch key and closes the connection. Staged rows are discarded. */
void ledger_destroy(ledger_t **self_p);

/* Starts a new epoch: a fresh random key, sealed to every auditor of policy and
 * committed before any row uses it. On failure the current epoch (key, nonce
 * prefix and counter) stays in force and ledger_is_epoch_due answers false for
 * a few seconds, so a failing rotation is not retried on every commit. */
ACC_NODISCARD acc_rc_t ledger_start_epoch(ledger_t *self, const acc_policy_t *policy,
                                          acc_err_t *err);

/* Stages one row for the next commit: fills seq, at_us, key_epoch, nonce, payload
 * (plain encrypted when plain is non-NULL) and the chain hash. Everything row
 * points to is copied; nothing is borrowed after the call. Returns the seq. */
int64_t ledger_stage(ledger_t *self, acc_logrow_t *row, const uint8_t *plain, size_t plain_len);

/* A delivery waiting for its recipient, as stored in the outbox. */
typedef struct {
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    int64_t seq;
    const char *to_agency;
    const char *from_agency;
    const char *record_type;
    const char *record_id;
    const uint8_t *frame; /* the packed Deliver envelope */
    size_t frame_len;
} ledger_delivery_t;

/* Stages d into the outbox, sealed, in the same transaction as the staged rows. */
void ledger_stage_outbox(ledger_t *self, const ledger_delivery_t *d);

/* Stages the removal of a share from the outbox (it was acknowledged). */
void ledger_stage_delivered(ledger_t *self, const uint8_t share_id[ACC_LOGROW_SHARE_BYTES]);

typedef void ledger_delivery_fn(void *ctx, const ledger_delivery_t *d);

/* One page of an agency's pending deliveries. */
typedef struct {
    const char *agency;
    int64_t after_seq; /* only shares logged after this sequence */
    size_t limit;
    size_t max_bytes;       /* frames' bytes: the page stops past this (one row at least) */
    ledger_delivery_fn *fn; /* called for each, frame opened */
    void *ctx;
    size_t count; /* out: rows the page held */
    bool cut;     /* out: max_bytes left rows of the limit out */
} ledger_page_t;

/* Calls page->fn for up to page->limit deliveries waiting for page->agency, in log
 * order; a frame that does not open is skipped and logged. */
ACC_NODISCARD acc_rc_t ledger_pending(ledger_t *self, ledger_page_t *page, acc_err_t *err);

/* Records that agency from had record_id (content hash) accepted at seq, in the
 * same transaction as its rows. */
void ledger_stage_publish(ledger_t *self, const char *from, const char *record_id,
                          const uint8_t hash[ACC_LOGROW_HASH_BYTES], int64_t seq);

/* An earlier accepted publish of the same (agency, record_id). */
typedef struct {
    bool found;
    bool staged; /* in the batch not yet committed */
    uint8_t hash[ACC_LOGROW_HASH_BYTES];
} ledger_publish_t;

/* Looks up, in one query, which of count (from[i], record_ids[i]) were accepted
 * before, so that ledger_find_publish answers them without a query each. The
 * answers hold until the batch commits or is dropped. */
ACC_NODISCARD acc_rc_t ledger_prefetch_publishes(ledger_t *self, size_t count,
                                                 const char *const *from,
                                                 const char *const *record_ids, acc_err_t *err);

/* Looks up an accepted (from, record_id), staged or committed, into out.
 * ACC_ERR_DB when the database cannot answer (a lost connection is re-established
 * here when no rows are staged, so lookups do not wait for a commit to retry). */
ACC_NODISCARD acc_rc_t ledger_find_publish(ledger_t *self, const char *from, const char *record_id,
                                           ledger_publish_t *out, acc_err_t *err);

/* The first result of an accepted (from, record_id), rebuilt from its log rows:
 * a PGresult of (event, to_agency, share_id, rule_ids, reason, seq) rows in log
 * order, for the caller to PQclear. NULL with err set on failure. */
PGresult *ledger_first_result(ledger_t *self, const char *from, const char *record_id,
                              acc_err_t *err);

/* A share still waiting in the outbox. */
typedef struct {
    bool found;
    int64_t seq;
    char from_agency[128];
    char record_type[128];
    char record_id[256];
} ledger_outbox_row_t;

/* Looks up share_id in the outbox for to_agency: an acknowledgement may arrive
 * after the broker stopped tracking the delivery (a restart, a redelivery). */
ACC_NODISCARD acc_rc_t ledger_find_outbox(ledger_t *self,
                                          const uint8_t share_id[ACC_LOGROW_SHARE_BYTES],
                                          const char *to_agency, ledger_outbox_row_t *out,
                                          acc_err_t *err);

/* Runs a read-only query with text parameters on the log's connection
 * (reconnecting first if it was lost), in a read-only transaction cancelled after
 * the query timeout. NULL with err set on failure (a cancelled query says
 * "statement timeout"). Never call it with rows staged mid-commit. */
PGresult *ledger_read(ledger_t *self, const char *sql, int n, const char *const *values,
                      acc_err_t *err);

/* The schema version recorded in the database (acc_migrate_current), read under
 * the query timeout. */
ACC_NODISCARD acc_rc_t ledger_schema_version(ledger_t *self, int *version, acc_err_t *err);

/* Called with every row as it is staged (metrics count it if the commit succeeds). */
typedef void ledger_observer_fn(void *ctx, const acc_logrow_t *row);
void ledger_set_observer(ledger_t *self, ledger_observer_fn *fn, void *ctx);

/* Rows staged since the last commit. */
size_t ledger_staged(const ledger_t *self);
/* Bytes of COPY text those rows take. */
size_t ledger_staged_bytes(const ledger_t *self);

/* Writes every staged row in one transaction. On failure nothing was written,
 * the chain head is back where it was, the staged rows are dropped, and
 * ACC_ERR_DB says why; the connection is re-established on the next call. */
ACC_NODISCARD acc_rc_t ledger_commit(ledger_t *self, acc_err_t *err);

/* True when the last ledger_commit failed because PostgreSQL refused a row's
 * data (SQLSTATE class 22, data exception, or 23, integrity constraint): trying
 * the same rows again fails again, unlike a lost connection. */
bool ledger_failed_on_data(const ledger_t *self);

/* The agency id checkpoint rows are written under. */
#define LEDGER_BROKER_ID "accordd"

/* Stages a checkpoint: a row whose Ed25519 signature (the broker's signing key)
 * covers its sequence number and the hash of the row before it. Returns its seq. */
int64_t ledger_checkpoint(ledger_t *self, const uint8_t *agreement_hash);

/* Rows, staged or committed, written since the last checkpoint. */
size_t ledger_unsigned_rows(const ledger_t *self);

/* True when the current epoch has carried max_rows rows or lasted max_seconds
 * (and no failed rotation is waiting out its pause). */
bool ledger_is_epoch_due(const ledger_t *self, uint64_t max_rows, int64_t max_seconds);

/* The last committed row: its seq (0 for an empty log) and entry hash. */
int64_t ledger_head(const ledger_t *self, uint8_t hash[ACC_LOGROW_HASH_BYTES]);

/* The current key epoch (0 before the first). */
int64_t ledger_epoch(const ledger_t *self);

/* *holds: the database's log row at seq exists and has this entry hash (the row
 * this broker committed there, by its high-water mark). */
ACC_NODISCARD acc_rc_t ledger_holds_row(ledger_t *self, int64_t seq,
                                        const uint8_t hash[ACC_LOGROW_HASH_BYTES], bool *holds,
                                        acc_err_t *err);

/* Epochs started from now on are numbered above floor as well as above every
 * epoch the database holds: after a restore, no epoch number is used twice. */
void ledger_set_epoch_floor(ledger_t *self, int64_t floor);

/* Stages a signed `restored` row declaring cut (rows cut->lost_from..lost_to
 * lost) at seq cut->lost_to + 1, chained to the committed head, which must be
 * cut->lost_from - 1, with nothing else staged. Returns its seq. */
int64_t ledger_stage_restored(ledger_t *self, const acc_logrow_cut_t *cut,
                              const uint8_t *agreement_hash);

/* From now on, every commit replaces the high-water mark in mark (borrowed for
 * the ledger's life) with the new head and epoch, synced when the commit ended
 * with a signed row; the mark is written, synced, at once. */
ACC_NODISCARD acc_rc_t ledger_keep_mark(ledger_t *self, hwm_t *mark, acc_err_t *err);

/* True when a reconnection found the database no longer holding the last row
 * this broker committed (restored under it): no more commits; the broker stops. */
bool ledger_is_behind(const ledger_t *self);

/* True when the database connection is usable right now. */
bool ledger_is_up(const ledger_t *self);

#endif
