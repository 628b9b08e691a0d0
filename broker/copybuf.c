/* copybuf.c - rows in PostgreSQL's COPY text format */
#include "copybuf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/rc.h"

#define COPYBUF_FIRST (64 * (size_t)1024)

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

static void s_raw(copybuf_t *b, const char *s, size_t len)
{
    s_reserve(b, len);
    memcpy(b->data + b->len, s, len);
    b->len += len;
}

void copybuf_raw(copybuf_t *b, const char *bytes, size_t len)
{
    s_raw(b, bytes, len);
}

static void s_char(copybuf_t *b, char c)
{
    s_raw(b, &c, 1);
}

/* Escapes for COPY's text format; quote adds array-element quoting inside it. */
static void s_escaped(copybuf_t *b, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        char c = *s;
        if (quote && (c == '"' || c == '\\')) {
            s_raw(b, "\\\\", 2); /* the array's backslash, itself escaped for COPY */
        }
        if (c == '\\') {
            s_raw(b, "\\\\", 2);
        } else if (c == '\n') {
            s_raw(b, "\\n", 2);
        } else if (c == '\r') {
            s_raw(b, "\\r", 2);
        } else if (c == '\t') {
            s_raw(b, "\\t", 2);
        } else {
            s_char(b, c);
        }
    }
}

void copybuf_text(copybuf_t *b, const char *s)
{
    if (s == NULL) {
        s_raw(b, "\\N", 2);
        return;
    }
    s_escaped(b, s, false);
}

void copybuf_bytea(copybuf_t *b, const uint8_t *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (bytes == NULL) {
        s_raw(b, "\\N", 2);
        return;
    }
    s_reserve(b, 3 + 2 * len);
    s_raw(b, "\\\\x", 3);
    for (size_t i = 0; i < len; i++) {
        b->data[b->len++] = hex[bytes[i] >> 4];
        b->data[b->len++] = hex[bytes[i] & 0x0f];
    }
}

void copybuf_int(copybuf_t *b, int64_t v)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld", (long long)v);
    s_raw(b, buf, (size_t)n);
}

void copybuf_timestamp(copybuf_t *b, int64_t at_us)
{
    time_t secs = (time_t)(at_us / 1000000);
    struct tm tm;
    (void)gmtime_r(&secs, &tm);
    char buf[48];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
    int m = snprintf(buf + n, sizeof(buf) - n, ".%06d+00", (int)(at_us % 1000000));
    s_raw(b, buf, n + (size_t)m);
}

void copybuf_text_array(copybuf_t *b, const char *const *items, size_t count)
{
    s_char(b, '{');
    for (size_t i = 0; i < count; i++) {
        if (i > 0) {
            s_char(b, ',');
        }
        s_char(b, '"');
        s_escaped(b, items[i], true);
        s_char(b, '"');
    }
    s_char(b, '}');
}

void copybuf_int_array(copybuf_t *b, const int64_t *items, size_t count)
{
    if (items == NULL) {
        copybuf_raw(b, "\\N", 2);
        return;
    }
    s_char(b, '{');
    for (size_t i = 0; i < count; i++) {
        if (i > 0) {
            s_char(b, ',');
        }
        copybuf_int(b, items[i]);
    }
    s_char(b, '}');
}

void copybuf_next(copybuf_t *b)
{
    s_char(b, '\t');
}

void copybuf_end_row(copybuf_t *b)
{
    s_char(b, '\n');
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
