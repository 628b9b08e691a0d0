/* test_notice.c - outcome and lookup notices as a subscriber checks and writes them */
#include <criterion/criterion.h>
#include <string.h>

#include "notice.h"

#define OUTCOME_ID "0190f3a0-7c1e-7a2b-9c3d-4e5f60718293"
#define SHARE_ID   "0190f3a0-0000-7a2b-9c3d-4e5f60718293"
#define NHS        "9434765919"

typedef struct {
    Accord__V1__OutcomeNotice n;
    Accord__V1__Field date;
    Accord__V1__Field count;
    Accord__V1__Field flag;
    Accord__V1__Field *fields[3];
    char *rules[1];
} s_outcome_t;

static void s_outcome_init(s_outcome_t *o)
{
    accord__v1__outcome_notice__init(&o->n);
    accord__v1__field__init(&o->date);
    accord__v1__field__init(&o->count);
    accord__v1__field__init(&o->flag);
    o->date.name = acc_pb_str("decision_date");
    o->date.value_case = ACCORD__V1__FIELD__VALUE_TEXT;
    o->date.text = acc_pb_str("2026-11-21");
    o->count.name = acc_pb_str("visits");
    o->count.value_case = ACCORD__V1__FIELD__VALUE_INTEGER;
    o->count.integer = 3;
    o->flag.name = acc_pb_str("urgent");
    o->flag.value_case = ACCORD__V1__FIELD__VALUE_BOOLEAN;
    o->flag.boolean = true;
    o->fields[0] = &o->date;
    o->fields[1] = &o->count;
    o->fields[2] = &o->flag;
    o->rules[0] = acc_pb_str("ed-attendance-to-mash");
    o->n.outcome_id = acc_pb_str(OUTCOME_ID);
    o->n.share_id = acc_pb_str(SHARE_ID);
    o->n.record_id = acc_pb_str("ed-000042");
    o->n.record_type = acc_pb_str("ed-attendance");
    o->n.to_agency = acc_pb_str("rmbc-childrens-social-care");
    o->n.status = acc_pb_str("accepted");
    o->n.at = acc_pb_str("2026-11-21T09:30:00Z");
    o->n.fields = o->fields;
    o->n.n_fields = 3;
    o->n.rule_ids = o->rules;
    o->n.n_rule_ids = 1;
}

static void s_outcome_refused(const s_outcome_t *o, const char *why)
{
    acc_err_t err;
    cr_assert_eq(notice_outcome_check(&o->n, &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, why) != NULL, "expected \"%s\" in \"%s\"", why, err.msg);
}

Test(notice, writes_an_outcome_with_fields_typed_as_a_records)
{
    s_outcome_t o;
    s_outcome_init(&o);
    acc_err_t err;
    cr_assert_eq(notice_outcome_check(&o.n, &err), ACC_OK, "%s", err.msg);
    json_t *got = notice_outcome_json(&o.n);
    json_t *want = json_loads(
        "{\"kind\":\"outcome\",\"outcome_id\":\"" OUTCOME_ID "\",\"share_id\":\"" SHARE_ID "\","
        "\"record_id\":\"ed-000042\",\"record_type\":\"ed-attendance\","
        "\"to_agency\":\"rmbc-childrens-social-care\",\"status\":\"accepted\","
        "\"fields\":{\"decision_date\":\"2026-11-21\",\"visits\":3,\"urgent\":true},"
        "\"at\":\"2026-11-21T09:30:00Z\",\"rules\":[\"ed-attendance-to-mash\"]}",
        0, NULL);
    cr_assert_not_null(want);
    char *text = json_dumps(got, JSON_COMPACT);
    cr_assert(json_equal(got, want), "%s", text);
    free(text);
    json_decref(got);
    json_decref(want);
}

Test(notice, writes_an_outcome_without_fields_as_an_empty_object)
{
    s_outcome_t o;
    s_outcome_init(&o);
    o.n.n_fields = 0;
    o.n.fields = NULL;
    json_t *got = notice_outcome_json(&o.n);
    cr_assert(json_is_object(json_object_get(got, "fields")));
    cr_assert_eq(json_object_size(json_object_get(got, "fields")), 0);
    json_decref(got);
}

Test(notice, refuses_an_outcome_whose_ids_are_not_uuids)
{
    s_outcome_t o;
    s_outcome_init(&o);
    o.n.outcome_id = acc_pb_str("../../etc/passwd");
    s_outcome_refused(&o, "outcome_id is not a uuid");
    s_outcome_init(&o);
    o.n.share_id = acc_pb_str("");
    s_outcome_refused(&o, "share_id is not a uuid");
}

Test(notice, refuses_an_outcome_with_a_status_not_among_the_four)
{
    s_outcome_t o;
    s_outcome_init(&o);
    o.n.status = acc_pb_str("reopened");
    s_outcome_refused(&o, "status is not one of");
    cr_assert(notice_is_status("received"));
    cr_assert(notice_is_status("closed"));
    cr_assert_not(notice_is_status("Accepted"));
    cr_assert_not(notice_is_status(""));
}

Test(notice, refuses_an_outcome_with_a_bad_agency_time_or_record)
{
    s_outcome_t o;
    s_outcome_init(&o);
    o.n.to_agency = acc_pb_str("rmbc social care");
    s_outcome_refused(&o, "to_agency");
    s_outcome_init(&o);
    o.n.at = acc_pb_str("yesterday");
    s_outcome_refused(&o, "at is not");
    s_outcome_init(&o);
    o.n.record_id = acc_pb_str("ed 42\n");
    s_outcome_refused(&o, "record_id");
    s_outcome_init(&o);
    o.rules[0] = acc_pb_str("rule\twith tab");
    s_outcome_refused(&o, "rule_ids[0]");
}

