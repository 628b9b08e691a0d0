/* record.c - child records: NDJSON <-> ChildRecord, and checks that need no agreement */
#include "accord/record.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/nhs.h"
#include "accord/pbwipe.h"

#define RECORD_ID_MAX   128
#define RECORD_TYPE_MAX 64

/* ---- JSON -> record ---- */

static acc_rc_t s_string(char **out, json_t *value, const char *path, acc_err_t *err)
{
    if (!json_is_string(value)) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"%s\": expected a string", path);
    }
    size_t len = json_string_length(value);
    if (len > ACC_RECORD_MAX_TEXT) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"%s\": longer than %zu bytes", path,
                           ACC_RECORD_MAX_TEXT);
    }
    if (strlen(json_string_value(value)) != len) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"%s\": contains a NUL character", path);
    }
    if (*out != protobuf_c_empty_string) {
        free(*out);
    }
    *out = acc_xstrndup(json_string_value(value), len);
    return ACC_OK;
}

static acc_rc_t s_subject(Accord__V1__Subject *subject, json_t *obj, acc_err_t *err)
{
    static const struct {
        const char *key;
        size_t offset;
    } keys[] = {
        { "nhs_number", offsetof(Accord__V1__Subject, nhs_number) },
        { "local_id", offsetof(Accord__V1__Subject, local_id) },
        { "given_name", offsetof(Accord__V1__Subject, given_name) },
        { "family_name", offsetof(Accord__V1__Subject, family_name) },
        { "date_of_birth", offsetof(Accord__V1__Subject, date_of_birth) },
        { "postcode", offsetof(Accord__V1__Subject, postcode) },
    };
    if (!json_is_object(obj)) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"subject\": expected an object");
    }
    const char *key = NULL;
    json_t *value = NULL;
    json_object_foreach(obj, key, value)
    {
        size_t i = 0;
        while (i < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[i].key, key) != 0) {
            i++;
        }
        if (i == sizeof(keys) / sizeof(keys[0])) {
            return acc_err_set(err, ACC_ERR_INVALID, "unknown key \"subject.%.64s\" in record",
                               key);
        }
        char path[80];
        (void)snprintf(path, sizeof(path), "subject.%s", key);
        char **slot = (char **)((char *)subject + keys[i].offset);
        acc_rc_t rc = s_string(slot, value, path, err);
        if (rc != ACC_OK) {
            return rc;
        }
    }
    return ACC_OK;
}

static acc_rc_t s_field(Accord__V1__Field *field, const char *name, json_t *value, acc_err_t *err)
{
    char path[160];
    (void)snprintf(path, sizeof(path), "fields.%.64s", name);
    if (json_is_string(value)) {
        field->value_case = ACCORD__V1__FIELD__VALUE_TEXT;
        field->text = acc_pb_str(protobuf_c_empty_string);
        return s_string(&field->text, value, path, err);
    }
    if (json_is_integer(value)) {
        field->value_case = ACCORD__V1__FIELD__VALUE_INTEGER;
        field->integer = (int64_t)json_integer_value(value);
    } else if (json_is_real(value)) {
        field->value_case = ACCORD__V1__FIELD__VALUE_DECIMAL;
        field->decimal = json_real_value(value);
    } else if (json_is_boolean(value)) {
        field->value_case = ACCORD__V1__FIELD__VALUE_BOOLEAN;
        field->boolean = json_is_true(value);
    } else {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "field \"%s\": expected a string, number or true/false", path);
    }
    return ACC_OK;
}

static acc_rc_t s_fields(Accord__V1__ChildRecord *rec, json_t *obj, acc_err_t *err)
{
    if (!json_is_object(obj)) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"fields\": expected an object");
    }
    size_t count = json_object_size(obj);
    if (count > ACC_RECORD_MAX_FIELDS) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"fields\": more than %d fields",
                           ACC_RECORD_MAX_FIELDS);
    }
    rec->fields = acc_xcalloc(count, sizeof(Accord__V1__Field *));
    const char *name = NULL;
    json_t *value = NULL;
    json_object_foreach(obj, name, value)
    {
        Accord__V1__Field *field = acc_xmalloc(sizeof(*field));
        accord__v1__field__init(field);
        rec->fields[rec->n_fields++] = field;
        if (strlen(name) > RECORD_TYPE_MAX) {
            return acc_err_set(err, ACC_ERR_INVALID, "a field name is longer than %d bytes",
                               RECORD_TYPE_MAX);
        }
        field->name = acc_xstrdup(name);
        acc_rc_t rc = s_field(field, name, value, err);
        if (rc != ACC_OK) {
            return rc;
        }
    }
    return ACC_OK;
}

static acc_rc_t s_consent(Accord__V1__ChildRecord *rec, json_t *value, acc_err_t *err)
{
    if (!json_is_string(value) || !acc_pb_consent_parse(&rec->consent, json_string_value(value))) {
        return acc_err_set(err, ACC_ERR_INVALID,
                           "field \"consent\": expected not-sought, given, refused or withdrawn");
    }
    return ACC_OK;
}

