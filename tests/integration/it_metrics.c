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

/* ---- the pending figure is counted off the loop ---- */

static void setup_slow_count(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    /* a count the database holds up may take a minute before it is cancelled */
    snprintf(world->broker_extra, sizeof(world->broker_extra),
             "metrics: 127.0.0.1:0\ndatabase_query_timeout_ms: 60000\n");
    th_broker_start(world);
    port = th_broker_metrics_port(world);
}

TestSuite(metrics_count, .init = setup_slow_count, .fini = teardown, .timeout = 120);

/* With a backlog of a million the count took a second; a count held up by the
 * database for longer than that must not hold up the sharing. The test holds
 * accord_cursor locked, which the count reads and a publish to a known cursor
 * does not touch, while a partner publishes. */
Test(metrics_count, a_count_the_database_holds_up_never_holds_up_a_publish_nor_a_stop)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    char *json = th_health_visit_json("hv-c-1", th_nhs(0));
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    free(json);

    PGconn *locker = PQconnectdb(world->conninfo);
    cr_assert_eq(PQstatus(locker), CONNECTION_OK, "%s", PQerrorMessage(locker));
    PGresult *res = PQexec(locker, "BEGIN; LOCK TABLE accord_cursor IN ACCESS EXCLUSIVE MODE");
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(locker));
    PQclear(res);
    /* the next count starts within ten seconds and waits for the lock */
    cr_assert_eq(th_pg_wait_lock_waiters(world, "FROM accord_cursor c GROUP BY", 25000), 1,
                 "no pending count waited for the lock");

    json = th_health_visit_json("hv-c-2", th_nhs(1));
    th_send_publish(c, json, "", 2);
    free(json);
    acc_err_t err;
    reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 15000, &err), ACC_OK,
                 "no answer while the count waited: %s", err.msg);
    cr_assert_not_null(reply->publish_result);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    /* stopping cancels the count it would otherwise wait a minute for, quietly */
    th_broker_stop(world);
    cr_assert(!th_broker_logged(world, "not counted", 0),
              "a warning for a count cancelled to stop");

    res = PQexec(locker, "ROLLBACK");
    PQclear(res);
    PQfinish(locker);
    /* a broker starting counts at once: both shares pending */
    th_broker_start(world);
    port = th_broker_metrics_port(world);
    double pending = 0;
    for (int i = 0; i < 250 && pending != 2; i++) {
        th_sleep_ms(100);
        pending = th_metric(port, "accord_outbox_pending{agency=\"rmbc-childrens-centres\"}");
    }
    cr_assert_eq(pending, 2, "the pending figure is %g", pending);
}

/* PostgreSQL down: the count says so once, and again when it counts once more. */
Test(metrics_count, a_count_the_database_cannot_answer_is_logged_once_and_its_return_too)
{
    /* a private cluster: stopping the shared one would disturb other tests */
    th_broker_stop(world);
    th_pg_private_start(world);
    th_broker_start(world);
    port = th_broker_metrics_port(world);
    char *json = th_health_visit_json("hv-d-1", th_nhs(0));
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
    th_pg_private_ctl(world, "stop");
    cr_assert(th_broker_logged(world, "pending deliveries not counted", 30000),
              "no word that the count failed");
    th_sleep_ms(21000); /* two more counts fail, and say nothing */
    char log[600];
    snprintf(log, sizeof(log), "%s/accordd.log", world->dir);
    char *text = th_slurp(log);
    size_t said = 0;
    for (const char *p = text; (p = strstr(p, "pending deliveries not counted")) != NULL; p++) {
        said++;
    }
    free(text);
    cr_assert_eq(said, 1, "the failing count was logged %zu times", said);

    th_pg_private_ctl(world, "start");
    cr_assert(th_broker_logged(world, "pending deliveries counted again", 30000),
              "no word that the count works again");
    cr_assert_eq(th_metric(port, "accord_outbox_pending{agency=\"rmbc-childrens-centres\"}"), 1);
}
