/* it_outcomes.c - referral outcomes and involvement lookups over real sockets and
 * a real PostgreSQL: an outcome reaches the share's publisher durably, once; every
 * refusal has its own code and its own log row; a lookup answers from the log,
 * is logged, and tells each agency it names; nothing is lost across a kill -9 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "accord/logrow.h"
#include "accord/record.h"
#include "harness.h"

#define CHILD_NHS "9434765919"
#define OTHER_NHS th_nhs(1)
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
    "  - id: cp-plan-status\n"
    "    fields: {status: text}\n"
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
    "  - id: csc-cp-to-ed\n"
    "    from: " MASH "\n"
    "    to: [" ED "]\n"
    "    record_types: [cp-plan-status]\n"
    "    fields: [status]\n"
    "    subject: [nhs_number]\n"
    "    purpose: Child-protection information sharing with unscheduled care\n"
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

TestSuite(outcomes, .init = setup, .fini = teardown, .timeout = 240);

/* ---- helpers ---- */

static char *s_ed_json(const char *record_id, const char *nhs)
{
    char *json = malloc(1024);
    cr_assert(snprintf(json, 1024,
                       "{\"record_id\":\"%s\",\"record_type\":\"ed-attendance\","
                       "\"occurred_at\":\"2026-11-30T21:40:00Z\",\"subject\":{\"nhs_number\":"
                       "\"%s\",\"family_name\":\"Smith\"},\"fields\":{\"attendance_date\":"
                       "\"2026-11-30\",\"presenting_complaint\":\"fall from a height\"}}",
                       record_id, nhs) < 1024);
    return json;
}

/* Publishes json as agency and returns the share id of its one recipient. */
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

typedef struct {
    const char *name;
    const char *text; /* NULL: none */
} s_field_t;