static acc_rc_t s_safeguarding(Accord__V1__ChildRecord *rec, json_t *value, acc_err_t *err)
{
    if (!json_is_boolean(value)) {
        return acc_err_set(err, ACC_ERR_INVALID, "field \"safeguarding\": expected true or false");
    }
    rec->safeguarding = json_is_true(value);
    return ACC_OK;
}

static acc_rc_t s_top_key(Accord__V1__ChildRecord *rec, const char *key, json_t *value,
                          acc_err_t *err)
{
    if (strcmp(key, "record_id") == 0) {
        return s_string(&rec->record_id, value, key, err);
    }
    if (strcmp(key, "record_type") == 0) {
        return s_string(&rec->record_type, value, key, err);
    }
    if (strcmp(key, "occurred_at") == 0) {
        return s_string(&rec->occurred_at, value, key, err);
    }
    if (strcmp(key, "safeguarding_justification") == 0) {
        return s_string(&rec->safeguarding_justification, value, key, err);
    }
    if (strcmp(key, "subject") == 0) {
        return s_subject(rec->subject, value, err);
    }
    if (strcmp(key, "fields") == 0) {
        return s_fields(rec, value, err);
    }
    if (strcmp(key, "consent") == 0) {
        return s_consent(rec, value, err);
    }
    if (strcmp(key, "safeguarding") == 0) {
        return s_safeguarding(rec, value, err);
    }
    return acc_err_set(err, ACC_ERR_INVALID, "unknown key \"%.64s\" in record", key);
}

static Accord__V1__ChildRecord *s_record_new(void)
{
    Accord__V1__ChildRecord *rec = acc_xmalloc(sizeof(*rec));
    accord__v1__child_record__init(rec);
    rec->subject = acc_xmalloc(sizeof(*rec->subject));
    accord__v1__subject__init(rec->subject);
    rec->consent = ACCORD__V1__CONSENT__CONSENT_NOT_SOUGHT;
    return rec;
}

acc_rc_t acc_record_from_json(Accord__V1__ChildRecord **out, const char *line, size_t len,
                              acc_err_t *err)
{
    if (len > ACC_RECORD_MAX_LINE) {
        return acc_err_set(err, ACC_ERR_INVALID, "record is longer than %zu bytes",
                           ACC_RECORD_MAX_LINE);
    }
    json_error_t jerr;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        /* jansson's text may quote the input; report only where and the kind of fault. */
        return acc_err_set(err, ACC_ERR_INVALID, "invalid JSON at column %d", jerr.column);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return acc_err_set(err, ACC_ERR_INVALID, "a record must be a JSON object");
    }
    Accord__V1__ChildRecord *rec = s_record_new();
    acc_rc_t rc = ACC_OK;
    const char *key = NULL;
    json_t *value = NULL;
    json_object_foreach(root, key, value)
    {
        rc = s_top_key(rec, key, value, err);
        if (rc != ACC_OK) {
            break;
        }
    }
    json_decref(root);
    if (rc != ACC_OK) {
        acc_record_free(&rec);
        return rc;
    }
    *out = rec;
    return ACC_OK;
}

void acc_record_free(Accord__V1__ChildRecord **rec_p)
{
    if (rec_p == NULL || *rec_p == NULL) {
        return;
    }
    protobuf_c_message_free_unpacked(&(*rec_p)->base, acc_pb_wiping_allocator());
    *rec_p = NULL;
}

/* ---- record -> JSON ---- */

static void s_set_text(json_t *obj, const char *key, const char *value)
{
    if (value != NULL && value[0] != '\0') {
        json_object_set_new(obj, key, json_string(value));
    }
}

static json_t *s_field_json(const Accord__V1__Field *field)
{
    switch (field->value_case) {
    case ACCORD__V1__FIELD__VALUE_TEXT:
        return json_string(field->text);
    case ACCORD__V1__FIELD__VALUE_INTEGER:
        return json_integer((json_int_t)field->integer);
    case ACCORD__V1__FIELD__VALUE_DECIMAL:
        return json_real(field->decimal);
    case ACCORD__V1__FIELD__VALUE_BOOLEAN:
        return json_boolean(field->boolean);
    case ACCORD__V1__FIELD__VALUE__NOT_SET:
    case _ACCORD__V1__FIELD__VALUE__CASE_IS_INT_SIZE:
        break;
    }
    return json_null();
}

json_t *acc_record_to_json(const Accord__V1__ChildRecord *rec)
{
    json_t *obj = json_object();
    s_set_text(obj, "record_id", rec->record_id);
    s_set_text(obj, "record_type", rec->record_type);
    s_set_text(obj, "occurred_at", rec->occurred_at);
    json_t *who = json_object();
    const Accord__V1__Subject *s = rec->subject;
    if (s != NULL) {
        s_set_text(who, "nhs_number", s->nhs_number);
        s_set_text(who, "local_id", s->local_id);
        s_set_text(who, "given_name", s->given_name);
        s_set_text(who, "family_name", s->family_name);
        s_set_text(who, "date_of_birth", s->date_of_birth);
        s_set_text(who, "postcode", s->postcode);
    }
    json_object_set_new(obj, "subject", who);
    if (rec->consent != ACCORD__V1__CONSENT__CONSENT_UNSPECIFIED) {
        json_object_set_new(obj, "consent", json_string(acc_pb_consent_name(rec->consent)));
    }
    json_t *fields = json_object();
    for (size_t i = 0; i < rec->n_fields; i++) {
        json_object_set_new(fields, rec->fields[i]->name, s_field_json(rec->fields[i]));
    }
    json_object_set_new(obj, "fields", fields);
    if (rec->safeguarding) {
        json_object_set_new(obj, "safeguarding", json_true());
    }
    s_set_text(obj, "safeguarding_justification", rec->safeguarding_justification);
    return obj;
}

