/* yaml.c - YAML documents with line and column, read through tables of typed entries */
#include "accord/yaml.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define YAML_FIRST_READ (64 * (size_t)1024)

struct acc_yaml_doc_t {
    yaml_document_t doc;
    bool loaded;
    char *name;
    uint8_t hash[crypto_generichash_BYTES];
};

/* ---- diagnostics ---- */

void acc_diag_init(acc_diag_t *diag)
{
    memset(diag, 0, sizeof(*diag));
}

void acc_diag_clear(acc_diag_t *diag)
{
    for (size_t i = 0; i < diag->count; i++) {
        free(diag->lines[i]);
    }
    free(diag->lines);
    acc_diag_init(diag);
}

void acc_diag_add(acc_diag_t *diag, const char *line)
{
    if (diag == NULL) {
        return;
    }
    if (diag->count == diag->cap) {
        diag->cap = diag->cap == 0 ? 8 : diag->cap * 2;
        diag->lines = acc_xrealloc(diag->lines, diag->cap * sizeof(*diag->lines));
    }
    diag->lines[diag->count++] = acc_xstrdup(line);
}

ACC_PRINTF(5, 0)
static void s_diag_vadd(acc_diag_t *diag, const char *file, size_t line, size_t col,
                        const char *fmt, va_list ap)
{
    if (diag == NULL) {
        return;
    }
    char msg[ACC_ERR_MSG_MAX];
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    char *full = acc_xasprintf("%s:%zu:%zu: %s", file, line, col, msg);
    acc_diag_add(diag, full);
    free(full);
}

void acc_diag_addf(acc_diag_t *diag, const char *file, size_t line, size_t col, const char *fmt,
                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    s_diag_vadd(diag, file, line, col, fmt, ap);
    va_end(ap);
}

void acc_yaml_diag(acc_diag_t *diag, const acc_yaml_doc_t *doc, const yaml_node_t *node,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t line = node != NULL ? node->start_mark.line + 1 : 1;
    size_t col = node != NULL ? node->start_mark.column + 1 : 1;
    s_diag_vadd(diag, doc->name, line, col, fmt, ap);
    va_end(ap);
}

/* ---- loading ---- */

/* Anchors and aliases let a small file expand without bound ("billion laughs");
 * an agreement has no use for them, so the event stream is checked for them first. */
static acc_rc_t s_refuse_aliases(const char *name, const unsigned char *text, size_t len,
                                 acc_err_t *err)
{
    yaml_parser_t parser;
    acc_assert(yaml_parser_initialize(&parser) == 1);
    yaml_parser_set_input_string(&parser, text, len);
    acc_rc_t rc = ACC_OK;
    for (bool done = false; !done && rc == ACC_OK;) {
        yaml_event_t event;
        if (yaml_parser_parse(&parser, &event) != 1) {
            break; /* the loader reports syntax errors with their position */
        }
        bool anchored =
            event.type == YAML_ALIAS_EVENT ||
            (event.type == YAML_SCALAR_EVENT && event.data.scalar.anchor != NULL) ||
            (event.type == YAML_SEQUENCE_START_EVENT && event.data.sequence_start.anchor != NULL) ||
            (event.type == YAML_MAPPING_START_EVENT && event.data.mapping_start.anchor != NULL);
        if (anchored) {
            rc = acc_err_set(err, ACC_ERR_INVALID,
                             "%s:%zu:%zu: anchors and aliases (& and *) are not allowed", name,
                             event.start_mark.line + 1, event.start_mark.column + 1);
        }
        done = event.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    return rc;
}

acc_rc_t acc_yaml_parse(acc_yaml_doc_t **out, const char *name, const unsigned char *text,
                        size_t len, acc_err_t *err)
{
    if (len > ACC_YAML_MAX_BYTES) {
        return acc_err_set(err, ACC_ERR_LIMIT, "%s: larger than %zu bytes", name,
                           ACC_YAML_MAX_BYTES);
    }
    acc_rc_t rc = s_refuse_aliases(name, text, len, err);
    if (rc != ACC_OK) {
        return rc;
    }
    acc_yaml_doc_t *self = acc_xcalloc(1, sizeof(*self));
    self->name = acc_xstrdup(name);
    (void)crypto_generichash(self->hash, sizeof(self->hash), text, len, NULL, 0);
    yaml_parser_t parser;
    acc_assert(yaml_parser_initialize(&parser) == 1);
    yaml_parser_set_input_string(&parser, text, len);
    if (yaml_parser_load(&parser, &self->doc) != 1) {
        rc = acc_err_set(err, ACC_ERR_INVALID, "%s:%zu:%zu: %s", name, parser.problem_mark.line + 1,
                         parser.problem_mark.column + 1,
                         parser.problem != NULL ? parser.problem : "YAML syntax error");
        yaml_parser_delete(&parser);
        acc_yaml_destroy(&self);
        return rc;
    }
    self->loaded = true;
    yaml_parser_delete(&parser);
    *out = self;
    return ACC_OK;
}

acc_rc_t acc_yaml_load(acc_yaml_doc_t **out, const char *path, acc_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return acc_err_set(err, ACC_ERR_IO, "could not open \"%s\": %s", path, strerror(errno));
    }
    /* grown as the file needs, to one byte past the limit so too large shows */
    size_t cap = YAML_FIRST_READ;
    unsigned char *text = acc_xmalloc(cap);
    size_t len = fread(text, 1, cap, f);
    while (len == cap && cap <= ACC_YAML_MAX_BYTES) {
        cap = cap * 2 > ACC_YAML_MAX_BYTES + 1 ? ACC_YAML_MAX_BYTES + 1 : cap * 2;
        text = acc_xrealloc(text, cap);
        len += fread(text + len, 1, cap - len, f);
    }
    bool failed = ferror(f) != 0;
    (void)fclose(f);
    acc_rc_t rc = failed ? acc_err_set(err, ACC_ERR_IO, "could not read \"%s\"", path)
                         : acc_yaml_parse(out, path, text, len, err);
    free(text);
    return rc;
}

