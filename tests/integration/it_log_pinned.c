/* it_log_pinned.c - verify trusts only the broker signing key the auditor pins:
 * someone who can write the database, rewrites a row, rechains and re-signs the
 * log with a key of their own is caught, and an unpinned run says it proves nothing */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accord/keys.h"
#include "accord/logrow.h"
#include "harness.h"

#define EXIT_UNPINNED 4

static th_world_t *world;
static char sign_pub[600]; /* the broker's broker.sign.pub, as the auditor pinned it */

/* Consent is required: a record whose consent was refused is withheld. */
static const char s_rules[] = "record_types:\n"
                              "  - id: health-visit\n"
                              "    fields: {visit_date: date, visit_type: text, concerns: text}\n"
                              "rules:\n"
                              "  - id: hv-to-cc\n"
                              "    from: rft-health-visiting\n"
                              "    to: [rmbc-childrens-centres]\n"
                              "    record_types: [health-visit]\n"
                              "    fields: [visit_date, visit_type]\n"
                              "    subject: [nhs_number, family_name]\n"
                              "    purpose: Best Start\n"
                              "    lawful_basis: \"UK GDPR 6(1)(a)\"\n"
                              "    consent: required\n";

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, s_rules);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "checkpoint_rows: 3\n");
    snprintf(sign_pub, sizeof(sign_pub), "%s/broker.sign.pub", world->dir);
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(pinned, .init = setup, .fini = teardown, .timeout = 180);

/* Publishes n records; the one numbered withhold (if any) has its consent refused. */
static void s_publish_n(const char *prefix, int n, int withhold)
{
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        char *json = th_health_visit_json(id, "9434765919");
        char *consent = strstr(json, "\"consent\":\"given\"");
        cr_assert_not_null(consent);
        if (i == withhold) {
            *consent = '\0';
            char *refused = acc_xasprintf("%s\"consent\":\"refused\"%s", json,
                                          consent + strlen("\"consent\":\"given\""));
            free(json);
            json = refused;
        }
        Accord__V1__ErrorCode code = th_publish_code(world, "rft-health-visiting", json, "");
        free(json);
        cr_assert_eq(code, ACCORD__V1__ERROR_CODE__OK);
    }
}

/* One row of accord_log decoded as acc_logrow_hash wants it, and its storage. */
typedef struct {
    acc_logrow_t row;
    uint8_t tag[ACC_LOGROW_TAG_BYTES];
    uint8_t agreement[32];
    uint8_t nonce[ACC_LOGROW_NONCE_BYTES];
    uint8_t signature[ACC_LOGROW_SIG_BYTES];
    uint8_t *payload;
    json_t *rules;
    uint8_t content_hash[ACC_LOGROW_HASH_BYTES];
    int64_t *acked;
} s_row_t;

static const char s_select[] =
    "SELECT seq, share_id::text, (extract(epoch FROM at) * 1000000)::bigint, event, from_agency,"
    " to_agency, record_type, record_id, encode(subject_tag, 'hex'), to_json(rule_ids)::text,"
    " purpose, lawful_basis, consent, error_code, reason, encode(agreement_hash, 'hex'),"
    " coalesce(key_epoch, 0), encode(nonce, 'hex'), encode(payload, 'hex'),"
    " encode(content_hash, 'hex'), cardinality(acked_seqs), array_to_string(acked_seqs, ',')"
    " FROM accord_log ORDER BY seq";

static const char *s_text(PGresult *res, int i, int col)
{
    return PQgetisnull(res, i, col) ? NULL : PQgetvalue(res, i, col);
}

static const uint8_t *s_hex(uint8_t *out, size_t len, PGresult *res, int i, int col)
{
    if (PQgetisnull(res, i, col)) {
        return NULL;
    }
    size_t got = 0;
    const char *hex = PQgetvalue(res, i, col);
    cr_assert_eq(sodium_hex2bin(out, len, hex, strlen(hex), NULL, &got, NULL), 0);
    cr_assert_eq(got, len);
    return out;
}

