/* it_metrics.c - /metrics and /healthz from a running broker */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static th_world_t *world;
static int port;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "metrics: 127.0.0.1:0\n");
    th_broker_start(world);
    port = th_broker_metrics_port(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 60);

Test(metrics, healthz_is_ok_and_metrics_count_what_happened_without_naming_a_child)
{
    th_sleep_ms(1200); /* the loop refreshes its state once a second */
    char *health = th_http_get(port, "/healthz", NULL);
    cr_assert(strncmp(health, "HTTP/1.0 200", 12) == 0 || strncmp(health, "HTTP/1.1 200", 12) == 0,
              "%s", health);
    cr_assert(strstr(health, "ok: agreement test-agreement in force") != NULL, "%s", health);
    free(health);

    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    char *json = th_health_visit_json("hv-m-1", "9434765919");
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    free(json);
    json = th_health_visit_json("hv-m-2", "9434765918");
    reply = th_publish(c, json, "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER);
    accord__v1__envelope__free_unpacked(reply, NULL);
    free(json);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    /* a key that is not in the agreement */
    char *out = NULL;
    const char *stranger = th_agent_config(world, "stranger", NULL);
    (void)th_run(world, &out, "accord-audit", "--config", stranger, "log", (char *)NULL);
    free(out);
    th_sleep_ms(11000); /* the pending figure is refreshed every ten seconds */
    /* the one share to the children's centres, pending as the log has it */
    cr_assert_eq(th_pg_pending_count(world, "to_agency = 'rmbc-childrens-centres'"), 1);

    char *m = th_http_get(port, "/metrics", NULL);
    const char *expect[] = {
        "accord_log_rows_total{event=\"shared\",agency=\"rmbc-childrens-centres\"} 1",
        "accord_log_rows_total{event=\"refused\",agency=\"rft-health-visiting\"} 1",
        "accord_refused_total{code=\"INVALID_NHS_NUMBER\",agency=\"rft-health-visiting\"} 1",
        "accord_outbox_pending{agency=\"rmbc-childrens-centres\"} 1",
        "accord_commit_seconds_bucket{le=\"+Inf\"}",
        "accord_batch_rows_count",
        "accord_handshake_refusals_total 1",
        "accord_agreement_info{id=\"test-agreement\",hash=\"",
        "accord_database_up 1",
        "accord_checkpoint_lag_rows",
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        cr_assert(strstr(m, expect[i]) != NULL, "missing %s in:\n%s", expect[i], m);
    }
    cr_assert(strstr(m, "9434765919") == NULL && strstr(m, "9434765918") == NULL,
              "a child's NHS number in the metrics");
    free(m);
    char *missing = th_http_get(port, "/nothing", NULL);
    cr_assert(strstr(missing, " 404") != NULL, "%s", missing);
    free(missing);
}
