/* policy.h - the agreement: loaded, checked as a whole, precompiled for per-record decisions */
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

/* Subject identifiers, as bits of a rule's `subject:` list. */
enum {
    ACC_SUBJECT_NHS_NUMBER = 1U << 0,
    ACC_SUBJECT_LOCAL_ID = 1U << 1,
    ACC_SUBJECT_GIVEN_NAME = 1U << 2,
    ACC_SUBJECT_FAMILY_NAME = 1U << 3,
    ACC_SUBJECT_DATE_OF_BIRTH = 1U << 4,
    ACC_SUBJECT_POSTCODE = 1U << 5,
};

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

/* One recipient of a record, as decided for that record. */
typedef struct {
    size_t agency;               /* recipient agency index */
    bool withheld;               /* held back by consent: no share */
    const char *withheld_reason; /* static text when withheld */
    uint64_t field_mask;         /* bit i = field i of the record type may leave */
    unsigned subject_mask;       /* ACC_SUBJECT_* bits */
    size_t rule_count;
    size_t rules[ACC_POLICY_MAX_RULES_PER_RECIPIENT]; /* rule indexes that allow it */
    bool safeguarding_override; /* shared only because of the safeguarding flag */
} acc_recipient_t;

/* The decision about one published record; caller-provided, no allocation. */
typedef struct {
    Accord__V1__ErrorCode code; /* OK, or why the whole record is refused */
    char reason[256];           /* one line, names the field, never its value */
    size_t type;                /* record type index when code is OK */
    size_t recipient_count;
    acc_recipient_t recipients[ACC_POLICY_MAX_RECIPIENTS];
} acc_decision_t;

/* Decides what happens to rec published by agency index from on day (YYYY-MM-DD):
 * AGREEMENT_NOT_IN_FORCE, UNKNOWN_RECORD_TYPE, MISSING_FIELD, INVALID_FIELD,
 * NO_AGREEMENT, or OK with the recipients (some perhaps withheld). The record
 * must already have passed acc_record_check. Cost is proportional to the
 * record's fields and its recipients; nothing is allocated. */
void acc_policy_decide(const acc_policy_t *self, size_t from, const char *day,
                       const Accord__V1__ChildRecord *rec, acc_decision_t *out);

/* Scratch for one minimised record: it borrows strings from the source record. */
typedef struct {
    Accord__V1__ChildRecord record;
    Accord__V1__Subject subject;
    Accord__V1__Field *field_ptrs[ACC_POLICY_MAX_FIELDS];
} acc_projection_t;

/* Fills out with rec as recipient r may see it: only the allowed fields and
 * subject identifiers. out borrows from rec; no allocation. */
void acc_policy_project(const acc_policy_t *self, const acc_decision_t *decision,
                        const acc_recipient_t *r, const Accord__V1__ChildRecord *rec,
                        acc_projection_t *out);

/* What every rule lets agency from send of record type type, whatever the
 * record: out->recipients hold each recipient's rules and the union of their
 * fields and subject identifiers, consent not yet applied. UNKNOWN_RECORD_TYPE or
 * NO_AGREEMENT in out->code otherwise. For people (`accord agreement explain`). */
void acc_policy_describe(const acc_policy_t *self, size_t from, const char *type,
                         acc_decision_t *out);

/* Fields of record type index type (as in acc_decision_t.type), by mask bit. */
size_t acc_policy_field_count(const acc_policy_t *self, size_t type);
const char *acc_policy_field_name(const acc_policy_t *self, size_t type, size_t field);

/* The agreement's name of one ACC_SUBJECT_* bit ("nhs_number"...); NULL if none. */
const char *acc_policy_subject_name(unsigned bit);

/* The consent condition of a rule. */
acc_consent_rule_t acc_policy_rule_consent(const acc_policy_t *self, size_t rule);

/* Purpose and lawful basis of a rule; borrowed. */
const char *acc_policy_rule_purpose(const acc_policy_t *self, size_t rule);
const char *acc_policy_rule_lawful_basis(const acc_policy_t *self, size_t rule);

#endif
