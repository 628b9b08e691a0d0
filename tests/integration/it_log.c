/* it_log.c - the sharing log: tamper evidence, signed checkpoints, epoch keys only
 * auditors can open, append-only grants, and nothing lost when the broker is killed */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accord/record.h"
#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "checkpoint_rows: 4\n");
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(log, .init = setup, .fini = teardown, .timeout = 180);

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

/* verify --db with the broker's signing key pinned, as an auditor runs it */
static int s_verify(char **out, const char *witness)
{
    char sign[600];
    snprintf(sign, sizeof(sign), "%s/broker.sign.pub", world->dir);
    return witness == NULL
               ? th_run(world, out, "accord-audit", "--db", world->conninfo, "--sign-key", sign,
                        "verify", (char *)NULL)
               : th_run(world, out, "accord-audit", "--db", world->conninfo, "--sign-key", sign,
                        "--witness", witness, "verify", (char *)NULL);
}

typedef struct {
    const char *what;
    const char *sql;
    const char *expect;
} tamper_t;

Test(log, verify_names_the_first_row_that_was_tampered_with)
{
    s_publish_n("hv-tamper", 10);
    th_broker_stop(world); /* a final signed checkpoint */
    char *out = NULL;
    cr_assert_eq(s_verify(&out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "OK 13 rows verified, 3 signed checkpoints; chain head seq 13; 0 row(s) "
                          "after the last checkpoint") != NULL,
              "%s", out);
    free(out);
    th_pg_exec(world, "CREATE TABLE pristine AS SELECT * FROM accord_log");
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER USER");
    static const tamper_t cases[] = {
        { "flip one payload byte",
          "UPDATE accord_log SET payload = set_byte(payload, 3, get_byte(payload, 3) # 1) "
          "WHERE seq = 6",
          "FAIL seq 6: hash mismatch" },
        { "change a metadata column",
          "UPDATE accord_log SET to_agency = 'syp-police' WHERE seq = 2",
          "FAIL seq 2: hash mismatch" },
        { "delete a row", "DELETE FROM accord_log WHERE seq = 7", "FAIL seq 8: gap" },
        { "swap two rows",
          "UPDATE accord_log SET seq = -1 WHERE seq = 2; UPDATE accord_log SET seq = 2 WHERE seq = "
          "3;"
          " UPDATE accord_log SET seq = 3 WHERE seq = -1",
          "FAIL seq 2: previous-hash link does not match" },
        { "forge a checkpoint signature",
          "UPDATE accord_log SET signature = set_byte(signature, 0, get_byte(signature, 0) # 1) "
          "WHERE seq = 5",
          "FAIL seq 5: checkpoint signature does not verify" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        th_pg_exec(world, cases[i].sql);
        cr_assert_eq(s_verify(&out, NULL), 1, "%s: verify passed:\n%s", cases[i].what, out);
        cr_assert(strstr(out, cases[i].expect) != NULL, "%s:\n%s", cases[i].what, out);
        free(out);
        th_pg_exec(world, "DELETE FROM accord_log; INSERT INTO accord_log SELECT * FROM pristine");
        cr_assert_eq(s_verify(&out, NULL), 0, "restored log does not verify: %s", out);
        free(out);
    }
}

Test(log, a_witness_catches_the_tail_cut_off_after_a_checkpoint)
{
    s_publish_n("hv-tail", 6);
    th_broker_stop(world);
    char witness[600];
    snprintf(witness, sizeof(witness), "%s/witness", world->dir);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, witness), 0, "%s", out);
    free(out);
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER USER");
    th_pg_exec(world, "DELETE FROM accord_log WHERE seq > 5");
    cr_assert_eq(s_verify(&out, NULL), 0, "a clean prefix verifies on its own: %s", out);
    free(out);
    cr_assert_eq(s_verify(&out, witness), 1, "%s", out);
    cr_assert(strstr(out, "FAIL seq 8: the log ends at seq 5, before the checkpoint this auditor "
                          "verified earlier") != NULL,
              "%s", out);
    free(out);
}

static int s_show(char **out, const char *seq, const char *key_name)
{
    char key[600];
    snprintf(key, sizeof(key), "%s/%s.box.secret", world->dir, key_name);
    return th_run(world, out, "accord-audit", "--db", world->conninfo, "--key", key, "show", seq,
                  (char *)NULL);
}

