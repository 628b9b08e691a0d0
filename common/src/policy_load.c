/* policy_load.c - the agreement read and checked as a whole (every problem as
 * FILE:LINE:COL), precompiled into lookup tables so each publish costs its fields and
 * recipients, never a scan of rules; its accessors and destructor */
#include "accord/policy.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/keys.h"
#include "accord/record.h"
#include "policy_internal.h"

#define AGENCIES_MAX     1024
#define TYPES_MAX        1024
#define RULES_MAX        4096
#define ID_MAX           64
#define TEXT_DEFAULT_MAX 4096

/* ---- loading context ---- */

typedef struct {
    const acc_yaml_doc_t *doc;
    acc_diag_t *diag;
    acc_policy_t *policy;
    acc_strlist_t party_ids; /* every agency and auditor id met, valid or not */
    acc_strlist_t type_ids;
    acc_strlist_t rule_ids;
    acc_strlist_t lookup_ids;
} s_ctx_t;

/* True when id was met before in this namespace; records it otherwise. Ids of
 * entries with other errors count too, so every duplicate is reported. */
static bool s_seen(acc_strlist_t *ids, const char *id)
{
    for (size_t i = 0; i < ids->count; i++) {
        if (strcmp(ids->items[i], id) == 0) {
            return true;
        }
    }
    ids->items = acc_xrealloc(ids->items, (ids->count + 1) * sizeof(char *));
    ids->items[ids->count++] = acc_xstrdup(id);
    return false;
}

static size_t s_items(const yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SEQUENCE_NODE) {
        return 0;
    }
    return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}

static const yaml_node_t *s_item(const s_ctx_t *c, const yaml_node_t *seq, size_t i)
{
    return acc_yaml_node(c->doc, seq->data.sequence.items.start[i]);
}

/* True when node is a list (reporting otherwise); an absent list is empty. */
static bool s_is_list(const s_ctx_t *c, const yaml_node_t *node, const char *what)
{
    if (node == NULL || node->type == YAML_SEQUENCE_NODE) {
        return true;
    }
    acc_yaml_diag(c->diag, c->doc, node, "\"%s\" must be a list", what);
    return false;
}

static bool s_is_id(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > ID_MAX ||
        !((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= '0' && id[0] <= '9'))) {
        return false;
    }
    return strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

static bool s_check_id(const s_ctx_t *c, const yaml_node_t *map, const char *id, const char *what)
{
    if (id != NULL && !s_is_id(id)) {
        acc_yaml_diag(c->diag, c->doc, map,
                      "%s id \"%s\" must be 1-64 of a-z, 0-9, '.', '_', '-' starting with a "
                      "letter or digit",
                      what, id);
        return false;
    }
    return true;
}

/* Finds the value node of key in map; NULL if absent. */
static const yaml_node_t *s_value(const s_ctx_t *c, const yaml_node_t *map, const char *key)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        return NULL;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const char *k = acc_yaml_scalar(acc_yaml_node(c->doc, p->key));
        if (k != NULL && strcmp(k, key) == 0) {
            return acc_yaml_node(c->doc, p->value);
        }
    }
    return NULL;
}

static bool s_find_agency(const acc_policy_t *p, const char *id, size_t *index)
{
    for (size_t i = 0; i < p->agency_count; i++) {
        if (strcmp(p->agencies[i].id, id) == 0) {
            *index = i;
            return true;
        }
    }
    return false;
}

static bool s_key_taken(const acc_policy_t *p, const uint8_t key[32])
{
    for (size_t i = 0; i < p->agency_count; i++) {
        if (sodium_memcmp(p->agencies[i].key, key, 32) == 0) {
            return true;
        }
    }
    for (size_t i = 0; i < p->auditor_count; i++) {
        if (sodium_memcmp(p->auditors[i].key, key, 32) == 0) {
            return true;
        }
    }
    return false;
}

/* ---- agreement, agencies, auditors ---- */

typedef struct {
    char *id;
    char *title;
    char *valid_from;
    char *valid_until;
    char *description;
} s_header_t;

static const acc_yaml_entry_t s_header_entries[] = {
    { "id", ACC_YT_STRING, true, offsetof(s_header_t, id), NULL, 0, 0 },
    { "title", ACC_YT_STRING, true, offsetof(s_header_t, title), NULL, 0, 0 },
    { "valid_from", ACC_YT_STRING, true, offsetof(s_header_t, valid_from), NULL, 0, 0 },
    { "valid_until", ACC_YT_STRING, true, offsetof(s_header_t, valid_until), NULL, 0, 0 },
    { "description", ACC_YT_STRING, false, offsetof(s_header_t, description), NULL, 0, 0 },
};

static void s_load_header(s_ctx_t *c, const yaml_node_t *node)
{
    s_header_t h = { 0 };
    if (node == NULL) {
        acc_yaml_diag(c->diag, c->doc, acc_yaml_root(c->doc), "missing required key \"agreement\"");
        return;
    }
    bool ok = acc_yaml_read_map(c->doc, node, s_header_entries, POLICY_N_OF(s_header_entries), &h,
                                c->diag) == ACC_OK;
    const yaml_node_t *from = s_value(c, node, "valid_from");
    const yaml_node_t *until = s_value(c, node, "valid_until");
    if (h.valid_from != NULL && !acc_is_date(h.valid_from)) {
        acc_yaml_diag(c->diag, c->doc, from, "valid_from \"%s\" is not a date (YYYY-MM-DD)",
                      h.valid_from);
        ok = false;
    }
    if (h.valid_until != NULL && !acc_is_date(h.valid_until)) {
        acc_yaml_diag(c->diag, c->doc, until, "valid_until \"%s\" is not a date (YYYY-MM-DD)",
                      h.valid_until);
        ok = false;
    }
    if (ok && h.valid_from != NULL && h.valid_until != NULL &&
        strcmp(h.valid_from, h.valid_until) > 0) {
        acc_yaml_diag(c->diag, c->doc, until, "valid_until %s is before valid_from %s",
                      h.valid_until, h.valid_from);
    }
    (void)s_check_id(c, node, h.id, "agreement");
    acc_policy_t *p = c->policy;
    p->id = h.id;
    p->title = h.title;
    p->valid_from = h.valid_from;
    p->valid_until = h.valid_until;
    free(h.description);
}

typedef struct {
    char *id;
    char *name;
    char *key;
    char *box_key;
    char *description;
} s_party_t;

static const acc_yaml_entry_t s_agency_entries[] = {
    { "id", ACC_YT_STRING, true, offsetof(s_party_t, id), NULL, 0, 0 },
    { "name", ACC_YT_STRING, true, offsetof(s_party_t, name), NULL, 0, 0 },
    { "key", ACC_YT_STRING, true, offsetof(s_party_t, key), NULL, 0, 0 },
    { "description", ACC_YT_STRING, false, offsetof(s_party_t, description), NULL, 0, 0 },
};