void acc_yaml_destroy(acc_yaml_doc_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    acc_yaml_doc_t *self = *self_p;
    if (self->loaded) {
        yaml_document_delete(&self->doc);
    }
    free(self->name);
    free(self);
    *self_p = NULL;
}

const char *acc_yaml_name(const acc_yaml_doc_t *self)
{
    return self->name;
}

const uint8_t *acc_yaml_hash(const acc_yaml_doc_t *self)
{
    return self->hash;
}

/* libyaml's accessors take a non-const document but do not modify it. */
static yaml_document_t *s_mutable(const acc_yaml_doc_t *self)
{
    union {
        /* cppcheck-suppress unusedStructMember ; written by the initialiser below */
        const yaml_document_t *c;
        yaml_document_t *m;
    } u = { .c = &self->doc };
    return u.m;
}

const yaml_node_t *acc_yaml_root(const acc_yaml_doc_t *self)
{
    return yaml_document_get_root_node(s_mutable(self));
}

const yaml_node_t *acc_yaml_node(const acc_yaml_doc_t *self, yaml_node_item_t item)
{
    return yaml_document_get_node(s_mutable(self), item);
}

const char *acc_yaml_scalar(const yaml_node_t *node)
{
    return node != NULL && node->type == YAML_SCALAR_NODE ? (const char *)node->data.scalar.value
                                                          : NULL;
}

/* ---- typed tables ---- */

void acc_strlist_clear(acc_strlist_t *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i]);
    }
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static void *s_slot(void *out, const acc_yaml_entry_t *e)
{
    return (char *)out + e->offset;
}

static bool s_parse_int(int64_t *out, const char *text)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool s_parse_bool(bool *out, const char *text)
{
    if (strcmp(text, "true") == 0 || strcmp(text, "yes") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(text, "false") == 0 || strcmp(text, "no") == 0) {
        *out = false;
        return true;
    }
    return false;
}

static bool s_set_int(const acc_yaml_doc_t *doc, const yaml_node_t *node, const char *text,
                      const acc_yaml_entry_t *e, void *out, acc_diag_t *diag)
{
    int64_t v = 0;
    if (!s_parse_int(&v, text)) {
        acc_yaml_diag(diag, doc, node, "\"%s\" must be a whole number", e->name);
        return false;
    }
    if (v < e->min || v > e->max) {
        acc_yaml_diag(diag, doc, node, "\"%s\" must be between %" PRId64 " and %" PRId64, e->name,
                      e->min, e->max);
        return false;
    }
    *(int64_t *)s_slot(out, e) = v;
    return true;
}

static bool s_set_scalar(const acc_yaml_doc_t *doc, const yaml_node_t *node, const char *text,
                         const acc_yaml_entry_t *e, void *out, acc_diag_t *diag)
{
    switch (e->type) {
    case ACC_YT_STRING: {
        char **slot = s_slot(out, e);
        free(*slot);
        *slot = acc_xstrdup(text);
        return true;
    }
    case ACC_YT_INT:
        return s_set_int(doc, node, text, e, out, diag);
    case ACC_YT_BOOL:
        if (!s_parse_bool(s_slot(out, e), text)) {
            acc_yaml_diag(diag, doc, node, "\"%s\" must be true or false", e->name);
            return false;
        }
        return true;
    case ACC_YT_STRLIST:
    case ACC_YT_NODE:
        break;
    }
    return false;
}

