/* validate.h - the one validation boundary for what a peer sends: every limit,
 * the raw frame walk before unpacking, and the checks of an unpacked Envelope
 * and ChildRecord */
#ifndef ACCORD_VALIDATE_H
#define ACCORD_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/pb.h"
#include "accord/rc.h"

/* ---- limits (bytes of UTF-8 unless said otherwise; README "Limits" lists them) ---- */

/* Strings of a ChildRecord */
#define ACC_VALIDATE_RECORD_ID_MAX     128 /* and only A-Z a-z 0-9 . _ : - */
#define ACC_VALIDATE_RECORD_TYPE_MAX   64  /* and only A-Z a-z 0-9 . _ : - */
#define ACC_VALIDATE_OCCURRED_AT_MAX   64  /* an RFC 3339 date-time */
#define ACC_VALIDATE_NHS_NUMBER_MAX    16  /* 10 digits, spaces allowed */
#define ACC_VALIDATE_LOCAL_ID_MAX      128
#define ACC_VALIDATE_NAME_MAX          256 /* subject.given_name, subject.family_name */
#define ACC_VALIDATE_DATE_OF_BIRTH_MAX 10  /* YYYY-MM-DD */
#define ACC_VALIDATE_POSTCODE_MAX      16
#define ACC_VALIDATE_FIELD_NAME_MAX    64              /* and only A-Z a-z 0-9 . _ - */
#define ACC_VALIDATE_TEXT_MAX          ((size_t)65536) /* a text field's value */
#define ACC_VALIDATE_JUSTIFICATION_MAX ((size_t)65536) /* safeguarding_justification */
#define ACC_VALIDATE_FIELDS_MAX        128             /* fields in one record */
/* A whole record, packed. A Deliver is the minimised record (never larger) plus
 * its provenance: share id 36, from_agency <= 128, rule ids <= 16 x 128, purpose
 * and lawful basis <= 1,024 each, agreement hash 64, the justification again
 * <= 65,536, and tags/lengths; under ACC_VALIDATE_PROVENANCE_MAX in all. So a
 * Deliver is at most RECORD_BYTES_MAX + PROVENANCE_MAX = 840 KiB, which fits the
 * agents' default max_message_bytes (1 MiB): ACC_VALIDATE_DELIVER_BYTES_MAX. */
#define ACC_VALIDATE_RECORD_BYTES_MAX  ((size_t)768 * 1024)
#define ACC_VALIDATE_PROVENANCE_MAX    ((size_t)64 * 1024 + 8 * 1024)
#define ACC_VALIDATE_DELIVER_BYTES_MAX (ACC_VALIDATE_RECORD_BYTES_MAX + ACC_VALIDATE_PROVENANCE_MAX)

/* Strings and counts of the other messages a peer sends */
#define ACC_VALIDATE_AGENCY_ID_MAX      128  /* Hello.agency_id, Publish.from_agency, filters */
#define ACC_VALIDATE_SOFTWARE_MAX       128  /* Hello.software */
#define ACC_VALIDATE_SUBSCRIPTIONS_MAX  64   /* record types in one Hello */
#define ACC_VALIDATE_SHARE_ID_MAX       36   /* a UUID: DeliverAck, AuditQuery, Outcome */
#define ACC_VALIDATE_FILTER_MAX         128  /* any other AuditQuery filter string */
#define ACC_VALIDATE_STATUS_MAX         16   /* Outcome.status: a-z only */
#define ACC_VALIDATE_OUTCOME_FIELDS_MAX 32   /* fields in one Outcome */
#define ACC_VALIDATE_PURPOSE_MAX        1024 /* Lookup.purpose */

/* The frame walk (acc_validate_frame) */
#define ACC_VALIDATE_DEPTH_MAX    8    /* nested messages, the Envelope being depth 1 */
#define ACC_VALIDATE_REPEATED_MAX 1024 /* elements of any one repeated field */
#define ACC_VALIDATE_UNKNOWN_MAX  64   /* unknown fields in one frame */

/* The broker's socket drops a connection sending a frame over this multiple of
 * max_message_bytes; frames between the two are answered TOO_LARGE. */
#define ACC_VALIDATE_CEILING_FACTOR 2

/* ---- UTF-8 ---- */

/* True when s[0..len) is well-formed UTF-8 with no NUL: no overlong forms, no
 * surrogates (U+D800-DFFF), nothing above U+10FFFF, no truncated sequence. */
bool acc_utf8_is_valid(const char *s, size_t len);

/* The longest prefix of s[0..len) of at most max bytes that does not end inside
 * a multi-byte character (for invalid input: not inside anything that looks like
 * one). Use it to print at most max bytes of text without cutting a character. */
size_t acc_utf8_prefix_len(const char *s, size_t len, size_t max);

/* ---- checks; each returns the wire code (OK when fine) and sets reason to one
 * line naming the field by path ("subject.given_name", "fields[3].name") and the
 * rule broken, never the value ---- */

/* Walks a raw frame before protobuf-c unpacks it, in time linear in len:
 * TOO_LARGE when len > max_bytes; MALFORMED for a truncated or invalid tag or
 * length, a wire type that does not match the field, nesting deeper than
 * ACC_VALIDATE_DEPTH_MAX, a non-repeated field given more than once (protobuf-c
 * merges repeated message parts in quadratic time), two members of one oneof,
 * more than ACC_VALIDATE_REPEATED_MAX elements of a repeated field, more than
 * ACC_VALIDATE_UNKNOWN_MAX unknown fields, groups, or a NUL byte in a string. */
Accord__V1__ErrorCode acc_validate_frame(const uint8_t *buf, size_t len, size_t max_bytes,
                                         acc_err_t *reason);

/* Checks an unpacked Envelope a peer sent: every string it carries is valid
 * UTF-8 and within its limit, and counts are bounded (MALFORMED, or TOO_LARGE
 * for too many subscriptions). A Publish's record is NOT checked here: the
 * broker checks it with acc_validate_record where it can log the refusal. */
Accord__V1__ErrorCode acc_validate_envelope(const Accord__V1__Envelope *env, acc_err_t *reason);

/* Checks a record: every string valid UTF-8 and within its limit, the charsets
 * of record_id, record_type and field names, the number of fields, the packed
 * size (TOO_LARGE over ACC_VALIDATE_RECORD_BYTES_MAX), then acc_record_check's
 * agreement-independent rules. INVALID_FIELD for a field's name or value,
 * otherwise INVALID_RECORD (or acc_record_check's code). */
Accord__V1__ErrorCode acc_validate_record(const Accord__V1__ChildRecord *rec, acc_err_t *reason);

/* The publish that the agent sends: acc_validate_record, then the packed
 * Envelope against max_bytes (TOO_LARGE). */
Accord__V1__ErrorCode acc_validate_publish(const Accord__V1__Envelope *env, size_t max_bytes,
                                           acc_err_t *reason);

/* True when id may be written to the log and echoed: 1-128 bytes of A-Z a-z 0-9 . _ : - */
bool acc_validate_is_record_id(const char *id);
/* True when id may name an agency in a delivery: 1-128 bytes of A-Z a-z 0-9 . _ : -
 * (agreement ids are a subset: a-z 0-9 . _ -) */
bool acc_validate_is_agency_id(const char *id);
/* True when type may be written to the log: 1-64 bytes of A-Z a-z 0-9 . _ : - */
bool acc_validate_is_record_type(const char *type);
/* True when name[0..len) may name a field: 1-64 bytes of A-Z a-z 0-9 . _ - */
bool acc_validate_is_field_name(const char *name, size_t len);

#endif