static const acc_yaml_entry_t s_auditor_entries[] = {
    { "id", ACC_YT_STRING, true, offsetof(s_party_t, id), NULL, 0, 0 },
    { "name", ACC_YT_STRING, false, offsetof(s_party_t, name), NULL, 0, 0 },
    { "key", ACC_YT_STRING, true, offsetof(s_party_t, key), NULL, 0, 0 },
    { "box_key", ACC_YT_STRING, true, offsetof(s_party_t, box_key), NULL, 0, 0 },
    { "description", ACC_YT_STRING, false, offsetof(s_party_t, description), NULL, 0, 0 },
};

/* Reads one agency or auditor; false (with diagnostics) if it cannot be used. */
static bool s_read_party(s_ctx_t *c, const yaml_node_t *node, bool auditor, s_party_t *out,
                         uint8_t key[32], uint8_t box_key[32])
{
    const acc_yaml_entry_t *table = auditor ? s_auditor_entries : s_agency_entries;
    size_t n = auditor ? POLICY_N_OF(s_auditor_entries) : POLICY_N_OF(s_agency_entries);
    const char *what = auditor ? "auditor" : "agency";
    bool ok = acc_yaml_read_map(c->doc, node, table, n, out, c->diag) == ACC_OK;
    ok = s_check_id(c, node, out->id, what) && ok;
    if (out->id != NULL && s_seen(&c->party_ids, out->id)) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "id"),
                      "duplicate id \"%s\": agencies and auditors need distinct ids", out->id);
        ok = false;
    }
    acc_err_t err;
    if (out->key != NULL && acc_keys_decode_z85(key, out->key, &err) != ACC_OK) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "key"), "key of %s \"%s\": %s", what,
                      out->id != NULL ? out->id : "?", err.msg);
        ok = false;
    } else if (out->key != NULL && s_key_taken(c->policy, key)) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "key"),
                      "key of %s \"%s\" is already used by another agency or auditor", what,
                      out->id != NULL ? out->id : "?");
        ok = false;
    }
    if (auditor && out->box_key != NULL &&
        acc_hex_decode(box_key, 32, out->box_key, &err) != ACC_OK) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "box_key"),
                      "box_key of auditor \"%s\": %s (an X25519 public key)",
                      out->id != NULL ? out->id : "?", err.msg);
        ok = false;
    }
    return ok && out->id != NULL && out->key != NULL;
}

static void s_load_parties(s_ctx_t *c, const yaml_node_t *list, bool auditor)
{
    const char *what = auditor ? "auditors" : "agencies";
    if (list == NULL || !s_is_list(c, list, what)) {
        if (list == NULL && !auditor) {
            acc_yaml_diag(c->diag, c->doc, acc_yaml_root(c->doc), "missing required key \"%s\"",
                          what);
        }
        return;
    }
    size_t n = s_items(list);
    if (n > AGENCIES_MAX) {
        acc_yaml_diag(c->diag, c->doc, list, "more than %d %s", AGENCIES_MAX, what);
        return;
    }
    acc_policy_t *p = c->policy;
    if (auditor) {
        p->auditors = acc_xcalloc(n, sizeof(*p->auditors));
    } else {
        p->agencies = acc_xcalloc(n, sizeof(*p->agencies));
    }
    for (size_t i = 0; i < n; i++) {
        s_party_t party = { 0 };
        uint8_t key[32];
        uint8_t box_key[32];
        if (s_read_party(c, s_item(c, list, i), auditor, &party, key, box_key)) {
            if (auditor) {
                policy_auditor_t *a = &p->auditors[p->auditor_count++];
                a->id = party.id;
                a->name = party.name != NULL ? party.name : acc_xstrdup(party.id);
                memcpy(a->key, key, 32);
                memcpy(a->box_key, box_key, 32);
            } else {
                policy_agency_t *a = &p->agencies[p->agency_count++];
                a->id = party.id;
                a->name = party.name;
                memcpy(a->key, key, 32);
            }
            party.id = NULL;
            party.name = NULL;
        }
        free(party.id);
        free(party.name);
        free(party.key);
        free(party.box_key);
        free(party.description);
    }
}

/* ---- record types ---- */

int policy_field_cmp(const void *a, const void *b)
{
    return strcmp(((const policy_field_t *)a)->name, ((const policy_field_t *)b)->name);
}

static int s_type_cmp(const void *a, const void *b)
{
    return strcmp(((const policy_type_t *)a)->id, ((const policy_type_t *)b)->id);
}

/* enum(a,b,c) -> values; false if empty or malformed. */
static bool s_parse_enum(policy_field_t *f, const char *spec)
{
    size_t len = strlen(spec);
    if (len < 6 || spec[len - 1] != ')') {
        return false;
    }
    char *inner = acc_xstrndup(spec + 5, len - 6);
    bool ok = true;
    size_t cap = 1;
    for (const char *q = inner; *q != '\0'; q++) {
        cap += *q == ',';
    }
    f->values.items = acc_xcalloc(cap, sizeof(char *));
    char *save = NULL;
    for (char *tok = strtok_r(inner, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        size_t n = strlen(tok);
        while (n > 0 && tok[n - 1] == ' ') {
            tok[--n] = '\0';
        }
        ok = ok && n > 0;
        f->values.items[f->values.count++] = acc_xstrdup(tok);
    }
    free(inner);
    return ok && f->values.count > 0 && f->values.count <= ACC_POLICY_MAX_ENUM;
}

static bool s_parse_kind(policy_field_t *f, const char *spec)
{
    static const struct {
        const char *name;
        acc_field_kind_t kind;
    } kinds[] = {
        { "text", ACC_FIELD_TEXT },
        { "date", ACC_FIELD_DATE },
        { "datetime", ACC_FIELD_DATETIME },
        { "integer", ACC_FIELD_INTEGER },
        { "decimal", ACC_FIELD_DECIMAL },
        { "boolean", ACC_FIELD_BOOLEAN },
        { "nhs_number", ACC_FIELD_NHS_NUMBER },
    };
    f->max_len = TEXT_DEFAULT_MAX;
    for (size_t i = 0; i < POLICY_N_OF(kinds); i++) {
        if (strcmp(spec, kinds[i].name) == 0) {
            f->kind = kinds[i].kind;
            return true;
        }
    }
    char *end = NULL;
    unsigned long max = strncmp(spec, "text(", 5) == 0 ? strtoul(spec + 5, &end, 10) : 0;
    if (end != NULL && end != spec + 5 && strcmp(end, ")") == 0 && max > 0 &&
        max <= ACC_RECORD_MAX_TEXT) {
        f->kind = ACC_FIELD_TEXT;
        f->max_len = max;
        return true;
    }
    f->kind = ACC_FIELD_ENUM;
    return strncmp(spec, "enum(", 5) == 0 && s_parse_enum(f, spec);
}

/* Reads a mapping of field name to type into *fields (sorted by name), at most max of
 * them; owner names what has them in messages ("record type \"x\""). */
static bool s_load_field_map(s_ctx_t *c, const yaml_node_t *map, const char *owner, size_t max,
                             policy_field_t **fields, size_t *count)
{
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (n > max) {
        acc_yaml_diag(c->diag, c->doc, map, "%s has more than %zu fields", owner, max);
        return false;
    }
    *fields = acc_xcalloc(n, sizeof(**fields));
    for (size_t i = 0; i < n; i++) {
        const yaml_node_pair_t *pair = &map->data.mapping.pairs.start[i];
        const yaml_node_t *key = acc_yaml_node(c->doc, pair->key);
        const yaml_node_t *value = acc_yaml_node(c->doc, pair->value);
        const char *name = acc_yaml_scalar(key);
        const char *spec = acc_yaml_scalar(value);
        policy_field_t f = { 0 };
        if (name == NULL || !s_is_id(name) || strlen(name) > ID_MAX) {
            acc_yaml_diag(c->diag, c->doc, key,
                          "field name must be 1-64 of a-z, 0-9, '.', '_', '-'");
        } else if (spec == NULL || !s_parse_kind(&f, spec)) {
            acc_yaml_diag(c->diag, c->doc, value,
                          "field \"%s\" has an unknown type \"%s\" (text, text(N), date, "
                          "datetime, integer, decimal, boolean, enum(a,b,...), nhs_number)",
                          name, spec != NULL ? spec : "?");
        } else {
            f.name = acc_xstrdup(name);
            f.spec = acc_xstrdup(spec);
            (*fields)[(*count)++] = f;
            continue;
        }
        acc_strlist_clear(&f.values);
    }
    qsort(*fields, *count, sizeof(**fields), policy_field_cmp);
    return *count == n;
}

static void s_free_fields(policy_field_t *fields, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        free(fields[k].name);
        free(fields[k].spec);
        acc_strlist_clear(&fields[k].values);
    }
    free(fields);
}

