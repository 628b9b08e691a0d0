/* it_agent_outcomes.c - the agent's side of referral outcomes and involvement
 * lookups, through the real accord-agent, accordd and PostgreSQL: `outcome`
 * reports (and is refused with its code), the publisher's subscriber hands both
 * outcomes over on stdout and in its spool, `outcome --spool` reports the files
 * dropped in its spool, `lookup` prints a table or JSON and the agencies it
 * names are told */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define CHILD_NHS "9434765919"
#define ED        "rft-emergency-department"
#define MASH      "rmbc-childrens-social-care"
#define HV        "rft-health-visiting"
#define EH        "rmbc-early-help"
#define PURPOSE   "MASH triage of a safeguarding referral"

static th_world_t *world;

static const char s_agreement[] =
    "record_types:\n"
    "  - id: ed-attendance\n"
    "    fields: {attendance_date: date, presenting_complaint: text(500)}\n"
    "  - id: health-visit\n"
    "    fields: {visit_date: date, visit_type: text, concerns: text}\n"
    "rules:\n"
    "  - id: ed-to-mash\n"
    "    from: " ED "\n"
    "    to: [" MASH "]\n"
    "    record_types: [ed-attendance]\n"
    "    fields: [attendance_date, presenting_complaint]\n"
    "    subject: [nhs_number, family_name]\n"
    "    purpose: Safeguarding referral from the emergency department to the MASH\n"
    "    lawful_basis: \"UK GDPR 6(1)(e), 9(2)(h)\"\n"
    "    consent: not-required\n"
    "    outcomes:\n"
    "      statuses: [received, accepted, declined, closed]\n"
    "      fields: {decision_date: date, reason: \"enum(no-further-action,early-help-offered)\"}\n"
    "      to_sender: true\n"
    "  - id: hv-to-eh\n"
    "    from: " HV "\n"
    "    to: [" EH "]\n"
    "    record_types: [health-visit]\n"
    "    fields: [visit_date, visit_type]\n"
    "    subject: [nhs_number, family_name]\n"
    "    purpose: Best Start\n"
    "    lawful_basis: \"UK GDPR 6(1)(e)\"\n"
    "    consent: not-required\n"
    "lookups:\n"
    "  - id: mash-involvement\n"
    "    by: [" MASH "]\n"
    "    purposes: [\"" PURPOSE "\"]\n"
    "    window: 24 months\n"
    "    notify: true\n";

static void setup(void)
{
    const char *agencies[] = { ED, MASH, HV, EH, NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, s_agreement);
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(agent_outcomes, .init = setup, .fini = teardown, .timeout = 240);

/* ---- helpers ---- */

static char *s_ed_json(const char *record_id)
{
    char *json = malloc(1024);
    cr_assert(snprintf(json, 1024,
                       "{\"record_id\":\"%s\",\"record_type\":\"ed-attendance\","
                       "\"occurred_at\":\"2026-11-30T21:40:00Z\",\"subject\":{\"nhs_number\":"
                       "\"" CHILD_NHS "\",\"family_name\":\"Smith\"},\"fields\":{"
                       "\"attendance_date\":\"2026-11-30\",\"presenting_complaint\":\"a fall\"}}",
                       record_id) < 1024);
    return json;
}

/* Publishes json as agency; the share id of its one recipient (yours). */
static char *s_share(const char *agency, const char *json)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, agency, &cfg);
    Accord__V1__Envelope *reply = th_publish(c, json, "");
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 reply->publish_result->reason);
    cr_assert_eq(reply->publish_result->n_recipients, 1);
    char *share = strdup(reply->publish_result->recipients[0]->share_id);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    return share;
}

/* Runs accord-agent COMMAND as agency with extra (NULL-terminated) and input on
 * its stdin (NULL: none) to its end; its exit status, its stdout in *out (yours).
 * Its stderr is DIR/AGENCY.COMMAND.log. */
