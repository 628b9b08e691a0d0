/* it_trust.c - a connection that has earned trust publishes without the
 * idempotency lookup; a repeat from it is still answered with its first result
 * and shared once, because the log's unique index catches it at commit */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/record.h"
#include "harness.h"
#include "peers.h"

static th_world_t *world;
static int port;

static void s_start(void)
{
    snprintf(world->broker_extra, sizeof(world->broker_extra), "metrics: 127.0.0.1:0\n");
    th_broker_start(world);
    port = th_broker_metrics_port(world);
}

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    s_start();
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(trust, .init = setup, .fini = teardown, .timeout = 240);

/* A counter's value on /metrics. */
static long s_metric(const char *name)
{
    double value = th_metric(port, name);
    cr_assert_geq(value, 0, "%s missing from /metrics", name);
    return (long)value;
}

/* Results for correlations first .. first + n - 1, in any order, kept by index. */
static void s_results(client_t *c, uint64_t first, size_t n, Accord__V1__Envelope **out)
{
    for (size_t got = 0; got < n; got++) {
        Accord__V1__Envelope *reply = NULL;
        acc_err_t err;
        cr_assert_eq(client_recv(c, &reply, 20000, &err), ACC_OK, "%s", err.msg);
        cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
        cr_assert(reply->correlation_id >= first && reply->correlation_id < first + n);
        size_t i = (size_t)(reply->correlation_id - first);
        cr_assert_null(out[i], "two answers to one publish");
        out[i] = reply;
    }
}

/* Publishes prefix-0 .. prefix-(n-1), new records, 100 in flight at a time:
 * enough for the connection to earn trust. */
static void s_earn_trust(client_t *c, const char *prefix)
{
    enum { N = PEERS_TRUST_AFTER, WINDOW = 100 };
    for (size_t base = 0; base < N; base += WINDOW) {
        Accord__V1__Envelope *replies[WINDOW] = { 0 };
        for (size_t i = 0; i < WINDOW; i++) {
            char id[64];
            snprintf(id, sizeof(id), "%s-%zu", prefix, base + i);
            char *json = th_health_visit_json(id, th_nhs((base + i) % TH_NHS_POOL));
            th_send_publish(c, json, NULL, 1 + base + i);
            free(json);
        }
        s_results(c, 1 + base, WINDOW, replies);
        for (size_t i = 0; i < WINDOW; i++) {
            cr_assert_eq(replies[i]->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                         replies[i]->publish_result->reason);
            accord__v1__envelope__free_unpacked(replies[i], NULL);
        }
    }
}

static Accord__V1__Envelope *s_publish(client_t *c, const char *id, size_t nhs)
{
    char *json = th_health_visit_json(id, th_nhs(nhs));
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    free(json);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    return reply;
}

