/* policy_internal.h - the loaded agreement's structures, shared by common/src/policy*.c only */
#ifndef ACCORD_POLICY_INTERNAL_H
#define ACCORD_POLICY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/policy.h"

#define POLICY_N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* One typed field of a record type or of a rule's outcomes. */
typedef struct {
    char *name;
    char *spec; /* the type as written in the agreement ("text(500)") */
    acc_field_kind_t kind;
    size_t max_len;       /* text: bytes */
    acc_strlist_t values; /* enum: allowed values */
} policy_field_t;

typedef struct {
    char *id;
    policy_field_t *fields; /* sorted by name; index = bit in masks */
    size_t field_count;
    uint64_t required;
} policy_type_t;

typedef struct {
    char *id;
    char *name;
    uint8_t key[32];
} policy_agency_t;

typedef struct {
    char *id;
    char *name;
    uint8_t key[32];
    uint8_t box_key[32];
} policy_auditor_t;

typedef struct {
    char *id;
    char *purpose;
    char *lawful_basis;
    acc_consent_rule_t consent;
    char *withheld_reason;
    unsigned outcome_statuses;      /* ACC_OUTCOME_* bits; 0 when the rule takes no outcomes */
    bool to_sender;                 /* outcomes go back to the share's publisher */
    policy_field_t *outcome_fields; /* sorted by name */
    size_t outcome_field_count;
} policy_rule_t;

typedef struct {
    char *id;
    bool *by; /* [agency index]: the agency may make this lookup */
    acc_strlist_t purposes;
    char window[32];         /* canonical PostgreSQL interval: "24 months" */
    int64_t window_days_max; /* months as 31 days, years as 366 */
    bool notify;
} policy_lookup_t;

/* A rule's id and index, for finding rules by id. */
typedef struct {
    const char *id; /* borrowed from the rule */
    size_t index;
} policy_rule_key_t;

/* One rule's contribution to one recipient of one (from, type). */
typedef struct {
    size_t rule;
    uint64_t field_mask;
    unsigned subject_mask;
    acc_consent_rule_t consent;
} policy_grant_rule_t;

typedef struct {
    size_t agency;
    size_t rule_count;
    policy_grant_rule_t rules[ACC_POLICY_MAX_RULES_PER_RECIPIENT];
} policy_grant_t;

typedef struct {
    policy_grant_t *grants;
    size_t count;
} policy_slot_t;

struct acc_policy_t {
    char *path;
    char *id;
    char *title;
    char *valid_from;
    char *valid_until;
    uint8_t hash[ACC_POLICY_HASH_BYTES];
    char hash_hex[2 * ACC_POLICY_HASH_BYTES + 1];
    policy_agency_t *agencies;
    size_t agency_count;
    policy_auditor_t *auditors;
    size_t auditor_count;
    policy_type_t *types; /* sorted by id */
    size_t type_count;
    policy_rule_t *rules; /* in file order */
    size_t rule_count;
    policy_rule_key_t *rules_by_id; /* [rule_count], sorted by id */
    policy_slot_t *slots;           /* [from * type_count + type] */
    policy_lookup_t *lookups;       /* in file order */
    size_t lookup_count;
};

/* Orders policy_field_t by name (qsort and bsearch). */
int policy_field_cmp(const void *a, const void *b);

/* The field called name among fields[0..count) (sorted by name), its position in
 * *index (may be NULL); NULL if none. */
const policy_field_t *policy_find_field(const policy_field_t *fields, size_t count,
                                        const char *name, size_t *index);

/* The record type with this id, its index in *index (may be NULL); NULL if none. */
const policy_type_t *policy_find_type(const acc_policy_t *p, const char *id, size_t *index);

/* The index of the rule with this id; false if the agreement has none. */
bool policy_find_rule(const acc_policy_t *p, const char *id, size_t *index);

/* Why value does not suit field f (static text, never the value), or NULL when it does. */
const char *policy_value_fault(const policy_field_t *f, const Accord__V1__Field *value);

#endif
