/* fuzz_envelope.c - libFuzzer target: Envelope frames as the broker decodes them */
#include <stddef.h>
#include <stdint.h>

#include "accord/pb.h"
#include "accord/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Accord__V1__Envelope *env = accord__v1__envelope__unpack(NULL, size, data);
    if (env == NULL) {
        return 0;
    }
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH && env->publish->record != NULL) {
        acc_err_t reason;
        (void)acc_record_check(env->publish->record, &reason);
    }
    accord__v1__envelope__free_unpacked(env, NULL);
    return 0;
}