Test(log, only_an_auditor_key_opens_a_payload_and_only_in_its_own_row)
{
    s_publish_n("hv-show", 2);
    th_broker_stop(world);
    th_broker_start(world); /* a new epoch */
    s_publish_n("hv-show-after", 1);
    cr_assert_eq(th_pg_count(world, "key_epoch = 1 AND event = 'shared'"), 2);
    cr_assert_eq(th_pg_count(world, "key_epoch = 2 AND event = 'shared'"), 1);
    char *out = NULL;
    cr_assert_eq(s_show(&out, "1", "ig-officer"), 0, "old epoch after a restart: %s", out);
    cr_assert(strstr(out, "\"family_name\": \"Smith\"") != NULL, "%s", out);
    cr_assert(strstr(out, "\"given_name\"") == NULL, "minimised record expected: %s", out);
    free(out);
    cr_assert_eq(s_show(&out, "4", "ig-officer"), 0, "new epoch: %s", out);
    free(out);
    cr_assert_eq(s_show(&out, "1", "stranger"), 1, "a key that is not an auditor's: %s", out);
    free(out);
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER USER");
    th_pg_exec(world,
               "UPDATE accord_log SET payload = (SELECT payload FROM accord_log WHERE seq = 2),"
               " nonce = (SELECT nonce FROM accord_log WHERE seq = 2) WHERE seq = 1");
    cr_assert_eq(s_show(&out, "1", "ig-officer"), 1, "a ciphertext moved to another row: %s", out);
    free(out);
}

Test(log, the_broker_role_may_insert_and_read_but_never_change_the_log)
{
    s_publish_n("hv-role", 1);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'it_writer') "
             "THEN CREATE ROLE it_writer LOGIN; GRANT accord_writer TO it_writer; END IF; END $$");
    th_pg_exec(world, sql);
    char conninfo[600];
    snprintf(conninfo, sizeof(conninfo), "%s", world->conninfo);
    /* a later user= in a libpq string overrides the earlier one */
    strncat(conninfo, " user=it_writer", sizeof(conninfo) - strlen(conninfo) - 1);
    PGconn *conn = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
    PGresult *res = PQexec(conn, "SELECT count(*) FROM accord_log");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
    PQclear(res);
    static const char *const forbidden[] = {
        "UPDATE accord_log SET reason = 'x'",
        "DELETE FROM accord_log",
        "TRUNCATE accord_log",
        "UPDATE accord_epoch SET broker_key = 'x'",
    };
    for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
        res = PQexec(conn, forbidden[i]);
        cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "allowed: %s", forbidden[i]);
        cr_assert(strstr(PQerrorMessage(conn), "permission denied") != NULL, "%s",
                  PQerrorMessage(conn));
        PQclear(res);
    }
    PQfinish(conn);
    /* The broker itself runs as such a role. */
    th_broker_stop(world);
    snprintf(world->conninfo, sizeof(world->conninfo), "%.500s", conninfo);
    th_broker_start(world);
    s_publish_n("hv-as-writer", 2);
    th_broker_stop(world);
    cr_assert_eq(th_pg_count(world, "record_id LIKE 'hv-as-writer-%'"), 2);
    /* Even the owner is stopped by the trigger. */
    res = PQexec(world->db, "DELETE FROM accord_log");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
    cr_assert(strstr(PQerrorMessage(world->db), "append-only") != NULL);
    PQclear(res);
}

/* Schema 0010: an accepted record's row (the one with its content hash) is in the
 * log once. The broker answers a repeat with the first result before staging
 * anything; the database refuses a second such row whatever a broker does. */
