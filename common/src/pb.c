/* pb.c - names of wire enums */
#include "accord/pb.h"

#include <string.h>

const char *acc_pb_code_name(Accord__V1__ErrorCode code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&accord__v1__error_code__descriptor, (int)code);
    return v != NULL ? v->name : "UNKNOWN";
}

static const char *const s_consent_names[] = {
    [ACCORD__V1__CONSENT__CONSENT_UNSPECIFIED] = "unspecified",
    [ACCORD__V1__CONSENT__CONSENT_NOT_SOUGHT] = "not-sought",
    [ACCORD__V1__CONSENT__CONSENT_GIVEN] = "given",
    [ACCORD__V1__CONSENT__CONSENT_REFUSED] = "refused",
    [ACCORD__V1__CONSENT__CONSENT_WITHDRAWN] = "withdrawn",
};

#define CONSENT_COUNT (sizeof(s_consent_names) / sizeof(s_consent_names[0]))

const char *acc_pb_consent_name(Accord__V1__Consent consent)
{
    size_t i = (size_t)consent;
    return i < CONSENT_COUNT ? s_consent_names[i] : "unspecified";
}

bool acc_pb_consent_parse(Accord__V1__Consent *out, const char *name)
{
    for (size_t i = 1; i < CONSENT_COUNT; i++) {
        if (strcmp(name, s_consent_names[i]) == 0) {
            *out = (Accord__V1__Consent)i;
            return true;
        }
    }
    return false;
}
