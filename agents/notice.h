/* notice.h - what the broker delivers beside shares (an outcome reported on a
 * share this agency published, a lookup that named this agency): the checks a
 * subscriber makes before anything of one reaches a file, a hook or the log,
 * and the NDJSON line it hands over */
#ifndef ACCORD_AGENTS_NOTICE_H
#define ACCORD_AGENTS_NOTICE_H

#include <jansson.h>
#include <stdbool.h>

#include "accord/pb.h"
#include "accord/rc.h"

#define NOTICE_RULES_MAX 64 /* rule ids in one outcome notice */

/* True when name is an outcome status: received, accepted, declined or closed. */
bool notice_is_status(const char *name);

/* Checks an OutcomeNotice as the broker sent it: outcome and share ids are UUIDs,
 * record id, record type, agency and rule ids well-formed, status one of the
 * four, at an RFC 3339 date-time, at most ACC_VALIDATE_OUTCOME_FIELDS_MAX fields
 * with distinct well-formed names and valid values. ACC_ERR_INVALID with err
 * naming the part at fault, never its value. */
ACC_NODISCARD acc_rc_t notice_outcome_check(const Accord__V1__OutcomeNotice *n, acc_err_t *err);

/* Checks a LookupNotice: notice and lookup ids are UUIDs, the asking agency and
 * the lookup's id well-formed, purpose valid UTF-8 of 1 to ACC_VALIDATE_PURPOSE_MAX
 * bytes, at an RFC 3339 date-time, and the child a valid NHS number or a local id
 * with a date of birth. ACC_ERR_INVALID as notice_outcome_check; never echoes the
 * child's identifier. */
ACC_NODISCARD acc_rc_t notice_lookup_check(const Accord__V1__LookupNotice *n, acc_err_t *err);

/* The NDJSON object a subscriber writes for a checked notice:
 * {"kind":"outcome","outcome_id","share_id","record_id","record_type","to_agency",
 *  "status","fields":{...},"at","rules":[...]} (fields typed as a record's) and
 * {"kind":"lookup-notice","notice_id","lookup_id","by_agency","purpose","at",
 *  "lookup","subject":{"nhs_number"} or {"local_id","date_of_birth"}}.
 * The caller owns the reference. */
json_t *notice_outcome_json(const Accord__V1__OutcomeNotice *n);
json_t *notice_lookup_json(const Accord__V1__LookupNotice *n);

#endif
