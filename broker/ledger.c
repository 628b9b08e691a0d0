/* ledger.c - append-only, hash-chained, encrypted share log with group commit */
#include "ledger.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/clock.h"
#include "accord/keys.h"
#include "accord/log.h"
#include "accord/migrate.h"
#include "accord/yaml.h"
#include "copybuf.h"
#include "ledger_internal.h"
#include "pubset.h"

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define NONCE_PREFIX_BYTES 16
#define EPOCH_RETRY_MS     5000 /* a failed rotation is tried again after this */

static const char s_copy_sql[] =
    "COPY accord_log (seq, share_id, at, event, from_agency, to_agency, record_type, record_id,"
    " subject_tag, rule_ids, purpose, lawful_basis, consent, error_code, reason, agreement_hash,"
    " key_epoch, nonce, payload, signature, prev_hash, entry_hash, content_hash, acked_seqs,"
    " refers_to)"
    " FROM STDIN (FORMAT binary)";

/* An epoch key the broker holds: the current one, and older ones while they may
 * still have unacknowledged shares. */
typedef struct {
    int64_t epoch;
    uint8_t *key; /* sodium_malloc, ACC_LOGROW_KEY_BYTES */
} s_kept_t;

struct ledger_t {
    PGconn *conn;   /* writes: batches, epochs (and the head, the migrations) */
    PGconn *rconn;  /* reads: lookups, pending pages, auditors' queries, figures */
    bool rprepared; /* rconn holds the publish lookups, prepared (schema 0010) */
    int64_t rretry_at_ms;
    int64_t rbackoff_ms;
    /* the batch being committed, while the next is staged */
    copybuf_t flight_sql;  /* its transaction as one query */
    copybuf_t flight_rows; /* its COPY rows */
    int64_t flight_seq;    /* its last row */
    size_t flight_count;
    size_t flight_unsigned;
    uint64_t flight_gen;
    uint64_t gen; /* generation of the batch being staged, from 1 */
    char *conninfo;
    ledger_limits_t limits; /* its conninfo is the copy above */
    uint8_t *sign_secret;   /* sodium_malloc, 64 bytes */
    uint8_t *epoch_key;     /* sodium_malloc, 32 bytes; NULL before the first epoch */
    int64_t epoch;
    uint8_t nonce_prefix[NONCE_PREFIX_BYTES];
    uint64_t nonce_counter;
    int64_t head_seq; /* last committed row */
    uint8_t head_hash[ACC_LOGROW_HASH_BYTES];
    int64_t staged_seq; /* last staged row */
    uint8_t staged_hash[ACC_LOGROW_HASH_BYTES];
    size_t staged;
    ledger_observer_fn *observer;
    void *observer_ctx;
    copybuf_t log_rows;   /* the staged log rows, binary COPY */
    copybuf_t cursor_sql; /* statements saving the staged cursors */
    pubset_t publishes;   /* publishes accepted in this batch, and earlier ones it looked up */
    uint8_t *outbox_key;  /* sodium_malloc, 32 bytes: opens the pre-0008 outbox */
    uint8_t *keep_key;    /* sodium_malloc, 32 bytes: seals the broker's epoch keys */
    s_kept_t *kept;       /* epoch keys held, ascending */
    size_t kept_count;
    bool legacy_outbox;  /* accord_outbox still holds pre-0008 deliveries */
    bool legacy_publish; /* accord_publish holds pre-0008 first results */
    uint8_t (*delivered)[ACC_LOGROW_SHARE_BYTES]; /* outbox rows to delete at commit */
    size_t delivered_count;
    size_t delivered_cap;
    uint8_t *scratch; /* ciphertext of one payload */
    size_t scratch_cap;
    size_t staged_unsigned;    /* rows since the last checkpoint, staged ones included */
    size_t committed_unsigned; /* the same, committed rows only */
    uint64_t epoch_rows;       /* rows committed under the current epoch */
    int64_t epoch_started_ms;
    int64_t retry_at_ms;       /* no reconnect attempt before this */
    int64_t epoch_retry_at_ms; /* after a failed rotation, none before this */
    int64_t backoff_ms;
    char failed_sqlstate[6]; /* SQLSTATE of the last commit's failure; "" if none */
    hwm_t *mark;             /* borrowed: the high-water mark kept outside the database */
    bool mark_failing;       /* the last write of the mark failed (logged once) */
    int64_t epoch_floor;     /* new epochs are numbered above this */
    bool behind;             /* a reconnection found the database gone back: stop */
    acc_err_t flight_err;
    uint8_t flight_hash[ACC_LOGROW_HASH_BYTES];
    bool flight;
    bool flight_copied; /* its rows were sent */
    bool flight_error;
};

/* An epoch being started: nothing of it is used until it has committed. */
typedef struct {
    uint8_t *key; /* sodium_malloc, 32 bytes */
    uint8_t nonce_prefix[NONCE_PREFIX_BYTES];
    int64_t epoch;
} s_epoch_t;

static acc_rc_t s_write_mark(ledger_t *self, bool sync);

/* Wall-clock microseconds: a log row's time. */
static int64_t s_wall_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static acc_rc_t s_exec_on(PGconn *conn, const char *sql, const char *what, acc_err_t *err)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    acc_rc_t rc = ACC_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not %s: %s", what, PQerrorMessage(conn));
    }
    PQclear(res);
    return rc;
}

static acc_rc_t s_exec(ledger_t *self, const char *sql, const char *what, acc_err_t *err)
{
    return s_exec_on(self->conn, sql, what, err);
}

static acc_rc_t s_read_head(ledger_t *self, acc_err_t *err)
{
    PGresult *res =
        PQexecParams(self->conn, "SELECT seq, entry_hash FROM accord_log ORDER BY seq DESC LIMIT 1",
                     0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read the log's last row: %s",
                                  PQerrorMessage(self->conn));
        PQclear(res);
        return rc;
    }
    memset(self->head_hash, 0, sizeof(self->head_hash));
    self->head_seq = 0;
    if (PQntuples(res) == 1 && PQgetlength(res, 0, 1) == ACC_LOGROW_HASH_BYTES) {
        const uint8_t *be = (const uint8_t *)PQgetvalue(res, 0, 0);
        uint64_t seq = 0;
        for (size_t i = 0; i < 8; i++) {
            seq = seq << 8 | be[i];
        }
        self->head_seq = (int64_t)seq;
        memcpy(self->head_hash, PQgetvalue(res, 0, 1), ACC_LOGROW_HASH_BYTES);
    }
    PQclear(res);
    self->staged_seq = self->head_seq;
    memcpy(self->staged_hash, self->head_hash, sizeof(self->staged_hash));
    return ACC_OK;
}

/* ---- the epoch keys the broker keeps ---- */

/* A kept key is sealed bound to its epoch number: moved to another epoch's row,
 * it does not open. */
static void s_kept_ad(uint8_t ad[8], int64_t epoch)
{
    for (size_t i = 0; i < 8; i++) {
        ad[i] = (uint8_t)((uint64_t)epoch >> (56 - 8 * i));
    }
}

static const uint8_t *s_kept_key(const ledger_t *self, int64_t epoch)
{
    for (size_t i = 0; i < self->kept_count; i++) {
        if (self->kept[i].epoch == epoch) {
            return self->kept[i].key;
        }
    }
    return NULL;
}

static void s_kept_add(ledger_t *self, int64_t epoch, const uint8_t *key)
{
    if (s_kept_key(self, epoch) != NULL) {
        return;
    }
    self->kept = acc_xrealloc(self->kept, (self->kept_count + 1) * sizeof(*self->kept));
    s_kept_t *k = &self->kept[self->kept_count++];
    k->epoch = epoch;
    k->key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(k->key != NULL);
    memcpy(k->key, key, ACC_LOGROW_KEY_BYTES);
}

/* Wipes and forgets every kept key of an epoch below epoch, except current. */
static size_t s_kept_erase_below(ledger_t *self, int64_t epoch)
{
    size_t kept = 0;
    size_t erased = 0;
    for (size_t i = 0; i < self->kept_count; i++) {
        if (self->kept[i].epoch < epoch && self->kept[i].epoch != self->epoch) {
            sodium_free(self->kept[i].key); /* wipes, then frees */
            erased++;
            continue;
        }
        self->kept[kept++] = self->kept[i];
    }
    self->kept_count = kept;
    return erased;
}

static void s_kept_clear(ledger_t *self)
{
    for (size_t i = 0; i < self->kept_count; i++) {
        sodium_free(self->kept[i].key);
    }
    free(self->kept);
    self->kept = NULL;
    self->kept_count = 0;
}

size_t ledger_kept_epochs(const ledger_t *self)
{
    return self->kept_count;
}

static int64_t s_be64(const char *p)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++) {
        v = v << 8 | (uint8_t)p[i];
    }
    return (int64_t)v;
}

/* Opens row i (epoch, nonce, sealed key) of accord_epoch_broker into the keys kept. */
static bool s_open_kept_row(ledger_t *self, PGresult *res, int i)
{
    if (PQgetlength(res, i, 0) != 8 || PQgetlength(res, i, 1) != ACC_LOGROW_NONCE_BYTES ||
        PQgetlength(res, i, 2) != ACC_LOGROW_KEY_BYTES + ACC_LOGROW_MAC_BYTES) {
        return false;
    }
    int64_t epoch = s_be64(PQgetvalue(res, i, 0));
    uint8_t ad[8];
    s_kept_ad(ad, epoch);
    uint8_t *key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(key != NULL);
    bool ok = crypto_aead_xchacha20poly1305_ietf_decrypt(
                  key, NULL, NULL, (const uint8_t *)PQgetvalue(res, i, 2),
                  (unsigned long long)PQgetlength(res, i, 2), ad, sizeof(ad),
                  (const uint8_t *)PQgetvalue(res, i, 1), self->keep_key) == 0;
    if (ok) {
        s_kept_add(self, epoch, key);
    }
    sodium_free(key);
    return ok;
}

/* The epoch keys kept in the database, and whether the pre-0008 outbox still
 * holds deliveries. */