static void s_load_fields(s_ctx_t *c, policy_type_t *t, const yaml_node_t *map)
{
    if (map == NULL || map->type != YAML_MAPPING_NODE) {
        acc_yaml_diag(c->diag, c->doc, map,
                      "record type \"%s\" needs \"fields\": a mapping of "
                      "field name to type",
                      t->id);
        return;
    }
    char *owner = acc_xasprintf("record type \"%s\"", t->id);
    (void)s_load_field_map(c, map, owner, ACC_POLICY_MAX_FIELDS, &t->fields, &t->field_count);
    free(owner);
}

const policy_field_t *policy_find_field(const policy_field_t *fields, size_t count,
                                        const char *name, size_t *index)
{
    if (count == 0) {
        return NULL; /* bsearch must not be given a NULL array */
    }
    policy_field_t key = { .name = acc_pb_str(name) };
    const policy_field_t *f = bsearch(&key, fields, count, sizeof(*fields), policy_field_cmp);
    if (f != NULL && index != NULL) {
        *index = (size_t)(f - fields);
    }
    return f;
}

static void s_load_required(s_ctx_t *c, policy_type_t *t, const yaml_node_t *list)
{
    if (!s_is_list(c, list, "required")) {
        return;
    }
    for (size_t i = 0; i < s_items(list); i++) {
        const yaml_node_t *item = s_item(c, list, i);
        const char *name = acc_yaml_scalar(item);
        size_t index = 0;
        if (name == NULL || policy_find_field(t->fields, t->field_count, name, &index) == NULL) {
            acc_yaml_diag(c->diag, c->doc, item,
                          "required field \"%s\" is not a field of record type \"%s\"",
                          name != NULL ? name : "?", t->id);
            continue;
        }
        t->required |= UINT64_C(1) << index;
    }
}

typedef struct {
    char *id;
    char *description;
    const yaml_node_t *fields;
    const yaml_node_t *required;
} s_type_entry_t;

static const acc_yaml_entry_t s_type_entries[] = {
    { "id", ACC_YT_STRING, true, offsetof(s_type_entry_t, id), NULL, 0, 0 },
    { "description", ACC_YT_STRING, false, offsetof(s_type_entry_t, description), NULL, 0, 0 },
    { "fields", ACC_YT_NODE, true, offsetof(s_type_entry_t, fields), NULL, 0, 0 },
    { "required", ACC_YT_NODE, false, offsetof(s_type_entry_t, required), NULL, 0, 0 },
};

static void s_load_types(s_ctx_t *c, const yaml_node_t *list)
{
    if (list == NULL || !s_is_list(c, list, "record_types")) {
        if (list == NULL) {
            acc_yaml_diag(c->diag, c->doc, acc_yaml_root(c->doc),
                          "missing required key \"record_types\"");
        }
        return;
    }
    size_t n = s_items(list);
    if (n > TYPES_MAX) {
        acc_yaml_diag(c->diag, c->doc, list, "more than %d record types", TYPES_MAX);
        return;
    }
    acc_policy_t *p = c->policy;
    p->types = acc_xcalloc(n, sizeof(*p->types));
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *node = s_item(c, list, i);
        s_type_entry_t e = { 0 };
        bool ok = acc_yaml_read_map(c->doc, node, s_type_entries, POLICY_N_OF(s_type_entries), &e,
                                    c->diag) == ACC_OK;
        ok = s_check_id(c, node, e.id, "record type") && ok && e.id != NULL;
        if (e.id != NULL && s_seen(&c->type_ids, e.id)) {
            acc_yaml_diag(c->diag, c->doc, s_value(c, node, "id"),
                          "duplicate record type id \"%s\"", e.id);
            ok = false;
        }
        if (ok) {
            policy_type_t *t = &p->types[p->type_count++];
            t->id = e.id;
            e.id = NULL;
            s_load_fields(c, t, e.fields);
            s_load_required(c, t, e.required);
        }
        free(e.id);
        free(e.description);
    }
    qsort(p->types, p->type_count, sizeof(*p->types), s_type_cmp);
}

const policy_type_t *policy_find_type(const acc_policy_t *p, const char *id, size_t *index)
{
    if (p->type_count == 0) {
        return NULL; /* bsearch must not be given a NULL array */
    }
    policy_type_t key = { .id = acc_pb_str(id) };
    const policy_type_t *t = bsearch(&key, p->types, p->type_count, sizeof(*p->types), s_type_cmp);
    if (t != NULL && index != NULL) {
        *index = (size_t)(t - p->types);
    }
    return t;
}

/* ---- rules ---- */

typedef struct {
    char *id;
    /* cppcheck-suppress unusedStructMember ; filled and freed through s_rule_entries */
    char *description;
    char *from;
    char *purpose;
    char *lawful_basis;
    char *consent;
    const yaml_node_t *to;
    const yaml_node_t *record_types;
    const yaml_node_t *fields;
    const yaml_node_t *subject;
    const yaml_node_t *outcomes;
} s_rule_entry_t;

