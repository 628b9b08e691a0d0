/* it_hygiene.c - the broker survives a failed key rotation, bounds every database
 * call, checks the schema version for /healthz and never dumps core */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accord/migrate.h"
#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(hygiene, .init = setup, .fini = teardown, .timeout = 120);

/* Polls /healthz until its status is want and its body holds needle; the last
 * response (yours) either way. */
static char *s_wait_health(int port, int want, const char *needle, int timeout_ms)
{
    char *health = NULL;
    for (int waited = 0;; waited += 100) {
        int status = 0;
        free(health);
        health = th_http_get(port, "/healthz", &status);
        if ((status == want && strstr(health, needle) != NULL) || waited >= timeout_ms) {
            return health;
        }
        th_sleep_ms(100);
    }
}

static void s_publish_ok(const char *record_id)
{
    char *json = th_health_visit_json(record_id, "9434765919");
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK, "%s", record_id);
    free(json);
}

Test(hygiene, a_failed_key_rotation_keeps_the_current_epoch_and_rotates_once_the_fault_is_gone)
{
    snprintf(world->broker_extra, sizeof(world->broker_extra), "epoch_max_rows: 5\n");
    th_broker_start(world);
    th_pg_exec(world, "CREATE FUNCTION th_refuse_epoch() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$BEGIN RAISE EXCEPTION 'key epochs refused by the test'; END$$");
    th_pg_exec(world, "CREATE TRIGGER th_refuse_epoch BEFORE INSERT ON accord_epoch "
                      "FOR EACH ROW EXECUTE FUNCTION th_refuse_epoch()");
    char id[32];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof(id), "hv-rot-%d", i);
        s_publish_ok(id);
    }
    cr_assert(th_broker_logged(world, "key epoch not rotated", 5000));
    cr_assert_eq(th_pg_count(world, "event = 'shared' AND key_epoch = 1"), 6);
    cr_assert_eq(th_pg_count(world, "key_epoch <> 1"), 0);

    th_pg_exec(world, "DROP TRIGGER th_refuse_epoch ON accord_epoch");
    bool rotated = false;
    for (int i = 6; i < 60 && !rotated; i++) {
        snprintf(id, sizeof(id), "hv-rot-%d", i);
        s_publish_ok(id);
        rotated = th_broker_logged(world, "key epoch 2 started", 500);
    }
    cr_assert(rotated, "the epoch never rotated after the fault was removed");
    s_publish_ok("hv-rot-after");
    cr_assert_gt(th_pg_count(world, "record_id = 'hv-rot-after' AND key_epoch = 2"), 0);
    char *out = NULL;
    char sign[512];
    snprintf(sign, sizeof(sign), "%s/broker.sign.pub", world->dir);
    int status = th_run(world, &out, "accord-audit", "--db", world->conninfo, "--sign-key", sign,
                        "verify", (char *)NULL);
    cr_assert_eq(status, 0, "%s", out != NULL ? out : "");
    free(out);
}

Test(hygiene, the_broker_gives_up_connecting_to_a_database_that_never_answers)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(listen(fd, 8), 0); /* the kernel completes handshakes; nobody ever answers */
    socklen_t len = sizeof(addr);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    char shared[512];
    snprintf(shared, sizeof(shared), "%s", world->conninfo);
    snprintf(world->conninfo, sizeof(world->conninfo),
             "host=127.0.0.1 port=%u user=accord dbname=accord", (unsigned)ntohs(addr.sin_port));
    th_broker_config(world);
    snprintf(world->conninfo, sizeof(world->conninfo), "%s", shared);
    char exe[600];
    char config[600];
    char log[600];
    snprintf(exe, sizeof(exe), "%s/accordd", world->bin_dir);
    snprintf(config, sizeof(config), "%s/broker.yaml", world->dir);
    snprintf(log, sizeof(log), "%s/accordd.log", world->dir);
    char opt[] = "--config";
    char *argv[] = { exe, opt, config, NULL };
    th_proc_t *broker = th_proc_start_logged(argv, log);
    /* a stall bound only a hung connect exceeds: 4 is "could not start" */
    int status = th_proc_wait(&broker, 30000);
    cr_assert_eq(status, 4, "accordd exited %d (137: still connecting after 30 s)", status);
    cr_assert(th_file_wait(log, "timeout expired", 1000));
    close(fd);
}

static int s_broker_with_metrics(void)
{
    snprintf(world->broker_extra, sizeof(world->broker_extra), "metrics: 127.0.0.1:0\n");
    th_broker_start(world);
    return th_broker_metrics_port(world);
}