static void s_row_load(s_row_t *r, PGresult *res, int i)
{
    memset(r, 0, sizeof(*r));
    acc_logrow_t *row = &r->row;
    acc_err_t err;
    row->seq = strtoll(PQgetvalue(res, i, 0), NULL, 10);
    cr_assert_eq(acc_uuid_parse(row->share_id, PQgetvalue(res, i, 1), &err), ACC_OK);
    row->at_us = strtoll(PQgetvalue(res, i, 2), NULL, 10);
    row->event = s_text(res, i, 3);
    row->from_agency = s_text(res, i, 4);
    row->to_agency = s_text(res, i, 5);
    row->record_type = s_text(res, i, 6);
    row->record_id = s_text(res, i, 7);
    row->subject_tag = s_hex(r->tag, sizeof(r->tag), res, i, 8);
    r->rules = json_loads(PQgetvalue(res, i, 9), 0, NULL);
    row->rule_count = json_array_size(r->rules);
    for (size_t k = 0; k < row->rule_count; k++) {
        row->rule_ids[k] = json_string_value(json_array_get(r->rules, k));
    }
    row->purpose = s_text(res, i, 10);
    row->lawful_basis = s_text(res, i, 11);
    row->consent = s_text(res, i, 12);
    row->error_code = s_text(res, i, 13);
    row->reason = s_text(res, i, 14);
    row->agreement_hash = s_hex(r->agreement, sizeof(r->agreement), res, i, 15);
    row->key_epoch = strtoll(PQgetvalue(res, i, 16), NULL, 10);
    row->nonce = s_hex(r->nonce, sizeof(r->nonce), res, i, 17);
    if (!PQgetisnull(res, i, 18)) {
        row->payload_len = strlen(PQgetvalue(res, i, 18)) / 2;
        r->payload = malloc(row->payload_len);
        row->payload = s_hex(r->payload, row->payload_len, res, i, 18);
    }
    row->content_hash = s_hex(r->content_hash, sizeof(r->content_hash), res, i, 19);
    if (!PQgetisnull(res, i, 20)) {
        row->acked_count = (size_t)strtoll(PQgetvalue(res, i, 20), NULL, 10);
        r->acked = calloc(row->acked_count + 1, sizeof(*r->acked));
        cr_assert_not_null(r->acked);
        char *p = PQgetvalue(res, i, 21);
        for (size_t k = 0; k < row->acked_count; k++) {
            r->acked[k] = strtoll(p, &p, 10);
            p += *p == ',' ? 1 : 0;
        }
        row->acked_seqs = r->acked;
    }
}

static void s_row_clear(s_row_t *r)
{
    free(r->payload);
    free(r->acked);
    json_decref(r->rules);
}

static void s_update_link(int64_t seq, const uint8_t *prev, const uint8_t *entry,
                          const uint8_t *signature)
{
    char seq_text[24];
    char prev_hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    char entry_hex[2 * ACC_LOGROW_HASH_BYTES + 1];
    char sig_hex[2 * ACC_LOGROW_SIG_BYTES + 1] = "";
    snprintf(seq_text, sizeof(seq_text), "%lld", (long long)seq);
    acc_hex_encode(prev_hex, sizeof(prev_hex), prev, ACC_LOGROW_HASH_BYTES);
    acc_hex_encode(entry_hex, sizeof(entry_hex), entry, ACC_LOGROW_HASH_BYTES);
    if (signature != NULL) {
        acc_hex_encode(sig_hex, sizeof(sig_hex), signature, ACC_LOGROW_SIG_BYTES);
    }
    const char *values[4] = { seq_text, prev_hex, entry_hex, signature != NULL ? sig_hex : NULL };
    PGresult *res = PQexecParams(world->db,
                                 "UPDATE accord_log SET prev_hash = decode($2, 'hex'),"
                                 " entry_hash = decode($3, 'hex'),"
                                 " signature = coalesce(decode($4, 'hex'), signature)"
                                 " WHERE seq = $1",
                                 4, NULL, values, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(world->db));
    PQclear(res);
}

/* What someone who can write the database does: the withheld share becomes a
 * share, every entry hash is recomputed with the project's own acc_logrow_hash,
 * every checkpoint is re-signed with a fresh Ed25519 key of theirs, and that key
 * is written where the broker records its signing key. Returns the seq of the
 * row rewritten. */
