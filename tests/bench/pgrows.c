/* pgrows.c - accord-shaped log rows in PostgreSQL's binary COPY format */
#include "pgrows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_COLUMNS     25 /* accord_log's columns in table order, schema 0009 */
#define HASH_BYTES      32
#define NONCE_BYTES     24
#define AEAD_TAG_BYTES  16
#define TEXT_OID        25
#define INT8_OID        20
#define PG_EPOCH_UNIX_S 946684800LL /* 2000-01-01, PostgreSQL's timestamp origin */

static void s_put(pgrows_buf_t *b, const void *bytes, size_t len)
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

static void s_put_be(pgrows_buf_t *b, uint64_t v, size_t bytes)
{
    unsigned char out[8];
    for (size_t i = 0; i < bytes; i++) {
        out[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    }
    s_put(b, out, bytes);
}

static void s_field(pgrows_buf_t *b, const void *bytes, size_t len)
{
    s_put_be(b, len, 4);
    s_put(b, bytes, len);
}

static void s_text(pgrows_buf_t *b, const char *text)
{
    s_field(b, text, strlen(text));
}

static void s_null(pgrows_buf_t *b)
{
    s_put_be(b, 0xffffffffu, 4);
}

static void s_int8(pgrows_buf_t *b, int64_t v)
{
    s_put_be(b, 8, 4);
    s_put_be(b, (uint64_t)v, 8);
}

static uint64_t s_rand(pgrows_t *r)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

static void s_random_bytes(pgrows_t *r, unsigned char *out, size_t len)
{
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = s_rand(r);
        memcpy(out + i, &v, len - i < 8 ? len - i : 8);
    }
}

/* len random bytes, as one field. */
static void s_random_field(pgrows_buf_t *b, pgrows_t *r, size_t len)
{
    unsigned char bytes[HASH_BYTES];
    s_random_bytes(r, bytes, len);
    s_field(b, bytes, len);
}

/* A share id as the broker makes them (UUIDv7): the row's millisecond, then
 * random bits, so the share-id index grows at its right edge. */
static void s_share_id(pgrows_buf_t *b, pgrows_t *r, int64_t at_us)
{
    unsigned char id[16];
    s_random_bytes(r, id, sizeof(id));
    uint64_t unix_ms = (uint64_t)(at_us / 1000 + PG_EPOCH_UNIX_S * 1000);
    for (int i = 0; i < 6; i++) {
        id[i] = (unsigned char)(unix_ms >> (8 * (5 - i)));
    }
    id[6] = (unsigned char)(0x70 | (id[6] & 0x0f));
    id[8] = (unsigned char)(0x80 | (id[8] & 0x3f));
    s_field(b, id, sizeof(id));
}

/* A one-dimensional array in binary form: dimensions, has-NULL, element type,
 * length, lower bound, then each element as a field. */
static void s_array_header(pgrows_buf_t *arr, uint32_t oid, size_t count)
{
    s_put_be(arr, 1, 4);
    s_put_be(arr, 0, 4);
    s_put_be(arr, oid, 4);
    s_put_be(arr, count, 4);
    s_put_be(arr, 1, 4);
}

static void s_rule_ids(pgrows_buf_t *b, const char *rule)
{
    pgrows_buf_t arr = { 0 };
    s_array_header(&arr, TEXT_OID, rule != NULL ? 1 : 0);
    if (rule != NULL) {
        s_text(&arr, rule);
    }
    s_field(b, arr.data, arr.len);
    free(arr.data);
}

static void s_acked_seqs(pgrows_buf_t *b, const pgrows_seqs_t *seqs)
{
    pgrows_buf_t arr = { 0 };
    s_array_header(&arr, INT8_OID, seqs->count);
    for (size_t i = 0; i < seqs->count; i++) {
        s_int8(&arr, seqs->seqs[i]);
    }
    s_field(b, arr.data, arr.len);
    free(arr.data);
}

static void s_seqs_push(pgrows_seqs_t *s, int64_t seq)
{
    if (s->count == s->cap) {
        s->cap = s->cap == 0 ? 64 : s->cap * 2;
        s->seqs = realloc(s->seqs, s->cap * sizeof(*s->seqs));
        if (s->seqs == NULL) {
            abort();
        }
    }
    s->seqs[s->count++] = seq;
}