Test(log, the_database_refuses_a_record_accepted_twice)
{
    s_publish_n("hv-once", 1);
    th_broker_stop(world);
    th_pg_exec(world, "CREATE TEMP TABLE again AS SELECT * FROM accord_log WHERE record_id = "
                      "'hv-once-0' AND content_hash IS NOT NULL");
    th_pg_exec(world, "UPDATE again SET seq = seq + 1000000, share_id = gen_random_uuid()");
    PGresult *res = PQexec(world->db, "INSERT INTO accord_log SELECT * FROM again");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "a record was accepted twice");
    cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23505");
    cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME), "accord_log_record_once");
    PQclear(res);
    /* a row without the content hash (a refusal, a second recipient) is not held to it */
    th_pg_exec(world, "UPDATE again SET content_hash = NULL");
    th_pg_exec(world, "INSERT INTO accord_log SELECT * FROM again");
    cr_assert_eq(th_pg_count(world, "record_id = 'hv-once-0' AND content_hash IS NOT NULL"), 1);
}

/* Every row names the key epoch its payload is sealed under, and that epoch must
 * be in the log's database: since schema 0012 checked once per statement (the
 * broker writes a batch as one COPY) rather than row by row. */
Test(log, the_database_refuses_a_row_sealed_under_an_epoch_it_does_not_hold)
{
    s_publish_n("hv-epoch", 2);
    th_broker_stop(world);
    th_pg_exec(world, "CREATE TEMP TABLE more AS SELECT * FROM accord_log WHERE record_id LIKE "
                      "'hv-epoch-%' ORDER BY seq");
    th_pg_exec(world, "UPDATE more SET seq = seq + 1000000, share_id = gen_random_uuid(), "
                      "content_hash = NULL");
    cr_assert_gt(th_pg_count(world, "record_id LIKE 'hv-epoch-%'"), 1);
    /* one row among several names an epoch nobody started */
    th_pg_exec(world, "UPDATE more SET key_epoch = (SELECT max(epoch) + 7 FROM accord_epoch) "
                      "WHERE seq = (SELECT max(seq) FROM more)");
    PGresult *res = PQexec(world->db, "INSERT INTO accord_log SELECT * FROM more");
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "a row under a missing epoch went in");
    cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23503");
    cr_assert(strstr(PQresultErrorMessage(res), "key epoch") != NULL, "%s",
              PQresultErrorMessage(res));
    PQclear(res);
    cr_assert_eq(th_pg_count(world, "seq > 1000000"), 0, "the statement was not undone whole");
    /* the same rows under epochs the log holds go in */
    th_pg_exec(world, "UPDATE more SET key_epoch = (SELECT max(epoch) FROM accord_epoch)");
    th_pg_exec(world, "INSERT INTO accord_log SELECT * FROM more");
    cr_assert_gt(th_pg_count(world, "seq > 1000000"), 1);
    /* and the epochs rows name, and their seals, cannot be taken away, even by
     * the owner: the log no longer refers to accord_epoch, so a cascade does not
     * reach the log's own trigger */
    static const char *const forbidden[] = {
        "DELETE FROM accord_epoch", "TRUNCATE accord_epoch CASCADE", "TRUNCATE accord_epoch_seal",
        "UPDATE accord_epoch SET epoch = epoch + 100", "DELETE FROM accord_epoch_seal"
    };
    for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
        res = PQexec(world->db, forbidden[i]);
        cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "allowed: %s", forbidden[i]);
        cr_assert(strstr(PQresultErrorMessage(res), "append-only") != NULL, "%s: %s", forbidden[i],
                  PQresultErrorMessage(res));
        PQclear(res);
    }
}

Test(log, kill_9_loses_no_acknowledged_record_and_the_chain_still_verifies)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    int acknowledged = 0;
    for (int i = 0; i < 400; i++) {
        if (i == 200) {
            kill(world->broker->pid, SIGKILL);
        }
        char id[64];
        snprintf(id, sizeof(id), "hv-kill-%d", i);
        char *json = th_health_visit_json(id, "9434765919");
        th_send_publish(c, json, NULL, (uint64_t)i);
        free(json);
        acc_err_t err;
        Accord__V1__Envelope *reply = NULL;
        if (client_recv(c, &reply, i < 200 ? 10000 : 200, &err) != ACC_OK) {
            break; /* the broker is gone: this record has no answer */
        }
        bool ok = reply->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT &&
                  reply->publish_result->code == ACCORD__V1__ERROR_CODE__OK &&
                  reply->correlation_id == (uint64_t)i;
        accord__v1__envelope__free_unpacked(reply, NULL);
        cr_assert(ok, "record %d not accepted", i);
        acknowledged++;
    }
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    th_proc_wait(&world->broker, 10000);
    cr_assert_geq(acknowledged, 200);
    for (int i = 0; i < acknowledged; i++) {
        char where[96];
        snprintf(where, sizeof(where), "event = 'shared' AND record_id = 'hv-kill-%d'", i);
        cr_assert_eq(th_pg_count(world, where), 1, "acknowledged record %d", i);
    }
    th_broker_start(world);
    s_publish_n("hv-after-kill", 3);
    th_broker_stop(world);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, NULL), 0, "%s", out);
    free(out);
}

