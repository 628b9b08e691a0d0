/* it_delivery.c - every share stays pending until its recipient acknowledges it:
 * recipients offline at publish time, broker restarts, lost acknowledgements */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "redeliver_after_ms: 500\n");
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(delivery, .init = setup, .fini = teardown, .timeout = 180);

static void s_publish_n(const char *prefix, int n)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        char *json = th_health_visit_json(id, "9434765919");
        Accord__V1__Envelope *reply = th_publish(c, json, "");
        free(json);
        cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

/* Deliveries pending: shares no acknowledgement covers. */
static long s_pending(void)
{
    return th_pg_pending_count(world, "true");
}

/* Starts a subscriber agent for n deliveries and checks they are the records
 * prefix-0 .. prefix-(n-1), in that order. */
static void s_subscribe_expect(const char *prefix, int n)
{
    char count[32];
    snprintf(count, sizeof(count), "--count=%d", n);
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", count);
    cr_assert_eq(th_proc_wait_lines(sub, (size_t)n, 20000), (size_t)n, "deliveries missing");
    for (int i = 0; i < n; i++) {
        char *line = th_proc_line(sub, (size_t)i);
        json_t *obj = json_loads(line, 0, NULL);
        cr_assert_not_null(obj, "%s", line);
        char expect[64];
        snprintf(expect, sizeof(expect), "%s-%d", prefix, i);
        const char *got =
            json_string_value(json_object_get(json_object_get(obj, "record"), "record_id"));
        cr_assert_str_eq(got, expect, "delivery %d out of order", i);
        json_decref(obj);
        free(line);
    }
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
}

Test(delivery, a_recipient_offline_at_publish_gets_everything_in_order_when_it_connects)
{
    s_publish_n("hv-offline", 30);
    cr_assert_eq(s_pending(), 30);
    cr_assert_eq(th_pg_acked_count(world, "true"), 0);
    s_subscribe_expect("hv-offline", 30);
    cr_assert_eq(th_pg_wait_acked_count(world, "record_id LIKE 'hv-offline-%'", 30, 10000), 30);
    cr_assert_eq(s_pending(), 0, "acknowledged deliveries are no longer pending");
}

Test(delivery, pending_deliveries_survive_a_broker_restart)
{
    s_publish_n("hv-restart", 5);
    th_broker_stop(world);
    th_broker_start(world);
    s_subscribe_expect("hv-restart", 5);
    cr_assert_eq(th_pg_wait_acked_count(world, "record_id LIKE 'hv-restart-%'", 5, 10000), 5);
    cr_assert_eq(s_pending(), 0);
}

/* Scans of the log's (to_agency, seq) index so far, and the entries they read,
 * as PostgreSQL counts them: a session adds its counts at the latest when it ends. */
static void s_to_seq_index_use(long *scans, long *reads)
{
    PQclear(PQexec(world->db, "SELECT pg_stat_clear_snapshot()"));
    PGresult *res = PQexec(world->db, "SELECT idx_scan, idx_tup_read FROM pg_stat_user_indexes "
                                      "WHERE indexrelname = 'accord_log_to_seq'");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_eq(PQntuples(res), 1);
    *scans = atol(PQgetvalue(res, 0, 0));
    *reads = atol(PQgetvalue(res, 0, 1));
    PQclear(res);
}

Test(delivery, a_backlog_is_paged_from_the_index_before_the_log_has_statistics)
{
    /* Before the log is first analysed (after a logical restore; a backlog that
     * grew faster than autovacuum) the planner guesses a handful of rows for any
     * agency. It then chose to read every pending row and sort them for each
     * page of 500: with 1,000,000 pending, 1.5 s a page, and a backlog drained
     * at 175 deliveries/s. Each read of a page must read about a page of the
     * index, however many pages a busy machine makes the broker read. */
    th_pg_exec(world, "ALTER TABLE accord_log SET (autovacuum_enabled = false)");
    enum { BACKLOG = 1500, PAGE = 500 };
    s_publish_n("hv-backlog", BACKLOG);
    th_broker_stop(world); /* its sessions end, so their index reads are counted */
    PGresult *res = PQexec(world->db, "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL "
                                      "FROM pg_stat_user_tables WHERE relname = 'accord_log'");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "t", "the log was analysed: the test proves nothing");
    PQclear(res);
    long scans_before = 0;
    long reads_before = 0;
    s_to_seq_index_use(&scans_before, &reads_before);
    th_broker_start(world);
    s_subscribe_expect("hv-backlog", 1);
    th_broker_stop(world);
    long scans = 0;
    long reads = 0;
    s_to_seq_index_use(&scans, &reads);
    scans -= scans_before;
    reads -= reads_before;
    cr_log_info("serving the backlog scanned the index %ld time(s), reading %ld entries", scans,
                reads);
    cr_assert_gt(scans, 0, "the backlog was not read through the index at all");
    cr_assert_leq(reads, scans * (PAGE + 1),
                  "%ld scan(s) of the index read %ld entries: more than a page each, for a "
                  "backlog of %d",
                  scans, reads, BACKLOG);
    th_broker_start(world); /* as the world expects it at the end */
}

Test(delivery, an_unacknowledged_delivery_is_sent_again)
{
    acc_agent_config_t cfg;
    th_agent_config_load(world, "rmbc-childrens-centres", &cfg);
    client_t *c = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&c, &cfg, true, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(c, 10000, &err), ACC_OK, "%s", err.msg);
    s_publish_n("hv-lost-ack", 1);
    char first[64] = "";
    for (int round = 0; round < 2; round++) {
        Accord__V1__Envelope *env = NULL;
        cr_assert_eq(client_recv(c, &env, 10000, &err), ACC_OK, "round %d: %s", round, err.msg);
        cr_assert_eq(env->body_case, ACCORD__V1__ENVELOPE__BODY_DELIVER);
        if (round == 0) {
            snprintf(first, sizeof(first), "%s", env->deliver->share_id);
        } else {
            cr_assert_str_eq(env->deliver->share_id, first, "the same share again");
        }
        accord__v1__envelope__free_unpacked(env, NULL);
    }
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(s_pending(), 1, "still pending: never acknowledged");
    cr_assert_eq(th_pg_acked_count(world, "true"), 0);
}