static acc_rc_t s_load_queue_state(ledger_t *self, acc_err_t *err)
{
    s_kept_clear(self);
    PGresult *res = PQexecParams(self->conn,
                                 "SELECT epoch, nonce, sealed_key FROM accord_epoch_broker "
                                 "ORDER BY epoch",
                                 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read the broker's epoch keys: %s",
                                  PQerrorMessage(self->conn));
        PQclear(res);
        return rc;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (!s_open_kept_row(self, res, i)) {
            acc_log_error("ledger",
                          "a kept epoch key does not open with this broker's key; shares of "
                          "that epoch cannot be delivered again");
        }
    }
    PQclear(res);
    /* Neither table is written since 0008, so what they hold now is all they will */
    res = PQexec(self->conn, "SELECT EXISTS (SELECT 1 FROM accord_outbox), "
                             "EXISTS (SELECT 1 FROM accord_publish)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read the pre-0008 tables: %s",
                                  PQerrorMessage(self->conn));
        PQclear(res);
        return rc;
    }
    self->legacy_outbox = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    self->legacy_publish = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    PQclear(res);
    return ACC_OK;
}

bool ledger_has_legacy_outbox(const ledger_t *self)
{
    return self->legacy_outbox;
}

static acc_rc_t s_migrate(ledger_t *self, acc_err_t *err)
{
    int applied = 0;
    acc_rc_t rc = acc_migrate_apply(self->conn, &applied, err);
    if (rc == ACC_OK && applied > 0) {
        acc_log_notice("ledger", "applied %d schema migration(s); schema version %d", applied,
                       acc_migrate_latest());
    }
    return rc;
}

/* Read-only (accordd --check): the session refuses every write, so nothing
 * later in the check can change the database, and a schema that needs a
 * migration is reported rather than migrated. */
static acc_rc_t s_check_schema(ledger_t *self, acc_err_t *err)
{
    acc_rc_t rc =
        s_exec(self, "SET default_transaction_read_only = on", "make the session read-only", err);
    int current = 0;
    if (rc == ACC_OK) {
        rc = acc_migrate_current(self->conn, &current, err);
    }
    if (rc == ACC_OK && current < acc_migrate_latest()) {
        rc = acc_err_set(err, ACC_ERR_DB,
                         "the database is at schema version %d, older than this accordd's "
                         "version %d: run `accord migrate` as the database owner (accordd "
                         "applies it itself when it starts with a role that may)",
                         current, acc_migrate_latest());
    }
    return rc;
}

/* What every session of the broker runs with, once connected. No statement holds
 * the loop longer than the statement timeout. And no statement is compiled to
 * machine code: the broker's questions each read a handful of rows through an
 * index, but some (the pending count /metrics shows, correlated per cursor) are
 * estimated far above jit_above_cost on a large log, and PostgreSQL then spent
 * 224 ms compiling a question that ran in 0.1 ms (EXPLAIN ANALYZE on a 1M-row
 * log), with the loop waiting every ten seconds. */
#define SESSION_SQL_MAX 96

static void s_session_sql(const ledger_t *self, char sql[SESSION_SQL_MAX])
{
    (void)snprintf(sql, SESSION_SQL_MAX, "SET statement_timeout = %lld; SET jit = off",
                   (long long)self->limits.statement_timeout_ms);
}

/* The operator's conninfo comes last, so a connect_timeout it names wins over
 * ours: without one, libpq would wait for an unanswering server for as long as
 * TCP does, with the loop (and every agency) waiting behind it. */
PGconn *ledger_connect(const ledger_limits_t *limits)
{
    char connect_timeout[24];
    (void)snprintf(connect_timeout, sizeof(connect_timeout), "%lld",
                   (long long)limits->connect_timeout_s);
    const char *const keywords[] = { "connect_timeout", "dbname", NULL };
    const char *const values[] = { connect_timeout, limits->conninfo, NULL };
    return PQconnectdbParams(keywords, values, 1);
}

static acc_rc_t s_connect(ledger_t *self, acc_err_t *err)
{
    if (self->conn != NULL) {
        PQfinish(self->conn);
    }
    self->conn = ledger_connect(&self->limits);
    if (PQstatus(self->conn) != CONNECTION_OK) {
        /* libpq's message may carry host names, never a password. */
        return acc_err_set(err, ACC_ERR_DB, "could not connect to PostgreSQL: %s",
                           PQerrorMessage(self->conn));
    }
    acc_rc_t rc = self->limits.read_only ? s_check_schema(self, err) : s_migrate(self, err);
    if (rc != ACC_OK) {
        return rc;
    }
    /* after the migrations, which may build an index over the whole log: from here
     * on no statement holds the loop longer than the timeout */
    char set[SESSION_SQL_MAX];
    s_session_sql(self, set);
    rc = s_exec(self, set, "set the session's limits", err);
    if (rc == ACC_OK && !self->limits.read_only) {
        rc = s_load_queue_state(self, err);
    }
    if (rc != ACC_OK) {
        return rc;
    }
    return s_read_head(self, err);
}

acc_rc_t ledger_open(ledger_t **out, const ledger_limits_t *limits, const uint8_t *sign_secret,
                     const uint8_t *outbox_key, const uint8_t *keep_key, acc_err_t *err)
{
    ledger_t *self = acc_xcalloc(1, sizeof(*self));
    self->conninfo = acc_xstrdup(limits->conninfo);
    self->limits = *limits;
    self->limits.conninfo = self->conninfo;
    self->sign_secret = sodium_malloc(crypto_sign_SECRETKEYBYTES);
    acc_assert(self->sign_secret != NULL);
    memcpy(self->sign_secret, sign_secret, crypto_sign_SECRETKEYBYTES);
    self->outbox_key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(self->outbox_key != NULL);
    memcpy(self->outbox_key, outbox_key, ACC_LOGROW_KEY_BYTES);
    self->keep_key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(self->keep_key != NULL);
    memcpy(self->keep_key, keep_key, ACC_LOGROW_KEY_BYTES);
    self->backoff_ms = BACKOFF_MIN_MS;
    self->rbackoff_ms = BACKOFF_MIN_MS;
    self->gen = 1;
    pubset_init(&self->publishes);
    acc_rc_t rc = s_connect(self, err);
    if (rc != ACC_OK) {
        ledger_destroy(&self);
        return rc;
    }
    *out = self;
    return ACC_OK;
}

void ledger_destroy(ledger_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    ledger_t *self = *self_p;
    if (self->conn != NULL) {
        PQfinish(self->conn);
    }
    if (self->rconn != NULL) {
        PQfinish(self->rconn);
    }
    copybuf_free(&self->flight_sql);
    copybuf_free(&self->flight_rows);
    sodium_free(self->sign_secret); /* wipes, then frees */
    sodium_free(self->epoch_key);
    sodium_free(self->outbox_key);
    sodium_free(self->keep_key);
    s_kept_clear(self);
    copybuf_free(&self->cursor_sql);
    pubset_free(&self->publishes);
    free(self->delivered);
    free(self->conninfo);
    copybuf_free(&self->log_rows);
    free(self->scratch);
    free(self);
    *self_p = NULL;
}

static acc_rc_t s_insert_seal(ledger_t *self, const acc_policy_t *policy, size_t auditor,
                              const s_epoch_t *next, acc_err_t *err)
{
    const uint8_t *box_key = acc_policy_auditor_box_key(policy, auditor);
    uint8_t sealed[crypto_box_SEALBYTES + ACC_LOGROW_KEY_BYTES];
    if (crypto_box_seal(sealed, next->key, ACC_LOGROW_KEY_BYTES, box_key) != 0) {
        return acc_err_set(err, ACC_ERR_CRYPTO, "could not seal the epoch key to auditor \"%s\"",
                           acc_policy_auditor_id(policy, auditor));
    }
    char epoch[32];
    (void)snprintf(epoch, sizeof(epoch), "%lld", (long long)next->epoch);
    const char *values[4] = { epoch, acc_policy_auditor_id(policy, auditor), (const char *)box_key,
                              (const char *)sealed };
    int lengths[4] = { 0, 0, 32, (int)sizeof(sealed) };
    int formats[4] = { 0, 0, 1, 1 };
    PGresult *res = PQexecParams(self->conn,
                                 "INSERT INTO accord_epoch_seal (epoch, auditor, box_key, "
                                 "sealed_key) VALUES ($1, $2, $3, $4)",
                                 4, NULL, values, lengths, formats, 0);
    acc_rc_t rc = ACC_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not store the sealed epoch key: %s",
                         PQerrorMessage(self->conn));
    }
    PQclear(res);
    return rc;
}

static acc_rc_t s_insert_epoch(ledger_t *self, s_epoch_t *next, acc_err_t *err)
{
    uint8_t sign_public[crypto_sign_PUBLICKEYBYTES];
    (void)crypto_sign_ed25519_sk_to_pk(sign_public, self->sign_secret);
    char floor[32];
    (void)snprintf(floor, sizeof(floor), "%lld", (long long)self->epoch_floor);
    const char *values[3] = { (const char *)sign_public, (const char *)next->nonce_prefix, floor };
    int lengths[3] = { (int)sizeof(sign_public), NONCE_PREFIX_BYTES, 0 };
    int formats[3] = { 1, 1, 0 };
    PGresult *res = PQexecParams(self->conn,
                                 "INSERT INTO accord_epoch (epoch, broker_key, nonce_prefix) "
                                 "SELECT greatest(coalesce(max(epoch), 0), $3::bigint) + 1, $1, $2 "
                                 "FROM accord_epoch RETURNING epoch",
                                 3, NULL, values, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not start a key epoch: %s",
                                  PQerrorMessage(self->conn));
        PQclear(res);
        return rc;
    }
    next->epoch = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return ACC_OK;
}

/* The broker's own copy of the key, for reading its shares back until they are
 * all acknowledged. */
static acc_rc_t s_insert_kept(ledger_t *self, const s_epoch_t *next, acc_err_t *err)
{
    uint8_t nonce[ACC_LOGROW_NONCE_BYTES];
    randombytes_buf(nonce, sizeof(nonce));
    uint8_t ad[8];
    s_kept_ad(ad, next->epoch);
    uint8_t sealed[ACC_LOGROW_KEY_BYTES + ACC_LOGROW_MAC_BYTES];
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt(sealed, NULL, next->key, ACC_LOGROW_KEY_BYTES,
                                                     ad, sizeof(ad), NULL, nonce, self->keep_key);
    char epoch[32];
    (void)snprintf(epoch, sizeof(epoch), "%lld", (long long)next->epoch);
    const char *values[3] = { epoch, (const char *)nonce, (const char *)sealed };
    int lengths[3] = { 0, (int)sizeof(nonce), (int)sizeof(sealed) };
    int formats[3] = { 0, 1, 1 };
    PGresult *res = PQexecParams(self->conn,
                                 "INSERT INTO accord_epoch_broker (epoch, nonce, sealed_key) "
                                 "VALUES ($1, $2, $3)",
                                 3, NULL, values, lengths, formats, 0);
    acc_rc_t rc = ACC_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not keep the epoch key: %s",
                         PQerrorMessage(self->conn));
    }
    PQclear(res);
    return rc;
}

