/* prefill.c - bench-prefill: fills accord_log with N rows in the broker's mix
 * before the scenarios of `run --prefill N`, so they run on a log at scale.
 *
 * The rows are the broker's from schema 0008 (pgrows.h): batches of BATCH_RECORDS
 * records, each a `shared` row per recipient with its sealed payload (one record
 * in REFUSED_EVERY refused instead: one `refused` row), then one `acknowledged`
 * row per recipient listing that batch's shares. Times run from SPAN_DAYS ago up
 * to a minute ago, share ids are UUIDv7 of those times. Every prefilled share is
 * acknowledged and each recipient's accord_cursor row says so, so a broker
 * started on the log has nothing pending from it; the rows reference key epoch 1.
 * The hash chain is not computed (entry hashes are random): the broker only reads
 * the last row's seq and hash at start, and `verify` is not run on such a log.
 *
 * For audit pages: every record carries rule bench-share or one of bench-rule-1..9
 * (one record in ten each), and one record in every tag_every carries the subject
 * tag of --child under the broker's --subject-key, so a subject-access page finds
 * about CHILD_RECORDS records about one child spread over the whole log.
 *
 * Fast: accord_log's secondary indexes are dropped, the rows go in by binary
 * COPY, then the indexes are built again from their own definitions (a sort per
 * index instead of a random insert per row) and the table is vacuumed and
 * analysed, as a log that has been in use would be. */
#include <getopt.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/keys.h"
#include "bench.h"
#include "pgrows.h"

#define BATCH_RECORDS 100
#define REFUSED_EVERY 100
#define ROWS_PER_COPY 200000
#define SPAN_DAYS     365
#define CHILD_RECORDS 100
#define US_PER_DAY    (86400LL * 1000000LL)
#define INDEXES_MAX   32
#define SQL_MAX       1024
#define RULES         10

static int s_exec(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        (void)fprintf(stderr, "bench-prefill: %.80s: %s", sql, PQerrorMessage(db));
        return -1;
    }
    return 0;
}

static double s_since_s(int64_t t0)
{
    return (double)(bench_now_ns() - t0) / 1e9;
}

/* The definitions of accord_log's indexes other than its primary key. */
static int s_index_defs(PGconn *db, char ***names, char ***defs, int *count)
{
    PGresult *res = PQexec(db, "SELECT indexname, indexdef FROM pg_indexes "
                               "WHERE tablename = 'accord_log' AND indexname <> 'accord_log_pkey' "
                               "ORDER BY indexname");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) > INDEXES_MAX) {
        (void)fprintf(stderr, "bench-prefill: could not list the log's indexes: %s",
                      PQerrorMessage(db));
        PQclear(res);
        return -1;
    }
    *count = PQntuples(res);
    *names = calloc((size_t)*count + 1, sizeof(char *));
    *defs = calloc((size_t)*count + 1, sizeof(char *));
    if (*names == NULL || *defs == NULL) {
        abort();
    }
    for (int i = 0; i < *count; i++) {
        (*names)[i] = strdup(PQgetvalue(res, i, 0));
        (*defs)[i] = strdup(PQgetvalue(res, i, 1));
    }
    PQclear(res);
    return 0;
}

/* One COPY of about ROWS_PER_COPY rows, in whole batches, ending at or before
 * total; advances *at_us by step_us per batch. Returns rows written, -1 on failure. */
