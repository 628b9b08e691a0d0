/* fuzz_policy.c - libFuzzer target: the agreement parser and checker */
#include <stddef.h>
#include <stdint.h>

#include "accord/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    acc_policy_t *policy = NULL;
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    if (acc_policy_parse(&policy, "fuzz.yaml", data, size, &diag, &err) == ACC_OK) {
        acc_decision_t decision;
        Accord__V1__ChildRecord empty;
        accord__v1__child_record__init(&empty);
        for (size_t from = 0; from < acc_policy_agency_count(policy); from++) {
            acc_policy_decide(policy, from, "2027-01-01", &empty, &decision);
        }
        acc_policy_destroy(&policy);
    }
    acc_diag_clear(&diag);
    return 0;
}