/* The next epoch is committed before anything of the current one changes: if
 * any step fails, the current key, nonce prefix and counter stay in force. */
static acc_rc_t s_commit_epoch(ledger_t *self, const acc_policy_t *policy, s_epoch_t *next,
                               acc_err_t *err)
{
    acc_rc_t rc = s_exec(self, "BEGIN", "begin a key epoch", err);
    if (rc == ACC_OK) {
        rc = s_insert_epoch(self, next, err);
    }
    for (size_t i = 0; rc == ACC_OK && i < acc_policy_auditor_count(policy); i++) {
        rc = s_insert_seal(self, policy, i, next, err);
    }
    if (rc == ACC_OK) {
        rc = s_insert_kept(self, next, err);
    }
    if (rc == ACC_OK) {
        rc = s_exec(self, "COMMIT", "commit a key epoch", err);
    }
    if (rc != ACC_OK && ledger_is_up(self)) {
        acc_err_t ignored;
        (void)s_exec(self, "ROLLBACK", "roll back a key epoch", &ignored);
    }
    return rc;
}

acc_rc_t ledger_start_epoch(ledger_t *self, const acc_policy_t *policy, acc_err_t *err)
{
    if (self->flight) {
        return acc_err_set(err, ACC_ERR_DB, "a commit is in flight");
    }
    if (acc_policy_auditor_count(policy) == 0) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "the agreement names no auditor: log payloads could never be read");
    }
    s_epoch_t next = { .key = sodium_malloc(ACC_LOGROW_KEY_BYTES) };
    acc_assert(next.key != NULL);
    crypto_aead_xchacha20poly1305_ietf_keygen(next.key);
    randombytes_buf(next.nonce_prefix, sizeof(next.nonce_prefix));
    acc_rc_t rc = s_commit_epoch(self, policy, &next, err);
    if (rc != ACC_OK) {
        sodium_free(next.key); /* wipes, then frees */
        self->epoch_retry_at_ms = acc_now_ms() + EPOCH_RETRY_MS;
        return rc;
    }
    s_kept_add(self, next.epoch, next.key);
    sodium_free(self->epoch_key);
    self->epoch_key = next.key;
    self->epoch = next.epoch;
    memcpy(self->nonce_prefix, next.nonce_prefix, sizeof(self->nonce_prefix));
    self->nonce_counter = 0;
    self->epoch_rows = 0;
    self->epoch_started_ms = acc_now_ms();
    self->epoch_retry_at_ms = 0;
    acc_log_notice("ledger", "key epoch %lld started, sealed to %zu auditor(s)",
                   (long long)self->epoch, acc_policy_auditor_count(policy));
    (void)s_write_mark(self, false);
    return ACC_OK;
}

/* The mark follows every commit; it is synced when the batch ended with a signed
 * row (a checkpoint, the final one at shutdown, a restored row), so at most the
 * rows since the last checkpoint depend on the page cache. A mark that cannot be
 * written is an error for the operator, not a reason to stop sharing. */
/* The head as it stands, written to the mark. */
static acc_rc_t s_put_mark(ledger_t *self, bool sync, acc_err_t *err)
{
    hwm_mark_t m = { .seq = self->head_seq, .epoch = self->epoch };
    memcpy(m.hash, self->head_hash, sizeof(m.hash));
    return hwm_write(self->mark, &m, sync, err);
}

static acc_rc_t s_write_mark(ledger_t *self, bool sync)
{
    if (self->mark == NULL) {
        return ACC_OK;
    }
    acc_err_t err;
    acc_rc_t rc = s_put_mark(self, sync, &err);
    if (rc != ACC_OK && !self->mark_failing) {
        acc_log_error("ledger", "%s: a restore of the database could then go unnoticed", err.msg);
    } else if (rc == ACC_OK && self->mark_failing) {
        acc_log_notice("ledger", "high-water mark written again: seq=%lld",
                       (long long)self->head_seq);
    }
    self->mark_failing = rc != ACC_OK;
    return rc;
}

#define LOG_COLUMNS 25 /* s_copy_sql's */

static void s_encode_row(copybuf_t *b, const acc_logrow_t *row, const uint8_t *prev_hash,
                         const uint8_t *entry_hash)
{
    copybuf_row(b, LOG_COLUMNS);
    copybuf_int8(b, row->seq);
    copybuf_uuid(b, row->share_id);
    copybuf_timestamp(b, row->at_us);
    const char *texts[] = { row->event, row->from_agency, row->to_agency, row->record_type,
                            row->record_id };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        copybuf_text(b, texts[i]);
    }
    copybuf_bytea(b, row->subject_tag, ACC_LOGROW_TAG_BYTES);
    copybuf_text_array(b, row->rule_ids, row->rule_count);
    const char *more[] = { row->purpose, row->lawful_basis, row->consent, row->error_code,
                           row->reason };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        copybuf_text(b, more[i]);
    }
    copybuf_bytea(b, row->agreement_hash, ACC_POLICY_HASH_BYTES);
    copybuf_int8(b, row->key_epoch);
    copybuf_bytea(b, row->nonce, ACC_LOGROW_NONCE_BYTES);
    copybuf_bytea(b, row->payload, row->payload_len);
    copybuf_bytea(b, row->signature, ACC_LOGROW_SIG_BYTES);
    copybuf_bytea(b, prev_hash, ACC_LOGROW_HASH_BYTES);
    copybuf_bytea(b, entry_hash, ACC_LOGROW_HASH_BYTES);
    copybuf_bytea(b, row->content_hash, ACC_LOGROW_HASH_BYTES);
    copybuf_int8_array(b, row->acked_count > 0 ? row->acked_seqs : NULL, row->acked_count);
    if (row->refers_to != NULL) {
        copybuf_uuid(b, row->refers_to);
    } else {
        copybuf_null(b);
    }
}

/* ---- staging and commit ---- */

static void s_next_nonce(ledger_t *self, uint8_t nonce[ACC_LOGROW_NONCE_BYTES])
{
    memcpy(nonce, self->nonce_prefix, NONCE_PREFIX_BYTES);
    uint64_t n = ++self->nonce_counter;
    for (size_t i = 0; i < 8; i++) {
        nonce[NONCE_PREFIX_BYTES + i] = (uint8_t)(n >> (56 - 8 * i));
    }
}

void ledger_set_observer(ledger_t *self, ledger_observer_fn *fn, void *ctx)
{
    self->observer = fn;
    self->observer_ctx = ctx;
}

int64_t ledger_stage(ledger_t *self, acc_logrow_t *row, const uint8_t *plain, size_t plain_len)
{
    if (self->observer != NULL) {
        self->observer(self->observer_ctx, row);
    }
    acc_assert(self->epoch > 0);
    row->seq = self->staged_seq + 1;
    row->at_us = s_wall_us();
    row->key_epoch = self->epoch;
    uint8_t nonce[ACC_LOGROW_NONCE_BYTES];
    row->nonce = NULL;
    row->payload = NULL;
    row->payload_len = 0;
    if (plain != NULL) {
        size_t need = plain_len + ACC_LOGROW_MAC_BYTES;
        if (need > self->scratch_cap) {
            self->scratch = acc_xrealloc(self->scratch, need);
            self->scratch_cap = need;
        }
        s_next_nonce(self, nonce);
        row->nonce = nonce;
        acc_logrow_seal(self->scratch, need, plain, plain_len, row, self->epoch_key);
        row->payload = self->scratch;
        row->payload_len = need;
    }
    uint8_t entry[ACC_LOGROW_HASH_BYTES];
    acc_logrow_hash(entry, self->staged_hash, row);
    s_encode_row(&self->log_rows, row, self->staged_hash, entry);
    memcpy(self->staged_hash, entry, sizeof(entry));
    self->staged_seq = row->seq;
    self->staged++;
    self->staged_unsigned = row->signature != NULL ? 0 : self->staged_unsigned + 1;
    row->nonce = NULL; /* pointed at this frame's stack */
    row->payload = NULL;
    return row->seq;
}

size_t ledger_staged(const ledger_t *self)
{
    return self->staged;
}

size_t ledger_staged_bytes(const ledger_t *self)
{
    return self->log_rows.len + self->cursor_sql.len;
}

bool ledger_is_up(const ledger_t *self)
{
    return self->conn != NULL && PQstatus(self->conn) == CONNECTION_OK;
}

static void s_drop_staged(ledger_t *self)
{
    pubset_clear(&self->publishes);
    copybuf_reset(&self->cursor_sql);
    self->delivered_count = 0;
    self->staged_unsigned = self->committed_unsigned;
    self->staged = 0;
    copybuf_reset(&self->log_rows);
    self->staged_seq = self->head_seq;
    memcpy(self->staged_hash, self->head_hash, sizeof(self->staged_hash));
}

/* Appends the removal of the acknowledged shares from the outbox. The ids are
 * UUIDs the broker formatted itself, so they are written into the statement. */
static void s_append_delete(copybuf_t *sql, const ledger_t *self)
{
    static const char head[] = "DELETE FROM accord_outbox WHERE share_id = ANY('{";
    copybuf_raw(sql, head, sizeof(head) - 1);
    for (size_t i = 0; i < self->delivered_count; i++) {
        char uuid[37];
        acc_uuid_format(uuid, self->delivered[i]);
        if (i > 0) {
            copybuf_raw(sql, ",", 1);
        }
        copybuf_raw(sql, uuid, 36);
    }
    copybuf_raw(sql, "}'::uuid[]);", 12);
}

/* The batch's transaction as one query string, and the COPY rows it will ask for
 * in order. */