Test(log, an_auditor_role_verifies_and_decrypts_but_sees_no_raw_table)
{
    s_publish_n("hv-reader", 2);
    th_pg_exec(world, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
                      "'it_reader') THEN CREATE ROLE it_reader LOGIN; GRANT accord_reader TO "
                      "it_reader; END IF; END $$");
    char conninfo[600];
    snprintf(conninfo, sizeof(conninfo), "%s user=it_reader", world->conninfo);
    char *out = NULL;
    char sign[600];
    snprintf(sign, sizeof(sign), "%s/broker.sign.pub", world->dir);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--db", conninfo, "--sign-key", sign, "verify",
                        (char *)NULL),
                 0, "%s", out);
    free(out);
    char key[600];
    snprintf(key, sizeof(key), "%s/ig-officer.box.secret", world->dir);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--db", conninfo, "--key", key, "show", "1",
                        (char *)NULL),
                 0, "%s", out);
    free(out);
    PGconn *conn = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(conn), CONNECTION_OK);
    static const char *const forbidden[] = {
        "SELECT count(*) FROM accord_log",
        "INSERT INTO accord_epoch (epoch, broker_key, nonce_prefix) VALUES (99, 'x', 'y')",
    };
    for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++) {
        PGresult *res = PQexec(conn, forbidden[i]);
        cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "allowed: %s", forbidden[i]);
        PQclear(res);
    }
    PQfinish(conn);
}

Test(log, epoch_keys_rotate_by_row_count_and_every_epoch_stays_readable)
{
    th_broker_stop(world);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "epoch_max_rows: 3\n");
    th_broker_start(world);
    s_publish_n("hv-rotate", 7);
    long epochs = 0;
    PGresult *res = PQexec(world->db, "SELECT count(*) FROM accord_epoch");
    epochs = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    cr_assert_geq(epochs, 3, "epochs: %ld", epochs);
    cr_assert_eq(th_pg_count(world, "event = 'shared' AND key_epoch = 2"), 3,
                 "the first epoch of this run carries exactly epoch_max_rows rows");
    res = PQexec(world->db, "SELECT min(seq) FROM accord_log WHERE event = 'shared' "
                            "GROUP BY key_epoch ORDER BY key_epoch");
    for (int i = 0; i < PQntuples(res); i++) {
        char *out = NULL;
        char key[600];
        snprintf(key, sizeof(key), "%s/ig-officer.box.secret", world->dir);
        cr_assert_eq(th_run(world, &out, "accord-audit", "--db", world->conninfo, "--key", key,
                            "show", PQgetvalue(res, i, 0), (char *)NULL),
                     0, "%s", out);
        free(out);
    }
    PQclear(res);
}

Test(log, while_postgresql_is_down_publishes_are_unavailable_and_nothing_is_lost)
{
    /* A private cluster: stopping the shared one would disturb other tests. */
    th_broker_stop(world);
    th_pg_private_start(world);
    th_broker_start(world);
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    char *json = th_health_visit_json("hv-before", "9434765919");
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    free(json);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);

    th_pg_private_ctl(world, "stop");
    json = th_health_visit_json("hv-while-down", "9434765919");
    reply = th_publish(c, json, "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__UNAVAILABLE, "%s",
                 reply->publish_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);

    th_pg_private_ctl(world, "start");
    Accord__V1__ErrorCode code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    for (int attempt = 0; attempt < 100 && code == ACCORD__V1__ERROR_CODE__UNAVAILABLE; attempt++) {
        reply = th_publish(c, json, "");
        code = reply->publish_result->code;
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    free(json);
    cr_assert_eq(code, ACCORD__V1__ERROR_CODE__OK, "the broker did not recover");
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    th_broker_stop(world);

    PGconn *conn = PQconnectdb(world->conninfo);
    PGresult *res = PQexec(conn, "SELECT count(*) FROM accord_log WHERE record_id = "
                                 "'hv-while-down' AND event = 'shared'");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "1", "shared once after the retry");
    PQclear(res);
    PQfinish(conn);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, NULL), 0, "the chain is continuous: %s", out);
    free(out);
    th_pg_private_remove(world);
}

