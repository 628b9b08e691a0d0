/* notice.c - outcome and lookup notices: checked, then as NDJSON */
#include "notice.h"

#include <string.h>

#include "accord/logrow.h"
#include "accord/nhs.h"
#include "accord/record.h"
#include "accord/validate.h"

bool notice_is_status(const char *name)
{
    static const char *const statuses[] = { "received", "accepted", "declined", "closed" };
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        if (strcmp(name, statuses[i]) == 0) {
            return true;
        }
    }
    return false;
}

static bool s_is_uuid(const char *text)
{
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    acc_err_t ignored;
    return acc_uuid_parse(id, text, &ignored) == ACC_OK;
}

static bool s_is_text(const char *text, size_t min, size_t max)
{
    size_t len = strlen(text);
    return len >= min && len <= max && acc_utf8_is_valid(text, len);
}

static acc_rc_t s_check_field(const Accord__V1__Field *const *fields, size_t i, acc_err_t *err)
{
    const Accord__V1__Field *f = fields[i];
    if (!acc_validate_is_field_name(f->name, strlen(f->name))) {
        return acc_err_set(err, ACC_ERR_INVALID, "fields[%zu].name is missing or not valid", i);
    }
    for (size_t j = 0; j < i; j++) {
        if (strcmp(fields[j]->name, f->name) == 0) {
            return acc_err_set(err, ACC_ERR_INVALID, "field \"%s\" is given twice", f->name);
        }
    }
    switch (f->value_case) {
    case ACCORD__V1__FIELD__VALUE_TEXT:
        if (!s_is_text(f->text, 0, ACC_VALIDATE_TEXT_MAX)) {
            return acc_err_set(err, ACC_ERR_INVALID,
                               "field \"%s\" is not valid UTF-8 or is too long", f->name);
        }
        return ACC_OK;
    case ACCORD__V1__FIELD__VALUE_INTEGER:
    case ACCORD__V1__FIELD__VALUE_DECIMAL:
    case ACCORD__V1__FIELD__VALUE_BOOLEAN:
        return ACC_OK;
    case ACCORD__V1__FIELD__VALUE__NOT_SET:
    case _ACCORD__V1__FIELD__VALUE__CASE_IS_INT_SIZE:
        break;
    }
    return acc_err_set(err, ACC_ERR_INVALID, "field \"%s\" has no value", f->name);
}

static acc_rc_t s_check_ids(const Accord__V1__OutcomeNotice *n, acc_err_t *err)
{
    if (!s_is_uuid(n->outcome_id)) {
        return acc_err_set(err, ACC_ERR_INVALID, "outcome_id is not a uuid");
    }
    if (!s_is_uuid(n->share_id)) {
        return acc_err_set(err, ACC_ERR_INVALID, "share_id is not a uuid");
    }
    if (!acc_validate_is_record_id(n->record_id)) {
        return acc_err_set(err, ACC_ERR_INVALID, "record_id is missing or not valid");
    }
    if (!acc_validate_is_record_type(n->record_type)) {
        return acc_err_set(err, ACC_ERR_INVALID, "record_type is missing or not valid");
    }
    if (!acc_validate_is_agency_id(n->to_agency)) {
        return acc_err_set(err, ACC_ERR_INVALID, "to_agency is missing or not valid");
    }
    return ACC_OK;
}

acc_rc_t notice_outcome_check(const Accord__V1__OutcomeNotice *n, acc_err_t *err)
{
    acc_rc_t rc = s_check_ids(n, err);
    if (rc != ACC_OK) {
        return rc;
    }
    if (!notice_is_status(n->status)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "status is not one of received, accepted, declined, closed");
    }
    if (!acc_is_datetime(n->at)) {
        return acc_err_set(err, ACC_ERR_INVALID, "at is not an RFC 3339 date-time");
    }
    if (n->n_rule_ids > NOTICE_RULES_MAX) {
        return acc_err_set(err, ACC_ERR_INVALID, "more than %d rule ids", NOTICE_RULES_MAX);
    }
    for (size_t i = 0; i < n->n_rule_ids; i++) {
        if (!acc_validate_is_record_id(n->rule_ids[i])) {
            return acc_err_set(err, ACC_ERR_INVALID, "rule_ids[%zu] is not valid", i);
        }
    }
    if (n->n_fields > ACC_VALIDATE_OUTCOME_FIELDS_MAX) {
        return acc_err_set(err, ACC_ERR_INVALID, "more than %d fields",
                           ACC_VALIDATE_OUTCOME_FIELDS_MAX);
    }
    for (size_t i = 0; i < n->n_fields && rc == ACC_OK; i++) {
        rc = s_check_field((const Accord__V1__Field *const *)n->fields, i, err);
    }
    return rc;
}