static int s_agent(const char *command, const char *agency, const char *const extra[],
                   const char *input, char **out)
{
    th_proc_t *p = th_agent_start_argv(world, command, agency, extra);
    if (input != NULL) {
        th_proc_write(p, input);
    }
    th_proc_close_stdin(p);
    (void)th_proc_wait_lines(p, SIZE_MAX, 60000); /* to the end of its output */
    *out = strdup(p->out != NULL ? p->out : "");
    return th_proc_wait(&p, 10000);
}

static char *s_log_path(const char *agency, const char *command)
{
    char *path = malloc(600);
    snprintf(path, 600, "%s/%s.%s.log", world->dir, agency, command);
    return path;
}

/* One JSON object from text (one line), asserted. */
static json_t *s_json(const char *text)
{
    json_error_t jerr;
    json_t *obj = json_loads(text, JSON_DECODE_ANY, &jerr);
    cr_assert(json_is_object(obj), "not a JSON object: %s (%s)", text, jerr.text);
    return obj;
}

static const char *s_str(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    cr_assert_not_null(v, "no string \"%s\"", key);
    return v;
}

/* accord-agent outcome as MASH on share with status and fields (NULL-terminated
 * --field arguments, or NULL); its result line parsed into *result. */
static int s_outcome(const char *agency, const char *share, const char *status,
                     const char *const fields[], json_t **result)
{
    const char *extra[16] = { "--share", share, "--status", status };
    size_t n = 4;
    for (size_t i = 0; fields != NULL && fields[i] != NULL && n + 2 < 16; i++) {
        extra[n++] = "--field";
        extra[n++] = fields[i];
    }
    extra[n] = NULL;
    char *out = NULL;
    int rc = s_agent("outcome", agency, extra, NULL, &out);
    cr_assert(strchr(out, '\n') == strrchr(out, '\n') && out[0] != '\0', "one line: %s", out);
    *result = s_json(out);
    free(out);
    return rc;
}

/* The subscriber's next line, parsed. */
static json_t *s_next_line(th_proc_t *sub, size_t n)
{
    cr_assert_geq(th_proc_wait_lines(sub, n + 1, 20000), n + 1, "line %zu not printed", n);
    char *line = th_proc_line(sub, n);
    json_t *obj = s_json(line);
    free(line);
    return obj;
}

/* ---- outcomes ---- */

Test(agent_outcomes, the_publishers_subscriber_prints_each_outcome_reported_on_its_share)
{
    char *json = s_ed_json("ed-att-1");
    char *share = s_share(ED, json);
    th_proc_t *sub = th_agent_start(world, "subscribe", ED, NULL);
    cr_assert(th_agent_wait_connected(world, ED, "subscribe"));

    const char *fields[] = { "decision_date=2026-12-01", "reason=early-help-offered", NULL };
    json_t *accepted = NULL;
    cr_assert_eq(s_outcome(MASH, share, "accepted", fields, &accepted), 0);
    cr_assert_str_eq(s_str(accepted, "result"), "ok");
    cr_assert_str_eq(s_str(accepted, "code"), "OK");
    cr_assert_str_eq(s_str(accepted, "share_id"), share);
    cr_assert_str_eq(s_str(accepted, "status"), "accepted");
    cr_assert_eq(strlen(s_str(accepted, "outcome_id")), 36);
    cr_assert_gt(json_integer_value(json_object_get(accepted, "seq")), 0);

    json_t *line = s_next_line(sub, 0);
    cr_assert_str_eq(s_str(line, "kind"), "outcome");
    cr_assert_str_eq(s_str(line, "outcome_id"), s_str(accepted, "outcome_id"));
    cr_assert_str_eq(s_str(line, "share_id"), share);
    cr_assert_str_eq(s_str(line, "record_id"), "ed-att-1");
    cr_assert_str_eq(s_str(line, "record_type"), "ed-attendance");
    cr_assert_str_eq(s_str(line, "to_agency"), MASH);
    cr_assert_str_eq(s_str(line, "status"), "accepted");
    const char *at = s_str(line, "at");
    cr_assert(strncmp(at, "20", 2) == 0 && at[strlen(at) - 1] == 'Z', "%s", at);
    json_t *got = json_object_get(line, "fields");
    cr_assert_str_eq(s_str(got, "decision_date"), "2026-12-01");
    cr_assert_str_eq(s_str(got, "reason"), "early-help-offered");
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(line, "rules"), 0)),
                     "ed-to-mash");
    json_decref(line);

    /* the same status again: the first result, nothing new for the publisher */
    json_t *again = NULL;
    cr_assert_eq(s_outcome(MASH, share, "accepted", fields, &again), 0);
    cr_assert_str_eq(s_str(again, "outcome_id"), s_str(accepted, "outcome_id"));
    json_decref(again);

    json_t *closed = NULL;
    cr_assert_eq(s_outcome(MASH, share, "closed", NULL, &closed), 0);
    line = s_next_line(sub, 1);
    cr_assert_str_eq(s_str(line, "status"), "closed");
    cr_assert_str_eq(s_str(line, "outcome_id"), s_str(closed, "outcome_id"));
    cr_assert_eq(json_object_size(json_object_get(line, "fields")), 0);
    json_decref(line);
    char where[256];
    snprintf(where, sizeof(where),
             "event = 'outcome' AND to_agency = '" ED "' AND seq IN "
             "(SELECT share_seq FROM accord_log_acks)");
    cr_assert_eq(th_pg_wait_count(world, where, 2, 10000), 2, "both acknowledged");
    th_sleep_ms(300);
    th_proc_drain(sub);
    cr_assert_eq(sub->lines, 2, "each outcome once: %s", sub->out);
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);
    json_decref(accepted);
    json_decref(closed);
    free(share);
    free(json);
}

