/* copy.c - bench-copy: the log-writing limit. Binary COPY of rows shaped like
 * accord's share rows (the columns of deploy/migrations/0001_log.sql, a payload
 * the size of an encrypted record) into accord_log, 1000 rows per transaction */
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define ROWS_PER_TXN    1000
#define LOG_COLUMNS     22
#define HASH_BYTES      32
#define NONCE_BYTES     24
#define AEAD_TAG_BYTES  16
#define TEXT_OID        25
#define PG_EPOCH_UNIX_S 946684800LL /* 2000-01-01, PostgreSQL's timestamp origin */

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} buf_t;

typedef struct {
    uint64_t rng;
    int64_t seq;
    size_t payload_bytes;
    unsigned char *payload;
} rows_t;

static void s_put(buf_t *b, const void *bytes, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->data = realloc(b->data, b->cap);
        if (b->data == NULL) {
            abort();
        }
    }
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

static void s_put_be(buf_t *b, uint64_t v, size_t bytes)
{
    unsigned char out[8];
    for (size_t i = 0; i < bytes; i++) {
        out[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    }
    s_put(b, out, bytes);
}

static void s_field(buf_t *b, const void *bytes, size_t len)
{
    s_put_be(b, len, 4);
    s_put(b, bytes, len);
}

static void s_text(buf_t *b, const char *text)
{
    s_field(b, text, strlen(text));
}

static void s_null(buf_t *b)
{
    s_put_be(b, 0xffffffffu, 4);
}

static void s_int8(buf_t *b, int64_t v)
{
    s_put_be(b, 8, 4);
    s_put_be(b, (uint64_t)v, 8);
}

static uint64_t s_rand(rows_t *r)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

/* len random bytes, as one field. */
static void s_random_field(buf_t *b, rows_t *r, size_t len)
{
    unsigned char bytes[HASH_BYTES];
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = s_rand(r);
        memcpy(bytes + i, &v, len - i < 8 ? len - i : 8);
    }
    s_field(b, bytes, len);
}

static void s_rule_ids(buf_t *b)
{
    static const char rule[] = "bench-share";
    buf_t arr = { 0 };
    s_put_be(&arr, 1, 4); /* dimensions */
    s_put_be(&arr, 0, 4); /* no NULL elements */
    s_put_be(&arr, TEXT_OID, 4);
    s_put_be(&arr, 1, 4); /* elements */
    s_put_be(&arr, 1, 4); /* lower bound */
    s_text(&arr, rule);
    s_field(b, arr.data, arr.len);
    free(arr.data);
}

/* One row as accord writes a share: every NOT NULL column, a sealed payload. */
static void s_row(buf_t *b, rows_t *r, int64_t at_us)
{
    s_put_be(b, LOG_COLUMNS, 2);
    s_int8(b, ++r->seq);
    s_random_field(b, r, 16); /* share_id */
    s_int8(b, at_us);
    s_text(b, "shared");
    s_text(b, "bench-publisher");
    s_text(b, "bench-recipient-1");
    s_text(b, "bench-record");
    char record_id[32];
    (void)snprintf(record_id, sizeof(record_id), "b-%016llx", (unsigned long long)r->seq);
    s_text(b, record_id);
    s_random_field(b, r, HASH_BYTES); /* subject_tag */
    s_rule_ids(b);
    s_text(b, "Benchmark");
    s_text(b, "UK GDPR 6(1)(e)");
    s_text(b, "given");
    s_null(b);                        /* error_code */
    s_null(b);                        /* reason */
    s_random_field(b, r, HASH_BYTES); /* agreement_hash */
    s_int8(b, 1);                     /* key_epoch */
    s_random_field(b, r, NONCE_BYTES);
    s_field(b, r->payload, r->payload_bytes);
    s_null(b);                        /* signature */
    s_random_field(b, r, HASH_BYTES); /* prev_hash */
    s_random_field(b, r, HASH_BYTES); /* entry_hash */
}

static int s_exec(PGconn *db, const char *sql)
{
    PGresult *res = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_COPY_IN) {
        (void)fprintf(stderr, "bench-copy: %s: %s", sql, PQerrorMessage(db));
        return -1;
    }
    return 0;
}

static int64_t s_now_pg_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec - PG_EPOCH_UNIX_S) * 1000000 + ts.tv_nsec / 1000;
}

