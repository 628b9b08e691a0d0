/* it_audit.c - auditors ask the broker about the sharing log; every question is
 * itself a row in the log, and agencies may not ask */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CHILD_A "9434765919"
#define CHILD_B "9434765927"

static th_world_t *world;
static char auditor_config[600]; /* th_agent_config reuses its buffer */

static void s_publish(client_t *c, const char *id, const char *nhs, Accord__V1__ErrorCode want)
{
    char *json = th_health_visit_json(id, nhs);
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    free(json);
    cr_assert_eq(reply->publish_result->code, want, "%s: %s", id, reply->publish_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);
}

/* A known log: three records about child A, two about child B, one refused. */
static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    th_broker_start(world);
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    s_publish(c, "hv-a-1", CHILD_A, ACCORD__V1__ERROR_CODE__OK);
    s_publish(c, "hv-b-1", CHILD_B, ACCORD__V1__ERROR_CODE__OK);
    s_publish(c, "hv-a-2", CHILD_A, ACCORD__V1__ERROR_CODE__OK);
    s_publish(c, "hv-bad", "9434765918", ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER);
    s_publish(c, "hv-b-2", CHILD_B, ACCORD__V1__ERROR_CODE__OK);
    s_publish(c, "hv-a-3", CHILD_A, ACCORD__V1__ERROR_CODE__OK);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    snprintf(auditor_config, sizeof(auditor_config), "%s",
             th_agent_config(world, "ig-officer", NULL));
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(audit, .init = setup, .fini = teardown, .timeout = 120);

/* Runs accord-audit log with the auditor's key and the arguments given. */
static char *s_log(int *status, const char *a1, const char *a2, const char *a3, const char *a4,
                   const char *a5)
{
    char *out = NULL;
    *status = th_run(world, &out, "accord-audit", "--config", auditor_config, "log", a1, a2, a3, a4,
                     a5, (char *)NULL);
    return out;
}

static json_t *s_log_json(const char *a1, const char *a2, const char *a3, const char *a4)
{
    int status = 0;
    char *out = s_log(&status, "--json", a1, a2, a3, a4);
    cr_assert_eq(status, 0, "accord-audit log failed: %s", out);
    json_error_t jerr;
    json_t *rows = json_loads(out, 0, &jerr);
    cr_assert(json_is_array(rows), "not a JSON array (%s): %s", jerr.text, out);
    free(out);
    return rows;
}

static void s_expect_ids(json_t *rows, const char *const ids[], size_t n)
{
    cr_assert_eq(json_array_size(rows), n, "%zu rows, expected %zu", json_array_size(rows), n);
    for (size_t i = 0; i < n; i++) {
        const char *got = json_string_value(json_object_get(json_array_get(rows, i), "record_id"));
        cr_assert_str_eq(got, ids[i], "row %zu", i);
    }
}

Test(audit, each_filter_returns_exactly_the_expected_rows)
{
    json_t *rows = s_log_json("--child", CHILD_A, "--event", "shared");
    const char *const a[] = { "hv-a-1", "hv-a-2", "hv-a-3" };
    s_expect_ids(rows, a, 3);
    json_decref(rows);

    rows = s_log_json("--child", CHILD_B, NULL, NULL);
    const char *const b[] = { "hv-b-1", "hv-b-2" };
    s_expect_ids(rows, b, 2);
    json_decref(rows);

    rows = s_log_json("--event", "refused", NULL, NULL);
    const char *const refused[] = { "hv-bad" };
    s_expect_ids(rows, refused, 1);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "error_code")),
                     "INVALID_NHS_NUMBER");
    json_decref(rows);

    rows = s_log_json("--to", "rmbc-childrens-centres", "--rule", "hv-to-cc");
    const char *const shared[] = { "hv-a-1", "hv-b-1", "hv-a-2", "hv-b-2", "hv-a-3" };
    s_expect_ids(rows, shared, 5);
    json_decref(rows);

    rows = s_log_json("--agency", "rmbc-childrens-centres", "--limit", "2");
    s_expect_ids(rows, shared, 2);
    json_decref(rows);

    rows = s_log_json("--type", "health-visit", "--until", "2000-01-01");
    cr_assert_eq(json_array_size(rows), 0, "nothing was logged before 2000");
    json_decref(rows);
    rows = s_log_json("--type", "health-visit", "--since", "2000-01-01T00:00:00Z");
    cr_assert_eq(json_array_size(rows), 6, "five shares and one refusal");
    json_decref(rows);
}

