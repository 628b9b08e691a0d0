/* policy_record.c - deciding a published record: its fields checked against the
 * record type, its recipients and what each may see */
#include "accord/policy_record.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "accord/nhs.h"
#include "accord/record.h"
#include "policy_internal.h"

static const struct {
    const char *name;
    unsigned bit;
} s_subject_ids[] = {
    { "nhs_number", ACC_SUBJECT_NHS_NUMBER },       { "local_id", ACC_SUBJECT_LOCAL_ID },
    { "given_name", ACC_SUBJECT_GIVEN_NAME },       { "family_name", ACC_SUBJECT_FAMILY_NAME },
    { "date_of_birth", ACC_SUBJECT_DATE_OF_BIRTH }, { "postcode", ACC_SUBJECT_POSTCODE },
};

ACC_PRINTF(3, 4)
static void s_refuse(acc_decision_t *out, Accord__V1__ErrorCode code, const char *fmt, ...)
{
    out->code = code;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
    va_end(ap);
}

static const char *s_enum_fault(const policy_field_t *f, const Accord__V1__Field *value)
{
    if (value->value_case == ACCORD__V1__FIELD__VALUE_TEXT) {
        for (size_t i = 0; i < f->values.count; i++) {
            if (strcmp(f->values.items[i], value->text) == 0) {
                return NULL;
            }
        }
    }
    return "not one of the allowed values";
}

static const char *s_text_fault(const policy_field_t *f, const Accord__V1__Field *value)
{
    bool text = value->value_case == ACCORD__V1__FIELD__VALUE_TEXT;
    switch (f->kind) {
    case ACC_FIELD_TEXT:
        return !text                              ? "expected text"
               : strlen(value->text) > f->max_len ? "text is too long"
                                                  : NULL;
    case ACC_FIELD_DATE:
        return text && acc_is_date(value->text) ? NULL : "expected a date (YYYY-MM-DD)";
    case ACC_FIELD_DATETIME:
        return text && acc_is_datetime(value->text) ? NULL : "expected an RFC 3339 date-time";
    case ACC_FIELD_NHS_NUMBER:
        return text && acc_nhs_is_valid(value->text) ? NULL : "expected a valid NHS number";
    case ACC_FIELD_ENUM:
        return s_enum_fault(f, value);
    case ACC_FIELD_INTEGER:
    case ACC_FIELD_DECIMAL:
    case ACC_FIELD_BOOLEAN:
        break;
    }
    return "of an unknown kind";
}

const char *policy_value_fault(const policy_field_t *f, const Accord__V1__Field *value)
{
    Accord__V1__Field__ValueCase got = value->value_case;
    switch (f->kind) {
    case ACC_FIELD_INTEGER:
        return got == ACCORD__V1__FIELD__VALUE_INTEGER ? NULL : "expected an integer";
    case ACC_FIELD_DECIMAL:
        return got == ACCORD__V1__FIELD__VALUE_DECIMAL || got == ACCORD__V1__FIELD__VALUE_INTEGER
                   ? NULL
                   : "expected a number";
    case ACC_FIELD_BOOLEAN:
        return got == ACCORD__V1__FIELD__VALUE_BOOLEAN ? NULL : "expected true or false";
    case ACC_FIELD_TEXT:
    case ACC_FIELD_DATE:
    case ACC_FIELD_DATETIME:
    case ACC_FIELD_NHS_NUMBER:
    case ACC_FIELD_ENUM:
        break;
    }
    return s_text_fault(f, value);
}

