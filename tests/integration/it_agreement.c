/* it_agreement.c - the agreement in a running broker: explained, reloaded on SIGHUP
 * (a bad file leaves the old one in force), removed keys shut out, subscriptions
 * narrowing what arrives */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static th_world_t *world;

static const char s_types[] = "record_types:\n"
                              "  - id: health-visit\n"
                              "    fields: {visit_date: date, visit_type: text, concerns: text}\n"
                              "    required: [visit_date]\n"
                              "  - id: two-year-review\n"
                              "    fields: {review_date: date}\n";

static const char s_rule_cc[] = "  - id: hv-to-cc\n"
                                "    from: rft-health-visiting\n"
                                "    to: [rmbc-childrens-centres]\n"
                                "    record_types: [health-visit]\n"
                                "    fields: [visit_date]\n"
                                "    subject: [nhs_number]\n"
                                "    purpose: Best Start\n"
                                "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                                "    consent: not-required\n"
                                "  - id: hv-review-to-cc\n"
                                "    from: rft-health-visiting\n"
                                "    to: [rmbc-childrens-centres]\n"
                                "    record_types: [two-year-review]\n"
                                "    fields: [review_date]\n"
                                "    subject: [nhs_number]\n"
                                "    purpose: School readiness\n"
                                "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                                "    consent: not-required\n";

static const char s_rule_eh[] = "  - id: hv-to-eh\n"
                                "    from: rft-health-visiting\n"
                                "    to: [rmbc-early-help]\n"
                                "    record_types: [health-visit]\n"
                                "    fields: [visit_date, concerns]\n"
                                "    subject: [nhs_number]\n"
                                "    purpose: Early help\n"
                                "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                                "    consent: not-required\n";

static void s_write_agreement(bool with_eh)
{
    char body[4096];
    snprintf(body, sizeof(body), "%srules:\n%s%s", s_types, s_rule_cc, with_eh ? s_rule_eh : "");
    th_world_agreement(world, body);
}

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", "rmbc-early-help",
                               NULL };
    world = th_world_new(agencies);
    s_write_agreement(false);
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(agreement, .init = setup, .fini = teardown, .timeout = 120);

static char *s_hash_of_seq(long seq)
{
    char sql[128];
    snprintf(sql, sizeof(sql),
             "SELECT encode(agreement_hash, 'hex') FROM accord_log WHERE seq = %ld", seq);
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQntuples(res), 1);
    char *hash = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return hash;
}

static size_t s_publish_visit(client_t *c, const char *id)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"record_id\":\"%s\",\"record_type\":\"health-visit\",\"occurred_at\":"
             "\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":\"9434765919\"},"
             "\"fields\":{\"visit_date\":\"2026-11-20\",\"concerns\":\"none\"}}",
             id);
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 reply->publish_result->reason);
    size_t n = reply->publish_result->n_recipients;
    accord__v1__envelope__free_unpacked(reply, NULL);
    return n;
}

Test(agreement, sighup_swaps_in_a_valid_file_and_keeps_the_old_one_after_a_bad_file)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    cr_assert_eq(s_publish_visit(c, "hv-1"), 1);
    char *first = s_hash_of_seq(th_pg_count(world, "true"));

    s_write_agreement(true);
    kill(world->broker->pid, SIGHUP);
    cr_assert(th_broker_logged(world, "reloaded \"test-agreement\"", 10000));
    cr_assert_eq(s_publish_visit(c, "hv-2"), 2, "the new rule is in force");
    char *second = s_hash_of_seq(th_pg_count(world, "true"));
    cr_assert_str_neq(first, second, "rows carry the hash of the agreement that decided them");

    th_world_agreement(world, "record_types: []\nrules:\n  - id: broken\n");
    kill(world->broker->pid, SIGHUP);
    cr_assert(th_broker_logged(world, "reload refused", 10000));
    cr_assert(th_broker_logged(world, "agreement.yaml:23:5: missing required key \"from\"", 1000));
    cr_assert_eq(s_publish_visit(c, "hv-3"), 2, "the last good agreement stays in force");
    char *third = s_hash_of_seq(th_pg_count(world, "true"));
    cr_assert_str_eq(second, third);
    free(first);
    free(second);
    free(third);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

