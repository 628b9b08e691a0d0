/* policy_outcome.c - deciding an outcome reported on a share (the union of its rules'
 * `outcomes:`) and a lookup of who already knows a child (the agreement's `lookups:`) */
#include "accord/policy_outcome.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "policy_internal.h"

static const struct {
    const char *name;
    unsigned bit;
    int rank;
} s_statuses[] = {
    { "received", ACC_OUTCOME_RECEIVED, 1 },
    { "accepted", ACC_OUTCOME_ACCEPTED, 2 },
    { "declined", ACC_OUTCOME_DECLINED, 2 },
    { "closed", ACC_OUTCOME_CLOSED, 3 },
};

unsigned acc_outcome_status_parse(const char *name)
{
    for (size_t i = 0; name != NULL && i < POLICY_N_OF(s_statuses); i++) {
        if (strcmp(s_statuses[i].name, name) == 0) {
            return s_statuses[i].bit;
        }
    }
    return 0;
}

const char *acc_outcome_status_name(unsigned status)
{
    for (size_t i = 0; i < POLICY_N_OF(s_statuses); i++) {
        if (s_statuses[i].bit == status) {
            return s_statuses[i].name;
        }
    }
    return NULL;
}

int acc_outcome_status_rank(unsigned status)
{
    int rank = 0;
    for (size_t i = 0; i < POLICY_N_OF(s_statuses); i++) {
        if ((status & s_statuses[i].bit) != 0 && s_statuses[i].rank > rank) {
            rank = s_statuses[i].rank;
        }
    }
    return rank;
}

/* The name of the highest-ranked status among the bits of status ("?" if none). */
static const char *s_top_status_name(unsigned status)
{
    const char *name = "?";
    int rank = 0;
    for (size_t i = 0; i < POLICY_N_OF(s_statuses); i++) {
        if ((status & s_statuses[i].bit) != 0 && s_statuses[i].rank > rank) {
            rank = s_statuses[i].rank;
            name = s_statuses[i].name;
        }
    }
    return name;
}

/* ---- outcomes ---- */

ACC_PRINTF(3, 4)
static void s_refuse(acc_outcome_decision_t *out, Accord__V1__ErrorCode code, const char *fmt, ...)
{
    out->code = code;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
}

/* The rule logged as rule_ids[i], when it is in this agreement and takes outcomes. */
static const policy_rule_t *s_outcome_rule(const acc_policy_t *p, const char *const *rule_ids,
                                           size_t i)
{
    size_t index = 0;
    if (rule_ids[i] == NULL || !policy_find_rule(p, rule_ids[i], &index)) {
        return NULL;
    }
    const policy_rule_t *rule = &p->rules[index];
    return rule->outcome_statuses != 0 ? rule : NULL;
}

static void s_refuse_no_outcomes(acc_outcome_decision_t *out, const char *const *rule_ids,
                                 size_t rule_count)
{
    Accord__V1__ErrorCode code = ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED;
    if (rule_count == 0) {
        s_refuse(out, code, "the share is logged under no rule, so it takes no outcomes");
    } else if (rule_count == 1) {
        s_refuse(out, code, "rule \"%.64s\" takes no outcomes",
                 rule_ids[0] != NULL ? rule_ids[0] : "?");
    } else {
        s_refuse(out, code, "rules \"%.64s\" and %zu more take no outcomes",
                 rule_ids[0] != NULL ? rule_ids[0] : "?", rule_count - 1);
    }
}

/* Sets out->status from status when the share's statuses (allowed) take it after prev;
 * false with out refused otherwise. */
static bool s_check_status(acc_outcome_decision_t *out, unsigned allowed, const char *status,
                           unsigned prev)
{
    unsigned bit = acc_outcome_status_parse(status);
    if (bit == 0) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED,
                 "unknown status \"%.16s\" (received, accepted, declined, closed)",
                 status != NULL ? status : "");
        return false;
    }
    if ((bit & allowed) == 0) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED,
                 "status \"%s\" is not one the share's rules take", acc_outcome_status_name(bit));
        return false;
    }
    if (acc_outcome_status_rank(bit) <= acc_outcome_status_rank(prev)) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER,
                 "already %s; a status moves forward only", s_top_status_name(prev));
        return false;
    }
    out->status = bit;
    return true;
}

/* Why field i of an outcome does not suit the share's rules, or NULL when it does: a
 * field declared by several rules may take a value that suits any of them. */
static const char *s_field_fault(const acc_policy_t *p, const char *const *rule_ids,
                                 size_t rule_count, Accord__V1__Field *const *fields, size_t i)
{
    const char *name = fields[i]->name;
    for (size_t k = 0; k < i; k++) {
        if (strcmp(fields[k]->name, name) == 0) {
            return "given twice";
        }
    }
    const char *first_fault = NULL;
    for (size_t r = 0; r < rule_count; r++) {
        const policy_rule_t *rule = s_outcome_rule(p, rule_ids, r);
        const policy_field_t *f =
            rule != NULL
                ? policy_find_field(rule->outcome_fields, rule->outcome_field_count, name, NULL)
                : NULL;
        const char *why = f != NULL ? policy_value_fault(f, fields[i]) : first_fault;
        if (f != NULL && why == NULL) {
            return NULL;
        }
        first_fault = first_fault != NULL ? first_fault : why;
    }
    return first_fault != NULL ? first_fault : "not a field of this share's outcomes";
}

