/* fuzz_envelope.c - libFuzzer target: Envelope frames as the broker decodes them:
 * the raw frame walk first, then protobuf-c, then the envelope and record checks */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/pb.h"
#include "accord/record.h"
#include "accord/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    acc_err_t reason;
    Accord__V1__ErrorCode walked = acc_validate_frame(data, size, (size_t)1 << 20, &reason);
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(NULL, size, data);
    if (walked == ACCORD__V1__ERROR_CODE__OK && env == NULL) {
        /* the walk must not pass what protobuf-c cannot decode */
        (void)fprintf(stderr, "walk passed a frame protobuf-c refuses\n");
        abort();
    }
    if (env == NULL) {
        return 0;
    }
    if (walked == ACCORD__V1__ERROR_CODE__OK &&
        acc_validate_envelope(env, &reason) == ACCORD__V1__ERROR_CODE__OK &&
        env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH && env->publish->record != NULL) {
        (void)acc_validate_record(env->publish->record, &reason);
        if (!acc_utf8_is_valid(reason.msg, strlen(reason.msg))) {
            abort();
        }
    }
    accord__v1__envelope__free_unpacked(env, NULL);
    return 0;
}