/* Sends an Outcome and returns the OutcomeResult's code; its outcome id into id. */
static Accord__V1__ErrorCode s_report(client_t *c, const char *share, const char *status,
                                      const s_field_t *fields, size_t n, char id[37])
{
    Accord__V1__Field f[4];
    Accord__V1__Field *ptrs[4];
    for (size_t i = 0; i < n; i++) {
        accord__v1__field__init(&f[i]);
        f[i].name = acc_pb_str(fields[i].name);
        f[i].value_case = ACCORD__V1__FIELD__VALUE_TEXT;
        f[i].text = acc_pb_str(fields[i].text);
        ptrs[i] = &f[i];
    }
    Accord__V1__Outcome outcome = ACCORD__V1__OUTCOME__INIT;
    outcome.share_id = acc_pb_str(share);
    outcome.status = acc_pb_str(status);
    outcome.n_fields = n;
    outcome.fields = ptrs;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 41;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_OUTCOME;
    env.outcome = &outcome;
    acc_err_t err;
    cr_assert_eq(client_send(c, &env, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT,
                 "answered with body %d", reply->body_case);
    const Accord__V1__OutcomeResult *r = reply->outcome_result;
    cr_assert_eq(reply->correlation_id, 41);
    cr_assert_str_eq(r->status, status);
    cr_log_info("outcome %s: %s %s", status, acc_pb_code_name(r->code), r->reason);
    Accord__V1__ErrorCode code = r->code;
    if (id != NULL) {
        snprintf(id, 37, "%s", r->outcome_id);
    }
    accord__v1__envelope__free_unpacked(reply, NULL);
    return code;
}

/* The next frame on c: an OutcomeNotice, acknowledged; its status. */
static char *s_notice(client_t *c, char outcome_id[37], char *field_reason, size_t len)
{
    Accord__V1__Envelope *env = NULL;
    acc_err_t err;
    cr_assert_eq(client_recv(c, &env, 10000, &err), ACC_OK, "no outcome notice: %s", err.msg);
    cr_assert_eq(env->body_case, ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE, "body %d",
                 env->body_case);
    const Accord__V1__OutcomeNotice *n = env->outcome_notice;
    char *status = strdup(n->status);
    snprintf(outcome_id, 37, "%s", n->outcome_id);
    if (field_reason != NULL) {
        field_reason[0] = '\0';
        for (size_t i = 0; i < n->n_fields; i++) {
            if (strcmp(n->fields[i]->name, "reason") == 0) {
                snprintf(field_reason, len, "%s", n->fields[i]->text);
            }
        }
    }
    cr_assert_str_eq(n->to_agency, MASH);
    cr_assert_str_eq(n->record_type, "ed-attendance");
    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    ack.share_id = n->outcome_id;
    Accord__V1__Envelope out = ACCORD__V1__ENVELOPE__INIT;
    out.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    out.deliver_ack = &ack;
    cr_assert_eq(client_send(c, &out, &err), ACC_OK, "%s", err.msg);
    accord__v1__envelope__free_unpacked(env, NULL);
    return status;
}

/* A subscribing connection for agency (it reads outcomes and notices). */
static client_t *s_subscriber(const char *agency, acc_agent_config_t *cfg)
{
    th_agent_config_load(world, agency, cfg);
    client_t *c = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&c, cfg, true, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(client_hello(c, 10000, &err), ACC_OK, "%s", err.msg);
    return c;
}

static Accord__V1__Envelope *s_lookup(client_t *c, const char *nhs, const char *local_id,
                                      const char *dob, const char *purpose);
static void s_lookup_notice(client_t *c, const char *lookup_id);

/* ---- outcomes ---- */

Test(outcomes, an_outcome_reaches_the_publisher_once_and_is_acknowledged)
{
    char *json = s_ed_json("ed-att-1", CHILD_NHS);
    char *share = s_share(ED, json);
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    s_field_t fields[] = { { "decision_date", "2026-12-01" }, { "reason", "early-help-offered" } };
    char id[37];
    cr_assert_eq(s_report(mash, share, "accepted", fields, 2, id), ACCORD__V1__ERROR_CODE__OK);
    char again[37];
    /* the same report again (a retry after a lost answer): the first answer */
    cr_assert_eq(s_report(mash, share, "accepted", fields, 2, again), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_str_eq(again, id);
    cr_assert_eq(th_pg_count(world, "event = 'outcome'"), 1);

    acc_agent_config_t ecfg;
    client_t *ed = s_subscriber(ED, &ecfg);
    char got[37];
    char reason[64];
    char *status = s_notice(ed, got, reason, sizeof(reason));
    cr_assert_str_eq(status, "accepted");
    cr_assert_str_eq(got, id);
    cr_assert_str_eq(reason, "early-help-offered");
    free(status);
    cr_assert_eq(s_report(mash, share, "closed", NULL, 0, NULL), ACCORD__V1__ERROR_CODE__OK);
    status = s_notice(ed, got, NULL, 0);
    cr_assert_str_eq(status, "closed");
    free(status);
    cr_assert_eq(th_pg_wait_count(world,
                                  "event = 'outcome' AND seq IN (SELECT share_seq FROM "
                                  "accord_log_acks)",
                                  2, 10000),
                 2);
    char where[512];
    snprintf(where, sizeof(where),
             "event = 'outcome' AND from_agency = '" MASH "' AND to_agency = '" ED "' AND "
             "refers_to = '%s' AND record_id = 'ed-att-1' AND subject_tag IS NOT NULL AND "
             "payload IS NOT NULL AND rule_ids = '{ed-to-mash}'",
             share);
    cr_assert_eq(th_pg_count(world, where), 2);
    /* nothing more comes: each was delivered once */
    Accord__V1__Envelope *extra = NULL;
    acc_err_t err;
    cr_assert_eq(client_recv(ed, &extra, 1500, &err), ACC_ERR_TIMEOUT);
    client_destroy(&ed);
    client_destroy(&mash);
    acc_agent_config_clear(&ecfg);
    acc_agent_config_clear(&mcfg);
    free(share);
    free(json);
}

Test(outcomes, every_bad_outcome_is_refused_with_its_own_code_and_logged)
{
    char *json = s_ed_json("ed-att-2", CHILD_NHS);
    char *share = s_share(ED, json);
    char *hv_json = th_health_visit_json("hv-1", CHILD_NHS);
    char *hv_share = s_share(HV, hv_json);
    acc_agent_config_t mcfg;
    acc_agent_config_t hcfg;
    acc_agent_config_t ecfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    client_t *hv = th_client(world, HV, &hcfg);
    client_t *eh = th_client(world, EH, &ecfg);
    s_field_t unknown[] = { { "next_step", "home visit" } };
    s_field_t bad_enum[] = { { "reason", "not-a-reason" } };
    s_field_t bad_date[] = { { "decision_date", "yesterday" } };
    cr_assert_eq(s_report(hv, share, "accepted", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__NOT_RECIPIENT);
    cr_assert_eq(s_report(mash, "00000000-0000-7000-8000-000000000000", "accepted", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__UNKNOWN_SHARE);
    cr_assert_eq(s_report(mash, "not-a-uuid", "accepted", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__UNKNOWN_SHARE);
    cr_assert_eq(s_report(mash, share, "escalated", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    /* a partner's text never reaches the broker's own log */
    cr_assert_eq(s_report(mash, share, CHILD_NHS, NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    cr_assert_eq(s_report(mash, share, "accepted", unknown, 1, NULL),
                 ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_eq(s_report(mash, share, "accepted", bad_enum, 1, NULL),
                 ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    cr_assert_eq(s_report(mash, share, "accepted", bad_date, 1, NULL),
                 ACCORD__V1__ERROR_CODE__INVALID_FIELD);
    /* a rule that takes no outcomes */
    cr_assert_eq(s_report(eh, hv_share, "received", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__STATUS_NOT_ALLOWED);
    /* forward only */
    cr_assert_eq(s_report(mash, share, "accepted", NULL, 0, NULL), ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(s_report(mash, share, "received", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER);
    cr_assert_eq(s_report(mash, share, "declined", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__STATUS_OUT_OF_ORDER);
    cr_assert_eq(th_pg_count(world, "event = 'outcome'"), 1);
    const char *codes[] = { "NOT_RECIPIENT", "UNKNOWN_SHARE",       "STATUS_NOT_ALLOWED",
                            "INVALID_FIELD", "STATUS_OUT_OF_ORDER", NULL };
    const long want[] = { 1, 2, 3, 3, 2 };
    for (size_t i = 0; codes[i] != NULL; i++) {
        char where[512];
        snprintf(where, sizeof(where),
                 "event = 'refused' AND error_code = '%s' AND reason LIKE 'outcome %%refused: %%' "
                 "AND payload IS NULL",
                 codes[i]);
        cr_assert_eq(th_pg_count(world, where), want[i], "%s", codes[i]);
    }
    /* the refusals name the share they were about, but no value */
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND reason LIKE '%not-a-reason%'"), 0);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND reason LIKE '%yesterday%'"), 0);
    const char *words[] = { CHILD_NHS, "Smith", "fall from a height", NULL };
    (void)th_assert_broker_log_names_no_child(world, words);
    client_destroy(&mash);
    client_destroy(&hv);
    client_destroy(&eh);
    acc_agent_config_clear(&mcfg);
    acc_agent_config_clear(&hcfg);
    acc_agent_config_clear(&ecfg);
    free(share);
    free(hv_share);
    free(json);
    free(hv_json);
}

Test(outcomes, outcomes_and_notifications_in_the_log_survive_a_kill_of_the_broker_and_arrive_once)
{
    char *json = s_ed_json("ed-att-3", CHILD_NHS);
    char *share = s_share(ED, json);
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    char id[37];
    cr_assert_eq(s_report(mash, share, "received", NULL, 0, id), ACCORD__V1__ERROR_CODE__OK);
    Accord__V1__Envelope *looked = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    cr_assert_eq(looked->lookup_result->code, ACCORD__V1__ERROR_CODE__OK);
    char lookup_id[37];
    snprintf(lookup_id, sizeof(lookup_id), "%s", looked->lookup_result->lookup_id);
    accord__v1__envelope__free_unpacked(looked, NULL);
    client_destroy(&mash);
    acc_agent_config_clear(&mcfg);
    cr_assert_eq(th_proc_stop(&world->broker, SIGKILL, 5000), 128 + SIGKILL);
    th_broker_start(world);
    acc_agent_config_t ecfg;
    client_t *ed = s_subscriber(ED, &ecfg);
    char got[37];
    char *status = s_notice(ed, got, NULL, 0);
    cr_assert_str_eq(status, "received");
    cr_assert_str_eq(got, id);
    free(status);
    s_lookup_notice(ed, lookup_id);
    cr_assert_eq(th_pg_wait_count(world,
                                  "event IN ('outcome', 'notified') AND to_agency = '" ED
                                  "' AND seq IN (SELECT share_seq FROM accord_log_acks)",
                                  2, 10000),
                 2);
    client_destroy(&ed);
    acc_agent_config_clear(&ecfg);
    /* acknowledged: a restart does not send it again */
    cr_assert_eq(th_proc_stop(&world->broker, SIGKILL, 5000), 128 + SIGKILL);
    th_broker_start(world);
    ed = s_subscriber(ED, &ecfg);
    Accord__V1__Envelope *extra = NULL;
    acc_err_t err;
    cr_assert_eq(client_recv(ed, &extra, 1500, &err), ACC_ERR_TIMEOUT);
    client_destroy(&ed);
    acc_agent_config_clear(&ecfg);
    free(share);
    free(json);
}

/* ---- lookups ---- */

/* Sends a Lookup; the result, which the caller frees. */
static void s_send_lookup(client_t *c, const char *nhs, const char *local_id, const char *dob,
                          const char *purpose, uint64_t correlation)
{
    Accord__V1__Subject subject = ACCORD__V1__SUBJECT__INIT;
    subject.nhs_number = acc_pb_str(nhs);
    subject.local_id = acc_pb_str(local_id);
    subject.date_of_birth = acc_pb_str(dob);
    Accord__V1__Lookup lookup = ACCORD__V1__LOOKUP__INIT;
    lookup.subject = &subject;
    lookup.purpose = acc_pb_str(purpose);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = correlation;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_LOOKUP;
    env.lookup = &lookup;
    acc_err_t err;
    cr_assert_eq(client_send(c, &env, &err), ACC_OK, "%s", err.msg);
}

static Accord__V1__Envelope *s_lookup(client_t *c, const char *nhs, const char *local_id,
                                      const char *dob, const char *purpose)
{
    s_send_lookup(c, nhs, local_id, dob, purpose, 43);
    acc_err_t err;
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT, "body %d",
                 reply->body_case);
    cr_log_info("lookup: %s %s", acc_pb_code_name(reply->lookup_result->code),
                reply->lookup_result->reason);
    return reply;
}

static const Accord__V1__Involvement *s_involved(const Accord__V1__LookupResult *r,
                                                 const char *agency)
{
    for (size_t i = 0; i < r->n_agencies; i++) {
        if (strcmp(r->agencies[i]->agency_id, agency) == 0) {
            return r->agencies[i];
        }
    }
    return NULL;
}

/* The next frame on c: a LookupNotice from the MASH, acknowledged. */
static void s_lookup_notice(client_t *c, const char *lookup_id)
{
    Accord__V1__Envelope *env = NULL;
    acc_err_t err;
    cr_assert_eq(client_recv(c, &env, 10000, &err), ACC_OK, "no lookup notice: %s", err.msg);
    cr_assert_eq(env->body_case, ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE, "body %d",
                 env->body_case);
    const Accord__V1__LookupNotice *n = env->lookup_notice;
    cr_assert_str_eq(n->by_agency, MASH);
    cr_assert_str_eq(n->purpose, PURPOSE);
    cr_assert_str_eq(n->lookup_id, lookup_id);
    cr_assert_str_eq(n->lookup_rule, "mash-involvement");
    cr_assert_str_eq(n->subject->nhs_number, CHILD_NHS);
    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    ack.share_id = n->notice_id;
    Accord__V1__Envelope out = ACCORD__V1__ENVELOPE__INIT;
    out.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    out.deliver_ack = &ack;
    cr_assert_eq(client_send(c, &out, &err), ACC_OK, "%s", err.msg);
    accord__v1__envelope__free_unpacked(env, NULL);
}

Test(outcomes, a_lookup_names_who_is_involved_logs_it_and_tells_them)
{
    char *ed_json = s_ed_json("ed-att-4", CHILD_NHS);
    char *share = s_share(ED, ed_json);
    char *hv_json = th_health_visit_json("hv-4", CHILD_NHS);
    free(s_share(HV, hv_json));
    char *other = th_health_visit_json("hv-5", OTHER_NHS);
    free(s_share(HV, other));
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    Accord__V1__Envelope *reply = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    const Accord__V1__LookupResult *r = reply->lookup_result;
    cr_assert_eq(r->code, ACCORD__V1__ERROR_CODE__OK, "%s", r->reason);
    cr_assert_eq(r->n_agencies, 3, "ED, health visiting and early help, not the MASH itself");
    const Accord__V1__Involvement *ed = s_involved(r, ED);
    const Accord__V1__Involvement *hv = s_involved(r, HV);
    const Accord__V1__Involvement *eh = s_involved(r, EH);
    cr_assert(ed != NULL && hv != NULL && eh != NULL);
    cr_assert_eq(ed->n_record_types, 1);
    cr_assert_str_eq(ed->record_types[0], "ed-attendance");
    cr_assert_eq(ed->open_referrals, 1, "its referral to the MASH has no outcome yet");
    cr_assert_eq(hv->open_referrals, 0);
    cr_assert_str_eq(eh->record_types[0], "health-visit");
    cr_assert_eq(strlen(ed->first_at), 10);
    cr_assert_eq(strlen(r->window_from), 10);
    char lookup_id[37];
    snprintf(lookup_id, sizeof(lookup_id), "%s", r->lookup_id);
    accord__v1__envelope__free_unpacked(reply, NULL);
    char where[512];
    snprintf(where, sizeof(where),
             "event = 'looked-up' AND from_agency = '" MASH "' AND purpose = '" PURPOSE "' AND "
             "rule_ids = '{mash-involvement}' AND subject_tag IS NOT NULL AND share_id = '%s' AND "
             "reason = '3 agencies disclosed'",
             lookup_id);
    cr_assert_eq(th_pg_count(world, where), 1);
    snprintf(where, sizeof(where),
             "event = 'notified' AND from_agency = '" MASH "' AND "
             "refers_to = '%s' AND payload IS NOT NULL",
             lookup_id);
    cr_assert_eq(th_pg_count(world, where), 3);

    /* each agency named is told, durably: health visiting connects later */
    acc_agent_config_t hcfg;
    client_t *hv_sub = s_subscriber(HV, &hcfg);
    s_lookup_notice(hv_sub, lookup_id);
    cr_assert_eq(th_pg_wait_count(world,
                                  "event = 'notified' AND to_agency = '" HV "' AND seq IN "
                                  "(SELECT share_seq FROM accord_log_acks)",
                                  1, 10000),
                 1);
    /* a closed referral is no longer open */
    cr_assert_eq(s_report(mash, share, "closed", NULL, 0, NULL), ACCORD__V1__ERROR_CODE__OK);
    reply = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    ed = s_involved(reply->lookup_result, ED);
    cr_assert(ed != NULL);
    cr_assert_eq(ed->open_referrals, 0);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&hv_sub);
    client_destroy(&mash);
    acc_agent_config_clear(&hcfg);
    acc_agent_config_clear(&mcfg);
    free(share);
    free(ed_json);
    free(hv_json);
    free(other);
}

Test(outcomes, lookups_outside_the_agreement_are_refused_and_logged)
{
    acc_agent_config_t mcfg;
    acc_agent_config_t hcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    client_t *hv = th_client(world, HV, &hcfg);
    struct {
        client_t *c;
        const char *nhs;
        const char *local_id;
        const char *dob;
        const char *purpose;
        Accord__V1__ErrorCode want;
    } cases[] = {
        { hv, CHILD_NHS, "", "", PURPOSE, ACCORD__V1__ERROR_CODE__NOT_PERMITTED },
        { mash, CHILD_NHS, "", "", "curiosity", ACCORD__V1__ERROR_CODE__PURPOSE_NOT_PERMITTED },
        { mash, CHILD_NHS, "", "", "Smith " CHILD_NHS,
          ACCORD__V1__ERROR_CODE__PURPOSE_NOT_PERMITTED },
        { mash, "9434765918", "", "", PURPOSE, ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER },
        { mash, "", "", "", PURPOSE, ACCORD__V1__ERROR_CODE__INVALID_SUBJECT },
        { mash, "", "case-17", "", PURPOSE, ACCORD__V1__ERROR_CODE__INVALID_SUBJECT },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Accord__V1__Envelope *reply =
            s_lookup(cases[i].c, cases[i].nhs, cases[i].local_id, cases[i].dob, cases[i].purpose);
        cr_assert_eq(reply->lookup_result->code, cases[i].want, "case %zu: %s", i,
                     acc_pb_code_name(reply->lookup_result->code));
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND reason LIKE 'lookup refused: %'"), 6);
    const char *words[] = { CHILD_NHS, "Smith", NULL };
    (void)th_assert_broker_log_names_no_child(world, words);
    cr_assert_eq(th_pg_count(world, "event = 'refused' AND error_code = 'NOT_PERMITTED' AND "
                                    "from_agency = '" HV "' AND subject_tag IS NOT NULL"),
                 1);
    cr_assert_eq(th_pg_count(world, "event IN ('looked-up', 'notified')"), 0);
    /* a local id with its date of birth is a lookup of the asker's own records */
    Accord__V1__Envelope *reply = s_lookup(mash, "", "case-17", "2025-03-01", PURPOSE);
    cr_assert_eq(reply->lookup_result->code, ACCORD__V1__ERROR_CODE__OK);
    cr_assert_eq(reply->lookup_result->n_agencies, 0);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&mash);
    client_destroy(&hv);
    acc_agent_config_clear(&mcfg);
    acc_agent_config_clear(&hcfg);
}

static double s_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A front door's key, stolen or in a runaway script, asking about child after
 * child: each lookup the agreement allows is a read of the log the broker makes
 * before it reads anything else, so a flood of them would hold up every other
 * agency's publishes. The agency gets lookups_per_second (10 by default), a
 * second's worth at once; the rest are refused UNAVAILABLE with the rate, and
 * logged as refused like any other lookup turned down. */
Test(outcomes, a_flood_of_lookups_is_held_to_the_agency_s_rate_logged_and_stalls_nobody)
{
    char *ed_json = s_ed_json("ed-att-flood", CHILD_NHS);
    free(s_share(ED, ed_json));
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    enum { FLOOD = 300 };
    double t0 = s_now_s();
    for (uint64_t i = 0; i < FLOOD; i++) {
        s_send_lookup(mash, CHILD_NHS, "", "", PURPOSE, 1000 + i);
    }
    /* a bystander publishing meanwhile is answered */
    char *hv_json = th_health_visit_json("hv-flood", OTHER_NHS);
    cr_assert_eq(th_publish_code(world, HV, hv_json, ""), ACCORD__V1__ERROR_CODE__OK);
    long ok = 0;
    long limited = 0;
    for (int i = 0; i < FLOOD; i++) {
        Accord__V1__Envelope *reply = NULL;
        acc_err_t err;
        cr_assert_eq(client_recv(mash, &reply, 10000, &err), ACC_OK, "answer %d: %s", i, err.msg);
        cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT);
        const Accord__V1__LookupResult *r = reply->lookup_result;
        if (r->code == ACCORD__V1__ERROR_CODE__OK) {
            ok++;
        } else {
            cr_assert_eq(r->code, ACCORD__V1__ERROR_CODE__UNAVAILABLE, "%s",
                         acc_pb_code_name(r->code));
            cr_assert(strstr(r->reason, "more than 10 lookups a second") != NULL, "%s", r->reason);
            limited++;
        }
        accord__v1__envelope__free_unpacked(reply, NULL);
    }
    double elapsed = s_now_s() - t0;
    cr_log_info("%ld lookups answered, %ld refused, in %.2f s", ok, limited, elapsed);
    cr_assert_geq(ok, 10, "a second's worth at once");
    cr_assert_leq((double)ok, 10.0 + 10.0 * elapsed + 1.0, "%ld answered in %.2f s", ok, elapsed);
    cr_assert_eq(th_pg_count(world, "event = 'looked-up' AND from_agency = '" MASH "'"), ok);
    cr_assert_eq(th_pg_wait_count(world,
                                  "event = 'refused' AND from_agency = '" MASH "' AND "
                                  "error_code = 'UNAVAILABLE' AND subject_tag IS NOT NULL AND "
                                  "purpose = '" PURPOSE "' AND reason LIKE 'lookup refused: %'",
                                  limited, 10000),
                 limited);
    const char *words[] = { CHILD_NHS, "Smith", NULL };
    (void)th_assert_broker_log_names_no_child(world, words);
    /* the budget refills: a lookup a second later is answered */
    th_sleep_ms(1100);
    Accord__V1__Envelope *reply = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    cr_assert_eq(reply->lookup_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 reply->lookup_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&mash);
    acc_agent_config_clear(&mcfg);
    free(ed_json);
    free(hv_json);
}

/* ---- auditing ---- */

static int s_verify(void)
{
    char *sign = acc_xasprintf("%s/broker.sign.pub", world->dir);
    char *out = NULL;
    int status = th_run(world, &out, "accord-audit", "--db", world->conninfo, "--sign-key", sign,
                        "verify", (char *)NULL);
    cr_log_info("verify: %s", out);
    free(out);
    free(sign);
    return status;
}

Test(outcomes, auditors_see_outcomes_overdue_referrals_and_lookups_and_verify_the_chain)
{
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER accord_log_append_only");
    char *json = s_ed_json("ed-att-6", CHILD_NHS);
    char *share = s_share(ED, json);
    char *waiting_json = s_ed_json("ed-att-7", OTHER_NHS);
    char *waiting = s_share(ED, waiting_json);
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    s_field_t fields[] = { { "reason", "no-further-action" } };
    cr_assert_eq(s_report(mash, share, "declined", fields, 1, NULL), ACCORD__V1__ERROR_CODE__OK);
    Accord__V1__Envelope *reply = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    cr_assert_eq(reply->lookup_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&mash);
    acc_agent_config_clear(&mcfg);
    const char *auditor = th_agent_config(world, "ig-officer", NULL);
    char *key = acc_xasprintf("%s/ig-officer.box.secret", world->dir);

    char *out = NULL;
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "log", "--event",
                        "outcome", "--json", (char *)NULL),
                 0);
    json_t *rows = json_loads(out, 0, NULL);
    cr_assert(json_is_array(rows), "%s", out);
    cr_assert_eq(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    cr_assert_str_eq(json_string_value(json_object_get(row, "reason")), "declined");
    cr_assert_str_eq(json_string_value(json_object_get(row, "refers_to")), share);
    json_decref(rows);
    free(out);

    /* the second referral has had no outcome: overdue once it is old enough */
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "overdue", "--days", "2",
                        "--json", (char *)NULL),
                 0);
    rows = json_loads(out, 0, NULL);
    cr_assert_eq(json_array_size(rows), 0, "nothing is two days old yet: %s", out);
    json_decref(rows);
    free(out);
    th_pg_exec(world, "UPDATE accord_log SET at = at - interval '3 days' WHERE event = 'shared'");
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "overdue", "--days", "2",
                        "--from", ED, "--json", (char *)NULL),
                 0);
    rows = json_loads(out, 0, NULL);
    cr_assert_eq(json_array_size(rows), 1, "%s", out);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "share_id")),
                     waiting);
    json_decref(rows);
    free(out);

    /* show: the share as received, and the outcome reported on it, decrypted */
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "--key", key, "show",
                        share, (char *)NULL),
                 0);
    rows = json_loads(out, 0, NULL);
    cr_assert(json_is_array(rows), "%s", out);
    bool shown = false;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        if (strcmp(json_string_value(json_object_get(r, "event")), "outcome") == 0) {
            json_t *rec = json_object_get(r, "record");
            cr_assert_str_eq(json_string_value(json_object_get(rec, "status")), "declined");
            cr_assert_str_eq(
                json_string_value(json_object_get(json_object_get(rec, "fields"), "reason")),
                "no-further-action");
            shown = true;
        }
    }
    cr_assert(shown, "show has no outcome: %s", out);
    json_decref(rows);
    free(out);

    /* subject access: the referral, its outcome, the lookup and who was told */
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "--key", key,
                        "subject-access", CHILD_NHS, (char *)NULL),
                 0);
    cr_assert(strstr(out, MASH " reported \"declined\"") != NULL, "%s", out);
    cr_assert(strstr(out, "no-further-action") != NULL, "%s", out);
    cr_assert(strstr(out, MASH " asked who is involved with this child") != NULL, "%s", out);
    cr_assert(strstr(out, ED " was told that " MASH " looked this child up") != NULL, "%s", out);
    cr_assert(strstr(out, "ed-att-7") == NULL, "another child's referral: %s", out);
    free(out);
    free(key);

    /* the chain covers them: the time moved above breaks it, and so does a
     * changed reference */
    cr_assert_neq(s_verify(), 0);
    th_pg_exec(world, "UPDATE accord_log SET at = at + interval '3 days' WHERE event = 'shared'");
    cr_assert_eq(s_verify(), 0);
    th_pg_exec(world, "UPDATE accord_log SET refers_to = share_id WHERE event = 'outcome'");
    cr_assert_neq(s_verify(), 0);
    free(share);
    free(waiting);
    free(json);
    free(waiting_json);
}