/* NOLINTNEXTLINE(readability-function-size): 8 parameters, the API agreed in issue 17 */
void acc_policy_decide_outcome(const acc_policy_t *self, const char *const *rule_ids,
                               size_t rule_count, const char *status, unsigned prev,
                               Accord__V1__Field *const *fields, size_t n_fields,
                               acc_outcome_decision_t *out)
{
    out->code = ACCORD__V1__ERROR_CODE__OK;
    out->reason[0] = '\0';
    out->status = 0;
    out->to_sender = false;
    unsigned allowed = 0;
    bool to_sender = false;
    for (size_t r = 0; r < rule_count; r++) {
        const policy_rule_t *rule = s_outcome_rule(self, rule_ids, r);
        allowed |= rule != NULL ? rule->outcome_statuses : 0;
        to_sender = to_sender || (rule != NULL && rule->to_sender);
    }
    if (allowed == 0) {
        s_refuse_no_outcomes(out, rule_ids, rule_count);
        return;
    }
    if (!s_check_status(out, allowed, status, prev)) {
        return;
    }
    if (n_fields > ACC_POLICY_MAX_OUTCOME_FIELDS) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__INVALID_FIELD,
                 "an outcome carries at most %d fields, not %zu", ACC_POLICY_MAX_OUTCOME_FIELDS,
                 n_fields);
        out->status = 0;
        return;
    }
    for (size_t i = 0; i < n_fields; i++) {
        const char *fault = s_field_fault(self, rule_ids, rule_count, fields, i);
        if (fault != NULL) {
            s_refuse(out, ACCORD__V1__ERROR_CODE__INVALID_FIELD, "field \"%.64s\": %s",
                     fields[i]->name, fault);
            out->status = 0;
            return;
        }
    }
    out->to_sender = to_sender;
}

bool acc_policy_rule_outcomes(const acc_policy_t *self, size_t rule, unsigned *statuses,
                              bool *to_sender)
{
    const policy_rule_t *r = &self->rules[rule];
    if (statuses != NULL) {
        *statuses = r->outcome_statuses;
    }
    if (to_sender != NULL) {
        *to_sender = r->outcome_statuses != 0 && r->to_sender;
    }
    return r->outcome_statuses != 0;
}

size_t acc_policy_rule_outcome_field_count(const acc_policy_t *self, size_t rule)
{
    return self->rules[rule].outcome_field_count;
}

const char *acc_policy_rule_outcome_field_name(const acc_policy_t *self, size_t rule, size_t i)
{
    return self->rules[rule].outcome_fields[i].name;
}

const char *acc_policy_rule_outcome_field_spec(const acc_policy_t *self, size_t rule, size_t i)
{
    return self->rules[rule].outcome_fields[i].spec;
}

/* ---- lookups ---- */

ACC_PRINTF(3, 4)
static void s_refuse_lookup(acc_lookup_decision_t *out, Accord__V1__ErrorCode code, const char *fmt,
                            ...)
{
    out->code = code;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
}

static bool s_lists(const policy_lookup_t *l, const char *purpose)
{
    for (size_t i = 0; i < l->purposes.count; i++) {
        if (strcmp(l->purposes.items[i], purpose) == 0) {
            return true;
        }
    }
    return false;
}

void acc_policy_decide_lookup(const acc_policy_t *self, size_t by, const char *purpose,
                              const char *day, acc_lookup_decision_t *out)
{
    out->code = ACCORD__V1__ERROR_CODE__OK;
    out->reason[0] = '\0';
    out->lookup = 0;
    if (!acc_policy_is_in_force(self, day)) {
        s_refuse_lookup(out, ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE,
                        "the agreement is in force from %s to %s", self->valid_from,
                        self->valid_until);
        return;
    }
    const char *agency = by < self->agency_count ? self->agencies[by].id : "?";
    bool any = false;
    for (size_t i = 0; by < self->agency_count && i < self->lookup_count; i++) {
        const policy_lookup_t *l = &self->lookups[i];
        if (!l->by[by]) {
            continue;
        }
        any = true;
        if (s_lists(l, purpose != NULL ? purpose : "")) {
            out->lookup = i;
            return;
        }
    }
    if (!any) {
        s_refuse_lookup(out, ACCORD__V1__ERROR_CODE__NOT_PERMITTED,
                        "no lookup in the agreement is made by %s", agency);
        return;
    }
    s_refuse_lookup(out, ACCORD__V1__ERROR_CODE__PURPOSE_NOT_PERMITTED,
                    "no lookup made by %s lists the purpose \"%.80s\"", agency,
                    purpose != NULL ? purpose : "");
}

size_t acc_policy_lookup_count(const acc_policy_t *self)
{
    return self->lookup_count;
}

const char *acc_policy_lookup_id(const acc_policy_t *self, size_t lookup)
{
    return self->lookups[lookup].id;
}

bool acc_policy_lookup_notifies(const acc_policy_t *self, size_t lookup)
{
    return self->lookups[lookup].notify;
}

const char *acc_policy_lookup_window(const acc_policy_t *self, size_t lookup)
{
    return self->lookups[lookup].window;
}

int64_t acc_policy_lookup_window_days_max(const acc_policy_t *self, size_t lookup)
{
    return self->lookups[lookup].window_days_max;
}

size_t acc_policy_lookup_purpose_count(const acc_policy_t *self, size_t lookup)
{
    return self->lookups[lookup].purposes.count;
}

const char *acc_policy_lookup_purpose(const acc_policy_t *self, size_t lookup, size_t i)
{
    return self->lookups[lookup].purposes.items[i];
}

bool acc_policy_lookup_allows(const acc_policy_t *self, size_t lookup, size_t agency)
{
    return agency < self->agency_count && self->lookups[lookup].by[agency];
}