Test(hygiene, locked_delivery_tables_hold_up_the_metrics_count_and_nothing_else)
{
    int port = s_broker_with_metrics();
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    th_pg_exec(world, "BEGIN");
    /* what the pending figure is counted from: the outbox, and from schema 0008
     * the recipients' cursors */
    th_pg_exec(world, "LOCK TABLE accord_outbox, accord_cursor IN ACCESS EXCLUSIVE MODE");
    /* the pending figure is counted every ten seconds, off the loop: the count
     * waits for the lock and the broker goes on */
    cr_assert_eq(th_pg_wait_lock_waiters(world, "FROM accord_cursor c GROUP BY", 25000), 1,
                 "the pending count did not wait for the lock");
    /* a refusal needs only the log, which is not locked */
    char *json = th_health_visit_json("hv-lock-1", "9434765918");
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER);
    accord__v1__envelope__free_unpacked(reply, NULL);
    free(json);
    char *health = s_wait_health(port, 200, "ok:", 5000);
    cr_assert(strstr(health, "ok:") != NULL, "%s", health);
    free(health);
    th_pg_exec(world, "ROLLBACK");
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    s_publish_ok("hv-lock-2");
}

Test(hygiene, the_rule_filter_of_audit_queries_uses_an_index)
{
    th_pg_exec(world, "SET enable_seqscan = off");
    PGresult *res = PQexec(world->db, "EXPLAIN SELECT seq FROM accord_log WHERE seq > 0 AND "
                                      "rule_ids @> ARRAY['hv-to-cc'::text]");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    char plan[4096] = "";
    for (int i = 0; i < PQntuples(res); i++) {
        strncat(plan, PQgetvalue(res, i, 0), sizeof(plan) - strlen(plan) - 2);
        strcat(plan, "\n");
    }
    PQclear(res);
    th_pg_exec(world, "RESET enable_seqscan");
    cr_assert(strstr(plan, "Bitmap Index Scan on accord_log_rule_ids") != NULL, "%s", plan);
}

Test(hygiene, healthz_names_a_schema_version_other_than_the_brokers)
{
    int port = s_broker_with_metrics();
    int latest = acc_migrate_latest();
    char sql[128];
    char line[128];
    snprintf(sql, sizeof(sql), "INSERT INTO accord_schema (version) VALUES (%d)", latest + 1);
    th_pg_exec(world, sql);
    snprintf(line, sizeof(line), "schema at version %d, this broker needs %d", latest + 1, latest);
    char *health = s_wait_health(port, 503, line, 10000);
    cr_assert(strstr(health, line) != NULL && strstr(health, " 503") != NULL, "%s", health);
    free(health);
    snprintf(sql, sizeof(sql), "DELETE FROM accord_schema WHERE version > %d", latest);
    th_pg_exec(world, sql);
    health = s_wait_health(port, 200, "ok:", 10000);
    cr_assert(strstr(health, " 200") != NULL, "%s", health);
    free(health);
}

/* Asserts that /proc/PID/limits shows core files limited to 0, soft and hard. */
static void s_assert_no_core(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[256];
    char core[256] = "";
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "Max core file size", 18) == 0) {
            snprintf(core, sizeof(core), "%s", line);
        }
    }
    fclose(f);
    char soft[32] = "";
    char hard[32] = "";
    cr_assert_eq(sscanf(core + 18, "%31s %31s", soft, hard), 2, "%s", core);
    cr_assert_str_eq(soft, "0", "%s", core);
    cr_assert_str_eq(hard, "0", "%s", core);
}

Test(hygiene, neither_the_broker_nor_an_agent_would_write_a_core_file)
{
    /* as an operator's shell might leave it: cores allowed, then they start */
    struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
    cr_assert_eq(setrlimit(RLIMIT_CORE, &unlimited), 0);
    th_broker_start(world);
    s_assert_no_core(world->broker->pid);
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", NULL);
    cr_assert(th_agent_wait_connected(world, "rmbc-childrens-centres", "subscribe"));
    s_assert_no_core(sub->pid);
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);
}

/* Sends an auditor's query and waits for its answer (yours), failing the test if
 * none comes within a stall bound. */
