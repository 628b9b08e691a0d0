/* ledger.h - the broker's writer of the sharing log: epochs, encryption, hash chain,
 * group commit */
#ifndef ACCORD_BROKER_LEDGER_H
#define ACCORD_BROKER_LEDGER_H

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
    int64_t query_timeout_ms;     /* auditors' queries, figures, ledger_schema_version */
    bool read_only; /* accordd --check: no migration, and the session refuses every write */
} ledger_limits_t;

/* Connects to PostgreSQL (bounded by limits->connect_timeout_s unless the conninfo
 * sets connect_timeout), applies pending migrations (read_only: refuses a schema
 * older than this build instead, and makes the session read-only), then sets the
 * statement timeout, reads the chain head and opens the epoch keys the broker
 * kept. sign_secret (64 bytes), outbox_key (32 bytes: the pre-0008 outbox) and
 * keep_key (32 bytes: seals the broker's copies of epoch keys) are copied into
 * locked memory. */
ACC_NODISCARD acc_rc_t ledger_open(ledger_t **out, const ledger_limits_t *limits,
                                   const uint8_t *sign_secret, const uint8_t *outbox_key,
                                   const uint8_t *keep_key, acc_err_t *err);
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

/* ---- the log as the queue ----
 *
 * A `shared` row holds exactly what its recipient receives, encrypted under its
 * epoch's key. What is pending for an agency is every shared row to it above its
 * cursor (per record type) that the cursor does not list as acknowledged. The
 * ledger keeps each epoch's key, sealed in accord_epoch_broker under a key only
 * the broker holds, while that epoch may still have unacknowledged shares. */

/* The delivery stream a deliverable row belongs to: its record type for a
 * `shared` row, "@outcome" or "@notified" for the others (no record type can
 * start with '@'). Cursors are kept per recipient and stream. */
#define LEDGER_STREAM_OUTCOME  "@outcome"
#define LEDGER_STREAM_NOTIFIED "@notified"

/* A share read back from the log for its recipient. Strings and bytes are valid
 * only during the callback. */
typedef struct {
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    int64_t seq;
    const char *event;  /* shared, outcome or notified */
    const char *stream; /* LEDGER_STREAM_SQL: the cursor it moves */
    const char *from_agency;
    const char *record_type; /* NULL when the row has none */
    const char *record_id;   /* NULL when the row has none */
    const char *rule_ids;    /* comma-separated */
    const char *purpose;
    const char *lawful_basis;
    const uint8_t *agreement_hash; /* ACC_POLICY_HASH_BYTES */
    const uint8_t *record;         /* the packed record as minimised for the recipient; for an
                                    * outcome or notified row, the packed OutcomeNotice or LookupNotice */
    size_t record_len;
    const uint8_t *frame; /* instead of record: a packed Deliver kept in the pre-0008
                           * accord_outbox; NULL otherwise */
    size_t frame_len;
} ledger_share_t;

typedef void ledger_share_fn(void *ctx, const ledger_share_t *share);

/* One page of shares to an agency above a sequence number, in log order. */
typedef struct {
    const char *agency;
    int64_t after_seq; /* only shares logged after this sequence */
    size_t limit;
    size_t max_bytes;    /* payloads' bytes: the page stops past this (one row at least) */
    ledger_share_fn *fn; /* called for each, payload opened */
    void *ctx;
    size_t count;     /* out: rows the page held */
    int64_t last_seq; /* out: the last row's seq (after_seq when none) */
    bool cut;         /* out: max_bytes left rows of the limit out */
} ledger_page_t;

/* Calls page->fn for up to page->limit shares to page->agency after
 * page->after_seq, in log order, each opened with its epoch's key; one that does
 * not open (its epoch key erased, or the row altered) is logged and handed over
 * with neither record nor frame. The caller skips the ones its cursor says were
 * acknowledged. */
ACC_NODISCARD acc_rc_t ledger_pending(ledger_t *self, ledger_page_t *page, acc_err_t *err);

/* A share as an acknowledgement names it. */
typedef struct {
    bool found;
    int64_t seq;
    char from_agency[128];
    char record_type[128]; /* its stream (LEDGER_STREAM_SQL) */
    char record_id[256];
} ledger_share_ref_t;

/* Looks up the deliverable row (shared, outcome, notified) share_id to
 * to_agency: an acknowledgement may arrive after the broker stopped tracking
 * the delivery (a restart, a redelivery). */