Test(trust, a_trusted_connections_repeat_is_caught_at_commit_and_gets_its_first_result)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    s_earn_trust(c, "hv-t");
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), 0,
                 "every publish was looked up while trust was earned");
    Accord__V1__Envelope *first = s_publish(c, "hv-t-new-1", 1);
    cr_assert_eq(first->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(first, NULL);
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), 1, "trusted: not looked up");

    /* one repeat between two new records, in flight together */
    char *fresh_a = th_health_visit_json("hv-t-new-2", th_nhs(2));
    char *repeat = th_health_visit_json("hv-t-0", th_nhs(0));
    char *fresh_b = th_health_visit_json("hv-t-new-3", th_nhs(3));
    th_send_publish(c, fresh_a, NULL, 5001);
    th_send_publish(c, repeat, NULL, 5002);
    th_send_publish(c, fresh_b, NULL, 5003);
    free(fresh_a);
    free(repeat);
    free(fresh_b);
    Accord__V1__Envelope *r[3] = { 0 };
    s_results(c, 5001, 3, r);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i]->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                     r[i]->publish_result->reason);
        cr_assert_eq(r[i]->publish_result->n_recipients, 1);
    }
    cr_assert_str_eq(r[1]->publish_result->reason, "already shared: this is the first result");
    char where[128];
    snprintf(where, sizeof(where), "record_id = 'hv-t-0' AND seq = %llu",
             (unsigned long long)r[1]->publish_result->seq);
    cr_assert_eq(th_pg_count(world, where), 1, "the repeat's answer is the first row's seq");
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-t-0'"), 1, "nothing logged twice");
    cr_assert_eq(th_pg_count(world, "record_id IN ('hv-t-new-2', 'hv-t-new-3')"), 2);
    for (int i = 0; i < 3; i++) {
        accord__v1__envelope__free_unpacked(r[i], NULL);
    }
    cr_assert_eq(s_metric("accord_batch_replays_total"), 1, "the repeat reached the database");
    cr_assert_eq(th_pg_pending_count(world, "to_agency = 'rmbc-childrens-centres'"),
                 PEERS_TRUST_AFTER + 3, "one delivery per record, none twice");

    /* trust lost: the next repeat is looked up, and costs no batch */
    long skipped = s_metric("accord_publish_lookups_skipped_total");
    Accord__V1__Envelope *again = s_publish(c, "hv-t-1", 1);
    cr_assert_eq(again->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_str_eq(again->publish_result->reason, "already shared: this is the first result");
    accord__v1__envelope__free_unpacked(again, NULL);
    cr_assert_eq(s_metric("accord_batch_replays_total"), 1);
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), skipped);

    /* a repeat that cost a batch doubles the run that earns trust back */
    s_earn_trust(c, "hv-t2");
    Accord__V1__Envelope *later = s_publish(c, "hv-t-new-4", 4);
    cr_assert_eq(later->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(later, NULL);
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), skipped,
                 "trusted again after one run, not two");
    client_destroy(&c);
    acc_agent_config_clear(&cfg);

    /* PostgreSQL's own text for the refused row quoted the record id; the
     * broker's log names only the constraint */
    char path[600];
    snprintf(path, sizeof(path), "%s/accordd.log", world->dir);
    char *log = th_slurp(path);
    cr_assert_not_null(strstr(log, "SQLSTATE 23505, constraint accord_log_record_once"), "%s", log);
    cr_assert_null(strstr(log, "hv-t-0"), "the broker's log names a record id:\n%s", log);
    free(log);
}

Test(trust, a_changed_record_from_a_trusted_connection_is_still_a_conflict)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    s_earn_trust(c, "hv-c");
    Accord__V1__Envelope *reply = s_publish(c, "hv-c-0", 9); /* another child */
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__DUPLICATE_CONFLICT, "%s",
                 reply->publish_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), 1);
    cr_assert_eq(s_metric("accord_batch_replays_total"), 1);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-c-0' AND event = 'shared'"), 1);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-c-0' AND error_code = 'DUPLICATE_CONFLICT'"),
                 1);
}

Test(trust, trust_is_the_connections_own_and_a_new_one_starts_without_it)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    s_earn_trust(c, "hv-n");
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    c = th_client(world, "rft-health-visiting", &cfg);
    Accord__V1__Envelope *reply = s_publish(c, "hv-n-0", 0);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_str_eq(reply->publish_result->reason, "already shared: this is the first result");
    accord__v1__envelope__free_unpacked(reply, NULL);
    reply = s_publish(c, "hv-n-new", 1);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), 0);
    cr_assert_eq(s_metric("accord_batch_replays_total"), 0);
}

/* Records accepted before 0008 answer only from accord_publish, which no unique
 * index of the log guards: while it holds any, every publish is looked up. */
Test(trust, while_records_accepted_before_version_8_remain_every_publish_is_looked_up)
{
    th_broker_stop(world);
    th_pg_exec(world, "INSERT INTO accord_publish (from_agency, record_id, content_hash, seq) "
                      "VALUES ('rft-health-visiting', 'hv-old', '\\x00', 1)");
    s_start();
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    s_earn_trust(c, "hv-l");
    Accord__V1__Envelope *reply = s_publish(c, "hv-l-0", 0);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_str_eq(reply->publish_result->reason, "already shared: this is the first result");
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(s_metric("accord_publish_lookups_skipped_total"), 0);
    cr_assert_eq(s_metric("accord_batch_replays_total"), 0);
}