static size_t s_batch_sql(const ledger_t *self, copybuf_t *sql, const copybuf_t *copies[1])
{
    size_t n = 0;
    copybuf_raw(sql, "BEGIN;", 6);
    if (self->log_rows.len > 0) {
        copybuf_raw(sql, s_copy_sql, strlen(s_copy_sql));
        copybuf_raw(sql, ";", 1);
        copies[n++] = &self->log_rows;
    }
    if (self->delivered_count > 0) {
        s_append_delete(sql, self);
    }
    if (self->cursor_sql.len > 0) {
        copybuf_raw(sql, self->cursor_sql.data, self->cursor_sql.len);
    }
    copybuf_raw(sql, "COMMIT", 7); /* with its terminating NUL */
    return n;
}

/* After a reconnection the database must still hold the row this broker
 * committed last: one that went back in time (restored under a running broker)
 * would otherwise get the same seqs handed out again. The broker stops instead. */
static acc_rc_t s_check_not_behind(ledger_t *self, int64_t seq, const uint8_t *hash, acc_err_t *err)
{
    bool holds = seq == 0;
    acc_rc_t rc = seq == 0 ? ACC_OK : ledger_holds_row(self, seq, hash, &holds, err);
    if (rc != ACC_OK || holds) {
        return rc;
    }
    self->behind = true;
    PQfinish(self->conn);
    self->conn = NULL;
    acc_err_t found_behind;
    (void)acc_err_set(&found_behind, ACC_ERR_DB,
                      "the database went back in time while the broker ran: it no longer "
                      "holds the row this broker committed last (seq %lld; its log now ends at "
                      "seq %lld), so it was restored or lost data. The broker stops rather "
                      "than hand those seqs out again: start it again to see what to do",
                      (long long)seq, (long long)self->head_seq);
    acc_log_error("ledger", "%s", found_behind.msg); /* whichever caller met it, said here */
    return acc_err_set(err, ACC_ERR_DB, "%s", found_behind.msg);
}

/* After a lost connection the last COMMIT may or may not have landed: the head
 * is read back from the database rather than trusted from memory. */
static acc_rc_t s_reconnect(ledger_t *self, acc_err_t *err)
{
    if (self->behind) {
        return acc_err_set(err, ACC_ERR_DB, "the database went back in time; stopping");
    }
    int64_t now = acc_now_ms();
    int64_t last_seq = self->head_seq;
    uint8_t last_hash[ACC_LOGROW_HASH_BYTES];
    memcpy(last_hash, self->head_hash, sizeof(last_hash));
    if (now < self->retry_at_ms) {
        return acc_err_set(err, ACC_ERR_DB, "PostgreSQL is unavailable; next retry in %lld ms",
                           (long long)(self->retry_at_ms - now));
    }
    acc_rc_t rc = s_connect(self, err);
    if (rc != ACC_OK) {
        self->retry_at_ms = now + self->backoff_ms;
        self->backoff_ms =
            self->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff_ms * 2;
        return rc;
    }
    self->backoff_ms = BACKOFF_MIN_MS;
    rc = s_check_not_behind(self, last_seq, last_hash, err);
    if (rc != ACC_OK) {
        return rc;
    }
    acc_log_notice("ledger", "reconnected to PostgreSQL; log head seq=%lld",
                   (long long)self->head_seq);
    return ACC_OK;
}

bool ledger_is_behind(const ledger_t *self)
{
    return self->behind;
}

/* The connection reads go on, so that they never wait for a commit in flight on
 * the writing one; connected (with backoff) when needed. Under --check, the one
 * read-only connection. */
static PGconn *s_reader(ledger_t *self, acc_err_t *err)
{
    if (self->limits.read_only) {
        if (!ledger_is_up(self)) {
            (void)acc_err_set(err, ACC_ERR_DB, "PostgreSQL is unavailable");
            return NULL;
        }
        return self->conn;
    }
    if (self->rconn != NULL && PQstatus(self->rconn) == CONNECTION_OK) {
        return self->rconn;
    }
    int64_t now = acc_now_ms();
    if (now < self->rretry_at_ms) {
        (void)acc_err_set(err, ACC_ERR_DB, "PostgreSQL is unavailable; next retry in %lld ms",
                          (long long)(self->rretry_at_ms - now));
        return NULL;
    }
    if (self->rconn != NULL) {
        PQfinish(self->rconn);
    }
    self->rprepared = false;
    self->rconn = ledger_connect(&self->limits);
    char set[SESSION_SQL_MAX];
    s_session_sql(self, set);
    if (PQstatus(self->rconn) != CONNECTION_OK ||
        s_exec_on(self->rconn, set, "set the session's limits", err) != ACC_OK) {
        (void)acc_err_set(err, ACC_ERR_DB, "could not connect to PostgreSQL: %s",
                          PQerrorMessage(self->rconn));
        PQfinish(self->rconn);
        self->rconn = NULL;
        self->rretry_at_ms = now + self->rbackoff_ms;
        self->rbackoff_ms =
            self->rbackoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->rbackoff_ms * 2;
        return NULL;
    }
    self->rbackoff_ms = BACKOFF_MIN_MS;
    return self->rconn;
}

/* Between commits, with nothing staged, a lost writing connection is
 * re-established without disturbing the chain head. */
static acc_rc_t s_ensure_writer(ledger_t *self, acc_err_t *err)
{
    if (ledger_is_up(self)) {
        return ACC_OK;
    }
    if (self->staged > 0 || self->flight) {
        return acc_err_set(err, ACC_ERR_DB, "PostgreSQL is unavailable");
    }
    return s_reconnect(self, err);
}

void ledger_tick(ledger_t *self)
{
    acc_err_t ignored;
    if (!self->limits.read_only) {
        (void)s_ensure_writer(self, &ignored);
    }
}

bool ledger_failed_on_data(const ledger_t *self)
{
    return strncmp(self->failed_sqlstate, "22", 2) == 0 ||
           strncmp(self->failed_sqlstate, "23", 2) == 0;
}

/* ---- commits ----
 *
 * A batch is sent as one query (BEGIN; COPY ...; the cursors; COMMIT), and
 * PostgreSQL asks for the COPY's rows in turn. The broker stages the next batch
 * while one is in flight: its rows chain from the batch in flight, so if that
 * one fails, the next is dropped with it. */

acc_rc_t ledger_commit_start(ledger_t *self, acc_err_t *err)
{
    acc_assert(!self->flight);
    self->failed_sqlstate[0] = '\0';
    if (self->staged == 0) {
        return ACC_OK;
    }
    if (!ledger_is_up(self)) {
        s_drop_staged(self);
        return s_reconnect(self, err) == ACC_OK
                   ? acc_err_set(err, ACC_ERR_DB, "PostgreSQL connection was re-established; retry")
                   : ACC_ERR_DB;
    }
    const copybuf_t *copies[1] = { NULL };
    copybuf_reset(&self->flight_sql);
    (void)s_batch_sql(self, &self->flight_sql, copies);
    if (self->log_rows.len > 0) {
        copybuf_end(&self->log_rows);
    }
    copybuf_t rows = self->flight_rows;
    self->flight_rows = self->log_rows;
    self->log_rows = rows;
    copybuf_reset(&self->log_rows);
    self->flight_seq = self->staged_seq;
    memcpy(self->flight_hash, self->staged_hash, sizeof(self->flight_hash));
    self->flight_count = self->staged;
    self->flight_unsigned = self->staged_unsigned;
    self->flight_gen = self->gen++;
    self->staged = 0;
    copybuf_reset(&self->cursor_sql);
    self->delivered_count = 0;
    self->flight = true;
    self->flight_copied = false;
    self->flight_error = PQsendQuery(self->conn, self->flight_sql.data) != 1;
    if (self->flight_error) {
        (void)acc_err_set(&self->flight_err, ACC_ERR_DB, "could not send a log batch: %s",
                          PQerrorMessage(self->conn));
    }
    return ACC_OK;
}

/* The batch in flight failed on res: its SQLSTATE kept, and the error for the
 * broker's log. */
static void s_flight_failed(ledger_t *self, const PGresult *res)
{
    self->flight_error = true;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    (void)snprintf(self->failed_sqlstate, sizeof(self->failed_sqlstate), "%s",
                   state != NULL ? state : "");
    if (ledger_failed_on_data(self)) {
        /* names from the schema only: PostgreSQL's own text for a row it
         * refused may quote the row's values, a record id among them */
        const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        const char *column = PQresultErrorField(res, PG_DIAG_COLUMN_NAME);
        (void)acc_err_set(&self->flight_err, ACC_ERR_DB,
                          "could not write a log batch: PostgreSQL refused a row's data "
                          "(SQLSTATE %s%s%s%s%s)",
                          self->failed_sqlstate, constraint != NULL ? ", constraint " : "",
                          constraint != NULL ? constraint : "", column != NULL ? ", column " : "",
                          column != NULL ? column : "");
    } else {
        (void)acc_err_set(&self->flight_err, ACC_ERR_DB, "could not write a log batch: %s",
                          PQresultErrorMessage(res));
    }
}

/* One result of the batch in flight: the COPY's rows when PostgreSQL asks for
 * them, else the first failure is kept. */
static void s_flight_result(ledger_t *self, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COPY_IN) {
        /* no rows for a COPY the batch did not expect: ending it with an error
         * makes PostgreSQL abandon the transaction */
        int sent = self->flight_copied ? -1
                                       : PQputCopyData(self->conn, self->flight_rows.data,
                                                       (int)self->flight_rows.len);
        self->flight_copied = true;
        if (PQputCopyEnd(self->conn, sent == 1 ? NULL : "rows could not be sent") != 1 &&
            !self->flight_error) {
            self->flight_error = true;
            (void)acc_err_set(&self->flight_err, ACC_ERR_DB, "could not send rows: %s",
                              PQerrorMessage(self->conn));
        }
    } else if (st != PGRES_COMMAND_OK && !self->flight_error) {
        s_flight_failed(self, res);
    }
}

/* The batch in flight has ended: the head moves to it, or (failed) it and the
 * batch staged on top of it are dropped. */
