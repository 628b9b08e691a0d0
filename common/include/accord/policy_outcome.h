/* policy_outcome.h - deciding an outcome reported on a share (a rule's `outcomes:`) and a
 * lookup of who already knows a child (the agreement's `lookups:`) */
#ifndef ACCORD_POLICY_OUTCOME_H
#define ACCORD_POLICY_OUTCOME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/pb.h"
#include "accord/policy.h"

#define ACC_POLICY_MAX_OUTCOME_FIELDS  32   /* fields under one rule's outcomes */
#define ACC_POLICY_MAX_LOOKUPS         256  /* entries of `lookups:` */
#define ACC_POLICY_MAX_LOOKUP_PURPOSES 64   /* purposes of one lookup */
#define ACC_POLICY_MAX_PURPOSE_BYTES   1024 /* bytes of one lookup purpose */
#define ACC_POLICY_MAX_WINDOW          1200 /* N of a lookup window "N days|months|years" */

/* Outcome statuses, as bits. A status moves forward only: received (rank 1), then
 * accepted or declined (rank 2), then closed (rank 3). */
enum {
    ACC_OUTCOME_RECEIVED = 1U << 0,
    ACC_OUTCOME_ACCEPTED = 1U << 1,
    ACC_OUTCOME_DECLINED = 1U << 2,
    ACC_OUTCOME_CLOSED = 1U << 3,
};

/* The bit of a status name ("received"...); 0 when not one of the four. */
unsigned acc_outcome_status_parse(const char *name);
/* The name of one status bit; NULL when status is not exactly one of the four bits. */
const char *acc_outcome_status_name(unsigned status);
/* 1..3 for a status bit; 0 for 0 (no status yet). Given several bits, the highest
 * rank among them; bits that are no status count for nothing. */
int acc_outcome_status_rank(unsigned status);

/* The decision about one outcome; caller-provided, no allocation. */
typedef struct {
    Accord__V1__ErrorCode code; /* OK, STATUS_NOT_ALLOWED, STATUS_OUT_OF_ORDER, INVALID_FIELD,
                                   MISSING_FIELD (never used now; kept for required fields) */
    char reason[256];           /* one line; names the field or status, never a field's value */
    unsigned status;            /* the status bit when OK */
    bool to_sender;             /* any of the share's rules says to_sender */
} acc_outcome_decision_t;

/* Decides an outcome reported on a share logged under rule ids rule_ids[0..rule_count)
 * (ids as logged; ids not in this agreement are skipped), whose last status so far is
 * prev (0: none). The allowed statuses and fields are the union over the share's rules
 * that declare outcomes; none declares any: STATUS_NOT_ALLOWED "rule ... takes no outcomes".
 * Status unknown or not allowed: STATUS_NOT_ALLOWED. rank(status) <= rank(prev):
 * STATUS_OUT_OF_ORDER ("already accepted; a status moves forward only"). A field not
 * declared, given twice, or of the wrong value kind: INVALID_FIELD, like a record's field;
 * a field declared by several of the share's rules may take a value that suits any of
 * them. More than ACC_POLICY_MAX_OUTCOME_FIELDS fields: INVALID_FIELD. Nothing is
 * allocated; cost is the rules times the fields. */
void acc_policy_decide_outcome(const acc_policy_t *self, const char *const *rule_ids,
                               size_t rule_count, const char *status, unsigned prev,
                               Accord__V1__Field *const *fields, size_t n_fields,
                               acc_outcome_decision_t *out);

/* True when rule index rule declares outcomes (statuses in *statuses, to_sender);
 * false (and 0, false) otherwise. Either out pointer may be NULL. */
bool acc_policy_rule_outcomes(const acc_policy_t *self, size_t rule, unsigned *statuses,
                              bool *to_sender);
/* The fields a rule's outcomes may carry, sorted by name; 0 when none. Borrowed. */
size_t acc_policy_rule_outcome_field_count(const acc_policy_t *self, size_t rule);
const char *acc_policy_rule_outcome_field_name(const acc_policy_t *self, size_t rule, size_t i);
/* The field's type as written in the agreement, e.g. "text(500)" (for explain). */
const char *acc_policy_rule_outcome_field_spec(const acc_policy_t *self, size_t rule, size_t i);

/* The decision about one lookup; caller-provided, no allocation. */
typedef struct {
    Accord__V1__ErrorCode code; /* OK, NOT_PERMITTED (agency may not look up at all),
                                   PURPOSE_NOT_PERMITTED (no lookup of this agency lists it),
                                   AGREEMENT_NOT_IN_FORCE */
    char reason[256];           /* one line */
    size_t lookup;              /* index when OK */
} acc_lookup_decision_t;

/* Decides a lookup by agency index by, for purpose, on day (YYYY-MM-DD, UTC). When several
 * of the agency's lookups list the purpose, the first in the file wins. The agreement
 * not in force is checked first. Nothing is allocated. */
void acc_policy_decide_lookup(const acc_policy_t *self, size_t by, const char *purpose,
                              const char *day, acc_lookup_decision_t *out);

/* Lookups in file order; strings borrowed until the policy is destroyed. */
size_t acc_policy_lookup_count(const acc_policy_t *self);
const char *acc_policy_lookup_id(const acc_policy_t *self, size_t lookup);
/* True when each agency named in an answer is told (notify: true). */
bool acc_policy_lookup_notifies(const acc_policy_t *self, size_t lookup);
/* The window as a PostgreSQL interval literal, canonical and always plural: "24 months",
 * "30 days", "1 years". */
const char *acc_policy_lookup_window(const acc_policy_t *self, size_t lookup);
/* The window in whole days, months counted as 31 and years as 366 (an upper bound, for
 * checks). */
int64_t acc_policy_lookup_window_days_max(const acc_policy_t *self, size_t lookup);
size_t acc_policy_lookup_purpose_count(const acc_policy_t *self, size_t lookup);
const char *acc_policy_lookup_purpose(const acc_policy_t *self, size_t lookup, size_t i);
/* True when agency index agency is in the lookup's `by`. */
bool acc_policy_lookup_allows(const acc_policy_t *self, size_t lookup, size_t agency);

#endif