Test(audit, csv_and_table_show_the_same_rows_as_json)
{
    json_t *rows = s_log_json("--event", "shared", NULL, NULL);
    int status = 0;
    char *csv = s_log(&status, "--event", "shared", "--csv", NULL, NULL);
    cr_assert_eq(status, 0);
    char *table = s_log(&status, "--event", "shared", NULL, NULL, NULL);
    cr_assert_eq(status, 0);
    char *save = NULL;
    char *line = strtok_r(csv, "\n", &save);
    cr_assert_str_eq(line, "seq,at,event,from,to,type,record_id,rules,reason");
    size_t n = 0;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        json_t *row = json_array_get(rows, n);
        char expect[256];
        snprintf(expect, sizeof(expect),
                 "%lld,%s,shared,rft-health-visiting,"
                 "rmbc-childrens-centres,health-visit,%s,hv-to-cc,",
                 (long long)json_integer_value(json_object_get(row, "seq")),
                 json_string_value(json_object_get(row, "at")),
                 json_string_value(json_object_get(row, "record_id")));
        cr_assert_str_eq(line, expect);
        cr_assert(strstr(table, json_string_value(json_object_get(row, "record_id"))) != NULL);
        n++;
    }
    cr_assert_eq(n, json_array_size(rows));
    cr_assert(strstr(table, "(5 rows)") != NULL, "%s", table);
    free(csv);
    free(table);
    json_decref(rows);
}

Test(audit, an_agency_key_is_refused_audit_forbidden)
{
    char *out = NULL;
    const char *cc = th_agent_config(world, "rmbc-childrens-centres", NULL);
    int status = th_run(world, &out, "accord-audit", "--config", cc, "log", (char *)NULL);
    cr_assert_eq(status, 3);
    free(out);
    cr_assert(
        th_broker_logged(world, "answered rmbc-childrens-centres with AUDIT_FORBIDDEN", 5000));
    cr_assert_eq(th_pg_count(world, "event = 'queried'"), 0, "a refused question returns nothing");
}

Test(audit, every_question_is_a_queried_row_that_names_no_child)
{
    json_t *rows = s_log_json("--child", CHILD_A, NULL, NULL);
    json_decref(rows);
    rows = s_log_json("--event", "refused", NULL, NULL);
    json_decref(rows);
    cr_assert_eq(
        th_pg_wait_count(world, "event = 'queried' AND from_agency = 'ig-officer'", 2, 5000), 2);
    cr_assert_eq(th_pg_count(world, "event = 'queried' AND reason LIKE 'child=tag:%' AND "
                                    "reason LIKE '%3 row(s)%' AND subject_tag IS NOT NULL"),
                 1, "the child's question is found by its tag and says what it returned");
    cr_assert_eq(th_pg_count(world, "event = 'queried' AND reason LIKE '%" CHILD_A "%'"), 0);
    cr_assert_eq(th_pg_count(world, "event = 'queried' AND reason = "
                                    "'event=refused; after seq 0; 1 row(s)'"),
                 1);
    /* the questions are in the log the auditor reads next */
    rows = s_log_json("--event", "queried", NULL, NULL);
    cr_assert_eq(json_array_size(rows), 2);
    json_decref(rows);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "grep -q '%s' '%s/accordd.log'", CHILD_A, world->dir);
    cr_assert_neq(system(cmd), 0, "the broker's log names the child");
}

static char *s_key_path(void)
{
    return acc_xasprintf("%s/ig-officer.box.secret", world->dir);
}