static long long s_forge(void)
{
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER accord_log_append_only;"
                      "ALTER TABLE accord_epoch DISABLE TRIGGER accord_epoch_append_only");
    PGresult *res = PQexec(world->db, "SELECT seq FROM accord_log WHERE event = 'withheld'");
    cr_assert_eq(PQntuples(res), 1);
    long long forged = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    th_pg_exec(world, "UPDATE accord_log SET event = 'shared', reason = NULL "
                      "WHERE event = 'withheld'");
    uint8_t attacker_pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t attacker_sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(attacker_pk, attacker_sk);
    uint8_t prev[ACC_LOGROW_HASH_BYTES] = { 0 };
    res = PQexec(world->db, s_select);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    for (int i = 0; i < PQntuples(res); i++) {
        s_row_t r;
        s_row_load(&r, res, i);
        bool checkpoint = strcmp(r.row.event, "checkpoint") == 0;
        if (checkpoint) {
            uint8_t message[ACC_LOGROW_CHECKPOINT_BYTES];
            acc_logrow_checkpoint_message(message, r.row.seq, prev);
            crypto_sign_detached(r.signature, NULL, message, sizeof(message), attacker_sk);
            r.row.signature = r.signature;
        }
        uint8_t entry[ACC_LOGROW_HASH_BYTES];
        acc_logrow_hash(entry, prev, &r.row);
        s_update_link(r.row.seq, prev, entry, checkpoint ? r.signature : NULL);
        memcpy(prev, entry, sizeof(prev));
        s_row_clear(&r);
    }
    PQclear(res);
    char hex[2 * crypto_sign_PUBLICKEYBYTES + 1];
    acc_hex_encode(hex, sizeof(hex), attacker_pk, sizeof(attacker_pk));
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE accord_epoch SET broker_key = decode('%s', 'hex')", hex);
    th_pg_exec(world, sql);
    th_pg_exec(world, "ALTER TABLE accord_log ENABLE TRIGGER accord_log_append_only;"
                      "ALTER TABLE accord_epoch ENABLE TRIGGER accord_epoch_append_only");
    sodium_memzero(attacker_sk, sizeof(attacker_sk));
    return forged;
}

static long long s_first_checkpoint(void)
{
    PGresult *res = PQexec(world->db, "SELECT min(seq) FROM accord_log WHERE event = 'checkpoint'");
    long long seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return seq;
}

static int s_verify_db(char **out, const char *option, const char *value)
{
    return option == NULL
               ? th_run(world, out, "accord-audit", "--db", world->conninfo, "verify", (char *)NULL)
           : value == NULL ? th_run(world, out, "accord-audit", "--db", world->conninfo, option,
                                    "verify", (char *)NULL)
                           : th_run(world, out, "accord-audit", "--db", world->conninfo, option,
                                    value, "verify", (char *)NULL);
}

static void s_assert_unpinned(const char *out)
{
    cr_assert(strstr(out, "UNPINNED") != NULL, "%s", out);
    cr_assert(strstr(out, "anyone who can write the database could have") != NULL, "%s", out);
    cr_assert(strncmp(out, "OK", 2) != 0 && strstr(out, "\nOK") == NULL, "%s", out);
}

Test(pinned, verify_db_without_a_pinned_key_says_unpinned_and_fails_unless_asked)
{
    s_publish_n("hv-honest", 4, -1);
    /* the broker still running: the newest rows wait for the next checkpoint */
    PGresult *res = PQexec(world->db, "SELECT max(seq), (SELECT max(seq) FROM accord_log "
                                      "WHERE event = 'checkpoint') FROM accord_log");
    long long head = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    long long signed_to = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    cr_assert_gt(head, signed_to);
    char *out = NULL;
    cr_assert_eq(s_verify_db(&out, "--sign-key", sign_pub), 0, "%s", out);
    char *note = acc_xasprintf("NOTE seq %lld-%lld: no signed checkpoint covers these rows yet",
                               signed_to + 1, head);
    cr_assert(strstr(out, note) != NULL, "expected \"%s\" in: %s", note, out);
    free(note);
    free(out);
    th_broker_stop(world);
    cr_assert_eq(s_verify_db(&out, NULL, NULL), EXIT_UNPINNED, "%s", out);
    s_assert_unpinned(out);
    free(out);
    cr_assert_eq(s_verify_db(&out, "--unpinned", NULL), 0, "%s", out);
    s_assert_unpinned(out);
    free(out);
    cr_assert_eq(s_verify_db(&out, "--sign-key", sign_pub), 0, "%s", out);
    cr_assert(strncmp(out, "OK ", 3) == 0, "%s", out);
    cr_assert(strstr(out, "UNPINNED") == NULL && strstr(out, "NOTE") == NULL,
              "a clean stop signs the last row: %s", out);
    free(out);
}

