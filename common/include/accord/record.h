/* record.h - child records: NDJSON <-> ChildRecord, and checks that need no agreement */
#ifndef ACCORD_RECORD_H
#define ACCORD_RECORD_H

#include <jansson.h>
#include <stddef.h>

#include "accord/pb.h"
#include "accord/rc.h"

#define ACC_RECORD_MAX_FIELDS 128
#define ACC_RECORD_MAX_TEXT   ((size_t)65536) /* bytes in any one string */
#define ACC_RECORD_MAX_LINE   ((size_t)1024 * 1024)

/* Parses one NDJSON line (len bytes, not NUL-terminated necessarily) into a newly
 * allocated record, freed with acc_record_free. Unknown top-level or subject keys,
 * wrong JSON types and over-long strings are ACC_ERR_INVALID, and err names the
 * field by path ("subject.nhs_number", "fields.visit_date") without echoing its
 * value. Field values map: JSON string -> text, integer -> integer, real ->
 * decimal, true/false -> boolean; null or nested values are refused. */
ACC_NODISCARD acc_rc_t acc_record_from_json(Accord__V1__ChildRecord **out, const char *line,
                                            size_t len, acc_err_t *err);

/* Frees a record from acc_record_from_json or protobuf-c unpack; NULL-safe. */
void acc_record_free(Accord__V1__ChildRecord **rec_p);

/* The record as a JSON object in the NDJSON shape (empty strings and unset
 * optional parts omitted). Caller owns the reference. */
json_t *acc_record_to_json(const Accord__V1__ChildRecord *rec);

/* Agreement-independent checks, in this order: record_id, record_type and
 * occurred_at present and well-formed (RFC 3339), a subject with an NHS number or
 * a local id, the NHS number's check digit, date_of_birth a real date, safeguarding
 * justification only with the flag. Returns the wire code (OK when fine) and
 * sets reason (one line, never the value) for anything else. */
Accord__V1__ErrorCode acc_record_check(const Accord__V1__ChildRecord *rec, acc_err_t *reason);

/* True when text is a real calendar date YYYY-MM-DD. */
bool acc_is_date(const char *text);
/* True when text is an RFC 3339 date-time with a Z or +hh:mm offset. */
bool acc_is_datetime(const char *text);

#endif