Test(audit, show_decrypts_exactly_the_minimised_record_the_subscriber_received)
{
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", "--count=5");
    cr_assert_eq(th_proc_wait_lines(sub, 5, 20000), 5);
    char *line = th_proc_line(sub, 2);
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
    json_t *delivered = json_loads(line, 0, NULL);
    free(line);
    char *share = strdup(json_string_value(json_object_get(delivered, "share_id")));
    char *key = s_key_path();
    char *out = NULL;
    int status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key,
                        "show", share, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    json_t *rows = json_loads(out, 0, NULL);
    cr_assert(json_is_array(rows), "%s", out);
    json_t *shared = NULL;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        shared = strcmp(json_string_value(json_object_get(r, "event")), "shared") == 0 ? r : shared;
    }
    cr_assert_not_null(shared, "%s", out);
    cr_assert(json_equal(json_object_get(shared, "record"), json_object_get(delivered, "record")),
              "decrypted %s\nreceived  %s", out, json_dumps(delivered, 0));
    cr_assert_str_eq(json_string_value(json_object_get(shared, "purpose")), "Best Start");
    cr_assert_null(json_object_get(json_object_get(json_object_get(shared, "record"), "subject"),
                                   "given_name"),
                   "the agreement gives the children's centre no given name");
    json_decref(rows);
    json_decref(delivered);
    free(out);

    /* an auditor key that is not the one the epoch was sealed to opens nothing */
    char *stranger = acc_xasprintf("%s/stranger.box.secret", world->dir);
    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", stranger,
                    "show", share, (char *)NULL);
    cr_assert_eq(status, 1, "status %d: %.200s", status, out);
    free(out);
    free(stranger);
    free(key);
    free(share);
}

Test(audit, subject_access_lists_every_event_about_one_child_and_nothing_about_another)
{
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", "--count=5");
    cr_assert_eq(th_proc_wait_lines(sub, 5, 20000), 5);
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
    cr_assert_eq(
        th_pg_wait_count(world, "seq = 1 AND (SELECT count(*) FROM accord_log_acks) = 5", 1, 10000),
        1, "the five shares acknowledged");
    char *key = s_key_path();
    char *out = NULL;
    int status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key,
                        "--json", "subject-access", CHILD_A, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    json_t *rows = json_loads(out, 0, NULL);
    cr_assert(json_is_array(rows), "%s", out);
    size_t shared = 0;
    size_t acknowledged = 0;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        const char *id = json_string_value(json_object_get(r, "record_id"));
        cr_assert(strncmp(id, "hv-a-", 5) == 0, "row about another child: %s", id);
        const char *event = json_string_value(json_object_get(r, "event"));
        if (strcmp(event, "shared") == 0) {
            shared++;
            cr_assert(json_is_object(json_object_get(r, "record")), "not decrypted");
            acknowledged += json_is_integer(json_object_get(r, "acknowledged_seq"));
        }
    }
    cr_assert_eq(shared, 3);
    cr_assert_eq(acknowledged, 3, "when each recipient confirmed receipt is part of the record");
    json_decref(rows);
    free(out);

    /* asked twice: the first question is in the second answer */
    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key,
                    "subject-access", CHILD_B, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "queried by") == NULL, "%s", out);
    free(out);
    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key,
                    "subject-access", CHILD_B, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strstr(out, "hv-b-1") != NULL && strstr(out, "hv-b-2") != NULL, "%s", out);
    cr_assert(strstr(out, "hv-a-") == NULL, "%s", out);
    cr_assert(strstr(out, "as received:") != NULL, "%s", out);
    cr_assert(strstr(out, "queried by ig-officer: child=tag:") != NULL,
              "the earlier question about B is part of B's record: %s", out);
    fprintf(stderr, "audit: subject-access report for child B:\n%s", out);
    free(out);
    free(key);
}