static Accord__V1__Envelope *s_publish_once(const char *json)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    return reply;
}

Test(delivery, the_same_record_twice_is_shared_once_and_answered_alike)
{
    char *json = th_health_visit_json("hv-twice", "9434765919");
    Accord__V1__Envelope *first = s_publish_once(json);
    Accord__V1__Envelope *again = s_publish_once(json);
    free(json);
    cr_assert_eq(first->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(again->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 again->publish_result->reason);
    cr_assert_eq(again->publish_result->n_recipients, 1);
    cr_assert_str_eq(again->publish_result->recipients[0]->share_id,
                     first->publish_result->recipients[0]->share_id);
    cr_assert_str_eq(again->publish_result->recipients[0]->rule_ids[0], "hv-to-cc");
    cr_assert_eq(again->publish_result->seq, first->publish_result->seq);
    accord__v1__envelope__free_unpacked(first, NULL);
    accord__v1__envelope__free_unpacked(again, NULL);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-twice'"), 1, "nothing logged twice");
    cr_assert_eq(s_pending(), 1, "nothing queued twice");
}

Test(delivery, the_same_record_id_with_other_content_is_a_conflict)
{
    char *json = th_health_visit_json("hv-changed", "9434765919");
    Accord__V1__Envelope *reply = s_publish_once(json);
    free(json);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    json = th_health_visit_json("hv-changed", "4010232137");
    reply = s_publish_once(json);
    free(json);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__DUPLICATE_CONFLICT);
    accord__v1__envelope__free_unpacked(reply, NULL);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-changed' AND event = 'shared'"), 1);
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-changed' AND error_code = "
                                    "'DUPLICATE_CONFLICT'"),
                 1);
}

Test(delivery, a_refused_record_may_be_corrected_and_sent_again_under_its_id)
{
    char *json = th_health_visit_json("hv-fixed", "9434765918");
    Accord__V1__Envelope *reply = s_publish_once(json);
    free(json);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER);
    accord__v1__envelope__free_unpacked(reply, NULL);
    json = th_health_visit_json("hv-fixed", "9434765919");
    reply = s_publish_once(json);
    free(json);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 reply->publish_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);
}

Test(delivery, a_subscriber_that_reads_late_stalls_no_publisher_and_loses_nothing)
{
    th_broker_stop(world);
    snprintf(world->broker_extra, sizeof(world->broker_extra),
             "peer_queue_max: 200\nredeliver_after_ms: 600000\n");
    th_broker_start(world);
    acc_agent_config_t cfg;
    th_agent_config_load(world, "rmbc-childrens-centres", &cfg);
    client_t *sub = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&sub, &cfg, true, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(sub, 10000, &err), ACC_OK, "%s", err.msg);

    /* 3000 records through the real publisher while the subscriber reads nothing. */
    enum { RECORDS = 3000 };
    char input[600];
    snprintf(input, sizeof(input), "%s/slow.ndjson", world->dir);
    FILE *f = fopen(input, "w");
    for (int i = 0; i < RECORDS; i++) {
        char id[32];
        snprintf(id, sizeof(id), "hv-slow-%d", i);
        char *json = th_health_visit_json(id, "9434765919");
        fputs(json, f);
        free(json);
    }
    fclose(f);
    char input_opt[640];
    snprintf(input_opt, sizeof(input_opt), "--input=%s", input);
    th_proc_t *pub = th_agent_start(world, "publish", "rft-health-visiting", input_opt);
    size_t got = th_proc_wait_lines(pub, RECORDS, 40000);
    cr_assert_eq(got, RECORDS, "the publisher was stalled after %zu results", got);
    cr_assert_eq(th_proc_wait(&pub, 20000), 0);

    /* Now it reads: every share arrives, in log order, and is acknowledged. */
    char last[64] = "";
    int received = 0;
    while (received < RECORDS) {
        Accord__V1__Envelope *env = NULL;
        cr_assert_eq(client_recv(sub, &env, 10000, &err), ACC_OK, "after %d: %s", received,
                     err.msg);
        if (env->body_case == ACCORD__V1__ENVELOPE__BODY_DELIVER) {
            char id[32];
            snprintf(id, sizeof(id), "hv-slow-%d", received);
            cr_assert_str_eq(env->deliver->record->record_id, id, "out of order");
            snprintf(last, sizeof(last), "%s", env->deliver->share_id);
            Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
            ack.share_id = env->deliver->share_id;
            Accord__V1__Envelope reply = ACCORD__V1__ENVELOPE__INIT;
            reply.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
            reply.deliver_ack = &ack;
            cr_assert_eq(client_send(sub, &reply, &err), ACC_OK);
            received++;
        }
        accord__v1__envelope__free_unpacked(env, NULL);
    }
    /* the connection stays open until the acknowledgements are in: closing it
     * (linger 0, as agents do) drops any still queued, and those shares would
     * rightly be delivered again on the next connection */
    cr_assert_eq(th_pg_wait_acked_count(world, "record_id LIKE 'hv-slow-%'", RECORDS, 20000),
                 RECORDS);
    cr_assert_eq(s_pending(), 0);
    client_destroy(&sub);
    acc_agent_config_clear(&cfg);
}
