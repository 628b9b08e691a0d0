/* load_commit.c - bench-load-commit: the floor under accord's latency and the
 * ceiling over its throughput, from the log alone. Each publisher is a PostgreSQL
 * connection that writes exactly the rows the broker writes (schema 0008): per
 * record, a `shared` row per recipient (the first with the record's content_hash);
 * per commit, one `acknowledged` row per recipient listing its shares in the
 * batch (acked_seqs) and one upsert of its accord_cursor row. It answers the
 * records once they are committed. Records arriving while a commit is in flight
 * go into the next one, as the broker batches them. There is no network hop, no
 * broker and no encryption: accord cannot be faster than this.
 *
 * A commit is one simple query, "BEGIN; COPY ...; INSERT ... ON CONFLICT ... (one
 * per recipient); COMMIT": the rows follow as soon as the server asks for them
 * (libpq sends COPY data only after the server's CopyInResponse, one loopback
 * exchange), then the upserts and the commit run without another message from
 * here. Several connections (commit x4) each keep their own cursor rows (record
 * type bench-record-N), so they do not queue behind each other's row locks; the
 * broker has one writer. */
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "pgrows.h"

#define SQL_MAX 4096

typedef struct {
    uint64_t *items;
    size_t count;
    size_t cap;
} tokens_t;

typedef struct {
    PGconn *db;
    pgrows_t rows;
    pgrows_buf_t buf;
    int recipients;
    char cursor_type[32];   /* record type of this connection's cursor rows */
    char record_prefix[16]; /* its record ids: accepted once each (schema 0010) */
    char sql[SQL_MAX];
    tokens_t waiting;    /* records sent, for the next commit */
    tokens_t committing; /* records in the commit in flight */
    bool busy;
    bool failed;
} conn_t;

static void s_push(tokens_t *t, uint64_t token)
{
    if (t->count == t->cap) {
        t->cap = t->cap == 0 ? 256 : t->cap * 2;
        t->items = realloc(t->items, t->cap * sizeof(*t->items));
        if (t->items == NULL) {
            abort();
        }
    }
    t->items[t->count++] = token;
}

static void s_close(void **conn)
{
    conn_t *c = *conn;
    PQfinish(c->db);
    pgrows_free(&c->rows);
    free(c->buf.data);
    free(c->waiting.items);
    free(c->committing.items);
    free(c);
    *conn = NULL;
}

static int s_pub_open(void **out, const bench_opts_t *opts, int index)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    c->recipients =
        opts->recipients < PGROWS_RECIPIENTS_MAX ? opts->recipients : PGROWS_RECIPIENTS_MAX;
    if (index == 0) {
        (void)snprintf(c->cursor_type, sizeof(c->cursor_type), "bench-record");
    } else {
        (void)snprintf(c->cursor_type, sizeof(c->cursor_type), "bench-record-%d", index);
    }
    pgrows_init(&c->rows, opts->size);
    /* publishers take turns in the sequence: no two rows collide on the log's
     * primary key, and its maximum still counts the rows written */
    c->rows.seq = index;
    c->rows.stride = opts->publishers;
    c->rows.rng += (uint64_t)index;
    (void)snprintf(c->record_prefix, sizeof(c->record_prefix), "b%d", index);
    c->rows.record_prefix = c->record_prefix;
    c->db = PQconnectdb(opts->endpoint);
    *out = c;
    if (PQstatus(c->db) != CONNECTION_OK) {
        (void)fprintf(stderr, "bench: could not connect to PostgreSQL: %s", PQerrorMessage(c->db));
        s_close(out);
        return -1;
    }
    if (pgrows_insert_epoch(c->db) != 0) {
        s_close(out);
        return -1;
    }
    return 0;
}

/* Sends the waiting records' rows as one transaction, if none is in flight. */
static int s_start(conn_t *c)
{
    if (c->busy || c->waiting.count == 0) {
        return 0;
    }
    tokens_t t = c->committing;
    c->committing = c->waiting;
    c->waiting = t;
    c->waiting.count = 0;
    pgrows_begin(&c->buf);
    int64_t at_us = pgrows_now_us();
    for (size_t i = 0; i < c->committing.count; i++) {
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

static int s_pub_send(void *conn, uint64_t token, int64_t sent_ns)
{
    (void)sent_ns;
    conn_t *c = conn;
    s_push(&c->waiting, token);
    return s_start(c);
}

/* Takes every result the server has sent; answers the records of a commit that
 * finished and starts the next. */
static int s_collect(conn_t *c, bench_pub_t *pub)
{
    while (c->busy && PQisBusy(c->db) == 0) {
        PGresult *res = PQgetResult(c->db);
        if (res == NULL) {
            if (c->failed) {
                return -1;
            }
            for (size_t i = 0; i < c->committing.count; i++) {
                bench_pub_result(pub, c->committing.items[i], true);
            }
            c->committing.count = 0;
            c->busy = false;
            if (s_start(c) != 0) {
                return -1;
            }
            continue;
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

static int s_pub_poll(void *conn, bench_pub_t *pub, int timeout_ms)
{
    conn_t *c = conn;
    struct pollfd pfd = { .fd = c->busy ? PQsocket(c->db) : -1, .events = POLLIN };
    if (poll(&pfd, 1, timeout_ms) < 0) {
        return 0; /* interrupted: the caller polls again */
    }
    if (c->busy && (pfd.revents & POLLIN) != 0 && PQconsumeInput(c->db) != 1) {
        (void)fprintf(stderr, "bench: lost PostgreSQL: %s", PQerrorMessage(c->db));
        return -1;
    }
    return s_collect(c, pub);
}

int main(int argc, char **argv)
{
    static const bench_transport_t commit = { .name = "commit",
                                              .pub_open = s_pub_open,
                                              .pub_send = s_pub_send,
                                              .pub_poll = s_pub_poll,
                                              .pub_close = s_close };
    return bench_main(argc, argv, &commit);
}
