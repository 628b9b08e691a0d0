/* lookup.c - "who already knows this child": answered from the log's metadata
 * through the subject tag, never from record contents; logged as a `looked-up`
 * row, and each agency named told who looked when the agreement says notify */
#include "lookup.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/log.h"
#include "accord/nhs.h"
#include "accord/policy_outcome.h"
#include "accord/record.h"
#include "broker.h"
#include "delivery.h"

#define INVOLVED_MAX 64 /* agencies one answer names, at most (an agreement has fewer) */

/* One Lookup while it is answered. */
typedef struct {
    broker_t *self;             /* to queue answers and note deliveries */
    const acc_policy_t *policy; /* the agreement in force */
    ledger_t *ledger;
    peer_t *peer;
    const Accord__V1__Envelope *env;
    const Accord__V1__Lookup *req;
    uint8_t tag[ACC_LOGROW_TAG_BYTES];
    bool has_tag;
    size_t lookup; /* the agreement's lookup, once decided */
    Accord__V1__Involvement involved[INVOLVED_MAX];
    Accord__V1__Involvement *involved_ptrs[INVOLVED_MAX];
    char *texts[INVOLVED_MAX][5]; /* agency, name, types (split in place), first, last */
    char **types[INVOLVED_MAX];
    size_t count;
    bool cut; /* more agencies than INVOLVED_MAX */
} s_lookup_t;

static void s_queue_result(s_lookup_t *l, Accord__V1__LookupResult *result, out_kind_t kind)
{
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = l->env->correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT;
    env.lookup_result = result;
    (void)broker_queue(l->self, kind, l->peer, &env);
}

/* A refused lookup is logged: who asked, for what purpose, about which child
 * (as a tag, when the identifier made one), and why not. */
static void s_refuse(s_lookup_t *l, Accord__V1__ErrorCode code, const char *why)
{
    char reason[320];
    (void)snprintf(reason, sizeof(reason), "lookup refused: %s", why);
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "refused";
    row.from_agency = l->peer->id;
    row.subject_tag = l->has_tag ? l->tag : NULL;
    row.purpose = l->req->purpose[0] != '\0' ? l->req->purpose : NULL;
    row.error_code = acc_pb_code_name(code);
    row.reason = reason;
    row.agreement_hash = acc_policy_hash(l->policy);
    int64_t seq = ledger_stage(l->ledger, &row, NULL, 0);
    /* the code only: the reason may quote the purpose the partner gave */
    acc_log_info("lookup", "refused a lookup by %s: %s", l->peer->id, acc_pb_code_name(code));
    Accord__V1__LookupResult result = ACCORD__V1__LOOKUP_RESULT__INIT;
    result.code = code;
    result.reason = acc_pb_str(why);
    result.seq = (uint64_t)seq;
    s_queue_result(l, &result, OUT_RESULT);
}

