/* pgcommit.c - accord's log rows committed as the broker commits them (pgcommit.h) */
#include "pgcommit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pgcommit_open(pgcommit_t *c, const char *conninfo, int index, int writers, int recipients,
                  size_t size)
{
    memset(c, 0, sizeof(*c));
    c->recipients = recipients < PGROWS_RECIPIENTS_MAX ? recipients : PGROWS_RECIPIENTS_MAX;
    if (index == 0) {
        (void)snprintf(c->cursor_type, sizeof(c->cursor_type), "bench-record");
    } else {
        (void)snprintf(c->cursor_type, sizeof(c->cursor_type), "bench-record-%d", index);
    }
    pgrows_init(&c->rows, size);
    /* writers take turns in the sequence: no two rows collide on the log's
     * primary key, and its maximum still counts the rows written */
    c->rows.seq = index;
    c->rows.stride = writers;
    c->rows.rng += (uint64_t)index;
    (void)snprintf(c->record_prefix, sizeof(c->record_prefix), "b%d", index);
    c->rows.record_prefix = c->record_prefix;
    c->db = PQconnectdb(conninfo);
    if (PQstatus(c->db) != CONNECTION_OK) {
        (void)fprintf(stderr, "bench: could not connect to PostgreSQL: %s", PQerrorMessage(c->db));
        return -1;
    }
    return pgrows_insert_epoch(c->db);
}

void pgcommit_close(pgcommit_t *c)
{
    PQfinish(c->db);
    pgrows_free(&c->rows);
    free(c->buf.data);
    c->db = NULL;
    c->buf.data = NULL;
}

int pgcommit_start(pgcommit_t *c, size_t records)
{
    pgrows_begin(&c->buf);
    int64_t at_us = pgrows_now_us();
    for (size_t i = 0; i < records; i++) {
        (void)pgrows_record(&c->buf, &c->rows, c->recipients, at_us);
    }
    (void)pgrows_acks(&c->buf, &c->rows, c->recipients, at_us);
    pgrows_end(&c->buf);
    size_t len = (size_t)snprintf(c->sql, sizeof(c->sql),
                                  "BEGIN;COPY accord_log FROM STDIN (FORMAT binary)");
    for (int r = 0; r < c->recipients; r++) {
        len += (size_t)snprintf(c->sql + len, sizeof(c->sql) - len, ";");
        pgrows_cursor_sql(c->sql + len, sizeof(c->sql) - len, r, c->cursor_type,
                          pgrows_acked_to(&c->rows, r));
        len += strlen(c->sql + len);
    }
    (void)snprintf(c->sql + len, sizeof(c->sql) - len, ";COMMIT");
    if (PQsendQuery(c->db, c->sql) != 1) {
        (void)fprintf(stderr, "bench: could not send a commit: %s", PQerrorMessage(c->db));
        return -1;
    }
    c->busy = true;
    c->failed = false;
    return 0;
}

int pgcommit_fd(const pgcommit_t *c)
{
    return c->busy ? PQsocket(c->db) : -1;
}

int pgcommit_collect(pgcommit_t *c)
{
    if (!c->busy) {
        return 0;
    }
    if (PQconsumeInput(c->db) != 1) {
        (void)fprintf(stderr, "bench: lost PostgreSQL: %s", PQerrorMessage(c->db));
        return -1;
    }
    while (PQisBusy(c->db) == 0) {
        PGresult *res = PQgetResult(c->db);
        if (res == NULL) {
            c->busy = false;
            return c->failed ? -1 : 1;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN) {
            if (PQputCopyData(c->db, (const char *)c->buf.data, (int)c->buf.len) != 1 ||
                PQputCopyEnd(c->db, NULL) != 1) {
                (void)fprintf(stderr, "bench: could not send rows: %s", PQerrorMessage(c->db));
                c->failed = true;
            }
        } else if (st != PGRES_COMMAND_OK) {
            (void)fprintf(stderr, "bench: commit failed: %s", PQresultErrorMessage(res));
            c->failed = true;
        }
        PQclear(res);
    }
    return 0;
}