/* ---- acknowledgements, in both forms (issue 16) ---- */

static int64_t s_seq_of(const char *where)
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

/* A batched acknowledgement as the broker writes them from schema 0008, appended
 * by the test (chained and hashed) to forge one. */
static int64_t s_append_batch(const char *to, const int64_t *seqs, size_t n)
{
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "acknowledged";
    row.from_agency = to;
    row.to_agency = to;
    row.acked_seqs = seqs;
    row.acked_count = n;
    return th_pg_append_logrow(world, &row);
}

/* Four shares to the children's centre: the first two acknowledged the way the
 * broker did before schema 0008 (a row each, appended by the test: the broker
 * under test no longer writes them), the third by the broker under test (a
 * batched row), the fourth not at all. */
static void s_mixed_log(int64_t shares[4])
{
    s_publish_n("hv-ack", 4);
    th_broker_stop(world);
    (void)th_pg_append_old_ack(world, "hv-ack-0");
    (void)th_pg_append_old_ack(world, "hv-ack-1");
    th_broker_start(world);
    th_proc_t *sub = th_agent_start(world, "subscribe", "rmbc-childrens-centres", "--count=1");
    cr_assert_eq(th_proc_wait_lines(sub, 1, 20000), 1);
    cr_assert_eq(th_proc_wait(&sub, 20000), 0);
    cr_assert_eq(
        th_pg_wait_count(world, "seq = 1 AND (SELECT count(*) FROM accord_log_acks) = 3", 1, 10000),
        1, "three shares acknowledged");
    th_broker_stop(world);
    for (int i = 0; i < 4; i++) {
        char where[128];
        snprintf(where, sizeof(where), "event = 'shared' AND record_id = 'hv-ack-%d'", i);
        shares[i] = s_seq_of(where);
    }
    char where[160];
    snprintf(where, sizeof(where), "event = 'acknowledged' AND acked_seqs = ARRAY[%lld::bigint]",
             (long long)shares[2]);
    cr_assert_eq(th_pg_count(world, where), 1, "the broker acknowledged hv-ack-2 in a batch");
}

Test(log, verify_follows_acknowledgements_in_both_forms)
{
    int64_t shares[4];
    s_mixed_log(shares);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "OK ") == out, "%s", out);
    free(out);
    /* the broker chains on from the batched row, and its next checkpoint covers it */
    th_broker_start(world);
    s_publish_n("hv-after-batch", 1);
    th_broker_stop(world);
    cr_assert_eq(s_verify(&out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "0 row(s) after the last checkpoint") != NULL, "%s", out);
    free(out);
}

