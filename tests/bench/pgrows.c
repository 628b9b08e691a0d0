/* pgrows.c - accord-shaped log rows in PostgreSQL's binary COPY format */
#include "pgrows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_COLUMNS     22
#define HASH_BYTES      32
#define NONCE_BYTES     24
#define AEAD_TAG_BYTES  16
#define TEXT_OID        25
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

/* len random bytes, as one field. */
static void s_random_field(pgrows_buf_t *b, pgrows_t *r, size_t len)
{
    unsigned char bytes[HASH_BYTES];
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v = s_rand(r);
        memcpy(bytes + i, &v, len - i < 8 ? len - i : 8);
    }
    s_field(b, bytes, len);
}

static void s_rule_ids(pgrows_buf_t *b)
{
    static const char rule[] = "bench-share";
    pgrows_buf_t arr = { 0 };
    s_put_be(&arr, 1, 4); /* dimensions */
    s_put_be(&arr, 0, 4); /* no NULL elements */
    s_put_be(&arr, TEXT_OID, 4);
    s_put_be(&arr, 1, 4); /* elements */
    s_put_be(&arr, 1, 4); /* lower bound */
    s_text(&arr, rule);
    s_field(b, arr.data, arr.len);
    free(arr.data);
}

void pgrows_init(pgrows_t *r, size_t size)
{
    memset(r, 0, sizeof(*r));
    r->rng = 0x9e3779b97f4a7c15ULL;
    r->stride = 1;
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
}

void pgrows_begin(pgrows_buf_t *b)
{
    static const unsigned char header[] = "PGCOPY\n\377\r\n";
    b->len = 0;
    s_put(b, header, 11);
    s_put_be(b, 0, 4); /* flags */
    s_put_be(b, 0, 4); /* header extension */
}

void pgrows_row(pgrows_buf_t *b, pgrows_t *r, const char *event, int64_t at_us)
{
    int shared = strcmp(event, "shared") == 0;
    s_put_be(b, LOG_COLUMNS, 2);
    r->seq += r->stride;
    s_int8(b, r->seq);
    s_random_field(b, r, 16); /* share_id */
    s_int8(b, at_us);
    s_text(b, event);
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
    if (shared) {
        s_random_field(b, r, NONCE_BYTES);
        s_field(b, r->payload, r->payload_bytes);
    } else {
        s_null(b); /* nonce */
        s_null(b); /* payload */
    }
    s_null(b);                        /* signature */
    s_random_field(b, r, HASH_BYTES); /* prev_hash */
    s_random_field(b, r, HASH_BYTES); /* entry_hash */
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