static ledger_flight_t s_flight_end(ledger_t *self, acc_err_t *err)
{
    self->flight = false;
    copybuf_reset(&self->flight_rows);
    if (!self->flight_error) {
        self->head_seq = self->flight_seq;
        memcpy(self->head_hash, self->flight_hash, sizeof(self->head_hash));
        self->epoch_rows += self->flight_count;
        self->committed_unsigned = self->flight_unsigned;
        pubset_keep_staged_after(&self->publishes, self->flight_gen);
        (void)s_write_mark(self, self->committed_unsigned == 0);
        return LEDGER_DONE;
    }
    acc_err_t ignored;
    if (ledger_is_up(self)) {
        (void)s_exec(self, "ROLLBACK", "roll back a log batch", &ignored);
    }
    s_drop_staged(self);
    *err = self->flight_err;
    return LEDGER_FAILED;
}

ledger_flight_t ledger_commit_poll(ledger_t *self, bool wait, acc_err_t *err)
{
    if (!self->flight) {
        return LEDGER_IDLE;
    }
    while (!self->flight_error || ledger_is_up(self)) {
        if (!wait && PQconsumeInput(self->conn) == 0) {
            wait = true; /* the connection broke: what is left comes at once */
        }
        if (!wait && PQisBusy(self->conn)) {
            return LEDGER_BUSY;
        }
        PGresult *res = PQgetResult(self->conn);
        if (res == NULL) {
            break;
        }
        s_flight_result(self, res);
        PQclear(res);
    }
    return s_flight_end(self, err);
}

bool ledger_in_flight(const ledger_t *self)
{
    return self->flight;
}

int ledger_commit_fd(const ledger_t *self)
{
    return self->flight && self->conn != NULL ? PQsocket(self->conn) : -1;
}

acc_rc_t ledger_commit(ledger_t *self, acc_err_t *err)
{
    acc_assert(!self->flight);
    acc_rc_t rc = ledger_commit_start(self, err);
    if (rc != ACC_OK) {
        return rc;
    }
    return ledger_commit_poll(self, true, err) == LEDGER_FAILED ? ACC_ERR_DB : ACC_OK;
}

int64_t ledger_checkpoint(ledger_t *self, const uint8_t *agreement_hash)
{
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "checkpoint";
    row.from_agency = LEDGER_BROKER_ID;
    row.agreement_hash = agreement_hash;
    uint8_t message[ACC_LOGROW_CHECKPOINT_BYTES];
    acc_logrow_checkpoint_message(message, self->staged_seq + 1, self->staged_hash);
    uint8_t signature[ACC_LOGROW_SIG_BYTES];
    (void)crypto_sign_detached(signature, NULL, message, sizeof(message), self->sign_secret);
    row.signature = signature;
    return ledger_stage(self, &row, NULL, 0);
}

size_t ledger_unsigned_rows(const ledger_t *self)
{
    return self->staged_unsigned;
}

bool ledger_is_epoch_due(const ledger_t *self, uint64_t max_rows, int64_t max_seconds)
{
    int64_t now = acc_now_ms();
    if (now < self->epoch_retry_at_ms) {
        return false;
    }
    return self->epoch_rows >= max_rows || now - self->epoch_started_ms >= max_seconds * 1000;
}

/* ---- the outbox ---- */

/* Binds a sealed frame to its share and recipient: moved to another row, it fails. */
static void s_outbox_ad(uint8_t ad[ACC_LOGROW_HASH_BYTES], const uint8_t *share_id, const char *to)
{
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, NULL, 0, ACC_LOGROW_HASH_BYTES);
    (void)crypto_generichash_update(&st, share_id, ACC_LOGROW_SHARE_BYTES);
    (void)crypto_generichash_update(&st, (const uint8_t *)to, strlen(to));
    (void)crypto_generichash_final(&st, ad, ACC_LOGROW_HASH_BYTES);
}

void ledger_stage_delivered(ledger_t *self, const uint8_t share_id[ACC_LOGROW_SHARE_BYTES])
{
    if (self->delivered_count == self->delivered_cap) {
        self->delivered_cap = self->delivered_cap == 0 ? 64 : self->delivered_cap * 2;
        self->delivered =
            acc_xrealloc(self->delivered, self->delivered_cap * sizeof(*self->delivered));
    }
    memcpy(self->delivered[self->delivered_count++], share_id, ACC_LOGROW_SHARE_BYTES);
}

/* The columns a pending page reads, in order. */
enum {
    PENDING_SHARE_ID,
    PENDING_SEQ,
    PENDING_FROM,
    PENDING_TYPE,
    PENDING_RECORD_ID,
    PENDING_RULES,
    PENDING_PURPOSE,
    PENDING_BASIS,
    PENDING_AGREEMENT,
    PENDING_EPOCH,
    PENDING_NONCE,
    PENDING_PAYLOAD,
    PENDING_EVENT,
    PENDING_STREAM,
    PENDING_TOTAL,
    PENDING_OLD_NONCE, /* the pre-0008 outbox, while it holds deliveries */
    PENDING_OLD_FRAME,
};

static const char *s_text_or_null(PGresult *res, int i, int col)
{
    return PQgetisnull(res, i, col) ? NULL : PQgetvalue(res, i, col);
}

/* A pre-0008 delivery: its Deliver frame, sealed with the outbox key. */
static bool s_open_legacy(ledger_t *self, PGresult *res, int i, ledger_share_t *d,
                          const ledger_page_t *page)
{
    if (PQnfields(res) <= PENDING_OLD_FRAME || PQgetisnull(res, i, PENDING_OLD_FRAME) ||
        PQgetlength(res, i, PENDING_OLD_NONCE) != ACC_LOGROW_NONCE_BYTES ||
        PQgetlength(res, i, PENDING_OLD_FRAME) < ACC_LOGROW_MAC_BYTES) {
        return false;
    }
    uint8_t ad[ACC_LOGROW_HASH_BYTES];
    s_outbox_ad(ad, d->share_id, page->agency);
    size_t sealed_len = (size_t)PQgetlength(res, i, PENDING_OLD_FRAME);
    uint8_t *frame = acc_xmalloc(sealed_len);
    bool ok = crypto_aead_xchacha20poly1305_ietf_decrypt(
                  frame, NULL, NULL, (const uint8_t *)PQgetvalue(res, i, PENDING_OLD_FRAME),
                  sealed_len, ad, sizeof(ad),
                  (const uint8_t *)PQgetvalue(res, i, PENDING_OLD_NONCE), self->outbox_key) == 0;
    if (ok) {
        d->frame = frame;
        d->frame_len = sealed_len - ACC_LOGROW_MAC_BYTES;
        page->fn(page->ctx, d);
    }
    sodium_memzero(frame, sealed_len);
    free(frame);
    return ok;
}

/* The payload opened with its epoch's kept key, bound to its row. */
static bool s_open_share(ledger_t *self, PGresult *res, int i, ledger_share_t *d,
                         const ledger_page_t *page)
{
    int64_t epoch = s_be64(PQgetvalue(res, i, PENDING_EPOCH));
    const uint8_t *key = s_kept_key(self, epoch);
    size_t sealed_len = (size_t)PQgetlength(res, i, PENDING_PAYLOAD);
    if (key == NULL || PQgetlength(res, i, PENDING_NONCE) != ACC_LOGROW_NONCE_BYTES ||
        sealed_len < ACC_LOGROW_MAC_BYTES) {
        return false;
    }
    acc_logrow_t row = { .seq = d->seq,
                         .event = d->event,
                         .from_agency = d->from_agency,
                         .to_agency = page->agency,
                         .record_type = d->record_type,
                         .record_id = d->record_id,
                         .key_epoch = epoch,
                         .nonce = (const uint8_t *)PQgetvalue(res, i, PENDING_NONCE),
                         .payload = (const uint8_t *)PQgetvalue(res, i, PENDING_PAYLOAD),
                         .payload_len = sealed_len };
    memcpy(row.share_id, d->share_id, sizeof(row.share_id));
    size_t len = sealed_len - ACC_LOGROW_MAC_BYTES;
    uint8_t *plain = acc_xmalloc(len > 0 ? len : 1);
    acc_err_t err;
    bool ok = acc_logrow_open(plain, len, &row, key, &err) == ACC_OK;
    if (ok) {
        d->record = plain;
        d->record_len = len;
        page->fn(page->ctx, d);
    }
    sodium_memzero(plain, len);
    free(plain);
    return ok;
}

/* Opens row i of a pending page and hands it to fn; false if it does not open. */
static bool s_open_pending(ledger_t *self, PGresult *res, int i, const ledger_page_t *page)
{
    if (PQgetlength(res, i, PENDING_SHARE_ID) != ACC_LOGROW_SHARE_BYTES ||
        PQgetlength(res, i, PENDING_SEQ) != 8 || PQgetlength(res, i, PENDING_EPOCH) != 8 ||
        PQgetlength(res, i, PENDING_AGREEMENT) != ACC_POLICY_HASH_BYTES) {
        return false;
    }
    ledger_share_t d = {
        .seq = s_be64(PQgetvalue(res, i, PENDING_SEQ)),
        .from_agency = PQgetvalue(res, i, PENDING_FROM),
        .record_type = s_text_or_null(res, i, PENDING_TYPE),
        .event = PQgetvalue(res, i, PENDING_EVENT),
        .stream = PQgetvalue(res, i, PENDING_STREAM),
        .record_id = s_text_or_null(res, i, PENDING_RECORD_ID),
        .rule_ids = PQgetvalue(res, i, PENDING_RULES),
        .purpose = s_text_or_null(res, i, PENDING_PURPOSE),
        .lawful_basis = s_text_or_null(res, i, PENDING_BASIS),
        .agreement_hash = (const uint8_t *)PQgetvalue(res, i, PENDING_AGREEMENT),
    };
    memcpy(d.share_id, PQgetvalue(res, i, PENDING_SHARE_ID), ACC_LOGROW_SHARE_BYTES);
    if ((self->legacy_outbox && s_open_legacy(self, res, i, &d, page)) ||
        s_open_share(self, res, i, &d, page)) {
        return true;
    }
    page->fn(page->ctx, &d); /* neither record nor frame: the caller knows it is stuck */
    return false;
}

/* A page stops at max_bytes of payloads (always at least one row), so a backlog
 * of large records is never read into memory a whole page at a time. */