/* Checks every field of rec against type t; false with out refused on the first fault. */
static bool s_check_fields(const policy_type_t *t, const Accord__V1__ChildRecord *rec,
                           acc_decision_t *out)
{
    uint64_t present = 0;
    for (size_t i = 0; i < rec->n_fields; i++) {
        size_t index = 0;
        const policy_field_t *f =
            policy_find_field(t->fields, t->field_count, rec->fields[i]->name, &index);
        const char *fault = f == NULL                      ? "not a field of this record type"
                            : (present >> index & 1U) != 0 ? "given twice"
                                                           : policy_value_fault(f, rec->fields[i]);
        if (fault != NULL) {
            s_refuse(out, ACCORD__V1__ERROR_CODE__INVALID_FIELD, "field \"%.64s\": %s",
                     rec->fields[i]->name, fault);
            return false;
        }
        present |= UINT64_C(1) << index;
    }
    uint64_t missing = t->required & ~present;
    for (size_t i = 0; missing != 0 && i < t->field_count; i++) {
        if ((missing >> i & 1U) != 0) {
            s_refuse(out, ACCORD__V1__ERROR_CODE__MISSING_FIELD, "required field \"%s\" is missing",
                     t->fields[i].name);
            return false;
        }
    }
    return true;
}

static bool s_consent_allows(acc_consent_rule_t rule, const Accord__V1__ChildRecord *rec,
                             bool *override)
{
    bool given = rec->consent == ACCORD__V1__CONSENT__CONSENT_GIVEN;
    switch (rule) {
    case ACC_CONSENT_RULE_NOT_REQUIRED:
        return true;
    case ACC_CONSENT_RULE_REQUIRED:
        return given;
    case ACC_CONSENT_RULE_UNLESS_SAFEGUARDING:
        if (given) {
            return true;
        }
        *override = rec->safeguarding && rec->safeguarding_justification[0] != '\0';
        return *override;
    }
    return false;
}

/* The union of every rule that lets grant g's recipient see rec. */
static void s_decide_grant(const acc_policy_t *p, const policy_grant_t *g,
                           const Accord__V1__ChildRecord *rec, acc_recipient_t *r)
{
    memset(r, 0, sizeof(*r));
    r->agency = g->agency;
    bool given_path = false;
    for (size_t i = 0; i < g->rule_count; i++) {
        bool override = false;
        if (!s_consent_allows(g->rules[i].consent, rec, &override)) {
            continue;
        }
        given_path = given_path || !override;
        r->field_mask |= g->rules[i].field_mask;
        r->subject_mask |= g->rules[i].subject_mask;
        r->rules[r->rule_count++] = g->rules[i].rule;
    }
    r->withheld = r->rule_count == 0;
    r->withheld_reason = r->withheld ? p->rules[g->rules[0].rule].withheld_reason : NULL;
    r->safeguarding_override = !r->withheld && !given_path;
}

void acc_policy_decide(const acc_policy_t *self, size_t from, const char *day,
                       const Accord__V1__ChildRecord *rec, acc_decision_t *out)
{
    out->code = ACCORD__V1__ERROR_CODE__OK;
    out->reason[0] = '\0';
    out->recipient_count = 0;
    if (!acc_policy_is_in_force(self, day)) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE,
                 "the agreement is in force from %s to %s", self->valid_from, self->valid_until);
        return;
    }
    const policy_type_t *t = policy_find_type(self, rec->record_type, &out->type);
    if (t == NULL) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__UNKNOWN_RECORD_TYPE,
                 "record type \"%.64s\" is not in the agreement", rec->record_type);
        return;
    }
    const policy_slot_t *slot = &self->slots[from * self->type_count + out->type];
    if (slot->count == 0) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__NO_AGREEMENT, "no rule lets %s share \"%s\" records",
                 self->agencies[from].id, t->id);
        return;
    }
    if (!s_check_fields(t, rec, out)) {
        return;
    }
    for (size_t i = 0; i < slot->count; i++) {
        s_decide_grant(self, &slot->grants[i], rec, &out->recipients[out->recipient_count++]);
    }
}

