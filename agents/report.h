/* report.h - an outcome as a recipient reports it: from `--field` arguments or
 * an NDJSON line into an Outcome message, and its result as one JSON line */
#ifndef ACCORD_AGENTS_REPORT_H
#define ACCORD_AGENTS_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/pb.h"
#include "accord/rc.h"

typedef struct report_t report_t;

/* Adds one --field argument to fields (a JSON object): NAME=TEXT gives the
 * field NAME the text TEXT (all of it, '=' included); NAME:=VALUE gives it the
 * JSON number or true/false VALUE (HTTPie's convention). ACC_ERR_INVALID for a
 * missing '=', a name that is not 1-64 bytes of A-Z a-z 0-9 . _ -, a name given
 * twice, text that is not UTF-8, a VALUE that is not a number or boolean, or more
 * than ACC_VALIDATE_OUTCOME_FIELDS_MAX fields; err names the field, never its value. */
ACC_NODISCARD acc_rc_t report_field_arg(json_t *fields, const char *arg, acc_err_t *err);

/* A report on share_id (a UUID) of status (received, accepted, declined or
 * closed) with fields (a JSON object, borrowed; NULL: none), whose values are
 * typed as a record's fields are (string: text, integer, real: decimal,
 * true/false: boolean). ACC_ERR_INVALID, err naming the part at fault, and
 * *out untouched, when any of them is not so. */
ACC_NODISCARD acc_rc_t report_new(report_t **out, const char *share_id, const char *status,
                                  json_t *fields, acc_err_t *err);

/* A report from one NDJSON line of len bytes: {"share_id":...,"status":...,
 * "fields":{...}} ("fields" optional, no other key). As report_new; a line
 * that is not JSON is named by its column only. */
ACC_NODISCARD acc_rc_t report_from_line(report_t **out, const char *line, size_t len,
                                        acc_err_t *err);

void report_destroy(report_t **self_p);

const char *report_share_id(const report_t *self);
const char *report_status(const report_t *self);

/* Fills o with the report, borrowing its strings and fields from self. */
void report_outcome(const report_t *self, Accord__V1__Outcome *o);

/* The result line: {"share_id","status","result":"ok"|"refused","code","reason"}
 * and, when given (outcome_id not NULL or ""), "outcome_id" and "seq". A reason
 * that is not valid UTF-8 is replaced by a note saying so. The caller owns it. */
json_t *report_result_json(const char *share_id, const char *status, Accord__V1__ErrorCode code,
                           const char *reason, const char *outcome_id, uint64_t seq);

#endif