#define PENDING_SELECT                                                                          \
    "SELECT w.share_id, w.seq, w.from_agency, w.record_type, w.record_id, w.rules, w.purpose, " \
    "w.lawful_basis, w.agreement_hash, w.key_epoch, w.nonce, w.payload, w.event, w.stream, "    \
    "w.total%s FROM (SELECT l.*, sum(length(payload)) "                                         \
    "OVER (ORDER BY seq) - length(payload) AS before, count(*) OVER () AS total FROM (SELECT "  \
    "share_id, seq, from_agency, record_type, " LEDGER_STREAM_SQL " AS stream, record_id, "     \
    "array_to_string(rule_ids, ',') AS rules, purpose, lawful_basis, agreement_hash, "          \
    "key_epoch, nonce, payload, event FROM accord_log WHERE to_agency = $1 AND event IN "       \
    "('shared', 'outcome', 'notified') AND seq > $2 ORDER BY seq LIMIT $3) l) w%s "             \
    "WHERE w.before < $4 ORDER BY w.seq"

acc_rc_t ledger_pending(ledger_t *self, ledger_page_t *page, acc_err_t *err)
{
    page->count = 0;
    page->last_seq = page->after_seq;
    page->cut = false;
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    char after[32];
    char lim[32];
    char bytes[32];
    (void)snprintf(after, sizeof(after), "%lld", (long long)page->after_seq);
    (void)snprintf(lim, sizeof(lim), "%zu", page->limit);
    (void)snprintf(bytes, sizeof(bytes), "%zu", page->max_bytes);
    const char *values[4] = { page->agency, after, lim, bytes };
    char sql[1024];
    (void)snprintf(sql, sizeof(sql), PENDING_SELECT,
                   self->legacy_outbox ? ", o.nonce, o.frame" : "",
                   self->legacy_outbox ? " LEFT JOIN accord_outbox o USING (share_id)" : "");
    /* The page must come from the (to_agency, seq) index in order, stopping at
     * its limit. Without statistics for the log (never analysed yet: after a
     * logical restore, or a backlog that grew faster than autovacuum analyses)
     * the planner guesses a few thousand rows and reads every pending row to sort
     * them: with 1,000,000 pending that took 1.5 s a page, and a backlog drained
     * at 175 deliveries/s. Bitmap scans are off for this query alone: the
     * auditors' queries on this connection need them. */
    if (s_exec_on(conn, "SET enable_bitmapscan = off", "read pending deliveries", err) != ACC_OK) {
        return ACC_ERR_DB;
    }
    PGresult *res = PQexecParams(conn, sql, 4, NULL, values, NULL, NULL, 1);
    acc_err_t reset_err;
    acc_rc_t reset = s_exec_on(conn, "RESET enable_bitmapscan", "reset the planner", &reset_err);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read pending deliveries: %s",
                                  PQresultErrorMessage(res));
        PQclear(res);
        return rc;
    }
    if (reset != ACC_OK) {
        PQclear(res);
        return acc_err_set(err, ACC_ERR_DB, "%s", reset_err.msg);
    }
    int rows = PQntuples(res);
    page->cut = rows > 0 && PQgetlength(res, 0, PENDING_TOTAL) == 8 &&
                s_be64(PQgetvalue(res, 0, PENDING_TOTAL)) > (int64_t)rows;
    page->count = (size_t)rows;
    for (int i = 0; i < rows; i++) {
        if (PQgetlength(res, i, PENDING_SEQ) == 8) {
            page->last_seq = s_be64(PQgetvalue(res, i, PENDING_SEQ));
        }
        if (!s_open_pending(self, res, i, page)) {
            acc_log_error("ledger",
                          "a share to %s at seq %lld does not open (its epoch key is no longer "
                          "kept, or the row was altered); it is skipped",
                          page->agency, (long long)page->last_seq);
        }
    }
    PQclear(res);
    return ACC_OK;
}

acc_rc_t ledger_find_share(ledger_t *self, const uint8_t share_id[ACC_LOGROW_SHARE_BYTES],
                           const char *to_agency, ledger_share_ref_t *out, acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    acc_rc_t rc = ACC_OK;
    char uuid[37];
    acc_uuid_format(uuid, share_id);
    const char *values[2] = { uuid, to_agency };
    PGresult *res = PQexecParams(conn,
                                 "SELECT seq, from_agency, " LEDGER_STREAM_SQL
                                 ", coalesce(record_id, '') FROM accord_log WHERE share_id = "
                                 "$1::uuid AND event IN ('shared', 'outcome', 'notified') AND "
                                 "to_agency = $2",
                                 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not look up a share: %s", PQerrorMessage(conn));
    } else if (PQntuples(res) == 1) {
        out->found = true;
        out->seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        (void)snprintf(out->from_agency, sizeof(out->from_agency), "%s", PQgetvalue(res, 0, 1));
        (void)snprintf(out->record_type, sizeof(out->record_type), "%s", PQgetvalue(res, 0, 2));
        (void)snprintf(out->record_id, sizeof(out->record_id), "%s", PQgetvalue(res, 0, 3));
    }
    PQclear(res);
    return rc;
}

enum {
    REP_SEQ,
    REP_FROM,
    REP_TO,
    REP_TYPE,
    REP_RECORD,
    REP_TAG,
    REP_RULES,
    REP_PURPOSE,
    REP_BASIS,
    REP_OUTCOMES,
};

static char *s_dup_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : acc_xstrdup(PQgetvalue(res, row, col));
}

/* "status id seq,status id seq" as the query aggregates them. */
static void s_parse_outcomes(ledger_reported_t *out, const char *list)
{
    char *copy = acc_xstrdup(list);
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save);
         item != NULL && out->outcome_count < LEDGER_OUTCOMES_MAX;
         item = strtok_r(NULL, ",", &save)) {
        char *inner = NULL;
        const char *status = strtok_r(item, " ", &inner);
        const char *id = strtok_r(NULL, " ", &inner);
        const char *seq = strtok_r(NULL, " ", &inner);
        acc_err_t ignored;
        if (status != NULL && id != NULL && seq != NULL &&
            acc_uuid_parse(out->outcomes[out->outcome_count].id, id, &ignored) == ACC_OK) {
            (void)snprintf(out->outcomes[out->outcome_count].status,
                           sizeof(out->outcomes[0].status), "%s", status);
            out->outcomes[out->outcome_count++].seq = strtoll(seq, NULL, 10);
        }
    }
    free(copy);
}