Test(agent_outcomes, outcomes_reach_the_spool_and_the_hook_with_their_kind)
{
    char *json = s_ed_json("ed-att-2");
    char *share = s_share(ED, json);
    char spool[600];
    snprintf(spool, sizeof(spool), "%s/ed-spool", world->dir);
    char hook[1400];
    snprintf(hook, sizeof(hook),
             "echo \"$ACCORD_KIND $ACCORD_SHARE_ID $ACCORD_FROM_AGENCY $ACCORD_RECORD_TYPE\" "
             ">> %s/runs",
             world->dir);
    const char *extra[] = { "--spool", spool, "--exec", hook, NULL };
    th_proc_t *sub = th_agent_start_argv(world, "subscribe", ED, extra);
    cr_assert(th_agent_wait_connected(world, ED, "subscribe"));

    json_t *accepted = NULL;
    cr_assert_eq(s_outcome(MASH, share, "accepted", NULL, &accepted), 0);
    const char *id = s_str(accepted, "outcome_id");
    char runs[700];
    snprintf(runs, sizeof(runs), "%s/runs", world->dir);
    char expect[300];
    snprintf(expect, sizeof(expect), "outcome %s " MASH " ed-attendance", id);
    cr_assert(th_file_wait(runs, expect, 20000), "the hook ran with ACCORD_KIND=outcome");
    char path[800];
    snprintf(path, sizeof(path), "%s/incoming/%s.json", spool, id);
    char *text = th_slurp(path);
    json_t *line = s_json(text);
    cr_assert_str_eq(s_str(line, "kind"), "outcome");
    cr_assert_str_eq(s_str(line, "share_id"), share);
    cr_assert_str_eq(s_str(line, "status"), "accepted");
    json_decref(line);
    free(text);
    char where[256];
    snprintf(where, sizeof(where),
             "event = 'outcome' AND share_id = '%s' AND seq IN "
             "(SELECT share_seq FROM accord_log_acks)",
             id);
    cr_assert_eq(th_pg_wait_count(world, where, 1, 10000), 1, "acknowledged after the hook");
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);
    json_decref(accepted);
    free(share);
    free(json);
}