/* ---- checks ---- */

static bool s_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
    }
    return true;
}

static int s_num(const char *p, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static bool s_is_date_prefix(const char *t)
{
    if (strlen(t) < 10 || !s_digits(t, 4) || t[4] != '-' || !s_digits(t + 5, 2) || t[7] != '-' ||
        !s_digits(t + 8, 2)) {
        return false;
    }
    static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y = s_num(t, 4);
    int m = s_num(t + 5, 2);
    int d = s_num(t + 8, 2);
    if (m < 1 || m > 12 || d < 1) {
        return false;
    }
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= days[m - 1] + (m == 2 && leap ? 1 : 0);
}

bool acc_is_date(const char *text)
{
    return strlen(text) == 10 && s_is_date_prefix(text);
}

static bool s_is_offset(const char *t)
{
    if (strcmp(t, "Z") == 0) {
        return true;
    }
    return strlen(t) == 6 && (t[0] == '+' || t[0] == '-') && s_digits(t + 1, 2) && t[3] == ':' &&
           s_digits(t + 4, 2) && s_num(t + 1, 2) <= 23 && s_num(t + 4, 2) <= 59;
}

bool acc_is_datetime(const char *text)
{
    if (!s_is_date_prefix(text) || text[10] != 'T') {
        return false;
    }
    const char *t = text + 11;
    if (strlen(t) < 8 || !s_digits(t, 2) || t[2] != ':' || !s_digits(t + 3, 2) || t[5] != ':' ||
        !s_digits(t + 6, 2) || s_num(t, 2) > 23 || s_num(t + 3, 2) > 59 || s_num(t + 6, 2) > 60) {
        return false;
    }
    t += 8;
    if (*t == '.') {
        size_t n = strspn(t + 1, "0123456789");
        if (n == 0 || n > 9) {
            return false;
        }
        t += 1 + n;
    }
    return s_is_offset(t);
}

static bool s_is_record_id(const char *id)
{
    size_t len = strlen(id);
    return len > 0 && len <= RECORD_ID_MAX &&
           strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == len;
}

static Accord__V1__ErrorCode s_invalid(acc_err_t *reason, const char *why)
{
    (void)acc_err_set(reason, ACC_ERR_INVALID, "%s", why);
    return ACCORD__V1__ERROR_CODE__INVALID_RECORD;
}

static Accord__V1__ErrorCode s_check_subject(const Accord__V1__Subject *s, acc_err_t *reason)
{
    if (s == NULL || (s->nhs_number[0] == '\0' && s->local_id[0] == '\0')) {
        return s_invalid(reason, "subject needs an nhs_number or a local_id");
    }
    if (s->nhs_number[0] != '\0') {
        char digits[ACC_NHS_DIGITS + 1];
        acc_err_t why;
        if (acc_nhs_check(digits, s->nhs_number, &why) != ACC_OK) {
            (void)acc_err_set(reason, ACC_ERR_INVALID, "subject.nhs_number: %s", why.msg);
            return ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER;
        }
    }
    if (strlen(s->local_id) > RECORD_ID_MAX) {
        return s_invalid(reason, "subject.local_id is longer than 128 bytes");
    }
    if (s->date_of_birth[0] != '\0' && !acc_is_date(s->date_of_birth)) {
        return s_invalid(reason, "subject.date_of_birth is not a date (YYYY-MM-DD)");
    }
    return ACCORD__V1__ERROR_CODE__OK;
}

Accord__V1__ErrorCode acc_record_check(const Accord__V1__ChildRecord *rec, acc_err_t *reason)
{
    if (rec->record_id[0] == '\0') {
        return s_invalid(reason, "record_id is missing");
    }
    if (!s_is_record_id(rec->record_id)) {
        return s_invalid(reason, "record_id must be 1-128 of A-Z a-z 0-9 . _ : -");
    }
    size_t type_len = strlen(rec->record_type);
    if (type_len == 0 || type_len > RECORD_TYPE_MAX) {
        return s_invalid(reason, "record_type is missing or longer than 64 bytes");
    }
    if (!acc_is_datetime(rec->occurred_at)) {
        return s_invalid(reason, "occurred_at is not an RFC 3339 date-time");
    }
    if (rec->safeguarding_justification[0] != '\0' && !rec->safeguarding) {
        return s_invalid(reason, "safeguarding_justification is given without safeguarding");
    }
    return s_check_subject(rec->subject, reason);
}
