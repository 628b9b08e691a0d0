/* policy.h - the agreement: loaded, checked as a whole, its parties and rules. The umbrella
 * header: it also brings in policy_record.h (deciding a record) and policy_outcome.h
 * (deciding an outcome or a lookup), so one include gives the whole agreement API. */
#ifndef ACCORD_POLICY_H
#define ACCORD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/pb.h"
#include "accord/rc.h"
#include "accord/yaml.h"

#define ACC_POLICY_HASH_BYTES              32 /* BLAKE2b-256 of the agreement file */
#define ACC_POLICY_MAX_FIELDS              64 /* fields per record type (a uint64_t mask) */
#define ACC_POLICY_MAX_RECIPIENTS          64 /* distinct recipients of one (from, type) */
#define ACC_POLICY_MAX_RULES_PER_RECIPIENT 16
#define ACC_POLICY_MAX_ENUM                64

typedef struct acc_policy_t acc_policy_t;

typedef enum {
    ACC_FIELD_TEXT,     /* text or text(N): N = max length in bytes, default 4096 */
    ACC_FIELD_DATE,     /* YYYY-MM-DD */
    ACC_FIELD_DATETIME, /* RFC 3339 */
    ACC_FIELD_INTEGER,
    ACC_FIELD_DECIMAL, /* integer or decimal on the wire */
    ACC_FIELD_BOOLEAN,
    ACC_FIELD_ENUM,       /* enum(a,b,c): text, one of the values */
    ACC_FIELD_NHS_NUMBER, /* text, modulus-11 valid */
} acc_field_kind_t;

typedef enum {
    ACC_CONSENT_RULE_REQUIRED,            /* share only with consent given */
    ACC_CONSENT_RULE_NOT_REQUIRED,        /* always share */
    ACC_CONSENT_RULE_UNLESS_SAFEGUARDING, /* consent given, or safeguarding with justification */
} acc_consent_rule_t;

/* Who a CURVE public key belongs to. */
typedef struct {
    const char *id; /* agency or auditor id, borrowed from the policy */
    size_t index;   /* agency index (agencies) or auditor index (auditors) */
    bool auditor;
} acc_principal_t;

/* Loads and checks the agreement at path as a whole. Every problem is added to
 * diag as "FILE:LINE:COL: message" (diag may be NULL); if there is any, nothing
 * is returned, and err holds the first with the count. */
ACC_NODISCARD acc_rc_t acc_policy_load(acc_policy_t **out, const char *path, acc_diag_t *diag,
                                       acc_err_t *err);
/* The same from text in memory; name stands for the path in messages. */
ACC_NODISCARD acc_rc_t acc_policy_parse(acc_policy_t **out, const char *name,
                                        const unsigned char *text, size_t len, acc_diag_t *diag,
                                        acc_err_t *err);
void acc_policy_destroy(acc_policy_t **self_p);

/* Accessors; strings are borrowed until the policy is destroyed. */
const char *acc_policy_id(const acc_policy_t *self);
const char *acc_policy_title(const acc_policy_t *self);
const char *acc_policy_path(const acc_policy_t *self);
const uint8_t *acc_policy_hash(const acc_policy_t *self);     /* ACC_POLICY_HASH_BYTES */
const char *acc_policy_hash_hex(const acc_policy_t *self);    /* 64 hex digits */
const char *acc_policy_valid_from(const acc_policy_t *self);  /* YYYY-MM-DD */
const char *acc_policy_valid_until(const acc_policy_t *self); /* YYYY-MM-DD */
size_t acc_policy_agency_count(const acc_policy_t *self);
const char *acc_policy_agency_id(const acc_policy_t *self, size_t index);
const char *acc_policy_agency_name(const acc_policy_t *self, size_t index);
size_t acc_policy_auditor_count(const acc_policy_t *self);
const char *acc_policy_auditor_id(const acc_policy_t *self, size_t index);
const uint8_t *acc_policy_auditor_box_key(const acc_policy_t *self, size_t index); /* 32 bytes */
size_t acc_policy_rule_count(const acc_policy_t *self);
const char *acc_policy_rule_id(const acc_policy_t *self, size_t index);

/* Finds the agency or auditor whose CURVE public key this is; false if none. */
bool acc_policy_find_key(const acc_policy_t *self, const uint8_t key[32], acc_principal_t *out);
/* Finds the agency or auditor with this id (a ZAP User-Id); false if none. */
bool acc_policy_find_principal(const acc_policy_t *self, const char *id, acc_principal_t *out);
/* Finds an agency by id; false if none. */
bool acc_policy_find_agency(const acc_policy_t *self, const char *id, size_t *index);
/* True when the agreement defines this record type. */
bool acc_policy_has_type(const acc_policy_t *self, const char *type);

/* True when day (YYYY-MM-DD, UTC) lies within valid_from..valid_until inclusive. */
bool acc_policy_is_in_force(const acc_policy_t *self, const char *day);

/* The consent condition of a rule. */
acc_consent_rule_t acc_policy_rule_consent(const acc_policy_t *self, size_t rule);

/* Purpose and lawful basis of a rule; borrowed. */
const char *acc_policy_rule_purpose(const acc_policy_t *self, size_t rule);
const char *acc_policy_rule_lawful_basis(const acc_policy_t *self, size_t rule);

/* The rest of the agreement API, after the types above that both use. */
#include "accord/policy_outcome.h" /* IWYU pragma: export */
#include "accord/policy_record.h"  /* IWYU pragma: export */

#endif