Test(agent_outcomes, a_share_keeps_its_line_and_its_hook_is_told_kind_share)
{
    char *json = s_ed_json("ed-att-6");
    char *share = s_share(ED, json);
    th_proc_t *sub = th_agent_start(world, "subscribe", MASH, NULL);
    json_t *line = s_next_line(sub, 0);
    cr_assert_null(json_object_get(line, "kind"), "share lines are as they were");
    cr_assert_str_eq(s_str(line, "share_id"), share);
    cr_assert_str_eq(s_str(line, "from"), ED);
    json_decref(line);
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);

    char *second = s_ed_json("ed-att-7");
    char *share2 = s_share(ED, second);
    char spool[600];
    snprintf(spool, sizeof(spool), "%s/mash-spool", world->dir);
    char hook[1400];
    snprintf(hook, sizeof(hook), "echo \"$ACCORD_KIND $ACCORD_SHARE_ID\" >> %s/mash-runs",
             world->dir);
    const char *extra[] = { "--spool", spool, "--exec", hook, NULL };
    sub = th_agent_start_argv(world, "subscribe", MASH, extra);
    char runs[700];
    snprintf(runs, sizeof(runs), "%s/mash-runs", world->dir);
    char expect[100];
    snprintf(expect, sizeof(expect), "share %s", share2);
    cr_assert(th_file_wait(runs, expect, 20000), "the hook ran with ACCORD_KIND=share");
    cr_assert_eq(th_proc_stop(&sub, SIGTERM, 10000), 0);
    free(share2);
    free(second);
    free(share);
    free(json);
}

Test(agent_outcomes, a_refused_outcome_exits_1_with_its_code)
{
    char *json = s_ed_json("ed-att-3");
    char *share = s_share(ED, json);
    json_t *r = NULL;
    cr_assert_eq(s_outcome(EH, share, "accepted", NULL, &r), 1);
    cr_assert_str_eq(s_str(r, "result"), "refused");
    cr_assert_str_eq(s_str(r, "code"), "NOT_RECIPIENT");
    cr_assert_null(json_object_get(r, "outcome_id"));
    json_decref(r);
    const char *bad_field[] = { "reason=because", NULL };
    cr_assert_eq(s_outcome(MASH, share, "accepted", bad_field, &r), 1);
    cr_assert_str_eq(s_str(r, "code"), "INVALID_FIELD");
    json_decref(r);
    cr_assert_eq(s_outcome(MASH, share, "closed", NULL, &r), 0);
    json_decref(r);
    cr_assert_eq(s_outcome(MASH, share, "accepted", NULL, &r), 1);
    cr_assert_str_eq(s_str(r, "code"), "STATUS_OUT_OF_ORDER");
    json_decref(r);
    cr_assert_eq(s_outcome(MASH, "0190f3a0-0000-7a2b-9c3d-4e5f60718293", "accepted", NULL, &r), 1);
    cr_assert_str_eq(s_str(r, "code"), "UNKNOWN_SHARE");
    json_decref(r);
    /* what the agent can tell is wrong is a usage error, not sent */
    char *out = NULL;
    const char *not_uuid[] = { "--share", "ed-att-3", "--status", "accepted", NULL };
    cr_assert_eq(s_agent("outcome", MASH, not_uuid, NULL, &out), 64);
    free(out);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND error_code = 'NOT_RECIPIENT'"), 1);
    free(share);
    free(json);
}