/* An agent from before outcomes says Hello without notices: it keeps receiving
 * shares, is sent no notice it would not understand, and the notice waits in
 * the log for a connection that reads them. */
Test(outcomes, an_older_subscriber_gets_shares_and_no_notices_which_wait_in_the_log)
{
    char *json = s_ed_json("ed-att-8", CHILD_NHS);
    char *share = s_share(ED, json);
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    char id[37];
    cr_assert_eq(s_report(mash, share, "received", NULL, 0, id), ACCORD__V1__ERROR_CODE__OK);
    acc_agent_config_t ecfg;
    client_t *ed = th_client(world, ED, &ecfg);
    Accord__V1__Hello hello = ACCORD__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.subscribe = true; /* and no notices: as agents before 0.2 */
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = 5;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_HELLO;
    env.hello = &hello;
    acc_err_t err;
    cr_assert_eq(client_send(ed, &env, &err), ACC_OK, "%s", err.msg);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(ed, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_WELCOME);
    accord__v1__envelope__free_unpacked(reply, NULL);
    /* a share to the emergency department still arrives on it, and nothing else */
    reply = th_publish(mash,
                       "{\"record_id\":\"cp-1\",\"record_type\":\"cp-plan-status\","
                       "\"occurred_at\":\"2026-12-01T10:00:00Z\",\"subject\":{\"nhs_number\":"
                       "\"" CHILD_NHS "\"},\"fields\":{\"status\":\"active\"}}",
                       "");
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK, "%s",
                 reply->publish_result->reason);
    accord__v1__envelope__free_unpacked(reply, NULL);
    cr_assert_eq(client_recv(ed, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_DELIVER, "body %d", reply->body_case);
    cr_assert_str_eq(reply->deliver->record->record_id, "cp-1");
    accord__v1__envelope__free_unpacked(reply, NULL);
    Accord__V1__Envelope *extra = NULL;
    cr_assert_eq(client_recv(ed, &extra, 1500, &err), ACC_ERR_TIMEOUT,
                 "an older agent was sent body %d", extra != NULL ? (int)extra->body_case : -1);
    client_destroy(&ed);
    acc_agent_config_clear(&ecfg);
    char where[160];
    snprintf(where, sizeof(where),
             "event = 'outcome' AND share_id = '%s' AND seq NOT IN (SELECT share_seq FROM "
             "accord_log_acks)",
             id);
    cr_assert_eq(th_pg_count(world, where), 1, "still pending");
    client_t *now = s_subscriber(ED, &ecfg);
    char got[37];
    char *status = s_notice(now, got, NULL, 0);
    cr_assert_str_eq(status, "received");
    cr_assert_str_eq(got, id);
    free(status);
    client_destroy(&now);
    client_destroy(&mash);
    acc_agent_config_clear(&ecfg);
    acc_agent_config_clear(&mcfg);
    free(share);
    free(json);
}

