/* pgrows.h - rows shaped like accord's log rows (the columns of accord_log up to
 * schema 0008, a payload the size of a sealed record) in PostgreSQL's binary COPY
 * format, for the references that write the log without the broker (bench-copy,
 * bench-load-commit) and for --prefill (bench-prefill).
 *
 * The rows are the ones the broker writes from schema 0008 on: per record, one
 * `shared` row per recipient with its sealed payload, the first carrying the
 * record's content_hash; per commit, one `acknowledged` row per recipient whose
 * acked_seqs lists that recipient's shared rows it acknowledges; a `refused` row
 * for a record refused. No outbox and no accord_publish rows. */
#ifndef ACCORD_BENCH_PGROWS_H
#define ACCORD_BENCH_PGROWS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGROWS_RECIPIENTS_MAX 8
#define PGROWS_TAG_BYTES      32

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} pgrows_buf_t;

/* The seqs of one recipient's shared rows not yet acknowledged. */
typedef struct {
    int64_t *seqs;
    size_t count;
    size_t cap;
} pgrows_seqs_t;

typedef struct {
    uint64_t rng;           /* xorshift state for ids, tags and hashes */
    int64_t seq;            /* the last row's sequence */
    int64_t stride;         /* between one row's sequence and the next */
    size_t payload_bytes;   /* a sealed record: the record and its AEAD tag */
    unsigned char *payload; /* owned */
    int64_t records;        /* records written: their ids */
    const char *record_prefix;
    pgrows_seqs_t pending[PGROWS_RECIPIENTS_MAX]; /* by recipient, for pgrows_acks */
    int64_t acked_to[PGROWS_RECIPIENTS_MAX];      /* by recipient: its last acknowledged */
    /* --prefill: every rules-th record carries rule "bench-rule-N" (N = 1..rules-1)
     * instead of "bench-share"; 0 or 1: always "bench-share" */
    int rules;
    /* --prefill: the subject tag of every tag_every-th record (0: never) */
    const uint8_t *tag;
    int64_t tag_every;
} pgrows_t;

/* A generator for records of size bytes; pgrows_free releases it. */
void pgrows_init(pgrows_t *r, size_t size);
void pgrows_free(pgrows_t *r);

/* Starts a COPY stream in b (the binary header), forgetting what b held. */
void pgrows_begin(pgrows_buf_t *b);
/* Appends one record's rows, written at at_us (PostgreSQL's timestamp units):
 * its `shared` row to each of bench-recipient-1..recipients (the first with the
 * record's content_hash), each remembered for that recipient's next
 * acknowledgement row. Returns the record's number. */
int64_t pgrows_record(pgrows_buf_t *b, pgrows_t *r, int recipients, int64_t at_us);
/* Appends a `refused` row for one record (no payload). */
void pgrows_refused(pgrows_buf_t *b, pgrows_t *r, int64_t at_us);
/* Appends, for each recipient with shared rows since its last one, an
 * `acknowledged` row listing their seqs (acked_seqs), and forgets them. Returns
 * how many rows it appended. */
int pgrows_acks(pgrows_buf_t *b, pgrows_t *r, int recipients, int64_t at_us);
/* The seq of recipient i's (0-based) last shared row acknowledged by pgrows_acks,
 * 0 if none: what its accord_cursor row says. */
int64_t pgrows_acked_to(const pgrows_t *r, int i);
/* Ends the stream (the binary trailer). */
void pgrows_end(pgrows_buf_t *b);

/* Now, in PostgreSQL's timestamp units: microseconds since 2000-01-01 UTC. */
int64_t pgrows_now_us(void);

/* The key epoch every row refers to, inserted unless there; 0, or -1 with a
 * message on stderr. */
int pgrows_insert_epoch(PGconn *db);

/* The SQL that moves recipient i's (0-based) cursor for record_type to acked_to,
 * as the broker does once per recipient per commit, into out. */
void pgrows_cursor_sql(char *out, size_t out_len, int i, const char *record_type, int64_t acked_to);

#endif