Test(audit, verify_through_the_broker_detects_a_row_tampered_in_the_database)
{
    char *sign = acc_xasprintf("%s/broker.sign.pub", world->dir);
    char *out = NULL;
    int status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--sign-key", sign,
                        "verify", (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strncmp(out, "OK ", 3) == 0, "%s", out);
    free(out);
    /* someone with the database's superuser changes who received record hv-a-2 */
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER USER;"
                      "UPDATE accord_log SET to_agency = 'rmbc-early-help' "
                      "WHERE record_id = 'hv-a-2' AND event = 'shared';"
                      "ALTER TABLE accord_log ENABLE TRIGGER USER");
    PGresult *res = PQexec(world->db, "SELECT seq FROM accord_log WHERE record_id = 'hv-a-2' "
                                      "AND event = 'shared'");
    char *expect = acc_xasprintf("FAIL seq %s: hash mismatch", PQgetvalue(res, 0, 0));
    PQclear(res);
    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--sign-key", sign,
                    "verify", (char *)NULL);
    cr_assert_eq(status, 1, "%s", out);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in: %s", expect, out);
    free(out);
    /* a signing key that is not the broker's: the checkpoints do not verify */
    char *other = acc_xasprintf("%s/ig-officer.sign.pub", world->dir);
    th_broker_stop(world); /* a clean stop signs a checkpoint */
    th_broker_start(world);
    snprintf(auditor_config, sizeof(auditor_config), "%s",
             th_agent_config(world, "ig-officer", NULL)); /* the broker's new port */
    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--sign-key", other,
                    "verify", (char *)NULL);
    cr_assert_eq(status, 1, "%s", out);
    free(out);
    free(other);
    free(expect);
    free(sign);
}

Test(audit, a_long_filter_is_cut_at_a_character_boundary_in_the_queried_row)
{
    /* 63 + 2 bytes and 61 + 4 bytes: a 64-byte cut would split the last character
     * (both filters take up to 128 bytes; a record type, only 64) */
    char agency[128];
    char from[128];
    snprintf(agency, sizeof(agency), "%063d\xc3\xa9", 0);
    snprintf(from, sizeof(from), "%061d\xf0\x9f\x98\x80", 0);
    int status = 0;
    char *out = s_log(&status, "--agency", agency, "--from", from, "--json");
    cr_assert_eq(status, 0, "status %d: %s", status, out);
    free(out);
    char where[512];
    snprintf(where, sizeof(where),
             "event = 'queried' AND reason = 'agency=%063d from=%061d; after seq 0; 0 row(s)'", 0,
             0);
    cr_assert_eq(th_pg_wait_count(world, where, 1, 5000), 1,
                 "the filter is in the queried row, cut before the character that did not fit");
}

/* ---- acknowledgements in both forms (issue 16) ---- */

static int64_t s_seq_where(const char *where)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT seq FROM accord_log WHERE %s", where);
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_eq(PQntuples(res), 1, "%s: %d rows", where, PQntuples(res));
    int64_t seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return seq;
}

static int64_t s_shared_seq(const char *record_id)
{
    char where[128];
    snprintf(where, sizeof(where), "event = 'shared' AND record_id = '%s'", record_id);
    return s_seq_where(where);
}

static char *s_share_id(const char *record_id)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT share_id FROM accord_log WHERE event = 'shared' AND record_id = '%s'",
             record_id);
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQntuples(res), 1, "%s", PQerrorMessage(world->db));
    char *id = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return id;
}

/* A batched acknowledgement in the form the broker writes from schema 0008,
 * forged: appended (chained and hashed) while the broker is stopped. */
static int64_t s_append_batch(const int64_t *seqs, size_t n)
{
    th_broker_stop(world);
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "acknowledged";
    row.from_agency = "rmbc-childrens-centres";
    row.to_agency = "rmbc-childrens-centres";
    row.acked_seqs = seqs;
    row.acked_count = n;
    int64_t seq = th_pg_append_logrow(world, &row);
    th_broker_start(world);
    snprintf(auditor_config, sizeof(auditor_config), "%s",
             th_agent_config(world, "ig-officer", NULL)); /* the broker's new port */
    return seq;
}

/* hv-a-1 and hv-b-1 acknowledged the way the broker did before schema 0008 (a row
 * each, appended by the test: the broker under test no longer writes them);
 * hv-a-2 and hv-b-2 by the broker under test (batched); hv-a-3 not at all. */