static const acc_yaml_entry_t s_rule_entries[] = {
    { "id", ACC_YT_STRING, true, offsetof(s_rule_entry_t, id), NULL, 0, 0 },
    { "description", ACC_YT_STRING, false, offsetof(s_rule_entry_t, description), NULL, 0, 0 },
    { "from", ACC_YT_STRING, true, offsetof(s_rule_entry_t, from), NULL, 0, 0 },
    { "to", ACC_YT_NODE, true, offsetof(s_rule_entry_t, to), NULL, 0, 0 },
    { "record_types", ACC_YT_NODE, true, offsetof(s_rule_entry_t, record_types), NULL, 0, 0 },
    { "fields", ACC_YT_NODE, true, offsetof(s_rule_entry_t, fields), NULL, 0, 0 },
    { "subject", ACC_YT_NODE, true, offsetof(s_rule_entry_t, subject), NULL, 0, 0 },
    { "purpose", ACC_YT_STRING, true, offsetof(s_rule_entry_t, purpose), NULL, 0, 0 },
    { "lawful_basis", ACC_YT_STRING, true, offsetof(s_rule_entry_t, lawful_basis), NULL, 0, 0 },
    { "consent", ACC_YT_STRING, true, offsetof(s_rule_entry_t, consent), NULL, 0, 0 },
    { "outcomes", ACC_YT_NODE, false, offsetof(s_rule_entry_t, outcomes), NULL, 0, 0 },
};

/* What one rule compiles to before it is spread over the slots. */
typedef struct {
    size_t from;
    size_t to[ACC_POLICY_MAX_RECIPIENTS];
    size_t to_count;
    size_t types[TYPES_MAX];
    uint64_t masks[TYPES_MAX]; /* field mask per listed type */
    size_t type_count;
    unsigned subject_mask;
    acc_consent_rule_t consent;
    unsigned outcome_statuses; /* 0: the rule takes no outcomes */
    bool to_sender;
    policy_field_t *outcome_fields; /* owned until moved into the rule */
    size_t outcome_field_count;
} s_compiled_t;

static bool s_rule_to(s_ctx_t *c, const s_rule_entry_t *e, s_compiled_t *r)
{
    bool ok = s_is_list(c, e->to, "to");
    for (size_t i = 0; i < s_items(e->to); i++) {
        const yaml_node_t *item = s_item(c, e->to, i);
        const char *id = acc_yaml_scalar(item);
        size_t a = 0;
        if (id == NULL || !s_find_agency(c->policy, id, &a)) {
            acc_yaml_diag(c->diag, c->doc, item, "rule \"%s\" sends to unknown agency \"%s\"",
                          e->id, id != NULL ? id : "?");
            ok = false;
        } else if (a == r->from) {
            acc_yaml_diag(c->diag, c->doc, item, "rule \"%s\" sends to its own publisher \"%s\"",
                          e->id, id);
            ok = false;
        } else if (r->to_count == ACC_POLICY_MAX_RECIPIENTS) {
            acc_yaml_diag(c->diag, c->doc, item, "rule \"%s\" has more than %d recipients", e->id,
                          ACC_POLICY_MAX_RECIPIENTS);
            ok = false;
        } else {
            r->to[r->to_count++] = a;
        }
    }
    return ok;
}

static bool s_rule_types(s_ctx_t *c, const s_rule_entry_t *e, s_compiled_t *r)
{
    bool ok = s_is_list(c, e->record_types, "record_types");
    for (size_t i = 0; i < s_items(e->record_types) && r->type_count < TYPES_MAX; i++) {
        const yaml_node_t *item = s_item(c, e->record_types, i);
        const char *id = acc_yaml_scalar(item);
        size_t t = 0;
        if (id == NULL || policy_find_type(c->policy, id, &t) == NULL) {
            acc_yaml_diag(c->diag, c->doc, item, "rule \"%s\" names unknown record type \"%s\"",
                          e->id, id != NULL ? id : "?");
            ok = false;
            continue;
        }
        r->masks[r->type_count] = 0;
        r->types[r->type_count++] = t;
    }
    return ok;
}

static bool s_rule_fields(s_ctx_t *c, const s_rule_entry_t *e, s_compiled_t *r)
{
    bool ok = s_is_list(c, e->fields, "fields");
    for (size_t i = 0; i < s_items(e->fields); i++) {
        const yaml_node_t *item = s_item(c, e->fields, i);
        const char *name = acc_yaml_scalar(item);
        for (size_t k = 0; k < r->type_count; k++) {
            const policy_type_t *t = &c->policy->types[r->types[k]];
            size_t index = 0;
            if (name == NULL ||
                policy_find_field(t->fields, t->field_count, name, &index) == NULL) {
                acc_yaml_diag(c->diag, c->doc, item,
                              "rule \"%s\" shares field \"%s\", which record type \"%s\" does "
                              "not have",
                              e->id, name != NULL ? name : "?", t->id);
                ok = false;
                continue;
            }
            r->masks[k] |= UINT64_C(1) << index;
        }
    }
    return ok;
}

static bool s_rule_subject(s_ctx_t *c, const s_rule_entry_t *e, s_compiled_t *r)
{
    bool ok = s_is_list(c, e->subject, "subject");
    for (size_t i = 0; i < s_items(e->subject); i++) {
        const yaml_node_t *item = s_item(c, e->subject, i);
        const char *name = acc_yaml_scalar(item);
        unsigned bit = ACC_SUBJECT_NHS_NUMBER;
        while (name != NULL && bit <= ACC_SUBJECT_POSTCODE &&
               strcmp(acc_policy_subject_name(bit), name) != 0) {
            bit <<= 1U;
        }
        if (name == NULL || bit > ACC_SUBJECT_POSTCODE) {
            acc_yaml_diag(c->diag, c->doc, item,
                          "rule \"%s\" names unknown subject identifier \"%s\" (nhs_number, "
                          "local_id, given_name, family_name, date_of_birth, postcode)",
                          e->id, name != NULL ? name : "?");
            ok = false;
            continue;
        }
        r->subject_mask |= bit;
    }
    return ok;
}

static bool s_rule_consent(s_ctx_t *c, const yaml_node_t *node, const s_rule_entry_t *e,
                           s_compiled_t *r)
{
    if (e->consent == NULL) {
        return false;
    }
    if (strcmp(e->consent, "required") == 0) {
        r->consent = ACC_CONSENT_RULE_REQUIRED;
    } else if (strcmp(e->consent, "not-required") == 0) {
        r->consent = ACC_CONSENT_RULE_NOT_REQUIRED;
    } else if (strcmp(e->consent, "unless-safeguarding") == 0) {
        r->consent = ACC_CONSENT_RULE_UNLESS_SAFEGUARDING;
    } else {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "consent"),
                      "rule \"%s\": consent must be required, not-required or "
                      "unless-safeguarding, not \"%s\"",
                      e->id, e->consent);
        return false;
    }
    return true;
}

typedef struct {
    const yaml_node_t *statuses;
    const yaml_node_t *fields;
    bool to_sender;
} s_outcomes_entry_t;