static acc_rc_t s_check_subject(const Accord__V1__Subject *s, acc_err_t *err)
{
    if (s == NULL) {
        return acc_err_set(err, ACC_ERR_INVALID, "the child is missing");
    }
    if (s->nhs_number[0] != '\0') {
        if (!acc_nhs_is_valid(s->nhs_number) ||
            strlen(s->nhs_number) > ACC_VALIDATE_NHS_NUMBER_MAX) {
            return acc_err_set(err, ACC_ERR_INVALID, "subject.nhs_number is not valid");
        }
        return ACC_OK;
    }
    if (!s_is_text(s->local_id, 1, ACC_VALIDATE_LOCAL_ID_MAX)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "subject has neither a valid nhs_number nor a valid local_id");
    }
    if (!acc_is_date(s->date_of_birth)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "subject.date_of_birth is missing or not a date beside local_id");
    }
    return ACC_OK;
}

acc_rc_t notice_lookup_check(const Accord__V1__LookupNotice *n, acc_err_t *err)
{
    if (!s_is_uuid(n->notice_id)) {
        return acc_err_set(err, ACC_ERR_INVALID, "notice_id is not a uuid");
    }
    if (!s_is_uuid(n->lookup_id)) {
        return acc_err_set(err, ACC_ERR_INVALID, "lookup_id is not a uuid");
    }
    if (!acc_validate_is_agency_id(n->by_agency)) {
        return acc_err_set(err, ACC_ERR_INVALID, "by_agency is missing or not valid");
    }
    if (!s_is_text(n->purpose, 1, ACC_VALIDATE_PURPOSE_MAX)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "purpose is missing, not valid UTF-8 or longer than %d bytes",
                           ACC_VALIDATE_PURPOSE_MAX);
    }
    if (!acc_is_datetime(n->at)) {
        return acc_err_set(err, ACC_ERR_INVALID, "at is not an RFC 3339 date-time");
    }
    if (!acc_validate_is_record_id(n->lookup_rule)) {
        return acc_err_set(err, ACC_ERR_INVALID, "lookup_rule is missing or not valid");
    }
    return s_check_subject(n->subject, err);
}

/* The fields as a record's are printed: acc_record_to_json's conversion, so an
 * outcome's fields and a record's can never be typed differently. */
static json_t *s_fields_json(Accord__V1__Field **fields, size_t n_fields)
{
    Accord__V1__ChildRecord rec = ACCORD__V1__CHILD_RECORD__INIT;
    rec.fields = fields;
    rec.n_fields = n_fields;
    json_t *obj = acc_record_to_json(&rec);
    json_t *out = json_incref(json_object_get(obj, "fields"));
    json_decref(obj);
    return out != NULL ? out : json_object();
}

json_t *notice_outcome_json(const Accord__V1__OutcomeNotice *n)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < n->n_rule_ids; i++) {
        json_array_append_new(rules, json_string(n->rule_ids[i]));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:o}", "kind", "outcome",
                     "outcome_id", n->outcome_id, "share_id", n->share_id, "record_id",
                     n->record_id, "record_type", n->record_type, "to_agency", n->to_agency,
                     "status", n->status, "fields", s_fields_json(n->fields, n->n_fields), "at",
                     n->at, "rules", rules);
}

json_t *notice_lookup_json(const Accord__V1__LookupNotice *n)
{
    json_t *subject = json_object();
    const Accord__V1__Subject *s = n->subject;
    if (s != NULL && s->nhs_number[0] != '\0') {
        json_object_set_new(subject, "nhs_number", json_string(s->nhs_number));
    } else if (s != NULL) {
        json_object_set_new(subject, "local_id", json_string(s->local_id));
        json_object_set_new(subject, "date_of_birth", json_string(s->date_of_birth));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "kind", "lookup-notice",
                     "notice_id", n->notice_id, "lookup_id", n->lookup_id, "by_agency",
                     n->by_agency, "purpose", n->purpose, "at", n->at, "lookup", n->lookup_rule,
                     "subject", subject);
}