static void s_on_involved(void *ctx, const ledger_involved_t *inv)
{
    s_lookup_t *l = ctx;
    if (l->count == INVOLVED_MAX) {
        l->cut = true;
        return;
    }
    size_t i = l->count++;
    Accord__V1__Involvement *v = &l->involved[i];
    accord__v1__involvement__init(v);
    size_t index = 0;
    const char *name = acc_policy_find_agency(l->policy, inv->agency, &index)
                           ? acc_policy_agency_name(l->policy, index)
                           : "";
    l->texts[i][0] = acc_xstrdup(inv->agency);
    l->texts[i][1] = acc_xstrdup(name);
    l->texts[i][2] = acc_xstrdup(inv->record_types);
    l->texts[i][3] = acc_xstrdup(inv->first_day);
    l->texts[i][4] = acc_xstrdup(inv->last_day);
    size_t n = l->texts[i][2][0] != '\0' ? 1 : 0;
    for (const char *c = l->texts[i][2]; *c != '\0'; c++) {
        n += *c == ',';
    }
    l->types[i] = acc_xcalloc(n + 1, sizeof(char *));
    char *save = NULL;
    for (char *t = strtok_r(l->texts[i][2], ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        l->types[i][v->n_record_types++] = t;
    }
    v->agency_id = l->texts[i][0];
    v->agency_name = l->texts[i][1];
    v->record_types = l->types[i];
    v->first_at = l->texts[i][3];
    v->last_at = l->texts[i][4];
    v->open_referrals = inv->open_referrals > 0 ? (uint32_t)inv->open_referrals : 0;
    l->involved_ptrs[i] = v;
}

static void s_free_involved(s_lookup_t *l)
{
    for (size_t i = 0; i < l->count; i++) {
        for (size_t k = 0; k < 5; k++) {
            free(l->texts[i][k]);
        }
        free(l->types[i]);
    }
    l->count = 0;
}

/* The rule ids whose shares take outcomes (their shares can be open referrals),
 * every one of them: an array the caller frees, its count in *count. */
static const char **s_outcome_rules(const acc_policy_t *policy, size_t *count)
{
    size_t rules = acc_policy_rule_count(policy);
    const char **out = acc_xcalloc(rules + 1, sizeof(*out));
    *count = 0;
    for (size_t r = 0; r < rules; r++) {
        if (acc_policy_rule_outcomes(policy, r, NULL, NULL)) {
            out[(*count)++] = acc_policy_rule_id(policy, r);
        }
    }
    return out;
}

/* Tells one agency named in the answer who looked: a `notified` row, delivered
 * like a share. */
static void s_notify(s_lookup_t *l, const Accord__V1__Involvement *v, const uint8_t *lookup_id,
                     const char *at)
{
    size_t agency = 0;
    if (!acc_policy_find_agency(l->policy, v->agency_id, &agency)) {
        return; /* no longer in the agreement: nothing can reach it */
    }
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    char notice_id[37];
    char lookup_text[37];
    acc_uuid_format(notice_id, row.share_id);
    acc_uuid_format(lookup_text, lookup_id);
    Accord__V1__Subject subject = ACCORD__V1__SUBJECT__INIT;
    const Accord__V1__Subject *asked = l->req->subject;
    subject.nhs_number = asked->nhs_number;
    if (asked->nhs_number[0] == '\0') {
        subject.local_id = asked->local_id;
        subject.date_of_birth = asked->date_of_birth;
    }
    Accord__V1__LookupNotice notice = ACCORD__V1__LOOKUP_NOTICE__INIT;
    notice.notice_id = notice_id;
    notice.lookup_id = lookup_text;
    notice.by_agency = l->peer->id;
    notice.purpose = l->req->purpose;
    notice.at = acc_pb_str(at);
    notice.lookup_rule = acc_pb_str(acc_policy_lookup_id(l->policy, l->lookup));
    notice.subject = &subject;
    size_t len = accord__v1__lookup_notice__get_packed_size(&notice);
    uint8_t *plain = acc_xmalloc(len > 0 ? len : 1);
    (void)accord__v1__lookup_notice__pack(&notice, plain);
    row.event = "notified";
    row.from_agency = l->peer->id;
    row.to_agency = v->agency_id;
    row.subject_tag = l->tag;
    row.rule_count = 1;
    row.rule_ids[0] = acc_policy_lookup_id(l->policy, l->lookup);
    row.purpose = l->req->purpose;
    row.agreement_hash = acc_policy_hash(l->policy);
    row.refers_to = lookup_id;
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    memcpy(id, row.share_id, sizeof(id));
    int64_t seq = ledger_stage(l->ledger, &row, plain, len);
    sodium_memzero(plain, len); /* the child's identifier */
    free(plain);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_LOOKUP_NOTICE;
    env.lookup_notice = &notice;
    out_t *out = broker_queue(l->self, OUT_DELIVER, l->peer, &env);
    out->from_agency = l->peer->who.index;
    out->to_agency = agency;
    out->record_type = acc_xstrdup(LEDGER_STREAM_NOTIFIED);
    out->seq = seq;
    memcpy(out->share_id, id, sizeof(out->share_id));
    delivery_note_share(l->self, v->agency_id, LEDGER_STREAM_NOTIFIED, seq);
}

/* Answers a lookup the agreement allows: reads the log, logs the lookup with the
 * answer (encrypted, like a share's payload), notifies, queues the answer. */
static void s_answer(s_lookup_t *l)
{
    size_t rule_count = 0;
    const char **outcome_rules = s_outcome_rules(l->policy, &rule_count);
    ledger_lookup_t q = { .tag = l->tag,
                          .window = acc_policy_lookup_window(l->policy, l->lookup),
                          .asker = l->peer->id,
                          .outcome_rules = outcome_rules,
                          .rule_count = rule_count,
                          .fn = s_on_involved,
                          .ctx = l };
    acc_err_t err;
    acc_rc_t rc = ledger_involvement(l->ledger, &q, &err);
    free(outcome_rules);
    if (rc != ACC_OK) {
        acc_log_warn("lookup", "a lookup by %s not answered: %s", l->peer->id, err.msg);
        s_free_involved(l);
        Accord__V1__LookupResult result = ACCORD__V1__LOOKUP_RESULT__INIT;
        result.code = ACCORD__V1__ERROR_CODE__UNAVAILABLE;
        result.reason = acc_pb_str("the sharing log cannot be read just now; retry");
        s_queue_result(l, &result, OUT_REPLY);
        return;
    }
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    char lookup_id[37];
    acc_uuid_format(lookup_id, row.share_id);
    Accord__V1__LookupResult result = ACCORD__V1__LOOKUP_RESULT__INIT;
    result.code = ACCORD__V1__ERROR_CODE__OK;
    result.lookup_id = lookup_id;
    result.n_agencies = l->count;
    result.agencies = l->involved_ptrs;
    result.window_from = q.window_from;
    char reason[160];
    (void)snprintf(reason, sizeof(reason), "%zu agenc%s disclosed%s", l->count,
                   l->count == 1 ? "y" : "ies", l->cut ? " (the answer was cut)" : "");
    result.reason = reason;
    size_t len = accord__v1__lookup_result__get_packed_size(&result);
    uint8_t *plain = acc_xmalloc(len > 0 ? len : 1);
    (void)accord__v1__lookup_result__pack(&result, plain);
    row.event = "looked-up";
    row.from_agency = l->peer->id;
    row.subject_tag = l->tag;
    row.rule_count = 1;
    row.rule_ids[0] = acc_policy_lookup_id(l->policy, l->lookup);
    row.purpose = l->req->purpose;
    row.reason = reason;
    row.agreement_hash = acc_policy_hash(l->policy);
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    memcpy(id, row.share_id, sizeof(id));
    int64_t seq = ledger_stage(l->ledger, &row, plain, len);
    free(plain);
    result.seq = (uint64_t)seq;
    bool notify = acc_policy_lookup_notifies(l->policy, l->lookup);
    if (notify) {
        char at[BROKER_AT_TEXT_MAX];
        broker_now_text(at);
        for (size_t i = 0; i < l->count; i++) {
            s_notify(l, &l->involved[i], id, at);
        }
    }
    acc_log_info("lookup", "%s looked up a child under \"%s\": %s%s", l->peer->id,
                 acc_policy_lookup_id(l->policy, l->lookup), reason,
                 notify && l->count > 0 ? ", each told" : "");
    s_queue_result(l, &result, OUT_RESULT);
    s_free_involved(l);
}

void lookup_on_lookup(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    if (peer->who.auditor) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__NOT_PERMITTED,
                           "auditors query the log with an AuditQuery, not a Lookup");
        return;
    }
    s_lookup_t *l = acc_xcalloc(1, sizeof(*l));
    l->self = self;
    l->policy = broker_policy(self);
    l->ledger = broker_ledger(self);
    l->peer = peer;
    l->env = env;
    l->req = env->lookup;
    const Accord__V1__Subject *subject = l->req->subject;
    char nhs[ACC_NHS_DIGITS + 1] = "";
    acc_err_t err;
    char today[11];
    broker_today(today);
    if (subject != NULL && subject->nhs_number[0] != '\0' &&
        acc_nhs_check(nhs, subject->nhs_number, &err) != ACC_OK) {
        s_refuse(l, ACCORD__V1__ERROR_CODE__INVALID_NHS_NUMBER,
                 "the NHS number is not valid (modulus 11)");
    } else if (subject == NULL ||
               (subject->nhs_number[0] == '\0' &&
                (subject->local_id[0] == '\0' || !acc_is_date(subject->date_of_birth)))) {
        s_refuse(l, ACCORD__V1__ERROR_CODE__INVALID_SUBJECT,
                 "a lookup names the child by NHS number, or by local id with date of birth");
    } else {
        l->has_tag = broker_subject_tag(self, peer->id, nhs, subject->local_id, l->tag);
        acc_lookup_decision_t d;
        acc_policy_decide_lookup(l->policy, peer->who.index, acc_pb_str(l->req->purpose), today,
                                 &d);
        char why[BROKER_BUDGET_WHY_MAX];
        if (d.code != ACCORD__V1__ERROR_CODE__OK) {
            s_refuse(l, d.code, d.reason);
        } else if (!broker_take(self, peer, BROKER_BUDGET_LOOKUPS, why)) {
            s_refuse(l, ACCORD__V1__ERROR_CODE__UNAVAILABLE, why); /* logged: every lookup is */
        } else {
            l->lookup = d.lookup;
            s_answer(l);
        }
    }
    sodium_memzero(nhs, sizeof(nhs));
    sodium_memzero(l->tag, sizeof(l->tag));
    free(l);
}