/* One transaction: COPY of ROWS_PER_TXN rows, then COMMIT (one fsync). */
static int s_txn(PGconn *db, rows_t *r, buf_t *b)
{
    static const unsigned char header[] = "PGCOPY\n\377\r\n";
    b->len = 0;
    s_put(b, header, 11);
    s_put_be(b, 0, 4); /* flags */
    s_put_be(b, 0, 4); /* header extension */
    int64_t at_us = s_now_pg_us();
    for (int i = 0; i < ROWS_PER_TXN; i++) {
        s_row(b, r, at_us);
    }
    s_put_be(b, 0xffff, 2); /* trailer */
    if (s_exec(db, "BEGIN") != 0 || s_exec(db, "COPY accord_log FROM STDIN (FORMAT binary)") != 0) {
        return -1;
    }
    if (PQputCopyData(db, (const char *)b->data, (int)b->len) != 1 || PQputCopyEnd(db, NULL) != 1) {
        (void)fprintf(stderr, "bench-copy: COPY: %s", PQerrorMessage(db));
        return -1;
    }
    PGresult *res = PQgetResult(db);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    while ((res = PQgetResult(db)) != NULL) {
        PQclear(res);
    }
    if (st != PGRES_COMMAND_OK) {
        (void)fprintf(stderr, "bench-copy: COPY: %s", PQerrorMessage(db));
        return -1;
    }
    return s_exec(db, "COMMIT");
}

static double s_backend_cpu_s(int pid)
{
    char path[64];
    (void)snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    char line[1024];
    char *ok = f != NULL ? fgets(line, sizeof(line), f) : NULL;
    if (f != NULL) {
        (void)fclose(f);
    }
    char *after_comm = ok != NULL ? strrchr(line, ')') : NULL;
    unsigned long utime = 0;
    unsigned long stime = 0;
    if (after_comm == NULL ||
        sscanf(after_comm + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
               &stime) != 2) {
        return -1;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Transactions until deadline_ns; returns rows committed, -1 on failure. */
static long long s_copy_until(PGconn *db, rows_t *r, buf_t *b, int64_t deadline_ns)
{
    long long rows = 0;
    while (bench_now_ns() < deadline_ns) {
        if (s_txn(db, r, b) != 0) {
            return -1;
        }
        rows += ROWS_PER_TXN;
    }
    return rows;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        { "scenario", required_argument, NULL, 'n' },
        { "db", required_argument, NULL, 'D' },
        { "size", required_argument, NULL, 'z' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'u' },
        { "recipients", required_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    const char *scenario = "copy";
    const char *conninfo = NULL;
    size_t size = 500;
    double duration_s = 10;
    double warmup_s = 2;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'n':
            scenario = optarg;
            break;
        case 'D':
            conninfo = optarg;
            break;
        case 'z':
            size = (size_t)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            duration_s = atof(optarg);
            break;
        case 'u':
            warmup_s = atof(optarg);
            break;
        case 'r':
            break; /* accepted for symmetry: a row is a row */
        default:
            return 2;
        }
    }
    if (conninfo == NULL || duration_s <= 0) {
        (void)fprintf(stderr, "usage: bench-copy --db CONNINFO [--size BYTES] [--duration S] "
                              "[--warmup S]\n");
        return 2;
    }
    PGconn *db = PQconnectdb(conninfo);
    if (PQstatus(db) != CONNECTION_OK) {
        (void)fprintf(stderr, "bench-copy: %s", PQerrorMessage(db));
        PQfinish(db);
        return 1;
    }
    rows_t r = { .rng = 0x9e3779b97f4a7c15ULL, .payload_bytes = size + AEAD_TAG_BYTES };
    r.payload = malloc(r.payload_bytes);
    buf_t b = { 0 };
    int rc = 1;
    if (r.payload == NULL ||
        s_exec(db, "INSERT INTO accord_epoch (epoch, broker_key, nonce_prefix) "
                   "VALUES (1, '\\x00', '\\x00')") != 0) {
        goto out;
    }
    memset(r.payload, 0xa5, r.payload_bytes);
    int pid = PQbackendPID(db);
    if (s_copy_until(db, &r, &b, bench_now_ns() + (int64_t)(warmup_s * 1e9)) < 0) {
        goto out;
    }
    double cpu0 = s_backend_cpu_s(pid);
    int64_t t0 = bench_now_ns();
    long long rows = s_copy_until(db, &r, &b, t0 + (int64_t)(duration_s * 1e9));
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    double cpu1 = s_backend_cpu_s(pid);
    if (rows < 0) {
        goto out;
    }
    json_t *obj = json_pack("{s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:n, s:n}", "scenario", scenario,
                            "transport", "copy", "size", (json_int_t)size, "rows_per_txn",
                            (json_int_t)ROWS_PER_TXN, "seconds", secs, "pg_rows_per_s",
                            (double)rows / secs, "cpu_us_per_record",
                            cpu0 >= 0 && cpu1 >= 0 ? (cpu1 - cpu0) * 1e6 / (double)rows : -1.0,
                            "accepted_per_s", "delivered_per_s");
    char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6));
    (void)printf("%s\n", text);
    free(text);
    json_decref(obj);
    rc = 0;
out:
    free(b.data);
    free(r.payload);
    PQfinish(db);
    return rc;
}