static const acc_yaml_entry_t s_outcomes_entries[] = {
    { "statuses", ACC_YT_NODE, true, offsetof(s_outcomes_entry_t, statuses), NULL, 0, 0 },
    { "fields", ACC_YT_NODE, false, offsetof(s_outcomes_entry_t, fields), NULL, 0, 0 },
    { "to_sender", ACC_YT_BOOL, false, offsetof(s_outcomes_entry_t, to_sender), "false", 0, 0 },
};

static bool s_outcome_statuses(s_ctx_t *c, const char *rule, const yaml_node_t *list,
                               unsigned *statuses)
{
    if (list == NULL || !s_is_list(c, list, "statuses")) {
        return false;
    }
    if (s_items(list) == 0) {
        acc_yaml_diag(c->diag, c->doc, list,
                      "rule \"%s\": outcomes need at least one status (received, accepted, "
                      "declined, closed)",
                      rule);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < s_items(list); i++) {
        const yaml_node_t *item = s_item(c, list, i);
        const char *name = acc_yaml_scalar(item);
        unsigned bit = name != NULL ? acc_outcome_status_parse(name) : 0;
        if (bit == 0) {
            acc_yaml_diag(c->diag, c->doc, item,
                          "rule \"%s\": unknown outcome status \"%s\" (received, accepted, "
                          "declined, closed)",
                          rule, name != NULL ? name : "?");
            ok = false;
        } else if ((*statuses & bit) != 0) {
            acc_yaml_diag(c->diag, c->doc, item,
                          "rule \"%s\": outcome status \"%s\" is listed twice", rule, name);
            ok = false;
        }
        *statuses |= bit;
    }
    return ok;
}

static bool s_outcome_fields(s_ctx_t *c, const char *rule, const yaml_node_t *map, s_compiled_t *r)
{
    if (map == NULL) {
        return true;
    }
    if (map->type != YAML_MAPPING_NODE) {
        acc_yaml_diag(c->diag, c->doc, map,
                      "rule \"%s\": outcome \"fields\" must be a mapping of field name to type",
                      rule);
        return false;
    }
    char *owner = acc_xasprintf("the outcomes of rule \"%s\"", rule);
    bool ok = s_load_field_map(c, map, owner, ACC_POLICY_MAX_OUTCOME_FIELDS, &r->outcome_fields,
                               &r->outcome_field_count);
    free(owner);
    return ok;
}

/* A rule's `outcomes:`, when it has one: the statuses a recipient may report on a
 * share, the fields an outcome may carry, and whether it goes back to the sender. */
static bool s_rule_outcomes(s_ctx_t *c, const s_rule_entry_t *e, s_compiled_t *r)
{
    if (e->outcomes == NULL) {
        return true;
    }
    if (e->outcomes->type != YAML_MAPPING_NODE) {
        acc_yaml_diag(c->diag, c->doc, e->outcomes,
                      "rule \"%s\": \"outcomes\" must be a mapping of statuses, fields and "
                      "to_sender",
                      e->id);
        return false;
    }
    s_outcomes_entry_t o = { 0 };
    bool ok = acc_yaml_read_map(c->doc, e->outcomes, s_outcomes_entries,
                                POLICY_N_OF(s_outcomes_entries), &o, c->diag) == ACC_OK;
    unsigned statuses = 0;
    ok = s_outcome_statuses(c, e->id, o.statuses, &statuses) && ok;
    ok = s_outcome_fields(c, e->id, o.fields, r) && ok;
    r->outcome_statuses = ok ? statuses : 0;
    r->to_sender = o.to_sender;
    return ok;
}

/* Adds rule index's grant to every (from, type) slot it covers. */
static bool s_spread(s_ctx_t *c, const yaml_node_t *node, size_t index, const s_compiled_t *r)
{
    acc_policy_t *p = c->policy;
    for (size_t k = 0; k < r->type_count; k++) {
        policy_slot_t *slot = &p->slots[r->from * p->type_count + r->types[k]];
        for (size_t i = 0; i < r->to_count; i++) {
            policy_grant_t *g = NULL;
            for (size_t j = 0; j < slot->count && g == NULL; j++) {
                g = slot->grants[j].agency == r->to[i] ? &slot->grants[j] : NULL;
            }
            if (g == NULL && slot->count == ACC_POLICY_MAX_RECIPIENTS) {
                acc_yaml_diag(c->diag, c->doc, node,
                              "more than %d recipients for one agency "
                              "and record type",
                              ACC_POLICY_MAX_RECIPIENTS);
                return false;
            }
            if (g == NULL) {
                slot->grants = acc_xrealloc(slot->grants, (slot->count + 1) * sizeof(*g));
                g = &slot->grants[slot->count++];
                memset(g, 0, sizeof(*g));
                g->agency = r->to[i];
            }
            if (g->rule_count == ACC_POLICY_MAX_RULES_PER_RECIPIENT) {
                acc_yaml_diag(c->diag, c->doc, node,
                              "more than %d rules give one recipient "
                              "the same record type",
                              ACC_POLICY_MAX_RULES_PER_RECIPIENT);
                return false;
            }
            g->rules[g->rule_count++] = (policy_grant_rule_t){ .rule = index,
                                                               .field_mask = r->masks[k],
                                                               .subject_mask = r->subject_mask,
                                                               .consent = r->consent };
        }
    }
    return true;
}

static void s_add_rule(s_ctx_t *c, const yaml_node_t *node, s_rule_entry_t *e, s_compiled_t *r)
{
    acc_policy_t *p = c->policy;
    size_t index = p->rule_count++;
    policy_rule_t *rule = &p->rules[index];
    rule->id = e->id;
    rule->purpose = e->purpose;
    rule->lawful_basis = e->lawful_basis;
    rule->consent = r->consent;
    rule->outcome_statuses = r->outcome_statuses;
    rule->to_sender = r->to_sender;
    rule->outcome_fields = r->outcome_fields;
    rule->outcome_field_count = r->outcome_field_count;
    r->outcome_fields = NULL;
    r->outcome_field_count = 0;
    rule->withheld_reason = acc_xasprintf(
        r->consent == ACC_CONSENT_RULE_REQUIRED
            ? "consent not given: rule \"%s\" requires consent"
            : "consent not given and no safeguarding justification: rule \"%s\" requires one",
        e->id);
    e->id = NULL;
    e->purpose = NULL;
    e->lawful_basis = NULL;
    (void)s_spread(c, node, index, r);
}

/* Every part of a rule is checked even when another part is wrong, so the author
 * sees all of a rule's problems at once; the rule is used only if all are right. */