static long long s_copy(PGconn *db, pgrows_t *r, pgrows_buf_t *b, int recipients, long long left,
                        int64_t *at_us, int64_t step_us, int64_t end_us)
{
    long long batch_rows = (long long)BATCH_RECORDS * recipients + recipients;
    long long rows = 0;
    pgrows_begin(b);
    while (rows + batch_rows <= ROWS_PER_COPY && rows < left) {
        for (int i = 0; i < BATCH_RECORDS && rows < left; i++) {
            if ((r->records + 1) % REFUSED_EVERY == 0) {
                pgrows_refused(b, r, *at_us);
                rows++;
            } else {
                (void)pgrows_record(b, r, recipients, *at_us);
                rows += recipients;
            }
        }
        rows += pgrows_acks(b, r, recipients, *at_us);
        *at_us += step_us;
        *at_us = *at_us < end_us ? *at_us : end_us;
    }
    pgrows_end(b);
    PGresult *res = PQexec(db, "COPY accord_log FROM STDIN (FORMAT binary)");
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    if (st != PGRES_COPY_IN) {
        (void)fprintf(stderr, "bench-prefill: COPY: %s", PQerrorMessage(db));
        return -1;
    }
    if (PQputCopyData(db, (const char *)b->data, (int)b->len) != 1 || PQputCopyEnd(db, NULL) != 1) {
        (void)fprintf(stderr, "bench-prefill: COPY: %s", PQerrorMessage(db));
        return -1;
    }
    res = PQgetResult(db);
    st = PQresultStatus(res);
    PQclear(res);
    while ((res = PQgetResult(db)) != NULL) {
        PQclear(res);
    }
    if (st != PGRES_COMMAND_OK) {
        (void)fprintf(stderr, "bench-prefill: COPY: %s", PQerrorMessage(db));
        return -1;
    }
    return rows;
}

