/* copybuf.h - one growing buffer: SQL text, and rows in PostgreSQL's binary COPY
 * format (COPY ... FROM STDIN (FORMAT binary)).
 *
 * Binary rather than text: the values go as PostgreSQL stores them (a bytea as
 * its bytes, not twice as many hex digits; a timestamp as its microseconds, not a
 * string to parse), which costs the server about a fifth less per log row and the
 * broker no formatting. Each value is its length and its bytes, so no text needs
 * escaping. The layout is PostgreSQL's documented one ("COPY", File Formats,
 * Binary Format; the array and scalar layouts are those of each type's send
 * function). */
#ifndef ACCORD_BROKER_COPYBUF_H
#define ACCORD_BROKER_COPYBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; /* owned */
    size_t len;
    size_t cap;
} copybuf_t;

/* Rows: copybuf_row starts one of `columns` values (the stream's header first,
 * when the buffer is empty); each value call appends the next column; once the
 * last row is in, copybuf_end closes the stream. A NULL pointer is SQL NULL. */
void copybuf_row(copybuf_t *b, int columns);
void copybuf_null(copybuf_t *b);
void copybuf_int8(copybuf_t *b, int64_t v);     /* bigint */
void copybuf_text(copybuf_t *b, const char *s); /* text, valid UTF-8 */
void copybuf_bytea(copybuf_t *b, const uint8_t *bytes, size_t len);
void copybuf_uuid(copybuf_t *b, const uint8_t uuid[16]); /* uuid */
void copybuf_timestamp(copybuf_t *b, int64_t at_us);     /* timestamptz, us since 1970 */
void copybuf_text_array(copybuf_t *b, const char *const *items, size_t count); /* text[] */
/* NULL items: SQL NULL; else a bigint[] of count values (possibly empty). */
void copybuf_int8_array(copybuf_t *b, const int64_t *items, size_t count);
void copybuf_end(copybuf_t *b);

/* Appends bytes as they are (SQL text). */
void copybuf_raw(copybuf_t *b, const char *bytes, size_t len);

/* Forgets the contents, keeping the memory. */
void copybuf_reset(copybuf_t *b);
/* Frees the memory. */
void copybuf_free(copybuf_t *b);

#endif