void pgrows_init(pgrows_t *r, size_t size)
{
    memset(r, 0, sizeof(*r));
    r->rng = 0x9e3779b97f4a7c15ULL;
    r->stride = 1;
    r->record_prefix = "b";
    r->payload_bytes = size + AEAD_TAG_BYTES;
    r->payload = malloc(r->payload_bytes);
    if (r->payload == NULL) {
        abort();
    }
    memset(r->payload, 0xa5, r->payload_bytes);
}

void pgrows_free(pgrows_t *r)
{
    free(r->payload);
    r->payload = NULL;
    for (int i = 0; i < PGROWS_RECIPIENTS_MAX; i++) {
        free(r->pending[i].seqs);
        r->pending[i] = (pgrows_seqs_t){ 0 };
    }
}

void pgrows_begin(pgrows_buf_t *b)
{
    static const unsigned char header[] = "PGCOPY\n\377\r\n";
    b->len = 0;
    s_put(b, header, 11);
    s_put_be(b, 0, 4); /* flags */
    s_put_be(b, 0, 4); /* header extension */
}

/* The columns every row starts with: seq, share_id, at, event, from_agency. */
static int64_t s_row_start(pgrows_buf_t *b, pgrows_t *r, const char *event, const char *from,
                           int64_t at_us)
{
    s_put_be(b, LOG_COLUMNS, 2);
    r->seq += r->stride;
    s_int8(b, r->seq);
    s_share_id(b, r, at_us);
    s_int8(b, at_us);
    s_text(b, event);
    s_text(b, from);
    return r->seq;
}

static const char *s_rule(pgrows_t *r, char *buf, size_t len)
{
    if (r->rules <= 1) {
        return "bench-share";
    }
    int n = (int)(s_rand(r) % (uint64_t)r->rules);
    if (n == 0) {
        return "bench-share";
    }
    (void)snprintf(buf, len, "bench-rule-%d", n);
    return buf;
}

/* The current record's subject tag: --prefill's child's every tag_every-th record. */
static void s_subject_tag(pgrows_t *r, unsigned char out[PGROWS_TAG_BYTES])
{
    if (r->tag != NULL && r->tag_every > 0 && r->records % r->tag_every == 0) {
        memcpy(out, r->tag, PGROWS_TAG_BYTES);
    } else {
        s_random_bytes(r, out, PGROWS_TAG_BYTES);
    }
}

int64_t pgrows_record(pgrows_buf_t *b, pgrows_t *r, int recipients, int64_t at_us)
{
    r->records++;
    char record_id[48];
    (void)snprintf(record_id, sizeof(record_id), "%s-%016llx", r->record_prefix,
                   (unsigned long long)r->records);
    char rule_buf[32];
    const char *rule = s_rule(r, rule_buf, sizeof(rule_buf));
    unsigned char tag[PGROWS_TAG_BYTES];
    s_subject_tag(r, tag);
    for (int i = 0; i < recipients && i < PGROWS_RECIPIENTS_MAX; i++) {
        int64_t seq = s_row_start(b, r, "shared", "bench-publisher", at_us);
        char to[32];
        (void)snprintf(to, sizeof(to), "bench-recipient-%d", i + 1);
        s_text(b, to);
        s_text(b, "bench-record");
        s_text(b, record_id);
        s_field(b, tag, sizeof(tag));
        s_rule_ids(b, rule);
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
        if (i == 0) {
            s_random_field(b, r, HASH_BYTES); /* content_hash: the publish's first row */
        } else {
            s_null(b);
        }
        s_null(b); /* acked_seqs */
        s_null(b); /* refers_to */
        s_seqs_push(&r->pending[i], seq);
    }
    return r->records;
}