/* The subject tag the broker gives child's records: keyed BLAKE2b of "nhs:NUMBER". */
static int s_child_tag(uint8_t tag[PGROWS_TAG_BYTES], const char *key_path, const char *child)
{
    uint8_t key[ACC_BOX_SECRET_BYTES];
    acc_err_t err;
    if (acc_keys_read_box_secret(key, key_path, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench-prefill: %s\n", err.msg);
        return -1;
    }
    char input[32];
    int n = snprintf(input, sizeof(input), "nhs:%s", child);
    (void)crypto_generichash(tag, PGROWS_TAG_BYTES, (const uint8_t *)input, (unsigned long long)n,
                             key, sizeof(key));
    sodium_memzero(key, sizeof(key));
    return 0;
}

static int s_fill(PGconn *db, pgrows_t *r, long long total, int recipients)
{
    char **names = NULL;
    char **defs = NULL;
    int count = 0;
    int64_t t0 = bench_now_ns();
    char sql[SQL_MAX];
    int rc = s_index_defs(db, &names, &defs, &count);
    for (int i = 0; rc == 0 && i < count; i++) {
        (void)snprintf(sql, sizeof(sql), "DROP INDEX %s", names[i]);
        rc = s_exec(db, sql);
    }
    /* a batch: 99 records shared, 1 refused, an acknowledgement per recipient */
    long long batch_rows = (long long)(BATCH_RECORDS - BATCH_RECORDS / REFUSED_EVERY) * recipients +
                           BATCH_RECORDS / REFUSED_EVERY + recipients;
    int64_t now_us = pgrows_now_us();
    int64_t at_us = now_us - SPAN_DAYS * US_PER_DAY;
    int64_t step_us = (SPAN_DAYS * US_PER_DAY - 60000000LL) / (total / batch_rows + 1);
    pgrows_buf_t b = { 0 };
    long long rows = 0;
    while (rc == 0 && rows < total) {
        long long n =
            s_copy(db, r, &b, recipients, total - rows, &at_us, step_us, now_us - 60000000LL);
        rc = n < 0 ? -1 : 0;
        rows += n > 0 ? n : 0;
    }
    free(b.data);
    double copy_s = s_since_s(t0);
    int64_t t1 = bench_now_ns();
    for (int i = 0; rc == 0 && i < count; i++) {
        rc = s_exec(db, defs[i]);
    }
    double index_s = s_since_s(t1);
    for (int i = 0; rc == 0 && i < recipients; i++) {
        pgrows_cursor_sql(sql, sizeof(sql), i, "bench-record", pgrows_acked_to(r, i));
        rc = s_exec(db, sql);
    }
    int64_t t2 = bench_now_ns();
    if (rc == 0) {
        rc = s_exec(db, "VACUUM (ANALYZE) accord_log");
    }
    if (rc == 0) {
        (void)fprintf(stderr,
                      "bench-prefill: %lld rows (%lld records) in %.1f s: COPY %.1f s, %d "
                      "indexes %.1f s, vacuum %.1f s\n",
                      rows, (long long)r->records, s_since_s(t0), copy_s, count, index_s,
                      s_since_s(t2));
        (void)printf("{\"scenario\":\"prefill\",\"rows\":%lld,\"records\":%lld,\"seconds\":%.1f,"
                     "\"copy_s\":%.1f,\"index_s\":%.1f,\"vacuum_s\":%.1f}\n",
                     rows, (long long)r->records, s_since_s(t0), copy_s, index_s, s_since_s(t2));
    }
    for (int i = 0; i < count; i++) {
        free(names[i]);
        free(defs[i]);
    }
    free(names);
    free(defs);
    return rc;
}

static void s_usage(FILE *out)
{
    (void)fprintf(out,
                  "usage: bench-prefill --db CONNINFO --rows N [--recipients R] [--size BYTES]\n"
                  "                     [--subject-key FILE --child NHS_NUMBER]\n"
                  "Fills accord_log with N rows in the broker's mix (see prefill.c). Prints one\n"
                  "JSON line. Exit: 0 done, 1 failed, 2 usage.\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        { "db", required_argument, NULL, 'D' },
        { "rows", required_argument, NULL, 'n' },
        { "recipients", required_argument, NULL, 'r' },
        { "size", required_argument, NULL, 'z' },
        { "subject-key", required_argument, NULL, 'k' },
        { "child", required_argument, NULL, 'c' },
        { NULL, 0, NULL, 0 },
    };
    const char *conninfo = NULL;
    const char *key_path = NULL;
    const char *child = NULL;
    long long total = 0;
    int recipients = 2;
    size_t size = 500;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'D':
            conninfo = optarg;
            break;
        case 'n':
            total = atoll(optarg);
            break;
        case 'r':
            recipients = atoi(optarg);
            break;
        case 'z':
            size = (size_t)strtoul(optarg, NULL, 10);
            break;
        case 'k':
            key_path = optarg;
            break;
        case 'c':
            child = optarg;
            break;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (conninfo == NULL || total <= 0 || recipients < 1 || recipients > PGROWS_RECIPIENTS_MAX ||
        (key_path == NULL) != (child == NULL) || optind != argc) {
        s_usage(stderr);
        return 2;
    }
    if (sodium_init() < 0) {
        return 1;
    }
    pgrows_t r;
    pgrows_init(&r, size);
    r.record_prefix = "p";
    r.rules = RULES;
    uint8_t tag[PGROWS_TAG_BYTES];
    if (key_path != NULL) {
        if (s_child_tag(tag, key_path, child) != 0) {
            pgrows_free(&r);
            return 1;
        }
        r.tag = tag;
        r.tag_every = total / recipients / CHILD_RECORDS;
        r.tag_every = r.tag_every > 0 ? r.tag_every : 1;
    }
    PGconn *db = PQconnectdb(conninfo);
    int rc = PQstatus(db) == CONNECTION_OK ? 0 : -1;
    if (rc != 0) {
        (void)fprintf(stderr, "bench-prefill: %s", PQerrorMessage(db));
    }
    if (rc == 0) {
        rc = s_exec(db, "SET maintenance_work_mem = '512MB'");
    }
    if (rc == 0) {
        rc = s_exec(db, "SET synchronous_commit = off");
    }
    if (rc == 0) {
        rc = pgrows_insert_epoch(db);
    }
    if (rc == 0) {
        rc = s_fill(db, &r, total, recipients);
    }
    PQfinish(db);
    pgrows_free(&r);
    return rc == 0 ? 0 : 1;
}