static void s_mixed_acks(void)
{
    th_broker_stop(world);
    (void)th_pg_append_old_ack(world, "hv-a-1");
    (void)th_pg_append_old_ack(world, "hv-b-1");
    th_broker_start(world);
    snprintf(auditor_config, sizeof(auditor_config), "%s",
             th_agent_config(world, "ig-officer", NULL)); /* the broker's new port */
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", "--count=2");
    cr_assert_eq(th_proc_wait_lines(sub, 2, 20000), 2);
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
    cr_assert_eq(
        th_pg_wait_count(world, "seq = 1 AND (SELECT count(*) FROM accord_log_acks) = 4", 1, 10000),
        1, "four shares acknowledged");
    cr_assert_eq(th_pg_count(world, "event = 'acknowledged' AND acked_seqs IS NULL"), 2);
}

/* The row that acknowledged the shared row with record_id. */
static int64_t s_ack_of(const char *record_id)
{
    char where[160];
    snprintf(where, sizeof(where),
             "seq = (SELECT ack_seq FROM accord_log_acks WHERE record_id = '%s')", record_id);
    return s_seq_where(where);
}

static int s_verify_wire(char **out)
{
    char *sign = acc_xasprintf("%s/broker.sign.pub", world->dir);
    int status = th_run(world, out, "accord-audit", "--config", auditor_config, "--sign-key", sign,
                        "verify", (char *)NULL);
    free(sign);
    return status;
}

Test(audit, verify_through_the_broker_follows_batched_acknowledgements_and_names_a_repeated_one)
{
    s_mixed_acks();
    char *out = NULL;
    int status = s_verify_wire(&out);
    cr_assert_eq(status, 0, "%s", out);
    cr_assert(strncmp(out, "OK ", 3) == 0, "%s", out);
    free(out);
    /* hv-a-2 acknowledged a second time, in a batch of its own */
    const int64_t again[1] = { s_shared_seq("hv-a-2") };
    int64_t forged = s_append_batch(again, 1);
    char expect[256];
    snprintf(expect, sizeof(expect), "FAIL seq %lld: acknowledges share seq %lld a second time",
             (long long)forged, (long long)again[0]);
    status = s_verify_wire(&out);
    cr_assert_eq(status, 1, "%s", out);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in: %s", expect, out);
    free(out);
}

static json_t *s_row_at(json_t *rows, size_t i)
{
    cr_assert_lt(i, json_array_size(rows), "row %zu of %zu", i, json_array_size(rows));
    return json_array_get(rows, i);
}

static const char *s_str(json_t *row, const char *key)
{
    const char *v = json_string_value(json_object_get(row, key));
    return v != NULL ? v : "";
}

static json_int_t s_int(json_t *row, const char *key)
{
    cr_assert(json_is_integer(json_object_get(row, key)), "no integer %s", key);
    return json_integer_value(json_object_get(row, key));
}

Test(audit, log_share_shows_when_the_share_was_acknowledged_in_either_form)
{
    s_mixed_acks();
    int64_t batch = s_ack_of("hv-a-2");
    int64_t a2 = s_shared_seq("hv-a-2");
    char *share = s_share_id("hv-a-2");
    json_t *rows = s_log_json("--share", share, NULL, NULL);
    cr_assert_eq(json_array_size(rows), 2, "the share and its batched acknowledgement");
    cr_assert_str_eq(s_str(s_row_at(rows, 0), "event"), "shared");
    json_t *ack = s_row_at(rows, 1);
    cr_assert_str_eq(s_str(ack, "event"), "acknowledged");
    cr_assert_eq(s_int(ack, "seq"), batch);
    cr_assert_str_eq(s_str(ack, "to"), "rmbc-childrens-centres");
    /* the broker's batch: hv-a-2, perhaps with hv-b-2 */
    json_t *seqs = json_object_get(ack, "acked_seqs");
    size_t n = json_array_size(seqs);
    cr_assert(n == 1 || n == 2, "%zu seqs", n);
    cr_assert_eq(s_int(ack, "acked_count"), (json_int_t)n);
    cr_assert_eq(json_integer_value(json_array_get(seqs, 0)), a2);
    int64_t last = json_integer_value(json_array_get(seqs, n - 1));
    json_decref(rows);
    /* the table says which shares the row acknowledges */
    int status = 0;
    char *table = s_log(&status, "--share", share, NULL, NULL, NULL);
    cr_assert_eq(status, 0, "%s", table);
    char expect[96];
    if (n == 1) {
        snprintf(expect, sizeof(expect), "acknowledges seq %lld", (long long)a2);
    } else {
        snprintf(expect, sizeof(expect),
                 last == a2 + 1 ? "acknowledges seq %lld-%lld" : "acknowledges seq %lld,%lld",
                 (long long)a2, (long long)last);
    }
    cr_assert(strstr(table, expect) != NULL, "expected \"%s\" in:\n%s", expect, table);
    free(table);
    free(share);
    /* a share acknowledged in a row of its own, as before */
    share = s_share_id("hv-a-1");
    rows = s_log_json("--share", share, NULL, NULL);
    cr_assert_eq(json_array_size(rows), 2);
    cr_assert_str_eq(s_str(s_row_at(rows, 1), "event"), "acknowledged");
    cr_assert_str_eq(s_str(s_row_at(rows, 1), "record_id"), "hv-a-1");
    json_decref(rows);
    free(share);
    /* and one not acknowledged: its row alone */
    share = s_share_id("hv-a-3");
    rows = s_log_json("--share", share, NULL, NULL);
    cr_assert_eq(json_array_size(rows), 1);
    json_decref(rows);
    free(share);
}