ACC_NODISCARD acc_rc_t ledger_find_share(ledger_t *self,
                                         const uint8_t share_id[ACC_LOGROW_SHARE_BYTES],
                                         const char *to_agency, ledger_share_ref_t *out,
                                         acc_err_t *err);

/* A share as an outcome reports on it, with the outcomes logged for it so far.
 * Strings are owned: ledger_reported_clear frees them. */
#define LEDGER_OUTCOMES_MAX 8
typedef struct {
    bool found;
    int64_t seq;
    char *from_agency;
    char *to_agency;
    char *record_type;
    char *record_id; /* NULL when the row has none */
    char *purpose;
    char *lawful_basis;
    char *rules; /* rule ids, separated by '\x1f'; rule_ids point into it */
    size_t rule_count;
    const char *rule_ids[ACC_LOGROW_MAX_RULES];
    bool has_tag;
    uint8_t subject_tag[ACC_LOGROW_TAG_BYTES];
    size_t outcome_count; /* the first LEDGER_OUTCOMES_MAX, in log order */
    struct {
        char status[32];
        uint8_t id[ACC_LOGROW_SHARE_BYTES];
        int64_t seq;
    } outcomes[LEDGER_OUTCOMES_MAX];
} ledger_reported_t;

/* Looks up the `shared` row share_id and the `outcome` rows that refer to it. */
ACC_NODISCARD acc_rc_t ledger_find_reported(ledger_t *self,
                                            const uint8_t share_id[ACC_LOGROW_SHARE_BYTES],
                                            ledger_reported_t *out, acc_err_t *err);
void ledger_reported_clear(ledger_reported_t *r);

/* One agency involved with a child, as a lookup discloses it. Strings are valid
 * only during the callback. */
typedef struct {
    const char *agency;
    const char *record_types; /* comma-separated, sorted */
    const char *first_day;    /* YYYY-MM-DD, UTC */
    const char *last_day;
    int64_t open_referrals;
} ledger_involved_t;
typedef void ledger_involved_fn(void *ctx, const ledger_involved_t *inv);

/* A lookup of who is involved with a child: every agency other than asker that
 * shared, or was sent, a record about the child with subject tag tag since
 * window ago (a PostgreSQL interval such as "24 months"), earliest first: its
 * record types, first and last day, and its open referrals (shares from or to
 * it under one of outcome_rules not yet declined or closed). */
typedef struct {
    const uint8_t *tag; /* ACC_LOGROW_TAG_BYTES */
    const char *window;
    const char *asker;
    const char *const *outcome_rules;
    size_t rule_count;
    ledger_involved_fn *fn; /* called for each agency */
    void *ctx;
    char window_from[11]; /* out: the first day the answer covers, YYYY-MM-DD */
} ledger_lookup_t;

/* Answers q from the log's metadata alone: no payload is read. */
ACC_NODISCARD acc_rc_t ledger_involvement(ledger_t *self, ledger_lookup_t *q, acc_err_t *err);

/* The seq of the last row staged (the head when nothing is staged or in flight). */
int64_t ledger_staged_head(const ledger_t *self);

/* True while accord_outbox (written before schema 0008) still holds deliveries;
 * their acknowledgements must then be staged with ledger_stage_delivered. */
bool ledger_has_legacy_outbox(const ledger_t *self);

/* Stages the removal of a share from the pre-0008 outbox (it was acknowledged). */
void ledger_stage_delivered(ledger_t *self, const uint8_t share_id[ACC_LOGROW_SHARE_BYTES]);

/* A recipient's cursor for one record type: every share to it of that type at or
 * below acked_to is acknowledged, and so are those in above (ascending). */
typedef struct {
    const char *agency;
    const char *record_type;
    int64_t acked_to;
    const int64_t *above;
    size_t above_count;
} ledger_cursor_t;

typedef void ledger_cursor_fn(void *ctx, const ledger_cursor_t *cursor);

/* Calls fn for every cursor the database holds. */
ACC_NODISCARD acc_rc_t ledger_load_cursors(ledger_t *self, ledger_cursor_fn *fn, void *ctx,
                                           acc_err_t *err);

/* Stages cursor as the agency's state for its record type, in the same
 * transaction as the staged rows. */
void ledger_stage_cursor(ledger_t *self, const ledger_cursor_t *cursor);

/* Erases the broker's copy of every epoch key whose rows all lie below
 * first_pending_seq (no share of it is unacknowledged), except the current
 * epoch's. Auditors' copies stay. */
ACC_NODISCARD acc_rc_t ledger_erase_done_epochs(ledger_t *self, int64_t first_pending_seq,
                                                acc_err_t *err);

