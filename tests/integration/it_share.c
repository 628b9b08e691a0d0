/* it_share.c - a record from a health agent, through accordd, to a council agent,
 * logged in PostgreSQL: the walking skeleton's guarantees, end to end */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "accord/record.h"
#include "client.h"
#include "harness.h"

static th_world_t *world;

static const char s_rules[] =
    "record_types:\n"
    "  - id: health-visit\n"
    "    fields: {visit_date: date, visit_type: \"enum(antenatal,new-birth,6-8-week,1-year,"
    "2-year)\", concerns: text}\n"
    "    required: [visit_date, visit_type]\n"
    "  - id: police-da-notification\n"
    "    fields: {incident_date: date}\n"
    "    required: [incident_date]\n"
    "rules:\n"
    "  - id: hv-to-cc\n"
    "    from: rft-health-visiting\n"
    "    to: [rmbc-childrens-centres]\n"
    "    record_types: [health-visit]\n"
    "    fields: [visit_date, visit_type]\n"
    "    subject: [nhs_number, family_name]\n"
    "    purpose: Best Start integrated early-help offer\n"
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
    "    consent: not-required\n"
    "  - id: police-to-cc\n"
    "    from: syp-police\n"
    "    to: [rmbc-childrens-centres]\n"
    "    record_types: [police-da-notification]\n"
    "    fields: [incident_date]\n"
    "    subject: [nhs_number]\n"
    "    purpose: Safeguarding\n"
    "    lawful_basis: \"DPA 2018 Sch 1 Pt 2 para 18\"\n"
    "    consent: not-required\n";

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", "syp-police",
                               NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, s_rules);
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(share, .init = setup, .fini = teardown, .timeout = 120);

Test(share, subscriber_receives_exactly_the_allowed_fields)
{
    (void)th_agent_config(world, "rmbc-childrens-centres", NULL);
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", "--count=1");
    /* Deliveries go to connected subscribers: wait until the broker welcomed it. */
    cr_assert(th_agent_wait_connected(world, "rmbc-childrens-centres", "subscribe"));
    th_proc_t *pub = th_agent_start(world, "publish", "rft-health-visiting", NULL);
    char *line = th_health_visit_json("hv-000123", "9434765919");
    th_proc_write(pub, line);
    free(line);
    th_proc_close_stdin(pub);
    cr_assert_eq(th_proc_wait_lines(pub, 1, 20000), 1);
    char *result = th_proc_line(pub, 0);
    cr_assert(strstr(result, "\"result\":\"accepted\"") != NULL, "%s", result);
    cr_assert(strstr(result, "rmbc-childrens-centres") != NULL, "%s", result);
    free(result);
    cr_assert_eq(th_proc_wait(&pub, 20000), 0);

    cr_assert_eq(th_proc_wait_lines(sub, 1, 20000), 1, "subscriber received nothing");
    char *got = th_proc_line(sub, 0);
    json_t *obj = json_loads(got, 0, NULL);
    cr_assert(obj != NULL, "not JSON: %s", got);
    json_t *rec = json_object_get(obj, "record");
    json_t *fields = json_object_get(rec, "fields");
    cr_assert_eq(json_object_size(fields), 2, "fields leaked: %s", got);
    cr_assert_str_eq(json_string_value(json_object_get(fields, "visit_date")), "2026-11-20");
    cr_assert_str_eq(json_string_value(json_object_get(fields, "visit_type")), "6-8-week");
    json_t *subject = json_object_get(rec, "subject");
    cr_assert_eq(json_object_size(subject), 2, "subject leaked: %s", got);
    cr_assert_str_eq(json_string_value(json_object_get(subject, "nhs_number")), "9434765919");
    cr_assert_str_eq(json_string_value(json_object_get(subject, "family_name")), "Smith");
    cr_assert_str_eq(json_string_value(json_object_get(obj, "from")), "rft-health-visiting");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(obj, "rules"), 0)),
                     "hv-to-cc");
    cr_assert_str_eq(json_string_value(json_object_get(obj, "purpose")),
                     "Best Start integrated early-help offer");
    json_decref(obj);
    free(got);
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
    cr_assert_eq(th_pg_count(world, "event = 'shared' AND to_agency = 'rmbc-childrens-centres'"),
                 1);
    /* The acknowledgement is logged after the subscriber sent it: wait for it. */
    cr_assert_eq(th_pg_wait_acked_count(world,
                                        "record_id = 'hv-000123' AND "
                                        "to_agency = 'rmbc-childrens-centres'",
                                        1, 10000),
                 1);
    cr_assert_eq(th_pg_pending_count(world, "true"), 0);
}

Test(share, record_without_a_rule_is_refused_no_agreement_and_logged)
{
    const char *json = "{\"record_id\":\"da-1\",\"record_type\":\"police-da-notification\","
                       "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":"
                       "\"9434765919\"},\"fields\":{\"incident_date\":\"2026-11-19\"}}";
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__NO_AGREEMENT);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND record_id = 'da-1' AND "
                                    "error_code = 'NO_AGREEMENT'"),
                 1);
    cr_assert_eq(th_pg_count(world, "event = 'shared'"), 0);
}