Test(pinned, verify_db_with_the_pinned_key_catches_a_log_rechained_and_re_signed)
{
    s_publish_n("hv-forge", 6, 2);
    th_broker_stop(world); /* a final signed checkpoint */
    char *out = NULL;
    cr_assert_eq(s_verify_db(&out, "--sign-key", sign_pub), 0, "honest log: %s", out);
    free(out);
    long long forged = s_forge();
    long long first = s_first_checkpoint();
    cr_assert_lt(forged, first, "the rewritten row is covered by the first checkpoint");
    cr_assert_eq(th_pg_count(world, "event = 'withheld'"), 0);

    cr_assert_eq(s_verify_db(&out, "--sign-key", sign_pub), 1, "the forgery passed: %s", out);
    char *expect = acc_xasprintf("FAIL seq %lld: checkpoint signature does not verify", first);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in: %s", expect, out);
    cr_assert(strstr(out, "is not a pinned key") != NULL,
              "the database's key differs from the pinned one and verify says so: %s", out);
    fprintf(stderr, "pinned: verify --db of the re-signed log:\n%s", out);
    free(out);

    /* unpinned, the forgery is internally consistent: verify cannot tell, and says so */
    cr_assert_eq(s_verify_db(&out, NULL, NULL), EXIT_UNPINNED, "%s", out);
    s_assert_unpinned(out);
    free(out);
    cr_assert_eq(s_verify_db(&out, "--unpinned", NULL), 0, "%s", out);
    s_assert_unpinned(out);
    fprintf(stderr, "pinned: verify --db --unpinned of the re-signed log:\n%s", out);
    free(out);

    /* the broker notices the rewrite itself: the row at its high-water mark is not
     * the one it committed. An operator who keeps this database moves the mark
     * aside, as this test does to ask the same question through the broker */
    cr_assert_eq(th_broker_run_once(world, NULL), 6);
    cr_assert(th_broker_logged(world, "not the one this broker committed", 1000));
    char *state = acc_xasprintf("%s/state/accordd.state", world->dir);
    cr_assert_eq(unlink(state), 0);
    free(state);

    /* through the broker: the same forged log, the same pinned key */
    th_broker_start(world);
    const char *auditor = th_agent_config(world, "ig-officer", NULL);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "--sign-key", sign_pub,
                        "verify", (char *)NULL),
                 1, "the forgery passed through the broker: %s", out);
    cr_assert(strstr(out, expect) != NULL, "expected \"%s\" in: %s", expect, out);
    free(out);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "verify", (char *)NULL),
                 EXIT_UNPINNED, "%s", out);
    s_assert_unpinned(out);
    free(out);
    free(expect);
}

Test(pinned, a_log_spanning_a_signing_key_rotation_verifies_with_both_keys_pinned)
{
    s_publish_n("hv-before", 4, -1);
    th_broker_stop(world);
    char *old_pub = acc_xasprintf("%s/broker-old.sign.pub", world->dir);
    char *new_pub = acc_xasprintf("%s/broker-new.sign.pub", world->dir);
    char *new_secret = acc_xasprintf("%s/broker-new.sign.secret", world->dir);
    char *out = NULL;
    cr_assert_eq(
        th_run(world, &out, "accord", "keygen", "--out", world->dir, "broker-new", (char *)NULL), 0,
        "%s", out);
    free(out);
    cr_assert_eq(rename(sign_pub, old_pub), 0);
    char *secret = acc_xasprintf("%s/broker.sign.secret", world->dir);
    cr_assert_eq(rename(new_secret, secret), 0);
    th_broker_start(world);
    s_publish_n("hv-after", 4, -1);
    th_broker_stop(world);

    cr_assert_eq(s_verify_db(&out, "--sign-key", new_pub), 1, "old checkpoints: %s", out);
    free(out);
    cr_assert_eq(s_verify_db(&out, "--sign-key", old_pub), 1, "new checkpoints: %s", out);
    free(out);
    cr_assert_eq(th_run(world, &out, "accord-audit", "--db", world->conninfo, "--sign-key", old_pub,
                        "--sign-key", new_pub, "verify", (char *)NULL),
                 0, "%s", out);
    cr_assert(strncmp(out, "OK ", 3) == 0, "%s", out);
    cr_assert(strstr(out, "is not a pinned key") == NULL, "%s", out);
    free(out);
    free(secret);
    free(new_secret);
    free(new_pub);
    free(old_pub);
}