Test(audit, subject_access_and_show_say_when_each_share_was_acknowledged)
{
    s_mixed_acks();
    int64_t batch = s_ack_of("hv-a-2");
    int64_t own = s_seq_where("event = 'acknowledged' AND record_id = 'hv-a-1'");
    char *key = s_key_path();
    char *out = NULL;
    int status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key,
                        "--json", "subject-access", CHILD_A, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    json_t *rows = json_loads(out, 0, NULL);
    cr_assert(json_is_array(rows), "%s", out);
    free(out);
    const char *const ids[] = { "hv-a-1", "hv-a-2", "hv-a-3" };
    const int64_t acked_by[] = { own, batch, 0 };
    size_t shared = 0;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        cr_assert_null(json_object_get(r, "acked_seqs"),
                       "a batched row speaks of other children's shares: not in the report");
        cr_assert(strncmp(s_str(r, "record_id"), "hv-a-", 5) == 0, "row about another child");
        if (strcmp(s_str(r, "event"), "shared") != 0) {
            continue;
        }
        cr_assert_lt(shared, 3);
        cr_assert_str_eq(s_str(r, "record_id"), ids[shared]);
        json_t *seq = json_object_get(r, "acknowledged_seq");
        if (acked_by[shared] == 0) {
            cr_assert(json_is_null(seq), "%s is not acknowledged", ids[shared]);
            cr_assert(json_is_null(json_object_get(r, "acknowledged_at")));
        } else {
            cr_assert_eq(json_integer_value(seq), acked_by[shared], "%s", ids[shared]);
            cr_assert(strlen(s_str(r, "acknowledged_at")) > 0, "%s", ids[shared]);
        }
        shared++;
    }
    cr_assert_eq(shared, 3);
    json_decref(rows);

    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key,
                    "subject-access", CHILD_A, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    char expect[64];
    snprintf(expect, sizeof(expect), "(log row %lld)", (long long)batch);
    cr_assert(strstr(out, expect) != NULL, "hv-a-2's batched acknowledgement: %s", out);
    snprintf(expect, sizeof(expect), "(log row %lld)", (long long)own);
    cr_assert(strstr(out, expect) != NULL, "hv-a-1's own acknowledgement: %s", out);
    cr_assert(strstr(out, "acknowledged:  not yet") != NULL, "hv-a-3: %s", out);
    free(out);

    /* show: the share, and the batched row with the seqs it acknowledges */
    char *share = s_share_id("hv-a-2");
    status = th_run(world, &out, "accord-audit", "--config", auditor_config, "--key", key, "show",
                    share, (char *)NULL);
    cr_assert_eq(status, 0, "%s", out);
    rows = json_loads(out, 0, NULL);
    cr_assert_eq(json_array_size(rows), 2, "%s", out);
    cr_assert_eq(s_int(s_row_at(rows, 0), "acknowledged_seq"), batch);
    cr_assert(json_is_object(json_object_get(s_row_at(rows, 0), "record")), "decrypted");
    cr_assert_geq(s_int(s_row_at(rows, 1), "acked_count"), 1);
    cr_assert(strlen(s_str(s_row_at(rows, 1), "acked_ranges")) > 0, "%s", out);
    json_decref(rows);
    free(out);
    free(share);
    free(key);
}

