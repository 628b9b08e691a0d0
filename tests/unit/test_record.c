/* test_record.c - NDJSON <-> ChildRecord and the checks that need no agreement */
#include <criterion/criterion.h>
#include <string.h>

#include "accord/record.h"

static const char s_design_example[] =
    "{\"record_id\":\"hv-000123\",\"record_type\":\"health-visit\",\"occurred_at\":"
    "\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"9434765919\",\"given_name\":"
    "\"Amelia\",\"family_name\":\"Smith\",\"date_of_birth\":\"2026-05-02\"},\"consent\":"
    "\"given\",\"fields\":{\"visit_date\":\"2026-11-20\",\"visit_type\":\"6-8-week\","
    "\"concerns\":\"none\",\"weight_grams\":5120,\"centile\":50.5,\"breastfeeding\":true}}";

static Accord__V1__ChildRecord *s_parse_ok(const char *json)
{
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, json, strlen(json), &err), ACC_OK, "%s", err.msg);
    return rec;
}

static void s_parse_fails(const char *json, const char *why)
{
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, json, strlen(json), &err), ACC_ERR_INVALID, "%s", json);
    cr_assert_null(rec);
    cr_assert(strstr(err.msg, why) != NULL, "expected \"%s\" in \"%s\"", why, err.msg);
}

Test(record, parses_the_design_example_with_typed_fields)
{
    Accord__V1__ChildRecord *rec = s_parse_ok(s_design_example);
    cr_assert_str_eq(rec->record_id, "hv-000123");
    cr_assert_str_eq(rec->subject->family_name, "Smith");
    cr_assert_eq(rec->consent, ACCORD__V1__CONSENT__CONSENT_GIVEN);
    cr_assert_eq(rec->n_fields, 6);
    for (size_t i = 0; i < rec->n_fields; i++) {
        const Accord__V1__Field *f = rec->fields[i];
        if (strcmp(f->name, "weight_grams") == 0) {
            cr_assert_eq(f->value_case, ACCORD__V1__FIELD__VALUE_INTEGER);
            cr_assert_eq(f->integer, 5120);
        } else if (strcmp(f->name, "centile") == 0) {
            cr_assert_eq(f->value_case, ACCORD__V1__FIELD__VALUE_DECIMAL);
        } else if (strcmp(f->name, "breastfeeding") == 0) {
            cr_assert_eq(f->value_case, ACCORD__V1__FIELD__VALUE_BOOLEAN);
            cr_assert(f->boolean);
        } else {
            cr_assert_eq(f->value_case, ACCORD__V1__FIELD__VALUE_TEXT, "%s", f->name);
        }
    }
    cr_assert_eq(acc_record_check(rec, NULL), ACCORD__V1__ERROR_CODE__OK);
    acc_record_free(&rec);
    cr_assert_null(rec);
}

Test(record, round_trips_through_protobuf_and_json)
{
    Accord__V1__ChildRecord *rec = s_parse_ok(s_design_example);
    size_t len = accord__v1__child_record__get_packed_size(rec);
    uint8_t buf[1024];
    cr_assert_lt(len, sizeof(buf));
    accord__v1__child_record__pack(rec, buf);
    Accord__V1__ChildRecord *back = accord__v1__child_record__unpack(NULL, len, buf);
    cr_assert_not_null(back);
    json_t *a = acc_record_to_json(rec);
    json_t *b = acc_record_to_json(back);
    json_t *original = json_loads(s_design_example, 0, NULL);
    cr_assert(json_equal(a, b));
    cr_assert(json_equal(a, original), "%s", json_dumps(a, JSON_COMPACT));
    json_decref(a);
    json_decref(b);
    json_decref(original);
    acc_record_free(&rec);
    acc_record_free(&back);
}

