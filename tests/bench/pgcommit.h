/* pgcommit.h - one PostgreSQL connection committing accord's log rows the way the
 * broker does, one commit in flight at a time: for the references that write the
 * log without the broker (bench-load-commit, and bench-relay --commit).
 *
 * A commit is one simple query, "BEGIN; COPY ...; INSERT ... ON CONFLICT ... (one
 * per recipient); COMMIT": per record, a `shared` row per recipient (the first
 * with the record's content_hash); per commit, one `acknowledged` row per
 * recipient listing its shares in the batch (acked_seqs) and one upsert of its
 * accord_cursor row (see pgrows.h). The rows follow as soon as the server asks
 * for them (libpq sends COPY data only after the server's CopyInResponse, one
 * loopback exchange); the upserts and the commit run without another message. */
#ifndef ACCORD_BENCH_PGCOMMIT_H
#define ACCORD_BENCH_PGCOMMIT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "pgrows.h"

#define PGCOMMIT_SQL_MAX 4096

typedef struct {
    PGconn *db;
    pgrows_t rows;
    pgrows_buf_t buf;
    int recipients;
    char cursor_type[32];   /* record type of this connection's cursor rows */
    char record_prefix[16]; /* its record ids: accepted once each (schema 0010) */
    char sql[PGCOMMIT_SQL_MAX];
    bool busy;
    bool failed;
} pgcommit_t;

/* Connects to conninfo as writer index of writers (each keeps its own cursor rows
 * and takes every writers-th seq, so several write side by side); records of size
 * bytes to recipients. 0, or -1 with a message on stderr (pgcommit_close still
 * releases c). */
int pgcommit_open(pgcommit_t *c, const char *conninfo, int index, int writers, int recipients,
                  size_t size);
void pgcommit_close(pgcommit_t *c);

/* Sends records records' rows as one transaction. Only while none is in flight. */
int pgcommit_start(pgcommit_t *c, size_t records);

/* The connection's socket: readable when the commit in flight has news. */
int pgcommit_fd(const pgcommit_t *c);

/* Reads what the server has sent (call when pgcommit_fd is readable): 1 when the
 * commit in flight has committed, 0 while it has not, -1 when it failed or the
 * connection was lost (with a message on stderr). */
int pgcommit_collect(pgcommit_t *c);

#endif