Test(agreement, records_streamed_across_reloads_are_each_decided_under_one_whole_agreement)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    size_t shared[2] = { 0, 0 };
    for (int i = 0; i < 300; i++) {
        if (i % 50 == 25) {
            s_write_agreement(i % 100 == 25);
            kill(world->broker->pid, SIGHUP);
        }
        char id[32];
        snprintf(id, sizeof(id), "hv-stream-%d", i);
        size_t n = s_publish_visit(c, id);
        cr_assert(n == 1 || n == 2, "record %d reached %zu recipients", i, n);
        shared[n - 1]++;
    }
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(th_pg_count(world, "event = 'shared' AND record_id LIKE 'hv-stream-%'"),
                 (long)(shared[0] + 2 * shared[1]), "every accepted record logged exactly once");
    /* Each record's rows all carry one agreement's hash: no half-loaded decisions. */
    PGresult *res =
        PQexec(world->db, "SELECT record_id FROM accord_log WHERE event = 'shared' "
                          "GROUP BY record_id HAVING count(DISTINCT agreement_hash) > 1");
    cr_assert_eq(PQntuples(res), 0);
    PQclear(res);
    cr_assert_gt(shared[1], 0, "some records were decided under the wider agreement");
    cr_assert_gt(shared[0], 0, "some records were decided under the narrower agreement");
}

Test(agreement, a_key_removed_from_the_agreement_is_shut_out)
{
    acc_agent_config_t cfg;
    client_t *eh = th_client(world, "rmbc-early-help", &cfg);
    /* the agreement rewritten without rmbc-early-help (the last agency of the world) */
    world->agency_count = 2;
    s_write_agreement(false);
    kill(world->broker->pid, SIGHUP);
    cr_assert(th_broker_logged(world, "reloaded \"test-agreement\"", 10000));
    char *json = th_health_visit_json("eh-1", "9434765919");
    Accord__V1__Envelope *reply = th_publish(eh, json, "");
    free(json);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_ERROR);
    cr_assert_eq(reply->error->code, ACCORD__V1__ERROR_CODE__NOT_PERMITTED);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&eh);
    acc_agent_config_clear(&cfg);

    th_agent_config_load(world, "rmbc-early-help", &cfg);
    client_t *again = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&again, &cfg, false, &err), ACC_OK);
    cr_assert_eq(client_hello(again, 10000, &err), ACC_ERR_PERMISSION, "%s", err.msg);
    client_destroy(&again);
    acc_agent_config_clear(&cfg);
    cr_assert(th_broker_logged(world, "refused a handshake: key", 1000));
}

Test(agreement, subscriptions_narrow_what_arrives_and_never_widen_it)
{
    th_agent_config(world, "rmbc-childrens-centres", "[two-year-review, police-da-notification]");
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", "--count=1");
    cr_assert(th_agent_wait_connected(world, "rmbc-childrens-centres", "subscribe"));
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    cr_assert_eq(s_publish_visit(c, "hv-not-subscribed"), 1);
    const char *review = "{\"record_id\":\"r-1\",\"record_type\":\"two-year-review\","
                         "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":"
                         "\"9434765919\"},\"fields\":{\"review_date\":\"2026-11-19\"}}";
    Accord__V1__Envelope *reply = th_publish(c, review, "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    cr_assert_eq(th_proc_wait_lines(sub, 1, 20000), 1);
    char *line = th_proc_line(sub, 0);
    cr_assert(strstr(line, "\"record_id\":\"r-1\"") != NULL, "got %s", line);
    free(line);
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

Test(agreement, explain_shows_recipients_fields_rules_and_reasons)
{
    char exe[600];
    snprintf(exe, sizeof(exe), "%s/accord", world->bin_dir);
    char a1[] = "agreement";
    char a2[] = "explain";
    char file[] = ACCORD_SOURCE_DIR "/deploy/examples/best-start-agreement.yaml";
    char from_opt[] = "--from";
    char from[] = "rft-emergency-department";
    char type_opt[] = "--type";
    char type[] = "ed-attendance";
    char *argv[] = { exe, a1, a2, file, from_opt, from, type_opt, type, NULL };
    th_proc_t *p = th_proc_start(argv);
    size_t lines = th_proc_wait_lines(p, 18, 10000);
    cr_assert_geq(lines, 14);
    const char *expect[] = {
        "rft-emergency-department publishing \"ed-attendance\" records reaches 2 recipient(s):",
        "  -> rft-health-visiting (Rotherham NHS FT, 0-19 public health nursing (health visiting))",
        "      rule ed-to-hv: consent not required",
        "  -> rmbc-childrens-social-care (Rotherham MBC children's social care (MASH front door))",
        "      fields:  attended_at, concern_raised, injury_type, presenting_complaint",
        ("      rule ed-injury-to-csc: with consent given, or without it on a safeguarding "
         "justification"), /* one line, cut for width */
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        bool found = false;
        for (size_t k = 0; k < lines && !found; k++) {
            char *line = th_proc_line(p, k);
            found = line != NULL && strcmp(line, expect[i]) == 0;
            free(line);
        }
        cr_assert(found, "missing line: %s", expect[i]);
    }
    cr_assert_eq(th_proc_wait(&p, 10000), 0);
}