static Accord__V1__Envelope *s_audit(client_t *c, Accord__V1__AuditQuery *q)
{
    static uint64_t correlation;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = ++correlation;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    env.audit_query = q;
    acc_err_t err;
    cr_assert_eq(client_send(c, &env, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "no answer: %s", err.msg);
    return reply;
}

Test(hygiene, an_audit_query_behind_a_lock_is_cancelled_and_answered_unavailable)
{
    th_broker_start(world);
    s_publish_ok("hv-alock-1");
    acc_agent_config_t cfg;
    client_t *ig = th_client(world, "ig-officer", &cfg);
    th_pg_exec(world, "BEGIN");
    th_pg_exec(world, "LOCK TABLE accord_log IN ACCESS EXCLUSIVE MODE");
    Accord__V1__AuditQuery q = ACCORD__V1__AUDIT_QUERY__INIT;
    q.rule = acc_pb_str("hv-to-cc");
    Accord__V1__Envelope *reply = s_audit(ig, &q);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_ERROR);
    cr_assert_eq(reply->error->code, ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    accord__v1__envelope__free_unpacked(reply, NULL);
    cr_assert(th_broker_logged(world, "statement timeout", 1000));
    th_pg_exec(world, "ROLLBACK");
    reply = s_audit(ig, &q);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT);
    cr_assert_eq(reply->audit_result->n_rows, 1);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&ig);
    acc_agent_config_clear(&cfg);
}

Test(hygiene, an_audit_page_stops_at_its_byte_budget_and_says_more)
{
    th_world_agreement(world, "record_types:\n"
                              "  - id: health-visit\n"
                              "    fields: {visit_date: date, visit_type: text(60000)}\n"
                              "rules:\n"
                              "  - id: hv-to-cc\n"
                              "    from: rft-health-visiting\n"
                              "    to: [rmbc-childrens-centres]\n"
                              "    record_types: [health-visit]\n"
                              "    fields: [visit_date, visit_type]\n"
                              "    subject: [nhs_number, family_name]\n"
                              "    purpose: Best Start\n"
                              "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
                              "    consent: not-required\n");
    th_broker_start(world);
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    char *big = malloc(60001);
    memset(big, 'x', 60000);
    big[60000] = '\0';
    size_t json_cap = 62000;
    char *json = malloc(json_cap);
    for (int i = 0; i < 20; i++) {
        snprintf(json, json_cap,
                 "{\"record_id\":\"hv-big-%d\",\"record_type\":\"health-visit\","
                 "\"occurred_at\":\"2026-11-20T10:15:00Z\",\"subject\":{\"nhs_number\":"
                 "\"9434765919\",\"given_name\":\"Amelia\",\"family_name\":\"Smith\","
                 "\"date_of_birth\":\"2026-05-02\",\"postcode\":\"S60 1AA\"},"
                 "\"consent\":\"given\","
                 "\"fields\":{\"visit_date\":\"2026-11-20\",\"visit_type\":\"%s\"}}\n",
                 i, big);
        Accord__V1__Envelope *reply = th_publish(c, json, "");
        cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                     acc_pb_code_name(reply->publish_result->code));
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    free(json);
    free(big);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    /* 20 shares of 60 KB each: more than an auditor's default 1 MiB frame */
    client_t *ig = th_client(world, "ig-officer", &cfg);
    Accord__V1__AuditQuery q = ACCORD__V1__AUDIT_QUERY__INIT;
    q.event = acc_pb_str("shared");
    q.payloads = true;
    size_t total = 0;
    size_t pages = 0;
    for (bool more = true; more; pages++) {
        Accord__V1__Envelope *reply = s_audit(ig, &q);
        cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT);
        const Accord__V1__AuditResult *r = reply->audit_result;
        cr_assert_gt(r->n_rows, 0);
        cr_assert_lt(accord__v1__envelope__get_packed_size(reply), (size_t)1024 * 1024);
        total += r->n_rows;
        more = r->more;
        q.after_seq = r->rows[r->n_rows - 1]->seq;
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    cr_assert_eq(total, 20);
    cr_assert_gt(pages, 1);
    client_destroy(&ig);
    acc_agent_config_clear(&cfg);
}

/* A port on this machine that nothing listens on: bound, then let go. */
static int s_unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* systemd (or an operator's Ctrl-C) stops an agent that is still waiting for the
 * broker's Welcome: it must stop then, not when its current wait ends. */
Test(hygiene, an_agent_waiting_for_an_unreachable_broker_stops_when_asked)
{
    snprintf(world->endpoint, sizeof(world->endpoint), "tcp://127.0.0.1:%d", s_unused_port());
    const char *commands[] = { "publish", "subscribe" };
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const char *agency = i == 0 ? "rft-health-visiting" : "rmbc-childrens-centres";
        th_proc_t *agent = th_agent_start(world, commands[i], agency, NULL);
        th_sleep_ms(1500); /* inside its first wait for a Welcome (5 s) */
        int status = th_proc_stop(&agent, SIGTERM, 1000);
        cr_assert_neq(status, 128 + SIGKILL,
                      "accord-agent %s was still waiting a second after SIGTERM", commands[i]);
    }
}