Test(agent_outcomes, outcomes_from_stdin_get_one_result_line_each)
{
    char *json = s_ed_json("ed-att-4");
    char *share = s_share(ED, json);
    char input[1024];
    snprintf(input, sizeof(input),
             "{\"share_id\":\"%s\",\"status\":\"received\"}\n"
             "\n"
             "{\"share_id\":\"%s\",\"status\":\"accepted\",\"fields\":"
             "{\"decision_date\":\"2026-12-02\"}}\n"
             "not json\n"
             "{\"share_id\":\"%s\",\"status\":\"declined\"}\n",
             share, share, share);
    char *out = NULL;
    cr_assert_eq(s_agent("outcome", MASH, (const char *const[]){ NULL }, input, &out), 1);
    char *save = NULL;
    const char *want[][3] = { { "1", "ok", "OK" },
                              { "3", "ok", "OK" },
                              { "4", "refused", "INVALID_INPUT" },
                              { "5", "refused", "STATUS_OUT_OF_ORDER" } };
    size_t n = 0;
    for (char *l = strtok_r(out, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save), n++) {
        cr_assert_lt(n, 4, "too many lines");
        json_t *r = s_json(l);
        cr_assert_eq(json_integer_value(json_object_get(r, "line")), atoi(want[n][0]), "%s", l);
        cr_assert_str_eq(s_str(r, "result"), want[n][1], "%s", l);
        cr_assert_str_eq(s_str(r, "code"), want[n][2], "%s", l);
        json_decref(r);
    }
    cr_assert_eq(n, 4);
    cr_assert_eq(th_pg_count(world, "event = 'outcome'"), 2);
    free(out);
    free(share);
    free(json);
}

/* Writes text to DIR/incoming/NAME as an agency's system does: a dot name, then rename. */
static void s_drop(const char *dir, const char *name, const char *text)
{
    char *tmp = acc_xasprintf("%s/incoming/.%s.tmp", dir, name);
    char *ready = acc_xasprintf("%s/incoming/%s", dir, name);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(rename(tmp, ready), 0);
    free(tmp);
    free(ready);
}

/* DIR/REL's lines, each parsed, as a JSON array (yours). */
static json_t *s_lines(const char *dir, const char *rel)
{
    char *path = acc_xasprintf("%s/%s", dir, rel);
    char *text = th_slurp(path);
    cr_assert_not_null(text, "no %s", path);
    json_t *lines = json_array();
    char *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        json_array_append_new(lines, s_json(l));
    }
    free(text);
    free(path);
    return lines;
}

static bool s_exists(const char *dir, const char *rel, mode_t type)
{
    char *path = acc_xasprintf("%s/%s", dir, rel);
    struct stat st;
    bool found = lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == type;
    free(path);
    return found;
}

/* accord-agent outcome --spool DIR --once as MASH; its exit status. */
static int s_outcome_spool(const char *dir)
{
    const char *args[] = { "--spool", dir, "--once", NULL };
    char *out = NULL;
    int rc = s_agent("outcome", MASH, args, NULL, &out);
    cr_assert_str_empty(out, "printed %s", out);
    free(out);
    return rc;
}