static void s_load_rule(s_ctx_t *c, const yaml_node_t *node)
{
    s_rule_entry_t e = { 0 };
    s_compiled_t *r = acc_xcalloc(1, sizeof(*r));
    bool ok = acc_yaml_read_map(c->doc, node, s_rule_entries, POLICY_N_OF(s_rule_entries), &e,
                                c->diag) == ACC_OK;
    if (e.id == NULL) {
        e.id = acc_xstrdup("(no id)");
    }
    ok = s_check_id(c, node, e.id, "rule") && ok;
    if (s_seen(&c->rule_ids, e.id)) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "id"), "duplicate rule id \"%s\"", e.id);
        ok = false;
    }
    r->from = SIZE_MAX;
    if (e.from != NULL && !s_find_agency(c->policy, e.from, &r->from)) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "from"),
                      "rule \"%s\" is from unknown agency \"%s\"", e.id, e.from);
        ok = false;
    }
    ok = s_rule_to(c, &e, r) && ok;
    ok = s_rule_types(c, &e, r) && ok;
    ok = s_rule_fields(c, &e, r) && ok;
    ok = s_rule_subject(c, &e, r) && ok;
    ok = (e.consent == NULL || s_rule_consent(c, node, &e, r)) && ok;
    ok = s_rule_outcomes(c, &e, r) && ok;
    if (ok && (r->to_count == 0 || r->type_count == 0)) {
        acc_yaml_diag(c->diag, c->doc, node, "rule \"%s\" can never fire: it names no %s", e.id,
                      r->to_count == 0 ? "recipient" : "record type");
        ok = false;
    }
    if (ok) {
        s_add_rule(c, node, &e, r);
    }
    acc_yaml_free_map(s_rule_entries, POLICY_N_OF(s_rule_entries), &e);
    s_free_fields(r->outcome_fields, r->outcome_field_count);
    free(r);
}

static void s_load_rules(s_ctx_t *c, const yaml_node_t *list)
{
    acc_policy_t *p = c->policy;
    p->slots = acc_xcalloc(p->agency_count * p->type_count, sizeof(*p->slots));
    if (list == NULL || !s_is_list(c, list, "rules")) {
        if (list == NULL) {
            acc_yaml_diag(c->diag, c->doc, acc_yaml_root(c->doc), "missing required key \"rules\"");
        }
        return;
    }
    size_t n = s_items(list);
    if (n > RULES_MAX) {
        acc_yaml_diag(c->diag, c->doc, list, "more than %d rules", RULES_MAX);
        return;
    }
    p->rules = acc_xcalloc(n, sizeof(*p->rules));
    for (size_t i = 0; i < n; i++) {
        s_load_rule(c, s_item(c, list, i));
    }
}

static int s_rule_key_cmp(const void *a, const void *b)
{
    return strcmp(((const policy_rule_key_t *)a)->id, ((const policy_rule_key_t *)b)->id);
}

/* Outcomes name the rules of a share by id: an index sorted by id finds each in
 * log(rules) steps. Ids are unique once the agreement has loaded without errors. */
static void s_index_rules(acc_policy_t *p)
{
    p->rules_by_id = acc_xcalloc(p->rule_count, sizeof(*p->rules_by_id));
    for (size_t i = 0; i < p->rule_count; i++) {
        p->rules_by_id[i] = (policy_rule_key_t){ .id = p->rules[i].id, .index = i };
    }
    qsort(p->rules_by_id, p->rule_count, sizeof(*p->rules_by_id), s_rule_key_cmp);
}

bool policy_find_rule(const acc_policy_t *p, const char *id, size_t *index)
{
    if (p->rule_count == 0) {
        return false; /* bsearch must not be given a NULL array */
    }
    policy_rule_key_t key = { .id = id };
    const policy_rule_key_t *found =
        bsearch(&key, p->rules_by_id, p->rule_count, sizeof(*p->rules_by_id), s_rule_key_cmp);
    if (found == NULL) {
        return false;
    }
    *index = found->index;
    return true;
}

/* ---- lookups ---- */

static void s_free_lookup(policy_lookup_t *l)
{
    free(l->id);
    free(l->by);
    acc_strlist_clear(&l->purposes);
}

typedef struct {
    char *id;
    /* cppcheck-suppress unusedStructMember ; filled and freed through s_lookup_entries */
    char *description;
    const yaml_node_t *by;
    const yaml_node_t *purposes;
    char *window;
    bool notify;
} s_lookup_entry_t;

static const acc_yaml_entry_t s_lookup_entries[] = {
    { "id", ACC_YT_STRING, true, offsetof(s_lookup_entry_t, id), NULL, 0, 0 },
    { "description", ACC_YT_STRING, false, offsetof(s_lookup_entry_t, description), NULL, 0, 0 },
    { "by", ACC_YT_NODE, true, offsetof(s_lookup_entry_t, by), NULL, 0, 0 },
    { "purposes", ACC_YT_NODE, true, offsetof(s_lookup_entry_t, purposes), NULL, 0, 0 },
    { "window", ACC_YT_STRING, true, offsetof(s_lookup_entry_t, window), NULL, 0, 0 },
    { "notify", ACC_YT_BOOL, false, offsetof(s_lookup_entry_t, notify), "false", 0, 0 },
};

static bool s_is_auditor(const acc_policy_t *p, const char *id)
{
    for (size_t i = 0; i < p->auditor_count; i++) {
        if (strcmp(p->auditors[i].id, id) == 0) {
            return true;
        }
    }
    return false;
}

static bool s_lookup_by(s_ctx_t *c, const char *lookup, const yaml_node_t *list, policy_lookup_t *l)
{
    if (list == NULL || !s_is_list(c, list, "by")) {
        return false;
    }
    if (s_items(list) == 0) {
        acc_yaml_diag(c->diag, c->doc, list, "lookup \"%s\": \"by\" names no agency", lookup);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < s_items(list); i++) {
        const yaml_node_t *item = s_item(c, list, i);
        const char *id = acc_yaml_scalar(item);
        size_t a = 0;
        if (id != NULL && s_find_agency(c->policy, id, &a)) {
            l->by[a] = true;
            continue;
        }
        ok = false;
        if (id != NULL && s_is_auditor(c->policy, id)) {
            acc_yaml_diag(c->diag, c->doc, item,
                          "lookup \"%s\": \"%s\" is an auditor; only agencies look up", lookup, id);
        } else {
            acc_yaml_diag(c->diag, c->doc, item, "lookup \"%s\" is made by unknown agency \"%s\"",
                          lookup, id != NULL ? id : "?");
        }
    }
    return ok;
}

static bool s_lookup_purposes(s_ctx_t *c, const char *lookup, const yaml_node_t *list,
                              policy_lookup_t *l)
{
    if (list == NULL || !s_is_list(c, list, "purposes")) {
        return false;
    }
    size_t n = s_items(list);
    if (n == 0 || n > ACC_POLICY_MAX_LOOKUP_PURPOSES) {
        acc_yaml_diag(c->diag, c->doc, list, "lookup \"%s\" needs 1 to %d purposes, not %zu",
                      lookup, ACC_POLICY_MAX_LOOKUP_PURPOSES, n);
        return false;
    }
    l->purposes.items = acc_xcalloc(n, sizeof(char *));
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = s_item(c, list, i);
        const char *text = acc_yaml_scalar(item);
        if (text == NULL || text[0] == '\0' || strlen(text) > ACC_POLICY_MAX_PURPOSE_BYTES) {
            acc_yaml_diag(c->diag, c->doc, item,
                          "lookup \"%s\": each purpose must be text of 1 to %d bytes", lookup,
                          ACC_POLICY_MAX_PURPOSE_BYTES);
            ok = false;
            continue;
        }
        l->purposes.items[l->purposes.count++] = acc_xstrdup(text);
    }
    return ok;
}