Test(notice, refuses_an_outcome_field_given_twice_or_badly_named_without_its_value)
{
    s_outcome_t o;
    s_outcome_init(&o);
    o.count.name = acc_pb_str("decision_date");
    s_outcome_refused(&o, "field \"decision_date\" is given twice");
    s_outcome_init(&o);
    o.count.name = acc_pb_str("bad name");
    s_outcome_refused(&o, "fields[1].name");
    s_outcome_init(&o);
    o.date.text = acc_pb_str("\xff\xfe secret");
    acc_err_t err;
    cr_assert_eq(notice_outcome_check(&o.n, &err), ACC_ERR_INVALID);
    cr_assert_null(strstr(err.msg, "secret"));
    s_outcome_init(&o);
    o.flag.value_case = ACCORD__V1__FIELD__VALUE__NOT_SET;
    s_outcome_refused(&o, "field \"urgent\" has no value");
}

typedef struct {
    Accord__V1__LookupNotice n;
    Accord__V1__Subject subject;
} s_lookup_t;

static void s_lookup_init(s_lookup_t *l)
{
    accord__v1__lookup_notice__init(&l->n);
    accord__v1__subject__init(&l->subject);
    l->subject.nhs_number = acc_pb_str(NHS);
    l->n.notice_id = acc_pb_str(OUTCOME_ID);
    l->n.lookup_id = acc_pb_str(SHARE_ID);
    l->n.by_agency = acc_pb_str("rmbc-childrens-social-care");
    l->n.purpose = acc_pb_str("MASH triage of a safeguarding referral");
    l->n.at = acc_pb_str("2026-11-21T09:31:00Z");
    l->n.lookup_rule = acc_pb_str("mash-involvement");
    l->n.subject = &l->subject;
}

static void s_lookup_refused(const s_lookup_t *l, const char *why)
{
    acc_err_t err;
    cr_assert_eq(notice_lookup_check(&l->n, &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, why) != NULL, "expected \"%s\" in \"%s\"", why, err.msg);
    cr_assert_null(strstr(err.msg, "943"), "the child's number is not echoed: %s", err.msg);
}

Test(notice, writes_a_lookup_notice_with_the_nhs_number)
{
    s_lookup_t l;
    s_lookup_init(&l);
    acc_err_t err;
    cr_assert_eq(notice_lookup_check(&l.n, &err), ACC_OK, "%s", err.msg);
    json_t *got = notice_lookup_json(&l.n);
    json_t *want = json_loads(
        "{\"kind\":\"lookup-notice\",\"notice_id\":\"" OUTCOME_ID "\",\"lookup_id\":\"" SHARE_ID
        "\",\"by_agency\":\"rmbc-childrens-social-care\",\"purpose\":\"MASH triage of a "
        "safeguarding referral\",\"at\":\"2026-11-21T09:31:00Z\",\"lookup\":\"mash-involvement\","
        "\"subject\":{\"nhs_number\":\"" NHS "\"}}",
        0, NULL);
    cr_assert_not_null(want);
    char *text = json_dumps(got, JSON_COMPACT);
    cr_assert(json_equal(got, want), "%s", text);
    free(text);
    json_decref(got);
    json_decref(want);
}

Test(notice, writes_a_lookup_notice_with_a_local_id_and_date_of_birth)
{
    s_lookup_t l;
    s_lookup_init(&l);
    l.subject.nhs_number = acc_pb_str("");
    l.subject.local_id = acc_pb_str("CSC-1234");
    l.subject.date_of_birth = acc_pb_str("2025-03-01");
    l.subject.given_name = acc_pb_str("Amelia"); /* not the notice's to pass on */
    acc_err_t err;
    cr_assert_eq(notice_lookup_check(&l.n, &err), ACC_OK, "%s", err.msg);
    json_t *got = notice_lookup_json(&l.n);
    json_t *subject = json_object_get(got, "subject");
    cr_assert_str_eq(json_string_value(json_object_get(subject, "local_id")), "CSC-1234");
    cr_assert_str_eq(json_string_value(json_object_get(subject, "date_of_birth")), "2025-03-01");
    cr_assert_eq(json_object_size(subject), 2);
    json_decref(got);
}

Test(notice, refuses_a_lookup_notice_with_a_bad_child_without_echoing_it)
{
    s_lookup_t l;
    s_lookup_init(&l);
    l.subject.nhs_number = acc_pb_str("9434765918"); /* check digit wrong */
    s_lookup_refused(&l, "subject.nhs_number is not valid");
    s_lookup_init(&l);
    l.subject.nhs_number = acc_pb_str("");
    l.subject.local_id = acc_pb_str("CSC-1234");
    s_lookup_refused(&l, "subject.date_of_birth");
    s_lookup_init(&l);
    l.n.subject = NULL;
    s_lookup_refused(&l, "the child is missing");
}

Test(notice, refuses_a_lookup_notice_with_bad_ids_or_purpose)
{
    s_lookup_t l;
    s_lookup_init(&l);
    l.n.notice_id = acc_pb_str("1");
    s_lookup_refused(&l, "notice_id is not a uuid");
    s_lookup_init(&l);
    l.n.lookup_id = acc_pb_str("");
    s_lookup_refused(&l, "lookup_id is not a uuid");
    s_lookup_init(&l);
    l.n.by_agency = acc_pb_str("");
    s_lookup_refused(&l, "by_agency");
    s_lookup_init(&l);
    l.n.purpose = acc_pb_str("");
    s_lookup_refused(&l, "purpose");
    s_lookup_init(&l);
    l.n.lookup_rule = acc_pb_str("a/b");
    s_lookup_refused(&l, "lookup_rule");
}