Test(agent_outcomes, a_spool_file_is_reported_line_by_line_and_moved_to_done)
{
    char *json = s_ed_json("ed-att-5");
    char *share = s_share(ED, json);
    char *dir = acc_xasprintf("%s/mash.outcomes", world->dir);
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"share_id\":\"%s\",\"status\":\"received\"}\n"
             "{\"share_id\":\"0190f3a0-0000-7a2b-9c3d-4e5f60718293\",\"status\":\"accepted\"}\n",
             share);
    cr_assert_eq(s_outcome_spool(dir), 0, "an empty spool: --once exits 0 at once");
    s_drop(dir, "batch-1", text);
    char *key = acc_xasprintf("%s/%s.curve.secret", world->dir, MASH);
    char *link = acc_xasprintf("%s/incoming/key", dir);
    cr_assert_eq(symlink(key, link), 0);
    cr_assert_eq(s_outcome_spool(dir), 0);
    cr_assert(s_exists(dir, "done/batch-1", S_IFREG));
    cr_assert_not(s_exists(dir, "incoming/batch-1", S_IFREG));
    cr_assert(s_exists(dir, "rejected/key.unread", S_IFLNK), "the link is set aside unread");
    json_t *results = s_lines(dir, "done/batch-1.results");
    cr_assert_eq(json_array_size(results), 2);
    json_t *ok = json_array_get(results, 0);
    cr_assert_eq(json_integer_value(json_object_get(ok, "line")), 1);
    cr_assert_str_eq(s_str(ok, "result"), "ok");
    cr_assert_str_eq(s_str(ok, "share_id"), share);
    char *outcome_id = strdup(s_str(ok, "outcome_id"));
    json_t *no = json_array_get(results, 1);
    cr_assert_eq(json_integer_value(json_object_get(no, "line")), 2);
    cr_assert_str_eq(s_str(no, "code"), "UNKNOWN_SHARE");
    json_t *rejected = s_lines(dir, "rejected/batch-1");
    cr_assert_eq(json_array_size(rejected), 1);
    json_t *why = json_array_get(rejected, 0);
    cr_assert_eq(json_integer_value(json_object_get(why, "line")), 2);
    cr_assert_str_eq(s_str(why, "code"), "UNKNOWN_SHARE");
    cr_assert_null(json_object_get(why, "share_id"), "rejected/ holds no input");
    cr_assert_eq(th_pg_count(world, "event = 'outcome'"), 1);

    /* dropped again, as after a crash: the same answers, nothing logged twice */
    s_drop(dir, "batch-1", text);
    cr_assert_eq(s_outcome_spool(dir), 0);
    json_t *again = s_lines(dir, "done/batch-1.2.results");
    cr_assert_eq(json_array_size(again), 2);
    cr_assert_str_eq(s_str(json_array_get(again, 0), "result"), "ok");
    cr_assert_str_eq(s_str(json_array_get(again, 0), "outcome_id"), outcome_id);
    cr_assert(s_exists(dir, "done/batch-1.2", S_IFREG));
    cr_assert_eq(th_pg_count(world, "event = 'outcome'"), 1);
    json_decref(again);
    json_decref(rejected);
    json_decref(results);
    free(outcome_id);
    free(link);
    free(key);
    free(dir);
    free(share);
    free(json);
}

Test(agent_outcomes, spool_goes_without_share_and_once_with_spool)
{
    char *out = NULL;
    const char *both[] = {
        "--spool", "/nonexistent", "--share", "x", "--status", "received", NULL
    };
    cr_assert_eq(s_agent("outcome", MASH, both, NULL, &out), 64);
    free(out);
    const char *once[] = { "--once", NULL };
    cr_assert_eq(s_agent("outcome", MASH, once, NULL, &out), 64);
    free(out);
}

/* ---- lookups ---- */