/* "N days|months|years" (or the singular), N 1..ACC_POLICY_MAX_WINDOW, into the
 * canonical plural interval and an upper bound in days. */
static bool s_parse_window(const char *text, policy_lookup_t *l)
{
    static const struct {
        const char *singular;
        const char *plural;
        int64_t days;
    } units[] = {
        { "day", "days", 1 },
        { "month", "months", 31 },
        { "year", "years", 366 },
    };
    size_t digits = strspn(text, "0123456789");
    if (digits == 0 || digits > 4 || text[0] == '0') {
        return false;
    }
    long n = strtol(text, NULL, 10);
    const char *unit = text + digits + strspn(text + digits, " ");
    if (n > ACC_POLICY_MAX_WINDOW || unit == text + digits) {
        return false;
    }
    for (size_t i = 0; i < POLICY_N_OF(units); i++) {
        if (strcmp(unit, units[i].singular) == 0 || strcmp(unit, units[i].plural) == 0) {
            (void)snprintf(l->window, sizeof(l->window), "%d %s", (int)n, units[i].plural);
            l->window_days_max = (int64_t)n * units[i].days;
            return true;
        }
    }
    return false;
}

/* Every part of a lookup is checked even when another part is wrong, as for rules. */
static void s_load_lookup(s_ctx_t *c, const yaml_node_t *node)
{
    acc_policy_t *p = c->policy;
    s_lookup_entry_t e = { 0 };
    policy_lookup_t l = { .by = acc_xcalloc(p->agency_count, sizeof(bool)) };
    bool ok = acc_yaml_read_map(c->doc, node, s_lookup_entries, POLICY_N_OF(s_lookup_entries), &e,
                                c->diag) == ACC_OK;
    const char *id = e.id != NULL ? e.id : "?";
    ok = s_check_id(c, node, e.id, "lookup") && ok && e.id != NULL;
    if (e.id != NULL && s_seen(&c->lookup_ids, e.id)) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "id"), "duplicate lookup id \"%s\"", id);
        ok = false;
    }
    ok = s_lookup_by(c, id, e.by, &l) && ok;
    ok = s_lookup_purposes(c, id, e.purposes, &l) && ok;
    if (e.window != NULL && !s_parse_window(e.window, &l)) {
        acc_yaml_diag(c->diag, c->doc, s_value(c, node, "window"),
                      "lookup \"%s\": window \"%s\" must be N days, N months or N years, N "
                      "from 1 to %d",
                      id, e.window, ACC_POLICY_MAX_WINDOW);
        ok = false;
    }
    if (ok) {
        l.id = e.id;
        e.id = NULL;
        l.notify = e.notify;
        p->lookups[p->lookup_count++] = l;
    } else {
        s_free_lookup(&l);
    }
    acc_yaml_free_map(s_lookup_entries, POLICY_N_OF(s_lookup_entries), &e);
}

static void s_load_lookups(s_ctx_t *c, const yaml_node_t *list)
{
    if (list == NULL || !s_is_list(c, list, "lookups")) {
        return;
    }
    size_t n = s_items(list);
    if (n > ACC_POLICY_MAX_LOOKUPS) {
        acc_yaml_diag(c->diag, c->doc, list, "more than %d lookups", ACC_POLICY_MAX_LOOKUPS);
        return;
    }
    c->policy->lookups = acc_xcalloc(n, sizeof(*c->policy->lookups));
    for (size_t i = 0; i < n; i++) {
        s_load_lookup(c, s_item(c, list, i));
    }
}

/* ---- the whole file ---- */

typedef struct {
    const yaml_node_t *agreement;
    const yaml_node_t *agencies;
    const yaml_node_t *auditors;
    const yaml_node_t *record_types;
    const yaml_node_t *rules;
    const yaml_node_t *lookups;
} s_top_t;

static const acc_yaml_entry_t s_top_entries[] = {
    { "agreement", ACC_YT_NODE, false, offsetof(s_top_t, agreement), NULL, 0, 0 },
    { "agencies", ACC_YT_NODE, false, offsetof(s_top_t, agencies), NULL, 0, 0 },
    { "auditors", ACC_YT_NODE, false, offsetof(s_top_t, auditors), NULL, 0, 0 },
    { "record_types", ACC_YT_NODE, false, offsetof(s_top_t, record_types), NULL, 0, 0 },
    { "rules", ACC_YT_NODE, false, offsetof(s_top_t, rules), NULL, 0, 0 },
    { "lookups", ACC_YT_NODE, false, offsetof(s_top_t, lookups), NULL, 0, 0 },
};

static void s_load_all(s_ctx_t *c)
{
    const yaml_node_t *root = acc_yaml_root(c->doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        acc_yaml_diag(c->diag, c->doc, root,
                      "an agreement must be a mapping with agreement, "
                      "agencies, auditors, record_types and rules");
        return;
    }
    s_top_t top = { 0 };
    /* Unknown top-level keys are reported; the sections present are still checked,
     * so the author sees every error at once. */
    acc_rc_t shape =
        acc_yaml_read_map(c->doc, root, s_top_entries, POLICY_N_OF(s_top_entries), &top, c->diag);
    (void)shape;
    s_load_header(c, top.agreement);
    s_load_parties(c, top.agencies, false);
    s_load_parties(c, top.auditors, true);
    s_load_types(c, top.record_types);
    s_load_rules(c, top.rules);
    s_index_rules(c->policy);
    s_load_lookups(c, top.lookups);
}

static acc_rc_t s_from_doc(acc_policy_t **out, acc_yaml_doc_t *doc, acc_diag_t *diag,
                           acc_err_t *err)
{
    acc_diag_t local;
    acc_diag_init(&local);
    acc_diag_t *d = diag != NULL ? diag : &local;
    size_t before = d->count;
    acc_policy_t *self = acc_xcalloc(1, sizeof(*self));
    self->path = acc_xstrdup(acc_yaml_name(doc));
    memcpy(self->hash, acc_yaml_hash(doc), sizeof(self->hash));
    acc_hex_encode(self->hash_hex, sizeof(self->hash_hex), self->hash, sizeof(self->hash));
    s_ctx_t c = { .doc = doc, .diag = d, .policy = self };
    s_load_all(&c);
    acc_strlist_clear(&c.party_ids);
    acc_strlist_clear(&c.type_ids);
    acc_strlist_clear(&c.rule_ids);
    acc_strlist_clear(&c.lookup_ids);
    size_t found = d->count - before;
    acc_rc_t rc = ACC_OK;
    if (found > 0) {
        rc = found == 1 ? acc_err_set(err, ACC_ERR_INVALID, "%s", d->lines[before])
                        : acc_err_set(err, ACC_ERR_INVALID, "%s (and %zu more)", d->lines[before],
                                      found - 1);
        acc_policy_destroy(&self);
    } else {
        *out = self;
    }
    acc_diag_clear(&local);
    return rc;
}