Test(record, errors_name_the_field_and_never_its_value)
{
    s_parse_fails("{\"record_id\":12}", "field \"record_id\": expected a string");
    s_parse_fails("{\"subject\":{\"nhs_number\":9434765919}}",
                  "field \"subject.nhs_number\": expected a string");
    s_parse_fails("{\"subject\":{\"shoe_size\":\"4\"}}", "unknown key \"subject.shoe_size\"");
    s_parse_fails("{\"fields\":{\"visit_date\":null}}", "field \"fields.visit_date\"");
    s_parse_fails("{\"fields\":{\"visit_date\":[1]}}", "field \"fields.visit_date\"");
    s_parse_fails("{\"recordid\":\"x\"}", "unknown key \"recordid\"");
    s_parse_fails("{\"consent\":\"maybe\"}", "field \"consent\"");
    s_parse_fails("{\"safeguarding\":\"yes\"}", "field \"safeguarding\"");
    s_parse_fails("[1,2]", "must be a JSON object");
    s_parse_fails("{\"record_id\":\"Smith\",", "invalid JSON at column");
    s_parse_fails("{\"record_id\":\"a\",\"record_id\":\"b\"}", "invalid JSON");
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    const char *secret = "{\"subject\":{\"given_name\":7}}";
    cr_assert_eq(acc_record_from_json(&rec, secret, strlen(secret), &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, "7") == NULL, "%s", err.msg);
}

Test(record, refuses_more_fields_than_the_limit)
{
    char json[16384] = "{\"fields\":{";
    for (int i = 0; i <= ACC_RECORD_MAX_FIELDS; i++) {
        char field[32];
        snprintf(field, sizeof(field), "%s\"f%d\":1", i > 0 ? "," : "", i);
        strcat(json, field);
    }
    strcat(json, "}}");
    s_parse_fails(json, "more than 128 fields");
}

typedef struct {
    const char *json;
    Accord__V1__ErrorCode code;
    const char *why;
} check_case_t;

#define REC(extra)                                                              \
    "{\"record_id\":\"hv-1\",\"record_type\":\"health-visit\",\"occurred_at\":" \
    "\"2026-11-20T10:15:00Z\"" extra "}"

Test(record, check_gives_each_fault_its_code)
{
    static const check_case_t cases[] = {
        { REC(",\"subject\":{\"nhs_number\":\"9434765919\"}"), ACCORD__V1__ERROR_CODE__OK, "" },
        { REC(",\"subject\":{\"local_id\":\"mw-77\"}"), ACCORD__V1__ERROR_CODE__OK, "" },
        { REC(""), ACCORD__V1__ERROR_CODE__INVALID_RECORD, "nhs_number or a local_id" },
        { REC(",\"subject\":{\"nhs_number\":\"9434765918\"}"),
          ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER, "subject.nhs_number: NHS number check" },
        { REC(",\"subject\":{\"local_id\":\"x\",\"date_of_birth\":\"2025-02-29\"}"),
          ACCORD__V1__ERROR_CODE__INVALID_RECORD, "date_of_birth" },
        { REC(",\"subject\":{\"local_id\":\"x\"},\"safeguarding_justification\":\"j\""),
          ACCORD__V1__ERROR_CODE__INVALID_RECORD, "without safeguarding" },
        { "{\"record_type\":\"t\",\"occurred_at\":\"2026-11-20T10:15:00Z\"}",
          ACCORD__V1__ERROR_CODE__INVALID_RECORD, "record_id is missing" },
        { "{\"record_id\":\"a b\",\"record_type\":\"t\"}", ACCORD__V1__ERROR_CODE__INVALID_RECORD,
          "record_id must be" },
        { "{\"record_id\":\"a\",\"record_type\":\"t\",\"occurred_at\":\"2026-11-20 10:15\"}",
          ACCORD__V1__ERROR_CODE__INVALID_RECORD, "occurred_at" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Accord__V1__ChildRecord *rec = s_parse_ok(cases[i].json);
        acc_err_t reason;
        acc_err_clear(&reason);
        cr_assert_eq(acc_record_check(rec, &reason), cases[i].code, "case %zu: %s", i, reason.msg);
        cr_assert(strstr(reason.msg, cases[i].why) != NULL, "case %zu: %s", i, reason.msg);
        acc_record_free(&rec);
    }
}

Test(record, recognises_real_dates_and_datetimes)
{
    cr_assert(acc_is_date("2024-02-29"));
    cr_assert(!acc_is_date("2025-02-29"));
    cr_assert(!acc_is_date("2026-13-01"));
    cr_assert(!acc_is_date("2026-04-31"));
    cr_assert(!acc_is_date("2026-4-1"));
    cr_assert(acc_is_datetime("2026-11-20T10:15:00Z"));
    cr_assert(acc_is_datetime("2026-11-20T10:15:00.123+01:00"));
    cr_assert(!acc_is_datetime("2026-11-20T24:15:00Z"));
    cr_assert(!acc_is_datetime("2026-11-20T10:15:00"));
    cr_assert(!acc_is_datetime("2026-11-20"));
}