Test(log, verify_names_a_forged_or_repeated_acknowledgement)
{
    int64_t s[4];
    s_mixed_log(s);
    int64_t first_ack = s_seq_of("event = 'acknowledged' AND record_id = 'hv-ack-0'");
    th_pg_exec(world, "CREATE TABLE pristine AS SELECT * FROM accord_log");
    const char *cc = "rmbc-childrens-centres";
    const long long next = (long long)s_seq_of("seq = (SELECT max(seq) FROM accord_log)") + 1;
    struct {
        const char *what;
        int64_t seqs[2];
        size_t n;
        const char *to;
        char expect[256];
    } cases[6] = {
        { "a share acknowledged again in a batch", { s[2] }, 1, cc, "" },
        { "a share acknowledged in its own row, then in a batch", { s[0] }, 1, cc, "" },
        { "the same seq twice in one batch", { s[3], s[3] }, 2, cc, "" },
        { "seqs out of order", { s[3], s[1] }, 2, cc, "" },
        { "a row that is not a share", { first_ack }, 1, cc, "" },
        { "another agency's share", { s[3] }, 1, "rmbc-early-help", "" },
    };
    snprintf(cases[0].expect, sizeof(cases[0].expect),
             "FAIL seq %lld: acknowledges share seq %lld a second time", next, (long long)s[2]);
    snprintf(cases[1].expect, sizeof(cases[1].expect),
             "FAIL seq %lld: acknowledges share seq %lld a second time", next, (long long)s[0]);
    snprintf(cases[2].expect, sizeof(cases[2].expect),
             "FAIL seq %lld: acked_seqs not in ascending order: seq %lld follows seq %lld", next,
             (long long)s[3], (long long)s[3]);
    snprintf(cases[3].expect, sizeof(cases[3].expect),
             "FAIL seq %lld: acked_seqs not in ascending order: seq %lld follows seq %lld", next,
             (long long)s[1], (long long)s[3]);
    snprintf(cases[4].expect, sizeof(cases[4].expect),
             "FAIL seq %lld: acknowledges seq %lld, which is not a shared row", next,
             (long long)first_ack);
    snprintf(cases[5].expect, sizeof(cases[5].expect),
             "FAIL seq %lld: acknowledges share seq %lld, a share to rmbc-childrens-centres, not "
             "to rmbc-early-help",
             next, (long long)s[3]);
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER USER");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(s_append_batch(cases[i].to, cases[i].seqs, cases[i].n), next);
        char *out = NULL;
        cr_assert_eq(s_verify(&out, NULL), 1, "%s: verify passed:\n%s", cases[i].what, out);
        cr_assert(strstr(out, cases[i].expect) != NULL, "%s: expected \"%s\" in:\n%s",
                  cases[i].what, cases[i].expect, out);
        free(out);
        th_pg_exec(world, "DELETE FROM accord_log; INSERT INTO accord_log SELECT * FROM pristine");
    }
    char expect[512];
    /* a seq after the row that lists it */
    int64_t later[1] = { next + 5 };
    int64_t forged = s_append_batch(cc, later, 1);
    snprintf(expect, sizeof(expect), "FAIL seq %lld: acknowledges seq %lld, which is not before it",
             (long long)forged, (long long)later[0]);
    char *out = NULL;
    cr_assert_eq(s_verify(&out, NULL), 1, "%s", out);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in:\n%s", expect, out);
    free(out);
    th_pg_exec(world, "DELETE FROM accord_log; INSERT INTO accord_log SELECT * FROM pristine");
    /* a per-share acknowledgement repeated in its own form */
    acc_logrow_t again = { 0 };
    PGresult *res = PQexec(world->db, "SELECT share_id FROM accord_log WHERE event = "
                                      "'acknowledged' AND record_id = 'hv-ack-1'");
    acc_err_t err;
    cr_assert_eq(acc_uuid_parse(again.share_id, PQgetvalue(res, 0, 0), &err), ACC_OK);
    snprintf(expect, sizeof(expect), "acknowledges share id %s, which is not",
             PQgetvalue(res, 0, 0));
    PQclear(res);
    again.event = "acknowledged";
    again.from_agency = "rft-health-visiting";
    again.to_agency = cc;
    again.record_type = "health-visit";
    again.record_id = "hv-ack-1";
    forged = th_pg_append_logrow(world, &again);
    cr_assert_eq(s_verify(&out, NULL), 1, "%s", out);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in:\n%s", expect, out);
    free(out);
    th_pg_exec(world, "DELETE FROM accord_log; INSERT INTO accord_log SELECT * FROM pristine");
    /* an empty list where there was none: the chain cannot tell them apart, but the
     * share the row names would drop out of accord_log_acks */
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE accord_log SET acked_seqs = '{}' WHERE seq = %lld",
             (long long)first_ack);
    th_pg_exec(world, sql);
    snprintf(expect, sizeof(expect), "FAIL seq %lld: an acknowledged row with an empty acked_seqs",
             (long long)first_ack);
    cr_assert_eq(s_verify(&out, NULL), 1, "%s", out);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in:\n%s", expect, out);
    free(out);
    th_pg_exec(world, "DELETE FROM accord_log; INSERT INTO accord_log SELECT * FROM pristine");
    cr_assert_eq(s_verify(&out, NULL), 0, "the pristine log verifies: %s", out);
    free(out);
}