Test(share, nhs_numbers_are_checked_by_modulus_11)
{
    static const struct {
        const char *nhs;
        Accord__V1__ErrorCode code;
    } cases[] = {
        { "9434765919", ACCORD__V1__ERROR_CODE__OK },
        { "943 476 5919", ACCORD__V1__ERROR_CODE__OK },
        { "4010232137", ACCORD__V1__ERROR_CODE__OK },
        { "9434765918", ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER },
        { "943476591", ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER },
        { "94347659190", ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER },
        { "94347A5919", ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char id[32];
        snprintf(id, sizeof(id), "hv-nhs-%zu", i);
        char *json = th_health_visit_json(id, cases[i].nhs);
        cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""), cases[i].code,
                     "case %zu", i);
        free(json);
        char where[128];
        snprintf(where, sizeof(where), "record_id = '%s' AND event = '%s'", id,
                 cases[i].code == ACCORD__V1__ERROR_CODE__OK ? "shared" : "refused");
        cr_assert_eq(th_pg_count(world, where), 1, "case %zu", i);
    }
}

Test(share, key_not_in_the_agreement_fails_the_handshake)
{
    acc_agent_config_t cfg;
    th_agent_config_load(world, "stranger", &cfg);
    client_t *c = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&c, &cfg, false, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(c, 10000, &err), ACC_ERR_PERMISSION, "%s", err.msg);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

Test(share, publish_naming_another_agency_is_refused_spoofed)
{
    char *json = th_health_visit_json("hv-spoof", "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, "syp-police"),
                 ACCORD__V1__ERROR_CODE__SPOOFED);
    free(json);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND error_code = 'SPOOFED' AND "
                                    "from_agency = 'rft-health-visiting'"),
                 1);
}

Test(share, malformed_frame_gets_an_error_and_the_broker_keeps_serving)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    acc_err_t err;
    static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02 };
    cr_assert_eq(client_send_raw(c, garbage, sizeof(garbage), &err), ACC_OK);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_ERROR);
    cr_assert_eq(reply->error->code, ACCORD__V1__ERROR_CODE__MALFORMED);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    char *json = th_health_visit_json("hv-after-garbage", "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
}

Test(share, log_holds_one_row_per_decision_and_no_plaintext)
{
    char *json = th_health_visit_json("hv-plain", "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-plain'"), 1);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-plain' AND payload IS NOT NULL"), 1);
    cr_assert_eq(th_pg_count(world, "position('Smith'::bytea in payload) > 0 OR "
                                    "position('9434765919'::bytea in payload) > 0 OR "
                                    "position('2026-11-20'::bytea in payload) > 0"),
                 0);
    cr_assert_eq(th_pg_count(world, "subject_tag IS NOT NULL"), 1);
}

Test(share, result_arrives_only_after_the_rows_are_committed)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    for (int i = 0; i < 20; i++) {
        char id[32];
        snprintf(id, sizeof(id), "hv-commit-%d", i);
        char *json = th_health_visit_json(id, "9434765919");
        Accord__V1__Envelope *reply = th_publish(c, json, "");
        free(json);
        cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
        accord__v1__envelope__free_unpacked(reply, NULL);
        char where[96];
        snprintf(where, sizeof(where), "record_id = '%s' AND event = 'shared'", id);
        cr_assert_eq(th_pg_count(world, where), 1, "result for %s before its row", id);
    }
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

Test(share, audit_verify_passes_on_a_fresh_log_and_fails_after_tampering)
{
    char *json = th_health_visit_json("hv-verify", "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accord-audit", world->bin_dir);
    char db_opt[] = "--db";
    char sign_opt[] = "--sign-key";
    char sign[600];
    snprintf(sign, sizeof(sign), "%s/broker.sign.pub", world->dir);
    char verify[] = "verify";
    char *argv[] = { exe, db_opt, world->conninfo, sign_opt, sign, verify, NULL };
    th_proc_t *p = th_proc_start(argv);
    cr_assert_eq(th_proc_wait(&p, 20000), 0);
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER accord_log_append_only");
    th_pg_exec(world, "UPDATE accord_log SET record_type = 'health-visit2' WHERE seq = 1");
    p = th_proc_start(argv);
    cr_assert_eq(th_proc_wait_lines(p, 1, 20000), 1);
    char *line = th_proc_line(p, 0);
    cr_assert(strstr(line, "FAIL seq 1: hash mismatch") != NULL, "%s", line);
    free(line);
    cr_assert_eq(th_proc_wait(&p, 20000), 1);
}

Test(share, broker_role_cannot_update_or_delete_log_rows)
{
    char *json = th_health_visit_json("hv-append", "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
    PGresult *res = PQexec(world->db, "UPDATE accord_log SET reason = 'x'");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    res = PQexec(world->db, "DELETE FROM accord_log");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    PQclear(res);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-append'"), 1);
}

Test(share, the_broker_log_never_holds_a_childs_identifiers)
{
    char *json = th_health_visit_json("hv-private", "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
    json = th_health_visit_json("hv-private-bad", "9434765918");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER);
    free(json);
    th_broker_stop(world);
    char path[600];
    snprintf(path, sizeof(path), "%s/accordd.log", world->dir);
    cr_assert(th_file_wait(path, "accepted record from rft-health-visiting", 1000),
              "the log was read at all");
    static const char *const secrets[] = { "9434765919", "9434765918", "943 476", "Amelia",
                                           "Smith",      "2026-05-02", "S60 1AA", "feeding" };
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        cr_assert(!th_file_wait(path, secrets[i], 0), "broker log holds \"%s\"", secrets[i]);
    }
}
