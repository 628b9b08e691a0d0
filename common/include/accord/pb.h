/* pb.h - the generated protobuf-c wire types and the helpers around them */
#ifndef ACCORD_PB_H
#define ACCORD_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accord/v1/envelope.pb-c.h"
#include "accord/v1/record.pb-c.h"

/* protobuf-c's string fields are `char *` but it never writes through them;
 * this is the one place we drop const to fill one. */
static inline char *acc_pb_str(const char *s)
{
    union {
        const char *c;
        char *m;
    } u = { .c = s };
    return u.m;
}

/* The wire name of an error code ("INVALID_NHS_NUMBER"); "UNKNOWN" if not in the enum. */
const char *acc_pb_code_name(Accord__V1__ErrorCode code);

/* The NDJSON/agreement name of a consent value ("given"...). */
const char *acc_pb_consent_name(Accord__V1__Consent consent);

/* Parses "not-sought", "given", "refused" or "withdrawn"; false if none. */
bool acc_pb_consent_parse(Accord__V1__Consent *out, const char *name);

#endif