/* A page is cut at AUDIT_PAGE_BYTES of payloads only when payloads are asked for:
 * without them, a page of large records still holds AUDIT_PAGE_MAX rows. */
/* One page of the shared rows after after_seq, asked as accord-audit asks it. */
static Accord__V1__Envelope *s_shared_page(client_t *c, bool payloads, uint64_t after_seq)
{
    Accord__V1__AuditQuery q = ACCORD__V1__AUDIT_QUERY__INIT;
    q.event = acc_pb_str("shared");
    q.payloads = payloads;
    q.after_seq = after_seq;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 9;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    env.audit_query = &q;
    acc_err_t err;
    cr_assert_eq(client_send(c, &env, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 20000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT, "body %d",
                 reply->body_case);
    return reply;
}

static size_t s_page_rows(client_t *c, bool payloads, bool *more, size_t *payload_bytes)
{
    Accord__V1__Envelope *reply = s_shared_page(c, payloads, 0);
    size_t rows = reply->audit_result->n_rows;
    *more = reply->audit_result->more;
    *payload_bytes = 0;
    for (size_t i = 0; i < rows; i++) {
        *payload_bytes += reply->audit_result->rows[i]->payload.len;
    }
    accord__v1__envelope__free_unpacked(reply, NULL);
    return rows;
}

/* Appends a `shared` row from the health visitors to the children's centres
 * behind the broker's back (it is stopped), with payload; returns its seq. */
static int64_t s_append_shared(const char *record_id, const uint8_t *payload, size_t len)
{
    static uint8_t nonce[ACC_LOGROW_NONCE_BYTES];
    acc_logrow_t row = { 0 };
    acc_uuid_random(row.share_id);
    row.event = "shared";
    row.from_agency = "rft-health-visiting";
    row.to_agency = "rmbc-childrens-centres";
    row.record_type = "health-visit";
    row.record_id = record_id;
    row.key_epoch = 1;
    row.nonce = nonce;
    row.payload = payload;
    row.payload_len = len;
    return th_pg_append_logrow(world, &row);
}

Test(audit, a_page_without_payloads_of_large_records_still_holds_200_rows)
{
    static uint8_t payload[16 * 1024];
    th_broker_stop(world); /* the rows are appended behind its back */
    for (int i = 0; i < 250; i++) {
        (void)s_append_shared("hv-large", payload, sizeof(payload));
    }
    th_broker_start(world);
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "ig-officer", &cfg);
    bool more = false;
    size_t bytes = 0;
    cr_assert_eq(s_page_rows(c, false, &more, &bytes), 200);
    cr_assert(more);
    cr_assert_eq(bytes, 0);
    size_t rows = s_page_rows(c, true, &more, &bytes);
    cr_log_info("with payloads: %zu rows, %zu payload bytes", rows, bytes);
    cr_assert(rows > 0 && rows < 200, "%zu rows", rows);
    cr_assert(more);
    cr_assert_leq(bytes, (size_t)768 * 1024);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

/* A record's payload can be larger than a page's byte bound alone: its page holds
 * that one row and says more follow, and the next page goes on after it. Before,
 * the SQL cut left the large row alone in a page that said nothing followed, and
 * an auditor paging through the log stopped there. */
Test(audit, a_page_cut_after_one_large_row_says_more_follow)
{
    static uint8_t large[800 * 1024];
    static uint8_t small[64];
    th_broker_stop(world); /* the rows are appended behind its back */
    int64_t seqs[3] = { 0 };
    for (int i = 0; i < 3; i++) {
        seqs[i] = i == 0 ? s_append_shared("hv-huge", large, sizeof(large))
                         : s_append_shared("hv-after-huge", small, sizeof(small));
    }
    th_broker_start(world);
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "ig-officer", &cfg);
    Accord__V1__Envelope *reply = s_shared_page(c, true, (uint64_t)seqs[0] - 1);
    cr_assert_eq(reply->audit_result->n_rows, 1);
    cr_assert_eq(reply->audit_result->rows[0]->payload.len, sizeof(large));
    cr_assert(reply->audit_result->more, "the page after the large row was not announced");
    accord__v1__envelope__free_unpacked(reply, NULL);
    reply = s_shared_page(c, true, (uint64_t)seqs[0]);
    cr_assert_eq(reply->audit_result->n_rows, 2);
    cr_assert_eq(reply->audit_result->rows[0]->seq, (uint64_t)seqs[1]);
    cr_assert_eq(reply->audit_result->rows[1]->seq, (uint64_t)seqs[2]);
    cr_assert_not(reply->audit_result->more);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}