/* While PostgreSQL is down an outcome and a lookup are answered UNAVAILABLE and
 * nothing is logged half; once it is back the same outcome is logged once. */
Test(outcomes, while_postgresql_is_down_outcomes_and_lookups_are_unavailable_and_then_logged_once)
{
    th_broker_stop(world);
    th_pg_private_start(world); /* stopping the shared cluster would disturb other tests */
    th_broker_start(world);
    char *json = s_ed_json("ed-att-9", CHILD_NHS);
    char *share = s_share(ED, json);
    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    th_pg_private_ctl(world, "stop");
    cr_assert_eq(s_report(mash, share, "accepted", NULL, 0, NULL),
                 ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    Accord__V1__Envelope *reply = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    cr_assert_eq(reply->lookup_result->code, ACCORD__V1__ERROR_CODE__UNAVAILABLE);
    accord__v1__envelope__free_unpacked(reply, NULL);
    th_pg_private_ctl(world, "start");
    Accord__V1__ErrorCode code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
    char id[37] = "";
    for (int attempt = 0; attempt < 100 && code == ACCORD__V1__ERROR_CODE__UNAVAILABLE; attempt++) {
        code = s_report(mash, share, "accepted", NULL, 0, id);
        if (code == ACCORD__V1__ERROR_CODE__UNAVAILABLE) {
            th_sleep_ms(100);
        }
    }
    cr_assert_eq(code, ACCORD__V1__ERROR_CODE__OK, "the broker did not recover");
    cr_assert_eq(s_report(mash, share, "accepted", NULL, 0, NULL), ACCORD__V1__ERROR_CODE__OK);
    client_destroy(&mash);
    acc_agent_config_clear(&mcfg);
    th_broker_stop(world);
    PGconn *conn = PQconnectdb(world->conninfo);
    PGresult *res = PQexec(conn, "SELECT count(*) FROM accord_log WHERE event = 'outcome'");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "1", "logged once after the retries");
    PQclear(res);
    res = PQexec(conn, "SELECT count(*) FROM accord_log WHERE event IN ('looked-up', 'notified')");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "the lookup while down left no row");
    PQclear(res);
    PQfinish(conn);
    cr_assert_eq(s_verify(), 0, "the chain is continuous");
    free(share);
    free(json);
    th_pg_private_remove(world);
}

