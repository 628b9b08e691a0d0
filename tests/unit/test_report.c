/* test_report.c - outcome reports from --field arguments and NDJSON lines */
#include <criterion/criterion.h>
#include <string.h>

#include "report.h"

#define SHARE_ID "0190f3a0-0000-7a2b-9c3d-4e5f60718293"

static void s_arg_fails(json_t *fields, const char *arg, const char *why)
{
    acc_err_t err;
    cr_assert_eq(report_field_arg(fields, arg, &err), ACC_ERR_INVALID, "%s", arg);
    cr_assert(strstr(err.msg, why) != NULL, "expected \"%s\" in \"%s\"", why, err.msg);
}

static const Accord__V1__Field *s_field(const Accord__V1__Outcome *o, const char *name)
{
    for (size_t i = 0; i < o->n_fields; i++) {
        if (strcmp(o->fields[i]->name, name) == 0) {
            return o->fields[i];
        }
    }
    cr_assert_fail("no field %s", name);
    return NULL;
}

Test(report, field_args_are_text_unless_written_with_colon_equals)
{
    json_t *fields = json_object();
    acc_err_t err;
    cr_assert_eq(report_field_arg(fields, "decision_date=2026-11-21", &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(report_field_arg(fields, "visits:=2", &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(report_field_arg(fields, "score:=2.5", &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(report_field_arg(fields, "urgent:=true", &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(report_field_arg(fields, "next_step=see a=b, then c", &err), ACC_OK);
    cr_assert_eq(report_field_arg(fields, "code=42", &err), ACC_OK); /* text: "42" */
    cr_assert_eq(report_field_arg(fields, "empty=", &err), ACC_OK);
    report_t *r = NULL;
    cr_assert_eq(report_new(&r, SHARE_ID, "accepted", fields, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Outcome o = ACCORD__V1__OUTCOME__INIT;
    report_outcome(r, &o);
    cr_assert_str_eq(o.share_id, SHARE_ID);
    cr_assert_str_eq(o.status, "accepted");
    cr_assert_eq(o.n_fields, 7);
    cr_assert_str_eq(s_field(&o, "decision_date")->text, "2026-11-21");
    cr_assert_eq(s_field(&o, "visits")->value_case, ACCORD__V1__FIELD__VALUE_INTEGER);
    cr_assert_eq(s_field(&o, "visits")->integer, 2);
    cr_assert_eq(s_field(&o, "score")->value_case, ACCORD__V1__FIELD__VALUE_DECIMAL);
    cr_assert_eq(s_field(&o, "urgent")->value_case, ACCORD__V1__FIELD__VALUE_BOOLEAN);
    cr_assert(s_field(&o, "urgent")->boolean);
    cr_assert_str_eq(s_field(&o, "next_step")->text, "see a=b, then c");
    cr_assert_eq(s_field(&o, "code")->value_case, ACCORD__V1__FIELD__VALUE_TEXT);
    cr_assert_str_eq(s_field(&o, "code")->text, "42");
    cr_assert_str_eq(s_field(&o, "empty")->text, "");
    report_destroy(&r);
    cr_assert_null(r);
    json_decref(fields);
}

Test(report, refuses_bad_field_args_without_echoing_the_value)
{
    json_t *fields = json_object();
    s_arg_fails(fields, "no-equals-sign", "NAME=TEXT");
    s_arg_fails(fields, "=value", "a field name");
    s_arg_fails(fields, ":=1", "a field name");
    s_arg_fails(fields, "bad name=x", "a field name");
    s_arg_fails(fields, "visits:=two", "a number or true/false");
    s_arg_fails(fields, "visits:=\"2\"", "a number or true/false");
    s_arg_fails(fields, "visits:={\"a\":1}", "a number or true/false");
    s_arg_fails(fields, "visits:=null", "a number or true/false");
    s_arg_fails(fields, "note=\xff\xfe", "not valid UTF-8");
    acc_err_t err;
    cr_assert_eq(report_field_arg(fields, "note=secret text", &err), ACC_OK);
    s_arg_fails(fields, "note=other secret", "given twice");
    cr_assert_null(strstr(err.msg, "secret"));
    json_decref(fields);
}

Test(report, refuses_more_fields_than_an_outcome_may_carry)
{
    json_t *fields = json_object();
    acc_err_t err;
    for (int i = 0; i < 32; i++) {
        char arg[32];
        (void)snprintf(arg, sizeof(arg), "f%d:=%d", i, i);
        cr_assert_eq(report_field_arg(fields, arg, &err), ACC_OK, "%s", err.msg);
    }
    s_arg_fails(fields, "f32:=32", "more than 32 fields");
    json_decref(fields);
}

Test(report, refuses_a_share_id_that_is_not_a_uuid_or_an_unknown_status)
{
    report_t *r = NULL;
    acc_err_t err;
    cr_assert_eq(report_new(&r, "hv-000123", "accepted", NULL, &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, "not a uuid") != NULL, "%s", err.msg);
    cr_assert_eq(report_new(&r, SHARE_ID, "reopened", NULL, &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, "received, accepted, declined or closed") != NULL, "%s", err.msg);
    cr_assert_null(r);
    cr_assert_eq(report_new(&r, SHARE_ID, "closed", NULL, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Outcome o = ACCORD__V1__OUTCOME__INIT;
    report_outcome(r, &o);
    cr_assert_eq(o.n_fields, 0);
    report_destroy(&r);
    report_destroy(&r); /* safe twice */
}

Test(report, reads_an_ndjson_line_with_fields_typed_as_a_records)
{
    static const char line[] = "{\"share_id\":\"" SHARE_ID "\",\"status\":\"declined\","
                               "\"fields\":{\"reason\":\"no-further-action\",\"visits\":0}}\n";
    report_t *r = NULL;
    acc_err_t err;
    cr_assert_eq(report_from_line(&r, line, strlen(line), &err), ACC_OK, "%s", err.msg);
    cr_assert_str_eq(report_share_id(r), SHARE_ID);
    cr_assert_str_eq(report_status(r), "declined");
    Accord__V1__Outcome o = ACCORD__V1__OUTCOME__INIT;
    report_outcome(r, &o);
    cr_assert_eq(o.n_fields, 2);
    cr_assert_str_eq(s_field(&o, "reason")->text, "no-further-action");
    cr_assert_eq(s_field(&o, "visits")->value_case, ACCORD__V1__FIELD__VALUE_INTEGER);
    report_destroy(&r);
}

static void s_line_fails(const char *line, const char *why)
{
    report_t *r = NULL;
    acc_err_t err;
    cr_assert_eq(report_from_line(&r, line, strlen(line), &err), ACC_ERR_INVALID, "%s", line);
    cr_assert_null(r);
    cr_assert(strstr(err.msg, why) != NULL, "expected \"%s\" in \"%s\"", why, err.msg);
    cr_assert_null(strstr(err.msg, "9434765919"), "the line is not echoed: %s", err.msg);
}

Test(report, refuses_ndjson_lines_that_are_not_outcomes)
{
    s_line_fails("{\"share_id\":\"9434765919\"", "invalid JSON at column");
    s_line_fails("[\"9434765919\"]", "must be a JSON object");
    s_line_fails("{\"share_id\":\"" SHARE_ID "\",\"status\":\"accepted\",\"nhs\":\"9434765919\"}",
                 "unknown key");
    s_line_fails("{\"share_id\":\"" SHARE_ID "\"}", "\"status\" are strings required");
    s_line_fails("{\"share_id\":\"" SHARE_ID "\",\"status\":\"accepted\",\"fields\":[1]}",
                 "must be a JSON object");
    s_line_fails("{\"share_id\":\"" SHARE_ID "\",\"status\":\"accepted\",\"fields\":{\"a\":null}}",
                 "fields.a");
    s_line_fails("{\"share_id\":\"" SHARE_ID "\",\"status\":\"accepted\",\"fields\":{\"a b\":1}}",
                 "a field name");
    s_line_fails("{\"share_id\":\"" SHARE_ID "\",\"status\":\"accepted\",\"status\":\"closed\"}",
                 "invalid JSON");
}

Test(report, result_lines_say_ok_or_refused_with_the_code)
{
    json_t *ok = report_result_json(SHARE_ID, "accepted", ACCORD__V1__ERROR_CODE__OK, "",
                                    "0190f3a0-7c1e-7a2b-9c3d-4e5f60718293", 42);
    cr_assert_str_eq(json_string_value(json_object_get(ok, "result")), "ok");
    cr_assert_str_eq(json_string_value(json_object_get(ok, "code")), "OK");
    cr_assert_eq(json_integer_value(json_object_get(ok, "seq")), 42);
    cr_assert_str_eq(json_string_value(json_object_get(ok, "share_id")), SHARE_ID);
    json_decref(ok);
    json_t *no = report_result_json(SHARE_ID, "closed", ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER,
                                    "\xff", NULL, 0);
    cr_assert_str_eq(json_string_value(json_object_get(no, "result")), "refused");
    cr_assert_str_eq(json_string_value(json_object_get(no, "code")), "STATUS_OUT_OF_ORDER");
    cr_assert(strstr(json_string_value(json_object_get(no, "reason")), "not valid UTF-8"));
    cr_assert_null(json_object_get(no, "outcome_id"));
    cr_assert_null(json_object_get(no, "seq"));
    json_decref(no);
}