/* When the queried row cannot be written (the disk is full, say), the auditor is
 * told UNAVAILABLE in an Error: an AuditResult has no code to say it with. */
Test(audit, a_query_whose_row_cannot_be_written_is_answered_unavailable)
{
    th_pg_exec(world, "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                      "IF NEW.event = 'queried' THEN RAISE EXCEPTION 'disk full' USING ERRCODE "
                      "= '53100'; END IF; RETURN NEW; END $$");
    th_pg_exec(world, "CREATE TRIGGER disk_full BEFORE INSERT ON accord_log FOR EACH ROW "
                      "EXECUTE FUNCTION disk_full()");
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "ig-officer", &cfg);
    Accord__V1__AuditQuery q = ACCORD__V1__AUDIT_QUERY__INIT;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 12;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    env.audit_query = &q;
    acc_err_t err;
    cr_assert_eq(client_send(c, &env, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 20000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->correlation_id, 12);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_ERROR, "body %d", reply->body_case);
    cr_assert_eq(reply->error->code, ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    th_pg_exec(world, "DROP TRIGGER disk_full ON accord_log");
}

Test(audit, a_question_asked_while_postgresql_is_down_is_answered_when_it_is_back)
{
    /* a private cluster: stopping the shared one would disturb other tests */
    th_broker_stop(world);
    th_pg_private_start(world);
    th_broker_start(world);
    char config[600]; /* the broker listens on a new port */
    snprintf(config, sizeof(config), "%s", th_agent_config(world, "ig-officer", NULL));
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    s_publish(c, "hv-down-1", CHILD_A, ACCORD__V1__ERROR_CODE__OK);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    th_pg_private_ctl(world, "stop");

    char exe[600];
    char log[600];
    snprintf(exe, sizeof(exe), "%s/accord-audit", world->bin_dir);
    snprintf(log, sizeof(log), "%s/audit-down.err", world->dir);
    char opt_config[] = "--config";
    char cmd_log[] = "log";
    char opt_json[] = "--json";
    char *argv[] = { exe, opt_config, config, cmd_log, opt_json, NULL };
    th_proc_t *tool = th_proc_start_logged(argv, log);
    /* told UNAVAILABLE from the start, it says so once it has waited a second */
    if (!th_file_wait(log, "asking again for up to a minute", 10000)) {
        char *said = th_slurp(log);
        cr_assert_fail("accord-audit did not say it is waiting for the broker: %.500s",
                       said != NULL ? said : "(nothing)");
    }
    th_pg_private_ctl(world, "start");

    int status = 0;
    char *out = th_proc_finish(&tool, 60000, &status);
    cr_assert_eq(status, 0, "accord-audit log failed (%d): %.300s", status, out);
    json_error_t jerr;
    json_t *rows = json_loads(out, 0, &jerr);
    cr_assert(json_is_array(rows), "not a JSON array (%s): %.300s", jerr.text, out);
    bool shared = false;
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        shared = shared || strcmp(json_string_value(json_object_get(row, "event")), "shared") == 0;
    }
    cr_assert(shared, "the record shared before the outage is not in the answer: %.300s", out);
    json_decref(rows);
    free(out);
}