/* ---- an agreement with many rules that take outcomes ---- */

/* A partnership protocol covering many services: 300 other rules taking outcomes,
 * their ids as long as the agreement allows, listed before ed-to-mash. */
#define MANY_RULES 300

static void many_rules_setup(void)
{
    const char *agencies[] = { ED, MASH, HV, EH, NULL };
    world = th_world_new(agencies);
    size_t size = sizeof(s_agreement) + (size_t)MANY_RULES * 700;
    char *text = malloc(size);
    cr_assert_not_null(text);
    const char *rules = strstr(s_agreement, "rules:\n");
    size_t used = (size_t)(rules - s_agreement);
    memcpy(text, s_agreement, used);
    for (int i = 0; i < MANY_RULES; i++) {
        used += (size_t)snprintf(text + used, size - used,
                                 "  - id: service-%03d\n    fields: {status: text}\n", i);
    }
    used += (size_t)snprintf(text + used, size - used, "rules:\n");
    for (int i = 0; i < MANY_RULES; i++) {
        used += (size_t)snprintf(
            text + used, size - used,
            "  - id: early-help-step-up-and-step-down-referral-for-service-%03d\n"
            "    from: " HV "\n    to: [" EH "]\n    record_types: [service-%03d]\n"
            "    fields: [status]\n    subject: [nhs_number]\n    purpose: Step-up review\n"
            "    lawful_basis: \"UK GDPR 6(1)(e)\"\n    consent: not-required\n"
            "    outcomes:\n      statuses: [accepted, declined]\n",
            i, i);
    }
    /* ed-to-mash, renamed as long as the others: a short id could still fit in
     * whatever room a bounded list had left */
    const char *ed_rule = strstr(rules, "  - id: ed-to-mash\n");
    cr_assert_not_null(ed_rule);
    (void)snprintf(text + used, size - used,
                   "  - id: emergency-department-attendance-referral-to-the-mash-%s",
                   ed_rule + strlen("  - id: ed-to-"));
    th_world_agreement(world, text);
    free(text);
    th_broker_start(world);
}