/* Epoch keys the broker holds (the current one included). */
size_t ledger_kept_epochs(const ledger_t *self);

/* Notes that agency from had record_id (content hash) accepted in this batch: the
 * hash goes into the publish's first row (row.content_hash), and a repeat in the
 * same batch is recognised. */
void ledger_note_publish(ledger_t *self, const char *from, const char *record_id,
                         const uint8_t hash[ACC_LOGROW_HASH_BYTES]);

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

/* Whether a publish may be staged without asking (ledger_presume_new): only when
 * the log's unique index holds every accepted record, that is, when no record
 * was accepted into the pre-0008 accord_publish table. */
bool ledger_may_presume_new(const ledger_t *self);

/* Takes count (from[i], record_ids[i]) as never accepted before without asking
 * (a trusted connection's, see peers.h): ledger_find_publish answers "not
 * found" for them unless this batch knows better. A repeat among them then fails
 * the commit on the log's unique index (SQLSTATE 23505). */
void ledger_presume_new(ledger_t *self, size_t count, const char *const *from,
                        const char *const *record_ids);

/* Looks up an accepted (from, record_id), staged or committed, into out.
 * ACC_ERR_DB when the database cannot answer (a lost connection is re-established
 * here when no rows are staged, so lookups do not wait for a commit to retry). */
ACC_NODISCARD acc_rc_t ledger_find_publish(ledger_t *self, const char *from, const char *record_id,
                                           ledger_publish_t *out, acc_err_t *err);

/* One row of an accepted publish's first result. */
typedef struct {
    bool withheld;
    const char *to_agency;
    const char *share_id; /* text UUID */
    const char *rule_ids; /* comma-separated */
    const char *reason;
    int64_t seq;
} ledger_result_row_t;

typedef void ledger_result_fn(void *ctx, const ledger_result_row_t *row);

/* The first result of an accepted (from, record_id), rebuilt from its log rows:
 * fn is called for each shared or withheld row, in log order. */
ACC_NODISCARD acc_rc_t ledger_first_result(ledger_t *self, const char *from, const char *record_id,
                                           ledger_result_fn *fn, void *ctx, acc_err_t *err);

/* The schema version recorded in the database (acc_migrate_current), read under
 * the query timeout. */
ACC_NODISCARD acc_rc_t ledger_schema_version(ledger_t *self, int *version, acc_err_t *err);

/* Called with every row as it is staged (metrics count it if the commit succeeds). */
typedef void ledger_observer_fn(void *ctx, const acc_logrow_t *row);
void ledger_set_observer(ledger_t *self, ledger_observer_fn *fn, void *ctx);

/* Rows staged since the last commit. */
size_t ledger_staged(const ledger_t *self);
/* Bytes those rows take in the binary COPY stream (and the cursors' SQL). */
size_t ledger_staged_bytes(const ledger_t *self);

/* Sends every staged row as one transaction and returns without waiting: rows
 * staged from now on chain from them and go in the next commit. Nothing staged:
 * nothing sent. ACC_ERR_DB when it could not even be sent (the staged rows are
 * dropped; the connection is re-established on the next call). */
ACC_NODISCARD acc_rc_t ledger_commit_start(ledger_t *self, acc_err_t *err);

typedef enum {
    LEDGER_IDLE,   /* no commit in flight */
    LEDGER_BUSY,   /* still in flight */
    LEDGER_DONE,   /* committed: the head moved to its last row */
    LEDGER_FAILED, /* nothing of it was written, and the rows staged since were
                    * dropped with it (they chained from it); err says why */
} ledger_flight_t;

/* Drives the commit in flight: without wait, only as far as PostgreSQL has
 * answered. */
ledger_flight_t ledger_commit_poll(ledger_t *self, bool wait, acc_err_t *err);

/* True while a commit is in flight. */
bool ledger_in_flight(const ledger_t *self);

/* The descriptor to poll for the commit in flight's answer; -1 when none. */
int ledger_commit_fd(const ledger_t *self);

/* ledger_commit_start and waiting for it, with no commit in flight before. On
 * failure nothing was written, the chain head is back where it was, the staged
 * rows are dropped, and ACC_ERR_DB says why. */
ACC_NODISCARD acc_rc_t ledger_commit(ledger_t *self, acc_err_t *err);

/* Between commits: re-establishes a lost writing connection (with backoff), so
 * an idle broker notices PostgreSQL is back. */
void ledger_tick(ledger_t *self);

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