void acc_policy_describe(const acc_policy_t *self, size_t from, const char *type,
                         acc_decision_t *out)
{
    out->code = ACCORD__V1__ERROR_CODE__OK;
    out->reason[0] = '\0';
    out->recipient_count = 0;
    const policy_type_t *t = policy_find_type(self, type, &out->type);
    if (t == NULL) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__UNKNOWN_RECORD_TYPE,
                 "record type \"%.64s\" is not in the agreement", type);
        return;
    }
    const policy_slot_t *slot = &self->slots[from * self->type_count + out->type];
    if (slot->count == 0) {
        s_refuse(out, ACCORD__V1__ERROR_CODE__NO_AGREEMENT, "no rule lets %s share \"%s\" records",
                 self->agencies[from].id, t->id);
        return;
    }
    for (size_t i = 0; i < slot->count; i++) {
        const policy_grant_t *g = &slot->grants[i];
        acc_recipient_t *r = &out->recipients[out->recipient_count++];
        memset(r, 0, sizeof(*r));
        r->agency = g->agency;
        for (size_t k = 0; k < g->rule_count; k++) {
            r->field_mask |= g->rules[k].field_mask;
            r->subject_mask |= g->rules[k].subject_mask;
            r->rules[r->rule_count++] = g->rules[k].rule;
        }
    }
}

size_t acc_policy_field_count(const acc_policy_t *self, size_t type)
{
    return self->types[type].field_count;
}

const char *acc_policy_field_name(const acc_policy_t *self, size_t type, size_t field)
{
    return self->types[type].fields[field].name;
}

const char *acc_policy_subject_name(unsigned bit)
{
    for (size_t i = 0; i < POLICY_N_OF(s_subject_ids); i++) {
        if (s_subject_ids[i].bit == bit) {
            return s_subject_ids[i].name;
        }
    }
    return NULL;
}

static const char *s_keep(unsigned mask, unsigned bit, const char *value)
{
    return (mask & bit) != 0 ? value : protobuf_c_empty_string;
}

void acc_policy_project(const acc_policy_t *self, const acc_decision_t *decision,
                        const acc_recipient_t *r, const Accord__V1__ChildRecord *rec,
                        acc_projection_t *out)
{
    const policy_type_t *t = &self->types[decision->type];
    accord__v1__child_record__init(&out->record);
    accord__v1__subject__init(&out->subject);
    out->record.record_id = rec->record_id;
    out->record.record_type = rec->record_type;
    out->record.occurred_at = rec->occurred_at;
    out->record.consent = rec->consent;
    out->record.safeguarding = rec->safeguarding;
    if (r->safeguarding_override) {
        out->record.safeguarding_justification = rec->safeguarding_justification;
    }
    const Accord__V1__Subject *s = rec->subject;
    if (s != NULL) {
        unsigned m = r->subject_mask;
        out->subject.nhs_number = acc_pb_str(s_keep(m, ACC_SUBJECT_NHS_NUMBER, s->nhs_number));
        out->subject.local_id = acc_pb_str(s_keep(m, ACC_SUBJECT_LOCAL_ID, s->local_id));
        out->subject.given_name = acc_pb_str(s_keep(m, ACC_SUBJECT_GIVEN_NAME, s->given_name));
        out->subject.family_name = acc_pb_str(s_keep(m, ACC_SUBJECT_FAMILY_NAME, s->family_name));
        out->subject.date_of_birth =
            acc_pb_str(s_keep(m, ACC_SUBJECT_DATE_OF_BIRTH, s->date_of_birth));
        out->subject.postcode = acc_pb_str(s_keep(m, ACC_SUBJECT_POSTCODE, s->postcode));
    }
    out->record.subject = &out->subject;
    out->record.fields = out->field_ptrs;
    for (size_t i = 0; i < rec->n_fields && out->record.n_fields < ACC_POLICY_MAX_FIELDS; i++) {
        size_t index = 0;
        if (policy_find_field(t->fields, t->field_count, rec->fields[i]->name, &index) != NULL &&
            (r->field_mask >> index & 1U) != 0) {
            out->field_ptrs[out->record.n_fields++] = rec->fields[i];
        }
    }
}
