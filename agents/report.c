/* report.c - outcome reports from --field arguments and NDJSON lines */
#include "report.h"

#include <stdlib.h>
#include <string.h>

#include "accord/logrow.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "notice.h"

struct report_t {
    char *share_id;
    char *status;
    Accord__V1__ChildRecord *holder; /* owns the fields, parsed as a record's */
};

static json_t *s_typed_value(const char *text)
{
    json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
    if (value != NULL && !json_is_number(value) && !json_is_boolean(value)) {
        json_decref(value);
        value = NULL;
    }
    return value;
}

acc_rc_t report_field_arg(json_t *fields, const char *arg, acc_err_t *err)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "--field takes NAME=TEXT or NAME:=NUMBER|true|false");
    }
    bool typed = eq > arg && eq[-1] == ':';
    size_t name_len = (size_t)(eq - arg) - (typed ? 1U : 0U);
    if (!acc_validate_is_field_name(arg, name_len)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "--field: a field name is 1-64 of A-Z a-z 0-9 . _ - before '='");
    }
    char name[ACC_VALIDATE_FIELD_NAME_MAX + 1];
    memcpy(name, arg, name_len);
    name[name_len] = '\0';
    if (json_object_get(fields, name) != NULL) {
        return acc_err_set(err, ACC_ERR_INVALID, "--field \"%s\" is given twice", name);
    }
    if (json_object_size(fields) >= ACC_VALIDATE_OUTCOME_FIELDS_MAX) {
        return acc_err_set(err, ACC_ERR_INVALID, "more than %d fields",
                           ACC_VALIDATE_OUTCOME_FIELDS_MAX);
    }
    json_t *value = typed ? s_typed_value(eq + 1) : json_string(eq + 1);
    if (value == NULL) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           typed ? "--field \"%s\": after ':=' comes a number or true/false "
                                   "(text is NAME=TEXT)"
                                 : "--field \"%s\": the text is not valid UTF-8",
                           name);
    }
    json_object_set_new(fields, name, value);
    return ACC_OK;
}

/* The fields go through acc_record_from_json, so they are typed exactly as a
 * record's fields are, and refused for the same faults. */
static acc_rc_t s_parse_fields(Accord__V1__ChildRecord **holder, json_t *fields, acc_err_t *err)
{
    if (fields != NULL && !json_is_object(fields)) {
        return acc_err_set(err, ACC_ERR_INVALID, "\"fields\" must be a JSON object");
    }
    if (fields != NULL && json_object_size(fields) > ACC_VALIDATE_OUTCOME_FIELDS_MAX) {
        return acc_err_set(err, ACC_ERR_INVALID, "more than %d fields",
                           ACC_VALIDATE_OUTCOME_FIELDS_MAX);
    }
    const char *name = NULL;
    json_t *value = NULL;
    json_object_foreach(fields, name, value)
    {
        if (!acc_validate_is_field_name(name, strlen(name))) {
            return acc_err_set(err, ACC_ERR_INVALID,
                               "a field name is 1-64 of A-Z a-z 0-9 . _ - (\"fields\")");
        }
    }
    json_t *wrap = json_object();
    json_object_set_new(wrap, "fields", fields != NULL ? json_deep_copy(fields) : json_object());
    char *text = json_dumps(wrap, JSON_COMPACT);
    json_decref(wrap);
    if (text == NULL) {
        return acc_err_set(err, ACC_ERR_INVALID, "the fields could not be encoded");
    }
    acc_rc_t rc = acc_record_from_json(holder, text, strlen(text), err);
    free(text);
    return rc;
}

acc_rc_t report_new(report_t **out, const char *share_id, const char *status, json_t *fields,
                    acc_err_t *err)
{
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    if (acc_uuid_parse(id, share_id, err) != ACC_OK) {
        return acc_err_set(err, ACC_ERR_INVALID, "the share id is not a uuid (as delivered)");
    }
    if (!notice_is_status(status)) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "the status must be received, accepted, declined or closed");
    }
    Accord__V1__ChildRecord *holder = NULL;
    acc_rc_t rc = s_parse_fields(&holder, fields, err);
    if (rc != ACC_OK) {
        return rc;
    }
    report_t *self = acc_xcalloc(1, sizeof(*self));
    self->share_id = acc_xstrdup(share_id);
    self->status = acc_xstrdup(status);
    self->holder = holder;
    *out = self;
    return ACC_OK;
}

static const char *s_string_key(const json_t *root, const char *key)
{
    return json_string_value(json_object_get(root, key));
}

acc_rc_t report_from_line(report_t **out, const char *line, size_t len, acc_err_t *err)
{
    if (len > ACC_RECORD_MAX_LINE) {
        return acc_err_set(err, ACC_ERR_INVALID, "the line is longer than %zu bytes",
                           ACC_RECORD_MAX_LINE);
    }
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        int column = root == NULL ? jerr.column : 0;
        json_decref(root);
        return root == NULL ? acc_err_set(err, ACC_ERR_INVALID, "invalid JSON at column %d", column)
                            : acc_err_set(err, ACC_ERR_INVALID, "an outcome must be a JSON object");
    }
    acc_rc_t rc = ACC_OK;
    const char *key = NULL;
    json_t *value = NULL;
    json_object_foreach(root, key, value)
    {
        bool known = strcmp(key, "share_id") == 0 || strcmp(key, "status") == 0 ||
                     strcmp(key, "fields") == 0;
        if (!known && rc == ACC_OK) {
            rc = acc_err_set(err, ACC_ERR_INVALID,
                             "unknown key (an outcome has share_id, status and fields)");
        }
    }
    const char *share_id = s_string_key(root, "share_id");
    const char *status = s_string_key(root, "status");
    if (rc == ACC_OK && (share_id == NULL || status == NULL)) {
        rc = acc_err_set(err, ACC_ERR_INVALID, "\"share_id\" and \"status\" are strings required");
    }
    if (rc == ACC_OK) {
        rc = report_new(out, share_id, status, json_object_get(root, "fields"), err);
    }
    json_decref(root);
    return rc;
}

void report_destroy(report_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    report_t *self = *self_p;
    acc_record_free(&self->holder);
    free(self->share_id);
    free(self->status);
    free(self);
    *self_p = NULL;
}

const char *report_share_id(const report_t *self)
{
    return self->share_id;
}

const char *report_status(const report_t *self)
{
    return self->status;
}

void report_outcome(const report_t *self, Accord__V1__Outcome *o)
{
    o->share_id = self->share_id;
    o->status = self->status;
    o->fields = self->holder->fields;
    o->n_fields = self->holder->n_fields;
}

json_t *report_result_json(const char *share_id, const char *status, Accord__V1__ErrorCode code,
                           const char *reason, const char *outcome_id, uint64_t seq)
{
    bool ok = code == ACCORD__V1__ERROR_CODE__OK;
    const char *why = acc_utf8_is_valid(reason, strlen(reason))
                          ? reason
                          : "(the broker's reason is not valid UTF-8)";
    json_t *obj =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "share_id", share_id, "status", status, "result",
                  ok ? "ok" : "refused", "code", acc_pb_code_name(code), "reason", why);
    if (outcome_id != NULL && outcome_id[0] != '\0') {
        json_object_set_new(obj, "outcome_id", json_string(outcome_id));
        json_object_set_new(obj, "seq", json_integer((json_int_t)seq));
    }
    return obj;
}