acc_rc_t ledger_find_reported(ledger_t *self, const uint8_t share_id[ACC_LOGROW_SHARE_BYTES],
                              ledger_reported_t *out, acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    char uuid[37];
    acc_uuid_format(uuid, share_id);
    const char *values[1] = { uuid };
    PGresult *res = PQexecParams(
        conn,
        "SELECT s.seq, s.from_agency, s.to_agency, s.record_type, s.record_id, "
        "encode(s.subject_tag, 'hex'), array_to_string(s.rule_ids, chr(31)), s.purpose, "
        "s.lawful_basis, coalesce((SELECT string_agg(o.reason || ' ' || o.share_id::text || ' ' "
        "|| o.seq::text, ',' ORDER BY o.seq) FROM accord_log o WHERE o.refers_to = s.share_id "
        "AND o.event = 'outcome'), '') FROM accord_log s WHERE s.share_id = $1::uuid AND "
        "s.event = 'shared'",
        1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc =
            acc_err_set(err, ACC_ERR_DB, "could not look up a share: %s", PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    if (PQntuples(res) == 1 && !PQgetisnull(res, 0, REP_TO) && !PQgetisnull(res, 0, REP_TYPE)) {
        out->found = true;
        out->seq = strtoll(PQgetvalue(res, 0, REP_SEQ), NULL, 10);
        out->from_agency = acc_xstrdup(PQgetvalue(res, 0, REP_FROM));
        out->to_agency = acc_xstrdup(PQgetvalue(res, 0, REP_TO));
        out->record_type = acc_xstrdup(PQgetvalue(res, 0, REP_TYPE));
        out->record_id = s_dup_or_null(res, 0, REP_RECORD);
        out->purpose = s_dup_or_null(res, 0, REP_PURPOSE);
        out->lawful_basis = s_dup_or_null(res, 0, REP_BASIS);
        const char *tag = PQgetvalue(res, 0, REP_TAG);
        acc_err_t ignored;
        out->has_tag =
            strlen(tag) == (size_t)2 * ACC_LOGROW_TAG_BYTES &&
            acc_hex_decode(out->subject_tag, sizeof(out->subject_tag), tag, &ignored) == ACC_OK;
        out->rules = acc_xstrdup(PQgetvalue(res, 0, REP_RULES));
        char *save = NULL;
        for (char *id = strtok_r(out->rules, "\x1f", &save);
             id != NULL && out->rule_count < ACC_LOGROW_MAX_RULES;
             id = strtok_r(NULL, "\x1f", &save)) {
            out->rule_ids[out->rule_count++] = id;
        }
        s_parse_outcomes(out, PQgetvalue(res, 0, REP_OUTCOMES));
    }
    PQclear(res);
    return ACC_OK;
}

void ledger_reported_clear(ledger_reported_t *r)
{
    free(r->from_agency);
    free(r->to_agency);
    free(r->record_type);
    free(r->record_id);
    free(r->purpose);
    free(r->lawful_basis);
    free(r->rules);
    memset(r, 0, sizeof(*r));
}

char *ledger_text_array(const char *const *items, size_t count)
{
    copybuf_t b = { 0 };
    copybuf_raw(&b, "{", 1);
    for (size_t i = 0; i < count; i++) {
        copybuf_raw(&b, i > 0 ? ",\"" : "\"", i > 0 ? 2 : 1);
        for (const char *c = items[i]; *c != '\0';) {
            size_t plain = strcspn(c, "\"\\");
            copybuf_raw(&b, c, plain);
            c += plain;
            if (*c != '\0') {
                copybuf_raw(&b, "\\", 1);
                copybuf_raw(&b, c++, 1);
            }
        }
        copybuf_raw(&b, "\"", 1);
    }
    copybuf_raw(&b, "}", 2); /* and the terminating NUL */
    return b.data;
}

acc_rc_t ledger_involvement(ledger_t *self, ledger_lookup_t *q, acc_err_t *err)
{
    q->window_from[0] = '\0';
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    char *rules = ledger_text_array(q->outcome_rules, q->rule_count);
    const char *values[4] = { (const char *)q->tag, q->window, q->asker, rules };
    int lengths[4] = { ACC_LOGROW_TAG_BYTES, 0, 0, 0 };
    int formats[4] = { 1, 0, 0, 0 };
    PGresult *res = PQexecParams(
        conn,
        "WITH s AS (SELECT share_id, from_agency, to_agency, record_type, at, rule_ids "
        "FROM accord_log WHERE subject_tag = $1 AND event = 'shared' AND "
        "at >= now() - $2::interval)"
        ", o AS (SELECT share_id, CASE WHEN s.rule_ids && $4::text[] AND NOT EXISTS "
        "(SELECT 1 FROM accord_log r WHERE r.refers_to = s.share_id AND r.event = 'outcome' "
        "AND r.reason IN ('declined', 'closed')) THEN 1 ELSE 0 END AS open FROM s) "
        "SELECT agency, string_agg(DISTINCT record_type, ',' ORDER BY record_type), "
        "to_char(min(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "
        "to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), sum(open)::bigint, "
        "to_char((now() - $2::interval) AT TIME ZONE 'UTC', 'YYYY-MM-DD') "
        "FROM (SELECT s.from_agency AS agency, s.record_type, s.at, o.open FROM s JOIN o USING "
        "(share_id) UNION ALL SELECT s.to_agency, s.record_type, s.at, o.open FROM s JOIN o "
        "USING (share_id)) x WHERE agency <> $3 GROUP BY agency ORDER BY min(at), agency",
        4, NULL, values, lengths, formats, 0);
    free(rules);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read who is involved: %s",
                                  PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        ledger_involved_t inv = {
            .agency = PQgetvalue(res, i, 0),
            .record_types = PQgetvalue(res, i, 1),
            .first_day = PQgetvalue(res, i, 2),
            .last_day = PQgetvalue(res, i, 3),
            .open_referrals = strtoll(PQgetvalue(res, i, 4), NULL, 10),
        };
        if (i == 0) {
            (void)snprintf(q->window_from, sizeof(q->window_from), "%s", PQgetvalue(res, i, 5));
        }
        q->fn(q->ctx, &inv);
    }
    PQclear(res);
    if (q->window_from[0] == '\0') {
        res = PQexecParams(conn,
                           "SELECT to_char((now() - $1::interval) AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD')",
                           1, NULL, &q->window, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            (void)snprintf(q->window_from, sizeof(q->window_from), "%s", PQgetvalue(res, 0, 0));
        }
        PQclear(res);
    }
    return ACC_OK;
}

int64_t ledger_staged_head(const ledger_t *self)
{
    return self->staged_seq;
}

/* ---- cursors ---- */

/* An agency id or record type as an SQL literal. Both passed validation (letters,
 * digits and a few punctuation marks), and quotes are doubled all the same. */
static void s_literal(copybuf_t *b, const char *text)
{
    copybuf_raw(b, "'", 1);
    for (const char *c = text; *c != '\0'; c++) {
        copybuf_raw(b, c, 1);
        if (*c == '\'') {
            copybuf_raw(b, "'", 1);
        }
    }
    copybuf_raw(b, "'", 1);
}

static void s_int_literal(copybuf_t *b, int64_t v)
{
    char n[32];
    int len = snprintf(n, sizeof(n), "%lld", (long long)v);
    copybuf_raw(b, n, (size_t)len);
}

void ledger_stage_cursor(ledger_t *self, const ledger_cursor_t *cursor)
{
    copybuf_t *b = &self->cursor_sql;
    static const char head[] =
        "INSERT INTO accord_cursor (to_agency, record_type, acked_to, acked_above) VALUES (";
    copybuf_raw(b, head, sizeof(head) - 1);
    s_literal(b, cursor->agency);
    copybuf_raw(b, ",", 1);
    s_literal(b, cursor->record_type);
    copybuf_raw(b, ",", 1);
    s_int_literal(b, cursor->acked_to);
    copybuf_raw(b, ",'{", 3);
    for (size_t i = 0; i < cursor->above_count; i++) {
        if (i > 0) {
            copybuf_raw(b, ",", 1);
        }
        s_int_literal(b, cursor->above[i]);
    }
    static const char tail[] = "}') ON CONFLICT (to_agency, record_type) DO UPDATE SET "
                               "acked_to = EXCLUDED.acked_to, acked_above = EXCLUDED.acked_above;";
    copybuf_raw(b, tail, sizeof(tail) - 1);
}

/* Parses a bigint[] in text form ("{1,2,3}") into a new array. */
static int64_t *s_parse_int_array(const char *text, size_t *count)
{
    *count = 0;
    size_t cap = 1;
    for (const char *c = text; *c != '\0'; c++) {
        cap += *c == ',';
    }
    int64_t *items = acc_xcalloc(cap, sizeof(*items));
    const char *c = text[0] == '{' ? text + 1 : text;
    while (*c != '\0' && *c != '}' && *count < cap) {
        char *end = NULL;
        items[(*count)++] = strtoll(c, &end, 10);
        if (end == c) {
            break;
        }
        c = *end == ',' ? end + 1 : end;
    }
    return items;
}

acc_rc_t ledger_load_cursors(ledger_t *self, ledger_cursor_fn *fn, void *ctx, acc_err_t *err)
{
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    PGresult *res = PQexec(conn, "SELECT to_agency, record_type, acked_to, acked_above "
                                 "FROM accord_cursor");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read the delivery cursors: %s",
                                  PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        ledger_cursor_t c = { .agency = PQgetvalue(res, i, 0),
                              .record_type = PQgetvalue(res, i, 1),
                              .acked_to = strtoll(PQgetvalue(res, i, 2), NULL, 10) };
        int64_t *above = s_parse_int_array(PQgetvalue(res, i, 3), &c.above_count);
        c.above = above;
        fn(ctx, &c);
        free(above);
    }
    PQclear(res);
    return ACC_OK;
}

acc_rc_t ledger_erase_done_epochs(ledger_t *self, int64_t first_pending_seq, acc_err_t *err)
{
    if (self->flight || self->staged > 0) {
        return ACC_OK; /* between commits only */
    }
    acc_rc_t rc = s_ensure_writer(self, err);
    if (rc != ACC_OK) {
        return rc;
    }
    /* epochs only grow with seq: every row of an epoch below the one holding the
     * first possibly pending share lies below that share */
    char bound[32];
    char current[32];
    (void)snprintf(bound, sizeof(bound), "%lld", (long long)first_pending_seq);
    (void)snprintf(current, sizeof(current), "%lld", (long long)self->epoch);
    const char *values[2] = { bound, current };
    PGresult *res = PQexecParams(
        self->conn,
        "WITH b AS (SELECT coalesce((SELECT key_epoch FROM accord_log WHERE seq >= $1 AND "
        "key_epoch IS NOT NULL ORDER BY seq LIMIT 1), $2::bigint) AS epoch) "
        "DELETE FROM accord_epoch_broker k USING b WHERE k.epoch < b.epoch AND k.epoch <> $2 "
        "RETURNING b.epoch",
        2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not erase the keys of acknowledged epochs: %s",
                         PQerrorMessage(self->conn));
        PQclear(res);
        return rc;
    }
    if (PQntuples(res) > 0) {
        int64_t below = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        (void)s_kept_erase_below(self, below);
        acc_log_notice("ledger",
                       "erased the broker's copy of %d epoch key(s) below epoch %lld: every "
                       "share of them is acknowledged (auditors keep theirs)",
                       PQntuples(res), (long long)below);
    }
    PQclear(res);
    return ACC_OK;
}

/* ---- idempotent publish ---- */

void ledger_note_publish(ledger_t *self, const char *from, const char *record_id,
                         const uint8_t hash[ACC_LOGROW_HASH_BYTES])
{
    pubset_entry_t *e = pubset_put(&self->publishes, from, record_id);
    e->found = true;
    e->staged = true;
    memcpy(e->hash, hash, ACC_LOGROW_HASH_BYTES);
}

/* Was (agency, record_id) accepted before? Asked through the unique index of
 * schema 0010, for one record or for a batch's (two text arrays). The pre-0008
 * table is asked only when it holds anything: a probe less per record on every
 * log started since. On the reader connection the questions are prepared once
 * (their plan cannot go wrong: the index answers every column); the one-record
 * form then runs a generic plan, the array form is still planned for each batch
 * (its generic plan guesses ten keys). Text columns come back as their bytes in
 * binary format. */
enum { LOOKUP_ONE, LOOKUP_MANY };

static const char *const s_lookup_names[2] = { "accord_publish_one", "accord_publish_many" };

static const char *const s_lookup_sql[2][2] = {
    {
        "SELECT content_hash FROM accord_log WHERE from_agency = $1 AND record_id = $2 AND "
        "content_hash IS NOT NULL LIMIT 1",
        "SELECT coalesce((SELECT content_hash FROM accord_log WHERE from_agency = $1 AND "
        "record_id = $2 AND content_hash IS NOT NULL LIMIT 1), (SELECT content_hash FROM "
        "accord_publish WHERE from_agency = $1 AND record_id = $2))",
    },
    {
        "SELECT k.f, k.r, (SELECT l.content_hash FROM accord_log l WHERE l.from_agency = k.f "
        "AND l.record_id = k.r AND l.content_hash IS NOT NULL LIMIT 1) FROM unnest($1::text[], "
        "$2::text[]) AS k(f, r)",
        "SELECT k.f, k.r, coalesce((SELECT l.content_hash FROM accord_log l WHERE "
        "l.from_agency = k.f AND l.record_id = k.r AND l.content_hash IS NOT NULL LIMIT 1), "
        "(SELECT "
        "p.content_hash FROM accord_publish p WHERE p.from_agency = k.f AND p.record_id = "
        "k.r)) FROM unnest($1::text[], $2::text[]) AS k(f, r)",
    },
};

static PGresult *s_lookup(ledger_t *self, PGconn *conn, int which, const char *const values[2])
{
    const char *sql = s_lookup_sql[which][self->legacy_publish ? 1 : 0];
    if (conn != self->rconn) { /* read-only: the one connection, asked as it comes */
        return PQexecParams(conn, sql, 2, NULL, values, NULL, NULL, 1);
    }
    if (!self->rprepared) {
        bool ok = true;
        for (int i = 0; i < 2 && ok; i++) {
            PGresult *res = PQprepare(conn, s_lookup_names[i],
                                      s_lookup_sql[i][self->legacy_publish ? 1 : 0], 2, NULL);
            ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
        }
        if (!ok) { /* asked as it comes; prepared again from nothing next time */
            PQclear(PQexec(conn, "DEALLOCATE ALL"));
            return PQexecParams(conn, sql, 2, NULL, values, NULL, NULL, 1);
        }
        self->rprepared = true;
    }
    return PQexecPrepared(conn, s_lookup_names[which], 2, values, NULL, NULL, 1);
}

