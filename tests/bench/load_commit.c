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
 * How a commit is sent: pgcommit.h. Several connections (commit x4) each keep
 * their own cursor rows (record type bench-record-N), so they do not queue behind
 * each other's row locks; the broker has one writer. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "pgcommit.h"

typedef struct {
    uint64_t *items;
    size_t count;
    size_t cap;
} tokens_t;

typedef struct {
    pgcommit_t pg;
    tokens_t waiting;    /* records sent, for the next commit */
    tokens_t committing; /* records in the commit in flight */
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
    pgcommit_close(&c->pg);
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
    *out = c;
    if (pgcommit_open(&c->pg, opts->endpoint, index, opts->publishers, opts->recipients,
                      opts->size) != 0) {
        s_close(out);
        return -1;
    }
    return 0;
}

/* Sends the waiting records' rows as one transaction, if none is in flight. */
static int s_start(conn_t *c)
{
    if (c->pg.busy || c->waiting.count == 0) {
        return 0;
    }
    tokens_t t = c->committing;
    c->committing = c->waiting;
    c->waiting = t;
    c->waiting.count = 0;
    return pgcommit_start(&c->pg, c->committing.count);
}

/* A record sent waits for the next commit: the load generator sends all it may
 * (up to its window) before it polls, and the commit starts there, so a commit
 * holds every record sent while the last was in flight. (Started here, the first
 * record after a commit went alone and the rest waited for it: commits of 1 and
 * 99 records by turns, where accordd reads all that is waiting first.) */
static int s_pub_send(void *conn, uint64_t token, int64_t sent_ns)
{
    (void)sent_ns;
    conn_t *c = conn;
    s_push(&c->waiting, token);
    return 0;
}

/* Starts a commit of the records waiting, if none is in flight; answers the
 * records of a commit that finished and starts the next. */
static int s_pub_poll(void *conn, bench_pub_t *pub, int timeout_ms)
{
    conn_t *c = conn;
    if (s_start(c) != 0) {
        return -1;
    }
    struct pollfd pfd = { .fd = pgcommit_fd(&c->pg), .events = POLLIN };
    if (poll(&pfd, 1, timeout_ms) < 0 || (pfd.revents & POLLIN) == 0) {
        return 0; /* interrupted or nothing yet: the caller polls again */
    }
    int done = pgcommit_collect(&c->pg);
    if (done <= 0) {
        return done;
    }
    for (size_t i = 0; i < c->committing.count; i++) {
        bench_pub_result(pub, c->committing.items[i], true);
    }
    c->committing.count = 0;
    return s_start(c);
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