Test(agent_outcomes, a_lookup_prints_a_table_or_json_and_the_agencies_named_are_told)
{
    char *ed_json = s_ed_json("ed-att-5");
    free(s_share(ED, ed_json));
    char *hv_json = th_health_visit_json("hv-5", CHILD_NHS);
    free(s_share(HV, hv_json));
    th_proc_t *hv_sub = th_agent_start(world, "subscribe", HV, NULL);
    cr_assert(th_agent_wait_connected(world, HV, "subscribe"));

    char *out = NULL;
    const char *table[] = { CHILD_NHS, "--purpose", PURPOSE, NULL };
    cr_assert_eq(s_agent("lookup", MASH, table, NULL, &out), 0);
    cr_log_info("%s", out);
    cr_assert(strncmp(out, "shares since 20", 15) == 0, "%s", out);
    cr_assert(strstr(out, "AGENCY") != NULL && strstr(out, "OPEN REFERRALS") != NULL, "%s", out);
    cr_assert(strstr(out, ED) != NULL && strstr(out, "ed-attendance") != NULL, "%s", out);
    cr_assert(strstr(out, HV) != NULL && strstr(out, EH) != NULL, "%s", out);
    free(out);

    const char *as_json[] = { CHILD_NHS, "--purpose", PURPOSE, "--json", NULL };
    cr_assert_eq(s_agent("lookup", MASH, as_json, NULL, &out), 0);
    json_t *r = s_json(out);
    cr_assert_str_eq(s_str(r, "code"), "OK");
    cr_assert_eq(strlen(s_str(r, "lookup_id")), 36);
    cr_assert_eq(strlen(s_str(r, "window_from")), 10);
    json_t *agencies = json_object_get(r, "agencies");
    cr_assert_eq(json_array_size(agencies), 3, "%s", out);
    for (size_t i = 0; i < 3; i++) {
        json_t *a = json_array_get(agencies, i);
        if (strcmp(s_str(a, "agency_id"), ED) == 0) {
            cr_assert_eq(json_integer_value(json_object_get(a, "open_referrals")), 1);
            cr_assert_str_eq(
                json_string_value(json_array_get(json_object_get(a, "record_types"), 0)),
                "ed-attendance");
        }
    }
    free(out);

    /* health visiting is told of each lookup, once each, by its subscriber */
    json_t *notice = s_next_line(hv_sub, 0);
    cr_assert_str_eq(s_str(notice, "kind"), "lookup-notice");
    cr_assert_str_eq(s_str(notice, "by_agency"), MASH);
    cr_assert_str_eq(s_str(notice, "purpose"), PURPOSE);
    cr_assert_str_eq(s_str(notice, "lookup"), "mash-involvement");
    cr_assert_str_eq(s_str(json_object_get(notice, "subject"), "nhs_number"), CHILD_NHS);
    cr_assert_eq(strlen(s_str(notice, "notice_id")), 36);
    json_decref(notice);
    notice = s_next_line(hv_sub, 1);
    cr_assert_str_eq(s_str(notice, "lookup_id"), s_str(r, "lookup_id"));
    json_decref(notice);
    cr_assert_eq(th_pg_wait_count(world,
                                  "event = 'notified' AND to_agency = '" HV "' AND seq IN "
                                  "(SELECT share_seq FROM accord_log_acks)",
                                  2, 10000),
                 2);
    cr_assert_eq(th_proc_stop(&hv_sub, SIGTERM, 10000), 0);
    json_decref(r);

    /* a child no one has shared anything about */
    const char *nobody[] = { th_nhs(3), "--purpose", PURPOSE, NULL };
    cr_assert_eq(s_agent("lookup", MASH, nobody, NULL, &out), 0);
    cr_assert(strstr(out, "no agency has shared records about this child in the window") != NULL,
              "%s", out);
    free(out);

    /* the asker's agent never logs the child's number */
    char *log_path = s_log_path(MASH, "lookup");
    char *log = th_slurp(log_path);
    cr_assert(strstr(log, "agencies involved") != NULL, "%s", log);
    (void)th_assert_names_no_child(log, "accord-agent lookup's log", NULL);
    free(log);
    free(log_path);
    free(ed_json);
    free(hv_json);
}

Test(agent_outcomes, a_lookup_without_the_right_exits_1_with_not_permitted)
{
    char *out = NULL;
    const char *args[] = { CHILD_NHS, "--purpose", PURPOSE, NULL };
    cr_assert_eq(s_agent("lookup", HV, args, NULL, &out), 1);
    cr_assert_str_eq(out, "");
    free(out);
    char *log_path = s_log_path(HV, "lookup");
    cr_assert(th_file_wait(log_path, "refused: NOT_PERMITTED: ", 1000));
    free(log_path);

    const char *purpose[] = { CHILD_NHS, "--purpose", "curiosity", "--json", NULL };
    cr_assert_eq(s_agent("lookup", MASH, purpose, NULL, &out), 1);
    json_t *r = s_json(out);
    cr_assert_str_eq(s_str(r, "code"), "PURPOSE_NOT_PERMITTED");
    json_decref(r);
    free(out);

    /* a mistyped number is refused by the agent and never sent */
    const char *typo[] = { "9434765918", "--purpose", PURPOSE, NULL };
    cr_assert_eq(s_agent("lookup", MASH, typo, NULL, &out), 1);
    free(out);
    log_path = s_log_path(MASH, "lookup");
    cr_assert(th_file_wait(log_path, "refused: INVALID_NHS_NUMBER: ", 1000));
    char *log = th_slurp(log_path);
    cr_assert_null(strstr(log, "9434765918"));
    free(log);
    free(log_path);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND reason LIKE 'lookup refused: %'"), 2);
    cr_assert_eq(th_pg_count(world, "event IN ('looked-up', 'notified')"), 0);
}