/* A file that is not YAML at all is one diagnostic, already FILE:LINE:COL. */
static acc_rc_t s_finish(acc_policy_t **out, acc_rc_t rc, acc_yaml_doc_t *doc, acc_diag_t *diag,
                         acc_err_t *err)
{
    if (rc != ACC_OK) {
        acc_diag_add(diag, err != NULL ? err->msg : "the agreement could not be read");
        return rc;
    }
    rc = s_from_doc(out, doc, diag, err);
    acc_yaml_destroy(&doc);
    return rc;
}

acc_rc_t acc_policy_parse(acc_policy_t **out, const char *name, const unsigned char *text,
                          size_t len, acc_diag_t *diag, acc_err_t *err)
{
    acc_yaml_doc_t *doc = NULL;
    acc_rc_t rc = acc_yaml_parse(&doc, name, text, len, err);
    return s_finish(out, rc, doc, diag, err);
}

acc_rc_t acc_policy_load(acc_policy_t **out, const char *path, acc_diag_t *diag, acc_err_t *err)
{
    acc_yaml_doc_t *doc = NULL;
    acc_rc_t rc = acc_yaml_load(&doc, path, err);
    return s_finish(out, rc, doc, diag, err);
}

static void s_free_rules(policy_rule_t *rules, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(rules[i].id);
        free(rules[i].purpose);
        free(rules[i].lawful_basis);
        free(rules[i].withheld_reason);
        s_free_fields(rules[i].outcome_fields, rules[i].outcome_field_count);
    }
    free(rules);
}

void acc_policy_destroy(acc_policy_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    acc_policy_t *p = *self_p;
    for (size_t i = 0; i < p->agency_count; i++) {
        free(p->agencies[i].id);
        free(p->agencies[i].name);
    }
    for (size_t i = 0; i < p->auditor_count; i++) {
        free(p->auditors[i].id);
        free(p->auditors[i].name);
    }
    for (size_t i = 0; i < p->type_count; i++) {
        s_free_fields(p->types[i].fields, p->types[i].field_count);
        free(p->types[i].id);
    }
    s_free_rules(p->rules, p->rule_count);
    for (size_t i = 0; p->slots != NULL && i < p->agency_count * p->type_count; i++) {
        free(p->slots[i].grants);
    }
    for (size_t i = 0; i < p->lookup_count; i++) {
        s_free_lookup(&p->lookups[i]);
    }
    free(p->lookups);
    free(p->rules_by_id);
    free(p->slots);
    free(p->agencies);
    free(p->auditors);
    free(p->types);
    free(p->path);
    free(p->id);
    free(p->title);
    free(p->valid_from);
    free(p->valid_until);
    free(p);
    *self_p = NULL;
}

/* ---- accessors ---- */

const char *acc_policy_id(const acc_policy_t *self)
{
    return self->id;
}

const char *acc_policy_title(const acc_policy_t *self)
{
    return self->title;
}

const char *acc_policy_path(const acc_policy_t *self)
{
    return self->path;
}

const uint8_t *acc_policy_hash(const acc_policy_t *self)
{
    return self->hash;
}

const char *acc_policy_hash_hex(const acc_policy_t *self)
{
    return self->hash_hex;
}

const char *acc_policy_valid_from(const acc_policy_t *self)
{
    return self->valid_from;
}

const char *acc_policy_valid_until(const acc_policy_t *self)
{
    return self->valid_until;
}

size_t acc_policy_agency_count(const acc_policy_t *self)
{
    return self->agency_count;
}

const char *acc_policy_agency_id(const acc_policy_t *self, size_t index)
{
    return self->agencies[index].id;
}

const char *acc_policy_agency_name(const acc_policy_t *self, size_t index)
{
    return self->agencies[index].name;
}

size_t acc_policy_auditor_count(const acc_policy_t *self)
{
    return self->auditor_count;
}

const char *acc_policy_auditor_id(const acc_policy_t *self, size_t index)
{
    return self->auditors[index].id;
}

const uint8_t *acc_policy_auditor_box_key(const acc_policy_t *self, size_t index)
{
    return self->auditors[index].box_key;
}

size_t acc_policy_rule_count(const acc_policy_t *self)
{
    return self->rule_count;
}

const char *acc_policy_rule_id(const acc_policy_t *self, size_t index)
{
    return self->rules[index].id;
}

const char *acc_policy_rule_purpose(const acc_policy_t *self, size_t rule)
{
    return self->rules[rule].purpose;
}

const char *acc_policy_rule_lawful_basis(const acc_policy_t *self, size_t rule)
{
    return self->rules[rule].lawful_basis;
}

acc_consent_rule_t acc_policy_rule_consent(const acc_policy_t *self, size_t rule)
{
    return self->rules[rule].consent;
}

bool acc_policy_find_key(const acc_policy_t *self, const uint8_t key[32], acc_principal_t *out)
{
    for (size_t i = 0; i < self->agency_count; i++) {
        if (sodium_memcmp(self->agencies[i].key, key, 32) == 0) {
            *out = (acc_principal_t){ .id = self->agencies[i].id, .index = i, .auditor = false };
            return true;
        }
    }
    for (size_t i = 0; i < self->auditor_count; i++) {
        if (sodium_memcmp(self->auditors[i].key, key, 32) == 0) {
            *out = (acc_principal_t){ .id = self->auditors[i].id, .index = i, .auditor = true };
            return true;
        }
    }
    return false;
}

bool acc_policy_find_principal(const acc_policy_t *self, const char *id, acc_principal_t *out)
{
    size_t i = 0;
    if (s_find_agency(self, id, &i)) {
        *out = (acc_principal_t){ .id = self->agencies[i].id, .index = i, .auditor = false };
        return true;
    }
    for (i = 0; i < self->auditor_count; i++) {
        if (strcmp(self->auditors[i].id, id) == 0) {
            *out = (acc_principal_t){ .id = self->auditors[i].id, .index = i, .auditor = true };
            return true;
        }
    }
    return false;
}

bool acc_policy_find_agency(const acc_policy_t *self, const char *id, size_t *index)
{
    return s_find_agency(self, id, index);
}

bool acc_policy_has_type(const acc_policy_t *self, const char *type)
{
    return policy_find_type(self, type, NULL) != NULL;
}

bool acc_policy_is_in_force(const acc_policy_t *self, const char *day)
{
    return strcmp(day, self->valid_from) >= 0 && strcmp(day, self->valid_until) <= 0;
}
