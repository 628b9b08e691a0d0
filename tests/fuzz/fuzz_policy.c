/* fuzz_policy.c - libFuzzer target: the agreement parser and checker, and the decisions
 * made with what it loads (a record, an outcome on each rule, a lookup of each kind) */
#include <stddef.h>
#include <stdint.h>

#include "accord/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_decide_outcomes_and_lookups(const acc_policy_t *policy)
{
    acc_outcome_decision_t outcome;
    for (size_t r = 0; r < acc_policy_rule_count(policy); r++) {
        const char *id = acc_policy_rule_id(policy, r);
        acc_policy_decide_outcome(policy, &id, 1, "received", 0, NULL, 0, &outcome);
        acc_policy_decide_outcome(policy, &id, 1, "closed", ACC_OUTCOME_ACCEPTED, NULL, 0,
                                  &outcome);
    }
    acc_lookup_decision_t lookup;
    for (size_t l = 0; l < acc_policy_lookup_count(policy); l++) {
        const char *purpose = acc_policy_lookup_purpose(policy, l, 0);
        for (size_t by = 0; by < acc_policy_agency_count(policy) && by < 8; by++) {
            acc_policy_decide_lookup(policy, by, purpose, "2027-01-01", &lookup);
        }
    }
}

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
        s_decide_outcomes_and_lookups(policy);
        acc_policy_destroy(&policy);
    }
    acc_diag_clear(&diag);
    return 0;
}
