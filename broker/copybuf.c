/* copybuf.c - SQL text and rows in PostgreSQL's binary COPY format */
#include "copybuf.h"

#include <stdlib.h>
#include <string.h>

#include "accord/rc.h"

#define COPYBUF_FIRST (64 * (size_t)1024)

/* PostgreSQL's type oids for the arrays' elements (pg_type.dat: fixed since 1996) */
#define OID_INT8 20
#define OID_TEXT 25

/* timestamptz counts microseconds from 2000-01-01 00:00:00 UTC */
#define PG_EPOCH_US ((int64_t)946684800 * 1000000)

static void s_reserve(copybuf_t *b, size_t more)
{
    if (b->len + more <= b->cap) {
        return;
    }
    size_t cap = b->cap == 0 ? COPYBUF_FIRST : b->cap;
    while (cap < b->len + more) {
        cap *= 2;
    }
    b->data = acc_xrealloc(b->data, cap);
    b->cap = cap;
}

static void s_raw(copybuf_t *b, const void *bytes, size_t len)
{
    s_reserve(b, len);
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

void copybuf_raw(copybuf_t *b, const char *bytes, size_t len)
{
    s_raw(b, bytes, len);
}

/* Network byte order, as every integer in the format. */
static void s_be(copybuf_t *b, uint64_t v, size_t bytes)
{
    uint8_t out[8];
    for (size_t i = 0; i < bytes; i++) {
        out[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    }
    s_raw(b, out, bytes);
}

static void s_i16(copybuf_t *b, int v)
{
    s_be(b, (uint64_t)(uint16_t)(int16_t)v, 2);
}

static void s_i32(copybuf_t *b, int64_t v)
{
    s_be(b, (uint64_t)(uint32_t)(int32_t)v, 4);
}

static void s_i64(copybuf_t *b, int64_t v)
{
    s_be(b, (uint64_t)v, 8);
}

/* A value's length, then its bytes. The broker's values are bounded far below
 * 1 GiB (a frame is at most a few MiB), PostgreSQL's own bound on a value. */
static void s_value(copybuf_t *b, const void *bytes, size_t len)
{
    s_i32(b, (int64_t)len);
    s_raw(b, bytes, len);
}

void copybuf_row(copybuf_t *b, int columns)
{
    if (b->len == 0) {
        /* the signature, the flags (no oids) and the header extension's length */
        static const char signature[11] = { 'P',  'G',    'C',  'O',  'P', 'Y',
                                            '\n', '\377', '\r', '\n', '\0' };
        s_raw(b, signature, sizeof(signature));
        s_i32(b, 0);
        s_i32(b, 0);
    }
    s_i16(b, columns);
}

void copybuf_end(copybuf_t *b)
{
    s_i16(b, -1);
}

void copybuf_null(copybuf_t *b)
{
    s_i32(b, -1);
}

void copybuf_int8(copybuf_t *b, int64_t v)
{
    s_i32(b, 8);
    s_i64(b, v);
}

void copybuf_text(copybuf_t *b, const char *s)
{
    if (s == NULL) {
        copybuf_null(b);
        return;
    }
    s_value(b, s, strlen(s));
}

void copybuf_bytea(copybuf_t *b, const uint8_t *bytes, size_t len)
{
    if (bytes == NULL) {
        copybuf_null(b);
        return;
    }
    s_value(b, bytes, len);
}

void copybuf_uuid(copybuf_t *b, const uint8_t uuid[16])
{
    copybuf_bytea(b, uuid, 16);
}

void copybuf_timestamp(copybuf_t *b, int64_t at_us)
{
    copybuf_int8(b, at_us - PG_EPOCH_US);
}

/* An array (array_send's layout): its dimensions (none when empty), a flag for
 * NULL elements (never here), the element type, then the one dimension's length
 * and lower bound, then the elements. The value's length goes first but is
 * known last: s_array_begin reserves it at the returned offset and s_array_end
 * fills it in. */
static size_t s_array_begin(copybuf_t *b, size_t count, int element_oid)
{
    size_t at = b->len;
    s_i32(b, 0);
    s_i32(b, count > 0 ? 1 : 0);
    s_i32(b, 0);
    s_i32(b, element_oid);
    if (count > 0) {
        s_i32(b, (int64_t)count);
        s_i32(b, 1);
    }
    return at;
}

static void s_array_end(copybuf_t *b, size_t at)
{
    size_t end = b->len;
    b->len = at;
    s_i32(b, (int64_t)(end - at - 4));
    b->len = end;
}

void copybuf_text_array(copybuf_t *b, const char *const *items, size_t count)
{
    size_t at = s_array_begin(b, count, OID_TEXT);
    for (size_t i = 0; i < count; i++) {
        s_value(b, items[i], strlen(items[i]));
    }
    s_array_end(b, at);
}

void copybuf_int8_array(copybuf_t *b, const int64_t *items, size_t count)
{
    if (items == NULL) {
        copybuf_null(b);
        return;
    }
    size_t at = s_array_begin(b, count, OID_INT8);
    for (size_t i = 0; i < count; i++) {
        copybuf_int8(b, items[i]);
    }
    s_array_end(b, at);
}

void copybuf_reset(copybuf_t *b)
{
    b->len = 0;
}

void copybuf_free(copybuf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