TestSuite(many_rules, .init = many_rules_setup, .fini = teardown, .timeout = 240);

/* The overdue report and a lookup's open referrals each ask the log about every
 * rule that takes outcomes: none may be left out, however many there are. */
Test(many_rules, overdue_referrals_and_open_referrals_count_every_rule_taking_outcomes)
{
    char *json = s_ed_json("ed-att-many", CHILD_NHS);
    char *share = s_share(ED, json);
    th_pg_exec(world, "ALTER TABLE accord_log DISABLE TRIGGER accord_log_append_only");
    th_pg_exec(world, "UPDATE accord_log SET at = at - interval '3 days' WHERE event = 'shared'");
    th_pg_exec(world, "ALTER TABLE accord_log ENABLE TRIGGER accord_log_append_only");
    const char *auditor = th_agent_config(world, "ig-officer", NULL);
    char *out = NULL;
    cr_assert_eq(th_run(world, &out, "accord-audit", "--config", auditor, "overdue", "--days", "2",
                        "--json", (char *)NULL),
                 0, "%s", out);
    json_t *rows = json_loads(out, 0, NULL);
    cr_assert(json_is_array(rows), "%s", out);
    cr_assert_eq(json_array_size(rows), 1, "the referral under the last rule is overdue: %s", out);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 0), "share_id")),
                     share);
    json_decref(rows);
    free(out);

    acc_agent_config_t mcfg;
    client_t *mash = th_client(world, MASH, &mcfg);
    Accord__V1__Envelope *reply = s_lookup(mash, CHILD_NHS, "", "", PURPOSE);
    cr_assert_eq(reply->lookup_result->code, ACCORD__V1__ERROR_CODE__OK);
    const Accord__V1__Involvement *ed = s_involved(reply->lookup_result, ED);
    cr_assert_not_null(ed, "the emergency department shared about the child");
    cr_assert_eq(ed->open_referrals, 1, "its referral to the MASH has no outcome yet");
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&mash);
    acc_agent_config_clear(&mcfg);
    free(share);
    free(json);
}