/* Reads a sequence of scalars into list; each bad item is reported. */
static bool s_set_list(const acc_yaml_doc_t *doc, const yaml_node_t *node,
                       const acc_yaml_entry_t *e, acc_strlist_t *list, acc_diag_t *diag)
{
    if (node->type != YAML_SEQUENCE_NODE) {
        acc_yaml_diag(diag, doc, node, "\"%s\" must be a list", e->name);
        return false;
    }
    acc_strlist_clear(list);
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    list->items = acc_xcalloc(n, sizeof(char *));
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = acc_yaml_node(doc, node->data.sequence.items.start[i]);
        const char *text = acc_yaml_scalar(item);
        if (text == NULL) {
            acc_yaml_diag(diag, doc, item, "items of \"%s\" must be plain values", e->name);
            ok = false;
            continue;
        }
        list->items[list->count++] = acc_xstrdup(text);
    }
    return ok;
}

static bool s_set(const acc_yaml_doc_t *doc, const yaml_node_t *value, const acc_yaml_entry_t *e,
                  void *out, acc_diag_t *diag)
{
    if (e->type == ACC_YT_NODE) {
        *(const yaml_node_t **)s_slot(out, e) = value;
        return true;
    }
    if (e->type == ACC_YT_STRLIST) {
        return s_set_list(doc, value, e, s_slot(out, e), diag);
    }
    const char *text = acc_yaml_scalar(value);
    if (text == NULL) {
        acc_yaml_diag(diag, doc, value, "\"%s\" must be a single value", e->name);
        return false;
    }
    return s_set_scalar(doc, value, text, e, out, diag);
}

static const acc_yaml_entry_t *s_find_entry(const acc_yaml_entry_t *table, size_t n,
                                            const char *key, size_t *index)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, key) == 0) {
            *index = i;
            return &table[i];
        }
    }
    return NULL;
}

/* Where a table is being read into, and where its problems go. */
typedef struct {
    const acc_yaml_doc_t *doc;
    acc_diag_t *diag;
    void *out;
} s_target_t;

/* Reports each required key the mapping lacks and fills in defaults; seen[i] says
 * whether table entry i was present. */
static bool s_apply_defaults(const s_target_t *t, const yaml_node_t *map,
                             const acc_yaml_entry_t *table, size_t n, const bool *seen)
{
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const acc_yaml_entry_t *e = &table[i];
        if (seen[i]) {
            continue;
        }
        if (e->required) {
            acc_yaml_diag(t->diag, t->doc, map, "missing required key \"%s\"", e->name);
            ok = false;
        } else if (e->dflt != NULL) {
            ok = s_set_scalar(t->doc, map, e->dflt, e, t->out, t->diag) && ok;
        }
    }
    return ok;
}

acc_rc_t acc_yaml_read_map(const acc_yaml_doc_t *doc, const yaml_node_t *map,
                           const acc_yaml_entry_t *table, size_t table_len, void *out,
                           acc_diag_t *diag)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        acc_yaml_diag(diag, doc, map, "expected a mapping of keys and values");
        return ACC_ERR_INVALID;
    }
    bool *seen = acc_xcalloc(table_len, sizeof(bool));
    bool ok = true;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *key_node = acc_yaml_node(doc, p->key);
        const char *key = acc_yaml_scalar(key_node);
        size_t index = 0;
        const acc_yaml_entry_t *e =
            key != NULL ? s_find_entry(table, table_len, key, &index) : NULL;
        if (e == NULL) {
            acc_yaml_diag(diag, doc, key_node, "unknown key \"%s\"", key != NULL ? key : "?");
            ok = false;
        } else if (seen[index]) {
            acc_yaml_diag(diag, doc, key_node, "duplicate key \"%s\"", key);
            ok = false;
        } else {
            seen[index] = true;
            ok = s_set(doc, acc_yaml_node(doc, p->value), e, out, diag) && ok;
        }
    }
    s_target_t target = { .doc = doc, .diag = diag, .out = out };
    ok = s_apply_defaults(&target, map, table, table_len, seen) && ok;
    free(seen);
    return ok ? ACC_OK : ACC_ERR_INVALID;
}

void acc_yaml_free_map(const acc_yaml_entry_t *table, size_t table_len, void *out)
{
    for (size_t i = 0; i < table_len; i++) {
        const acc_yaml_entry_t *e = &table[i];
        if (e->type == ACC_YT_STRING) {
            char **slot = s_slot(out, e);
            free(*slot);
            *slot = NULL;
        } else if (e->type == ACC_YT_STRLIST) {
            acc_strlist_clear(s_slot(out, e));
        }
    }
}