/* Marks every key looked up, then the ones PostgreSQL knows as found. */
static void s_note_prefetched(ledger_t *self, size_t count, const char *const *from,
                              const char *const *record_ids, PGresult *res)
{
    for (size_t i = 0; i < count; i++) {
        (void)pubset_put(&self->publishes, from[i], record_ids[i]);
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetlength(res, i, 2) != ACC_LOGROW_HASH_BYTES) {
            continue;
        }
        pubset_entry_t *e =
            pubset_find(&self->publishes, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        if (e != NULL && !e->staged) {
            e->found = true;
            memcpy(e->hash, PQgetvalue(res, i, 2), ACC_LOGROW_HASH_BYTES);
        }
    }
}

/* A pass holding one publish (every record, at a low rate) asks the one-record
 * question: its prepared plan is generic after a few runs, where the array form
 * is planned again at every run (its generic plan guesses ten keys). */
static acc_rc_t s_prefetch_one(ledger_t *self, PGconn *conn, const char *from,
                               const char *record_id, acc_err_t *err)
{
    const char *values[2] = { from, record_id };
    PGresult *res = s_lookup(self, conn, LOOKUP_ONE, values);
    acc_rc_t rc = ACC_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not look up an earlier publish: %s",
                         PQerrorMessage(conn));
    } else {
        pubset_entry_t *e = pubset_put(&self->publishes, from, record_id);
        if (!e->staged && PQntuples(res) == 1 && PQgetlength(res, 0, 0) == ACC_LOGROW_HASH_BYTES) {
            e->found = true;
            memcpy(e->hash, PQgetvalue(res, 0, 0), ACC_LOGROW_HASH_BYTES);
        }
    }
    PQclear(res);
    return rc;
}

acc_rc_t ledger_prefetch_publishes(ledger_t *self, size_t count, const char *const *from,
                                   const char *const *record_ids, acc_err_t *err)
{
    if (count == 0) {
        return ACC_OK;
    }
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    if (count == 1) {
        return s_prefetch_one(self, conn, from[0], record_ids[0], err);
    }
    acc_rc_t rc = ACC_OK;
    char *froms = ledger_text_array(from, count);
    char *ids = ledger_text_array(record_ids, count);
    const char *values[2] = { froms, ids };
    PGresult *res = s_lookup(self, conn, LOOKUP_MANY, values);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not look up earlier publishes: %s",
                         PQerrorMessage(conn));
    } else {
        s_note_prefetched(self, count, from, record_ids, res);
    }
    PQclear(res);
    free(froms);
    free(ids);
    return rc;
}

bool ledger_may_presume_new(const ledger_t *self)
{
    return !self->legacy_publish && !self->limits.read_only;
}

void ledger_presume_new(ledger_t *self, size_t count, const char *const *from,
                        const char *const *record_ids)
{
    acc_assert(count == 0 || ledger_may_presume_new(self));
    for (size_t i = 0; i < count; i++) {
        (void)pubset_put(&self->publishes, from[i], record_ids[i]);
    }
}

acc_rc_t ledger_find_publish(ledger_t *self, const char *from, const char *record_id,
                             ledger_publish_t *out, acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    const pubset_entry_t *e = pubset_find(&self->publishes, from, record_id);
    if (e != NULL) {
        out->found = e->found;
        out->staged = e->staged;
        memcpy(out->hash, e->hash, sizeof(out->hash));
        return ACC_OK;
    }
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    acc_rc_t rc = ACC_OK;
    const char *values[2] = { from, record_id };
    PGresult *res = s_lookup(self, conn, LOOKUP_ONE, values);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = acc_err_set(err, ACC_ERR_DB, "could not look up an earlier publish: %s",
                         PQerrorMessage(conn));
    } else if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) == ACC_LOGROW_HASH_BYTES) {
        memcpy(out->hash, PQgetvalue(res, 0, 0), ACC_LOGROW_HASH_BYTES);
        out->found = true;
    }
    PQclear(res);
    return rc;
}

/* Runs fn inside a read-only transaction whose statements are cancelled after
 * the query timeout: auditors' filters and the health figures must never hold
 * the loop for as long as the log's own writes may take. */
static acc_rc_t s_begin_bounded(const ledger_t *self, PGconn *conn, acc_err_t *err)
{
    char sql[96];
    (void)snprintf(sql, sizeof(sql), "BEGIN READ ONLY; SET LOCAL statement_timeout = %lld",
                   (long long)self->limits.query_timeout_ms);
    return s_exec_on(conn, sql, "begin a bounded read", err);
}

static void s_end_bounded(PGconn *conn)
{
    acc_err_t ignored;
    if (PQstatus(conn) == CONNECTION_OK) {
        (void)s_exec_on(conn, "ROLLBACK", "end a bounded read", &ignored); /* nothing written */
    }
}

PGresult *ledger_read(ledger_t *self, const char *sql, int n, const char *const *values,
                      acc_err_t *err)
{
    PGconn *conn = s_reader(self, err);
    if (conn == NULL || s_begin_bounded(self, conn, err) != ACC_OK) {
        return NULL;
    }
    PGresult *res = PQexecParams(conn, sql, n, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        (void)acc_err_set(err, ACC_ERR_DB, "could not read the log: %s", PQerrorMessage(conn));
        PQclear(res);
        res = NULL;
    }
    s_end_bounded(conn);
    return res;
}

acc_rc_t ledger_schema_version(ledger_t *self, int *version, acc_err_t *err)
{
    *version = 0;
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    acc_rc_t rc = s_begin_bounded(self, conn, err);
    if (rc != ACC_OK) {
        return rc;
    }
    rc = acc_migrate_current(conn, version, err);
    s_end_bounded(conn);
    return rc;
}

acc_rc_t ledger_first_result(ledger_t *self, const char *from, const char *record_id,
                             ledger_result_fn *fn, void *ctx, acc_err_t *err)
{
    PGconn *conn = s_reader(self, err);
    if (conn == NULL) {
        return ACC_ERR_DB;
    }
    const char *values[2] = { from, record_id };
    PGresult *res = PQexecParams(conn,
                                 "SELECT event, to_agency, share_id::text, "
                                 "array_to_string(rule_ids, ','), coalesce(reason, ''), seq "
                                 "FROM accord_log WHERE from_agency = $1 AND record_id = $2 AND "
                                 "event IN ('shared', 'withheld') ORDER BY seq",
                                 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read an earlier result: %s",
                                  PQerrorMessage(conn));
        PQclear(res);
        return rc;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        ledger_result_row_t row = { .withheld = strcmp(PQgetvalue(res, i, 0), "withheld") == 0,
                                    .to_agency = PQgetvalue(res, i, 1),
                                    .share_id = PQgetvalue(res, i, 2),
                                    .rule_ids = PQgetvalue(res, i, 3),
                                    .reason = PQgetvalue(res, i, 4),
                                    .seq = strtoll(PQgetvalue(res, i, 5), NULL, 10) };
        fn(ctx, &row);
    }
    PQclear(res);
    return ACC_OK;
}

/* ---- the high-water mark and restores ---- */

int64_t ledger_head(const ledger_t *self, uint8_t hash[ACC_LOGROW_HASH_BYTES])
{
    memcpy(hash, self->head_hash, ACC_LOGROW_HASH_BYTES);
    return self->head_seq;
}

int64_t ledger_epoch(const ledger_t *self)
{
    return self->epoch;
}

acc_rc_t ledger_holds_row(ledger_t *self, int64_t seq, const uint8_t hash[ACC_LOGROW_HASH_BYTES],
                          bool *holds, acc_err_t *err)
{
    *holds = false;
    char seq_text[32];
    (void)snprintf(seq_text, sizeof(seq_text), "%lld", (long long)seq);
    const char *values[1] = { seq_text };
    PGresult *res = PQexecParams(self->conn, "SELECT entry_hash FROM accord_log WHERE seq = $1", 1,
                                 NULL, values, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        acc_rc_t rc = acc_err_set(err, ACC_ERR_DB, "could not read log row %lld: %s",
                                  (long long)seq, PQerrorMessage(self->conn));
        PQclear(res);
        return rc;
    }
    *holds = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == ACC_LOGROW_HASH_BYTES &&
             sodium_memcmp(PQgetvalue(res, 0, 0), hash, ACC_LOGROW_HASH_BYTES) == 0;
    PQclear(res);
    return ACC_OK;
}

void ledger_set_epoch_floor(ledger_t *self, int64_t floor)
{
    self->epoch_floor = floor;
}

int64_t ledger_stage_restored(ledger_t *self, const acc_logrow_cut_t *cut,
                              const uint8_t *agreement_hash)
{
    acc_assert(self->staged == 0 && cut->lost_from == self->head_seq + 1 &&
               cut->lost_to >= cut->lost_from);
    char reason[ACC_LOGROW_CUT_TEXT_MAX];
    acc_logrow_cut_format(reason, sizeof(reason), cut);
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = ACC_LOGROW_EVENT_RESTORED;
    row.from_agency = LEDGER_BROKER_ID;
    row.reason = reason;
    row.agreement_hash = agreement_hash;
    uint8_t message[ACC_LOGROW_RESTORED_BYTES];
    acc_logrow_restored_message(message, cut->lost_to + 1, self->head_hash, cut);
    uint8_t signature[ACC_LOGROW_SIG_BYTES];
    (void)crypto_sign_detached(signature, NULL, message, sizeof(message), self->sign_secret);
    row.signature = signature;
    self->staged_seq = cut->lost_to; /* the seqs of the lost rows are never handed out again */
    return ledger_stage(self, &row, NULL, 0);
}

acc_rc_t ledger_keep_mark(ledger_t *self, hwm_t *mark, acc_err_t *err)
{
    self->mark = mark;
    return s_put_mark(self, true, err);
}
