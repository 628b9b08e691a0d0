/* yaml.h - YAML documents with line and column, read through tables of typed entries */
#ifndef ACCORD_YAML_H
#define ACCORD_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "accord/rc.h"

/* Every problem found in a file, each one line "FILE:LINE:COL: message" (line and
 * column 1-based). Used so a check reports all errors at once. */
typedef struct {
    char **lines; /* owned */
    size_t count;
    size_t cap;
} acc_diag_t;

void acc_diag_init(acc_diag_t *diag);
void acc_diag_clear(acc_diag_t *diag); /* frees lines; diag reusable after */
/* Adds a line already in "FILE:LINE:COL: message" form; diag may be NULL. */
void acc_diag_add(acc_diag_t *diag, const char *line);
void acc_diag_addf(acc_diag_t *diag, const char *file, size_t line, size_t col, const char *fmt,
                   ...) ACC_PRINTF(5, 6);

typedef struct acc_yaml_doc_t acc_yaml_doc_t;

/* Reads and parses the file at path (at most ACC_YAML_MAX_BYTES). A syntax error
 * is returned as ACC_ERR_INVALID with "FILE:LINE:COL: message" in err. */
#define ACC_YAML_MAX_BYTES ((size_t)4 * 1024 * 1024)
ACC_NODISCARD acc_rc_t acc_yaml_load(acc_yaml_doc_t **out, const char *path, acc_err_t *err);

/* Parses len bytes of text; name is used in messages in place of a path. */
ACC_NODISCARD acc_rc_t acc_yaml_parse(acc_yaml_doc_t **out, const char *name,
                                      const unsigned char *text, size_t len, acc_err_t *err);

void acc_yaml_destroy(acc_yaml_doc_t **self_p);

/* The name given at load (path), borrowed until destroy. */
const char *acc_yaml_name(const acc_yaml_doc_t *self);
/* BLAKE2b-256 of the exact bytes parsed. */
const uint8_t *acc_yaml_hash(const acc_yaml_doc_t *self);
/* The root node, NULL for an empty document. */
const yaml_node_t *acc_yaml_root(const acc_yaml_doc_t *self);
/* Resolves an item of a sequence or mapping; NULL if out of range. */
const yaml_node_t *acc_yaml_node(const acc_yaml_doc_t *self, yaml_node_item_t item);
/* The scalar's text (NUL-terminated) or NULL when node is not a scalar. */
const char *acc_yaml_scalar(const yaml_node_t *node);
/* Adds "FILE:LINE:COL: message" at node's start mark. */
void acc_yaml_diag(acc_diag_t *diag, const acc_yaml_doc_t *doc, const yaml_node_t *node,
                   const char *fmt, ...) ACC_PRINTF(4, 5);

/* A list of owned strings read from a YAML sequence (or flow sequence). */
typedef struct {
    char **items;
    size_t count;
} acc_strlist_t;
void acc_strlist_clear(acc_strlist_t *list);

typedef enum {
    ACC_YT_STRING,  /* char *, owned */
    ACC_YT_INT,     /* int64_t, checked against min..max */
    ACC_YT_BOOL,    /* bool: true/false/yes/no */
    ACC_YT_STRLIST, /* acc_strlist_t */
    ACC_YT_NODE,    /* const yaml_node_t *, borrowed from the document: caller parses */
} acc_yaml_type_t;

/* One key a mapping may hold, and where its value goes in the output struct. */
typedef struct {
    const char *name;
    acc_yaml_type_t type;
    bool required;
    size_t offset;    /* offsetof(struct, member) */
    const char *dflt; /* default as YAML text for scalars, NULL for none */
    int64_t min;      /* ACC_YT_INT bounds */
    int64_t max;
} acc_yaml_entry_t;

/* Reads mapping node map into out through table. Unknown keys, duplicate keys,
 * wrong types, out-of-range values and missing required keys are each added to
 * diag naming FILE:LINE:COL and the key. Returns ACC_OK when none was found. */
ACC_NODISCARD acc_rc_t acc_yaml_read_map(const acc_yaml_doc_t *doc, const yaml_node_t *map,
                                         const acc_yaml_entry_t *table, size_t table_len, void *out,
                                         acc_diag_t *diag);

/* Frees what acc_yaml_read_map stored through table in out (strings, lists). */
void acc_yaml_free_map(const acc_yaml_entry_t *table, size_t table_len, void *out);

#endif
