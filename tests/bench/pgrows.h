/* pgrows.h - rows shaped like accord's log rows (the columns of
 * deploy/migrations/0001_log.sql, a payload the size of a sealed record) in
 * PostgreSQL's binary COPY format, for the references that write the log without
 * the broker: bench-copy and bench-load-commit */
#ifndef ACCORD_BENCH_PGROWS_H
#define ACCORD_BENCH_PGROWS_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} pgrows_buf_t;

typedef struct {
    uint64_t rng;           /* xorshift state for ids, tags and hashes */
    int64_t seq;            /* the last row's sequence */
    int64_t stride;         /* between one row's sequence and the next */
    size_t payload_bytes;   /* a sealed record: the record and its AEAD tag */
    unsigned char *payload; /* owned */
} pgrows_t;

/* A generator for records of size bytes; pgrows_free releases it. */
void pgrows_init(pgrows_t *r, size_t size);
void pgrows_free(pgrows_t *r);

/* Starts a COPY stream in b (the binary header), forgetting what b held. */
void pgrows_begin(pgrows_buf_t *b);
/* Appends one row: a "shared" row carries the sealed payload, an "acknowledged"
 * row none, as the broker writes them. */
void pgrows_row(pgrows_buf_t *b, pgrows_t *r, const char *event, int64_t at_us);
/* Ends the stream (the binary trailer). */
void pgrows_end(pgrows_buf_t *b);

/* Now, in PostgreSQL's timestamp units: microseconds since 2000-01-01 UTC. */
int64_t pgrows_now_us(void);

/* The key epoch every row refers to, inserted unless there; 0, or -1 with a
 * message on stderr. */
int pgrows_insert_epoch(PGconn *db);

#endif
