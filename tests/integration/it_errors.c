/* it_errors.c - the error catalogue for records: each refusal code provoked over a
 * real socket, with its message and its `refused` row in the log; and a check that
 * every code in the protocol is provoked by some integration test */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/record.h"
#include "harness.h"

static th_world_t *world;

static const char s_rules[] =
    "record_types:\n"
    "  - id: health-visit\n"
    "    fields: {visit_date: date, visit_type: \"enum(new-birth,6-8-week)\", concerns: text}\n"
    "    required: [visit_date]\n"
    "  - id: two-year-review\n"
    "    fields: {review_date: date}\n"
    "rules:\n"
    "  - id: hv-to-cc\n"
    "    from: rft-health-visiting\n"
    "    to: [rmbc-childrens-centres]\n"
    "    record_types: [health-visit]\n"
    "    fields: [visit_date, visit_type]\n"
    "    subject: [nhs_number, family_name]\n"
    "    purpose: Best Start\n"
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
    "    consent: not-required\n";

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, s_rules);
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(errors, .init = setup, .fini = teardown, .timeout = 120);

typedef struct {
    const char *record_id;
    const char *record_type;
    const char *nhs;
    const char *fields; /* JSON object text */
    Accord__V1__ErrorCode code;
    const char *message; /* a part of the reason */
} s_case_t;

static const s_case_t s_cases[] = {
    { "e-type", "police-notification", "9434765919", "{}",
      ACCORD__V1__ERROR_CODE__UNKNOWN_RECORD_TYPE, "police-notification" },
    { "e-missing", "health-visit", "9434765919", "{\"visit_type\":\"6-8-week\"}",
      ACCORD__V1__ERROR_CODE__MISSING_FIELD, "required field \"visit_date\" is missing" },
    { "e-field", "health-visit", "9434765919",
      "{\"visit_date\":\"2026-11-20\",\"visit_type\":\"home-visit\"}",
      ACCORD__V1__ERROR_CODE__INVALID_FIELD, "field \"visit_type\"" },
    { "e-unknown-field", "health-visit", "9434765919",
      "{\"visit_date\":\"2026-11-20\",\"shoe_size\":\"3\"}", ACCORD__V1__ERROR_CODE__INVALID_FIELD,
      "not a field of this record type" },
    { "e-nhs", "health-visit", "9434765918", "{\"visit_date\":\"2026-11-20\"}",
      ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER, "check digit" },
    { "e-noagree", "two-year-review", "9434765919", "{\"review_date\":\"2026-11-20\"}",
      ACCORD__V1__ERROR_CODE__NO_AGREEMENT, "two-year-review" },
    { "bad id!", "health-visit", "9434765919", "{\"visit_date\":\"2026-11-20\"}",
      ACCORD__V1__ERROR_CODE__INVALID_RECORD, "record_id" },
};

static Accord__V1__Envelope *s_publish(client_t *c, const s_case_t *k)
{
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"record_id\":\"ok-id\",\"record_type\":\"%s\","
             "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"%s\","
             "\"family_name\":\"Smith\"},\"consent\":\"given\",\"fields\":%s}",
             k->record_type, k->nhs, k->fields);
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    cr_assert_eq(acc_record_from_json(&rec, json, strlen(json), &err), ACC_OK, "%s", err.msg);
    free(rec->record_id); /* set here: the NDJSON reader would refuse some on its own */
    rec->record_id = strdup(k->record_id);
    th_send_record(c, rec, NULL, 11);
    acc_record_free(&rec);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    return reply;
}

/* The refused row names the code and (quotes aside, for the SQL) the reason. */
static void s_expect_refused_row(const char *record_id, Accord__V1__ErrorCode code,
                                 const char *message)
{
    char where[512];
    bool plain = strchr(message, '\'') == NULL && strchr(message, '"') == NULL &&
                 strchr(record_id, '\'') == NULL;
    snprintf(where, sizeof(where),
             "event = 'refused' AND error_code = '%s' AND reason LIKE '%%%s%%' AND "
             "from_agency = 'rft-health-visiting'",
             acc_pb_code_name(code), plain ? message : "");
    cr_assert_geq(th_pg_count(world, where), 1, "no refused row for %s (%s)", record_id,
                  acc_pb_code_name(code));
}

Test(errors, each_record_refusal_has_its_code_message_and_log_row)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    for (size_t i = 0; i < sizeof(s_cases) / sizeof(s_cases[0]); i++) {
        const s_case_t *k = &s_cases[i];
        Accord__V1__Envelope *reply = s_publish(c, k);
        const Accord__V1__PublishResult *r = reply->publish_result;
        cr_assert_eq(r->code, k->code, "%s: got %s (%s)", k->record_id, acc_pb_code_name(r->code),
                     r->reason);
        cr_assert(strstr(r->reason, k->message) != NULL, "%s: reason \"%s\"", k->record_id,
                  r->reason);
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    for (size_t i = 0; i < sizeof(s_cases) / sizeof(s_cases[0]); i++) {
        s_expect_refused_row(s_cases[i].record_id, s_cases[i].code, s_cases[i].message);
    }
    cr_assert_eq(th_pg_count(world, "event = 'refused'"),
                 (long)(sizeof(s_cases) / sizeof(s_cases[0])));
    cr_assert_eq(th_pg_count(world, "event = 'shared'"), 0);
}

Test(errors, an_agreement_out_of_force_refuses_every_record)
{
    th_broker_stop(world);
    char cmd[700];
    snprintf(cmd, sizeof(cmd),
             "sed -i 's/valid_until: 2099-12-31/valid_until: 2021-12-31/' '%s/agreement.yaml'",
             world->dir);
    cr_assert_eq(system(cmd), 0);
    th_broker_start(world);
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    const s_case_t ok = { "e-expired",
                          "health-visit",
                          "9434765919",
                          "{\"visit_date\":\"2026-11-20\"}",
                          ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE,
                          "" };
    Accord__V1__Envelope *reply = s_publish(c, &ok);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE, "%s",
                 reply->publish_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND error_code = 'AGREEMENT_NOT_IN_FORCE'"),
                 1);
}

/* Every code a peer can be sent is provoked somewhere in tests/integration. OK is
 * success; INTERNAL marks a bug in accord and has no way to be provoked; TOO_LARGE
 * frames never reach the broker (libzmq drops the connection at
 * max_message_bytes: it_wire checks the sender is cut off and others are served). */
Test(errors, every_error_code_in_the_protocol_is_provoked_by_a_test)
{
    char cmd[1200];
    snprintf(
        cmd, sizeof(cmd),
        "cd '%s' && for code in $(sed -n '/^enum ErrorCode/,/^}/s/^ *\\([A-Z_]*\\) = .*/\\1/p' "
        "proto/accord/v1/envelope.proto); do case $code in OK|INTERNAL|TOO_LARGE) continue;; "
        "esac; grep -q \"ERROR_CODE__$code\\b\" tests/integration/*.c || "
        "{ echo \"no test provokes $code\" >&2; exit 1; }; done",
        ACCORD_SOURCE_DIR);
    cr_assert_eq(system(cmd), 0);
}