void pgrows_refused(pgrows_buf_t *b, pgrows_t *r, int64_t at_us)
{
    r->records++;
    char record_id[48];
    (void)snprintf(record_id, sizeof(record_id), "%s-%016llx", r->record_prefix,
                   (unsigned long long)r->records);
    (void)s_row_start(b, r, "refused", "bench-publisher", at_us);
    s_null(b); /* to_agency */
    s_text(b, "bench-record");
    s_text(b, record_id);
    unsigned char tag[PGROWS_TAG_BYTES];
    s_subject_tag(r, tag);
    s_field(b, tag, sizeof(tag));
    s_rule_ids(b, NULL);
    s_null(b); /* purpose */
    s_null(b); /* lawful_basis */
    s_text(b, "given");
    s_text(b, "NOT_PERMITTED");
    s_text(b, "no rule of the agreement lets this record type go from this agency");
    s_random_field(b, r, HASH_BYTES); /* agreement_hash */
    s_int8(b, 1);                     /* key_epoch */
    s_null(b);                        /* nonce */
    s_null(b);                        /* payload */
    s_null(b);                        /* signature */
    s_random_field(b, r, HASH_BYTES); /* prev_hash */
    s_random_field(b, r, HASH_BYTES); /* entry_hash */
    s_null(b);                        /* content_hash */
    s_null(b);                        /* acked_seqs */
    s_null(b);                        /* refers_to */
}

int pgrows_acks(pgrows_buf_t *b, pgrows_t *r, int recipients, int64_t at_us)
{
    int rows = 0;
    for (int i = 0; i < recipients && i < PGROWS_RECIPIENTS_MAX; i++) {
        pgrows_seqs_t *pending = &r->pending[i];
        if (pending->count == 0) {
            continue;
        }
        char agency[32];
        (void)snprintf(agency, sizeof(agency), "bench-recipient-%d", i + 1);
        (void)s_row_start(b, r, "acknowledged", agency, at_us);
        s_text(b, agency); /* to_agency: the acknowledging agency too */
        s_null(b);         /* record_type */
        s_null(b);         /* record_id */
        s_null(b);         /* subject_tag */
        s_rule_ids(b, NULL);
        s_null(b);                        /* purpose */
        s_null(b);                        /* lawful_basis */
        s_null(b);                        /* consent */
        s_null(b);                        /* error_code */
        s_null(b);                        /* reason */
        s_random_field(b, r, HASH_BYTES); /* agreement_hash */
        s_int8(b, 1);                     /* key_epoch */
        s_null(b);                        /* nonce */
        s_null(b);                        /* payload */
        s_null(b);                        /* signature */
        s_random_field(b, r, HASH_BYTES); /* prev_hash */
        s_random_field(b, r, HASH_BYTES); /* entry_hash */
        s_null(b);                        /* content_hash */
        s_acked_seqs(b, pending);
        s_null(b); /* refers_to */
        r->acked_to[i] = pending->seqs[pending->count - 1];
        pending->count = 0;
        rows++;
    }
    return rows;
}

int64_t pgrows_acked_to(const pgrows_t *r, int i)
{
    return i >= 0 && i < PGROWS_RECIPIENTS_MAX ? r->acked_to[i] : 0;
}

void pgrows_end(pgrows_buf_t *b)
{
    s_put_be(b, 0xffff, 2);
}

int64_t pgrows_now_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec - PG_EPOCH_UNIX_S) * 1000000 + ts.tv_nsec / 1000;
}

int pgrows_insert_epoch(PGconn *db)
{
    PGresult *res = PQexec(db, "INSERT INTO accord_epoch (epoch, broker_key, nonce_prefix) "
                               "VALUES (1, '\\x00', '\\x00') ON CONFLICT DO NOTHING");
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc != 0) {
        (void)fprintf(stderr, "bench: could not insert the key epoch: %s", PQerrorMessage(db));
    }
    PQclear(res);
    return rc;
}

void pgrows_cursor_sql(char *out, size_t out_len, int i, const char *record_type, int64_t acked_to)
{
    (void)snprintf(out, out_len,
                   "INSERT INTO accord_cursor (to_agency, record_type, acked_to) "
                   "VALUES ('bench-recipient-%d', '%s', %lld) "
                   "ON CONFLICT (to_agency, record_type) DO UPDATE "
                   "SET acked_to = excluded.acked_to, acked_above = '{}'",
                   i + 1, record_type, (long long)acked_to);
}
