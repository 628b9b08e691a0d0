/* explain.c - `accord agreement explain`: who would receive what, and why */
#include "explain.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/record.h"
#include "accord/validate.h"

#define RECORD_FILE_MAX ((size_t)1024 * 1024)

static const char *s_consent_text(acc_consent_rule_t consent)
{
    switch (consent) {
    case ACC_CONSENT_RULE_REQUIRED:
        return "only with consent given";
    case ACC_CONSENT_RULE_NOT_REQUIRED:
        return "consent not required";
    case ACC_CONSENT_RULE_UNLESS_SAFEGUARDING:
        return "with consent given, or without it on a safeguarding justification";
    }
    return "?";
}

static void s_print_masks(FILE *out, const acc_policy_t *p, size_t type, const acc_recipient_t *r)
{
    (void)fprintf(out, "      fields:  ");
    const char *sep = "";
    for (size_t i = 0; i < acc_policy_field_count(p, type); i++) {
        if ((r->field_mask >> i & 1U) != 0) {
            (void)fprintf(out, "%s%s", sep, acc_policy_field_name(p, type, i));
            sep = ", ";
        }
    }
    (void)fprintf(out, "%s\n      subject: ", sep[0] == '\0' ? "(none)" : "");
    sep = "";
    for (unsigned bit = 1; bit <= ACC_SUBJECT_POSTCODE; bit <<= 1U) {
        if ((r->subject_mask & bit) != 0) {
            (void)fprintf(out, "%s%s", sep, acc_policy_subject_name(bit));
            sep = ", ";
        }
    }
    (void)fprintf(out, "%s\n", sep[0] == '\0' ? "(none)" : "");
}

/* What a recipient may report back on a share under rule, if the rule takes outcomes. */
static void s_print_outcomes(FILE *out, const acc_policy_t *p, size_t rule, size_t from)
{
    unsigned statuses = 0;
    bool to_sender = false;
    if (!acc_policy_rule_outcomes(p, rule, &statuses, &to_sender)) {
        return;
    }
    (void)fprintf(out, "        outcomes: ");
    const char *sep = "";
    for (unsigned bit = ACC_OUTCOME_RECEIVED; bit <= ACC_OUTCOME_CLOSED; bit <<= 1U) {
        if ((statuses & bit) != 0) {
            (void)fprintf(out, "%s%s", sep, acc_outcome_status_name(bit));
            sep = ", ";
        }
    }
    (void)fprintf(out, "; %s %s\n        outcome fields: ",
                  to_sender ? "each goes back to" : "not sent back to",
                  acc_policy_agency_id(p, from));
    size_t n = acc_policy_rule_outcome_field_count(p, rule);
    for (size_t i = 0; i < n; i++) {
        (void)fprintf(out, "%s%s (%s)", i > 0 ? ", " : "",
                      acc_policy_rule_outcome_field_name(p, rule, i),
                      acc_policy_rule_outcome_field_spec(p, rule, i));
    }
    (void)fprintf(out, "%s\n", n == 0 ? "(none)" : "");
}

static void s_print_rules(FILE *out, const acc_policy_t *p, size_t from, const acc_recipient_t *r)
{
    for (size_t k = 0; k < r->rule_count; k++) {
        size_t rule = r->rules[k];
        (void)fprintf(out, "      rule %s: %s\n        purpose: %s\n        lawful basis: %s\n",
                      acc_policy_rule_id(p, rule), s_consent_text(acc_policy_rule_consent(p, rule)),
                      acc_policy_rule_purpose(p, rule), acc_policy_rule_lawful_basis(p, rule));
        s_print_outcomes(out, p, rule, from);
    }
}

/* The lookups agency from may make: who may ask, for which purposes, how far back. */
static void s_print_lookups(FILE *out, const acc_policy_t *p, size_t from)
{
    size_t mine = 0;
    for (size_t l = 0; l < acc_policy_lookup_count(p); l++) {
        mine += acc_policy_lookup_allows(p, l, from) ? 1 : 0;
    }
    (void)fprintf(out, "lookups %s may make: ", acc_policy_agency_id(p, from));
    if (mine == 0) {
        (void)fprintf(out, "none\n");
        return;
    }
    (void)fprintf(out, "%zu\n", mine);
    for (size_t l = 0; l < acc_policy_lookup_count(p); l++) {
        if (!acc_policy_lookup_allows(p, l, from)) {
            continue;
        }
        (void)fprintf(out, "  lookup %s: asked by ", acc_policy_lookup_id(p, l));
        const char *sep = "";
        for (size_t a = 0; a < acc_policy_agency_count(p); a++) {
            if (acc_policy_lookup_allows(p, l, a)) {
                (void)fprintf(out, "%s%s", sep, acc_policy_agency_id(p, a));
                sep = ", ";
            }
        }
        (void)fprintf(out, "\n");
        for (size_t i = 0; i < acc_policy_lookup_purpose_count(p, l); i++) {
            (void)fprintf(out, "    purpose: %s\n", acc_policy_lookup_purpose(p, l, i));
        }
        (void)fprintf(out, "    window: %s\n    notify: %s\n", acc_policy_lookup_window(p, l),
                      acc_policy_lookup_notifies(p, l)
                          ? "yes, each agency named in an answer is told"
                          : "no");
    }
}

