/* copybuf.h - rows in PostgreSQL's COPY text format, built in one growing buffer */
#ifndef ACCORD_BROKER_COPYBUF_H
#define ACCORD_BROKER_COPYBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; /* owned */
    size_t len;
    size_t cap;
} copybuf_t;

/* Columns: each call appends one value; copybuf_next separates columns and
 * copybuf_end_row ends the row. NULL pointers are written as SQL NULL. */
void copybuf_text(copybuf_t *b, const char *s);
void copybuf_bytea(copybuf_t *b, const uint8_t *bytes, size_t len);
void copybuf_int(copybuf_t *b, int64_t v);
void copybuf_timestamp(copybuf_t *b, int64_t at_us); /* microseconds since the epoch, UTC */
void copybuf_text_array(copybuf_t *b, const char *const *items, size_t count);
/* NULL items: SQL NULL; else a bigint[] of count values (possibly empty). */
void copybuf_int_array(copybuf_t *b, const int64_t *items, size_t count);
void copybuf_next(copybuf_t *b);
/* Appends bytes as they are, unescaped. */
void copybuf_raw(copybuf_t *b, const char *bytes, size_t len);
void copybuf_end_row(copybuf_t *b);

/* Forgets the rows, keeping the memory. */
void copybuf_reset(copybuf_t *b);
/* Frees the memory. */
void copybuf_free(copybuf_t *b);

#endif
