/* policy_record.h - deciding one published record against the agreement: who receives
 * it, with which fields and subject identifiers, under which rules */
#ifndef ACCORD_POLICY_RECORD_H
#define ACCORD_POLICY_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/pb.h"
#include "accord/policy.h"

/* Subject identifiers, as bits of a rule's `subject:` list. */
enum {
    ACC_SUBJECT_NHS_NUMBER = 1U << 0,
    ACC_SUBJECT_LOCAL_ID = 1U << 1,
    ACC_SUBJECT_GIVEN_NAME = 1U << 2,
    ACC_SUBJECT_FAMILY_NAME = 1U << 3,
    ACC_SUBJECT_DATE_OF_BIRTH = 1U << 4,
    ACC_SUBJECT_POSTCODE = 1U << 5,
};

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

#endif