int explain_type(FILE *out, const acc_policy_t *policy, size_t from, const char *type)
{
    acc_decision_t *d = acc_xmalloc(sizeof(*d));
    acc_policy_describe(policy, from, type, d);
    int status = 0;
    if (d->code != ACCORD__V1__ERROR_CODE__OK) {
        (void)fprintf(out, "refused %s: %s\n", acc_pb_code_name(d->code), d->reason);
        status = 1;
    } else {
        (void)fprintf(out, "%s publishing \"%s\" records reaches %zu recipient(s):\n",
                      acc_policy_agency_id(policy, from), type, d->recipient_count);
    }
    for (size_t i = 0; i < d->recipient_count; i++) {
        const acc_recipient_t *r = &d->recipients[i];
        (void)fprintf(out, "  -> %s (%s)\n", acc_policy_agency_id(policy, r->agency),
                      acc_policy_agency_name(policy, r->agency));
        s_print_masks(out, policy, d->type, r);
        s_print_rules(out, policy, from, r);
    }
    free(d);
    s_print_lookups(out, policy, from);
    return status;
}

static char *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *text = acc_xmalloc(RECORD_FILE_MAX + 1);
    *len = fread(text, 1, RECORD_FILE_MAX, f);
    (void)fclose(f);
    text[*len] = '\0';
    return text;
}

static int s_print_decision(FILE *out, const acc_policy_t *p, size_t from, const acc_decision_t *d)
{
    int shared = 0;
    for (size_t i = 0; i < d->recipient_count; i++) {
        const acc_recipient_t *r = &d->recipients[i];
        const char *agency = acc_policy_agency_id(p, r->agency);
        if (r->withheld) {
            (void)fprintf(out, "  withheld from %s: %s\n", agency, r->withheld_reason);
            continue;
        }
        shared++;
        (void)fprintf(out, "  shared with %s%s\n", agency,
                      r->safeguarding_override
                          ? " without consent, on the safeguarding justification given"
                          : "");
        s_print_masks(out, p, d->type, r);
        s_print_rules(out, p, from, r);
    }
    return shared > 0 ? 0 : 1;
}

int explain_record(FILE *out, const acc_policy_t *policy, size_t from, const char *path)
{
    size_t len = 0;
    char *text = s_read_file(path, &len);
    if (text == NULL) {
        (void)fprintf(out, "could not read record file \"%s\"\n", path);
        return 3;
    }
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    if (acc_record_from_json(&rec, text, len, &err) != ACC_OK) {
        (void)fprintf(out, "%s: %s\n", path, err.msg);
        free(text);
        return 1;
    }
    free(text);
    acc_err_t reason;
    acc_err_clear(&reason);
    Accord__V1__ErrorCode code = acc_validate_record(rec, &reason);
    acc_decision_t *d = acc_xmalloc(sizeof(*d));
    if (code == ACCORD__V1__ERROR_CODE__OK) {
        char today[11];
        time_t now = time(NULL);
        struct tm tm;
        (void)gmtime_r(&now, &tm);
        (void)strftime(today, sizeof(today), "%Y-%m-%d", &tm);
        acc_policy_decide(policy, from, today, rec, d);
        code = d->code;
        (void)snprintf(reason.msg, sizeof(reason.msg), "%s", d->reason);
    }
    int status = 1;
    if (code != ACCORD__V1__ERROR_CODE__OK) {
        (void)fprintf(out, "record %s would be refused %s: %s\n", rec->record_id,
                      acc_pb_code_name(code), reason.msg);
    } else {
        (void)fprintf(out, "record %s (consent: %s) would be:\n", rec->record_id,
                      acc_pb_consent_name(rec->consent));
        status = s_print_decision(out, policy, from, d);
    }
    free(d);
    acc_record_free(&rec);
    return status;
}
