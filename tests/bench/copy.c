/* copy.c - bench-copy: the log-writing limit. Binary COPY of rows shaped like
 * accord's log rows into accord_log, about 1000 rows per transaction, in the
 * broker's mix (schema 0008): for each record a `shared` row (with its sealed
 * payload) per recipient, and for every batch of BATCH_RECORDS records one
 * `acknowledged` row per recipient listing its shares. The cursor upserts are
 * left out: they are not log rows. */
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "pgrows.h"

#define ROWS_PER_TXN  1000
#define BATCH_RECORDS 100 /* records per acknowledgement row: a window's worth */

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

/* One transaction: COPY of whole batches, at least ROWS_PER_TXN rows, then COMMIT
 * (one fsync). Returns the rows written, -1 on failure. */
static long long s_txn(PGconn *db, pgrows_t *r, pgrows_buf_t *b, int recipients)
{
    pgrows_begin(b);
    int64_t at_us = pgrows_now_us();
    long long rows = 0;
    while (rows < ROWS_PER_TXN) {
        for (int i = 0; i < BATCH_RECORDS; i++) {
            (void)pgrows_record(b, r, recipients, at_us);
        }
        rows += (long long)BATCH_RECORDS * recipients;
        rows += pgrows_acks(b, r, recipients, at_us);
    }
    pgrows_end(b);
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
    return s_exec(db, "COMMIT") == 0 ? rows : -1;
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
static long long s_copy_until(PGconn *db, pgrows_t *r, pgrows_buf_t *b, int recipients,
                              int64_t deadline_ns)
{
    long long rows = 0;
    while (bench_now_ns() < deadline_ns) {
        long long n = s_txn(db, r, b, recipients);
        if (n < 0) {
            return -1;
        }
        rows += n;
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
    int recipients = 2;
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
            recipients = atoi(optarg);
            break;
        default:
            return 2;
        }
    }
    if (conninfo == NULL || duration_s <= 0 || recipients < 1 ||
        recipients > PGROWS_RECIPIENTS_MAX) {
        (void)fprintf(stderr, "usage: bench-copy --db CONNINFO [--size BYTES] [--duration S] "
                              "[--warmup S] [--recipients R]\n");
        return 2;
    }
    PGconn *db = PQconnectdb(conninfo);
    if (PQstatus(db) != CONNECTION_OK) {
        (void)fprintf(stderr, "bench-copy: %s", PQerrorMessage(db));
        PQfinish(db);
        return 1;
    }
    pgrows_t r;
    pgrows_init(&r, size);
    pgrows_buf_t b = { 0 };
    int rc = 1;
    if (pgrows_insert_epoch(db) != 0) {
        goto out;
    }
    int pid = PQbackendPID(db);
    if (s_copy_until(db, &r, &b, recipients, bench_now_ns() + (int64_t)(warmup_s * 1e9)) < 0) {
        goto out;
    }
    double cpu0 = s_backend_cpu_s(pid);
    int64_t t0 = bench_now_ns();
    long long rows = s_copy_until(db, &r, &b, recipients, t0 + (int64_t)(duration_s * 1e9));
    double secs = (double)(bench_now_ns() - t0) / 1e9;
    double cpu1 = s_backend_cpu_s(pid);
    if (rows < 0) {
        goto out;
    }
    double rows_per_record = (double)recipients * (BATCH_RECORDS + 1) / BATCH_RECORDS;
    json_t *obj = json_pack("{s:s, s:s, s:I, s:I, s:i, s:f, s:f, s:f, s:f, s:n, s:n}", "scenario",
                            scenario, "transport", "copy", "size", (json_int_t)size, "rows_per_txn",
                            (json_int_t)ROWS_PER_TXN, "recipients", recipients, "rows_per_record",
                            rows_per_record, "seconds", secs, "pg_rows_per_s", (double)rows / secs,
                            "cpu_us_per_record",
                            cpu0 >= 0 && cpu1 >= 0 ? (cpu1 - cpu0) * 1e6 / (double)rows : -1.0,
                            "accepted_per_s", "delivered_per_s");
    char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6));
    (void)printf("%s\n", text);
    free(text);
    json_decref(obj);
    rc = 0;
out:
    free(b.data);
    pgrows_free(&r);
    PQfinish(db);
    return rc;
}
