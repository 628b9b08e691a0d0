/* outcome.c - a recipient reports what became of a share: checked against the
 * share in the log and its rules, logged as an `outcome` row chained like any
 * other, and delivered to the share's publisher when the rule says to_sender */
#include "outcome.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/log.h"
#include "accord/policy_outcome.h"
#include "broker.h"
#include "delivery.h"

/* An outcome staged and not yet known to be committed. */
typedef struct {
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    unsigned status; /* ACC_OUTCOME_* */
    uint8_t outcome_id[ACC_LOGROW_SHARE_BYTES];
    int64_t seq;
} staged_outcome_t;

struct outcome_t {
    staged_outcome_t *staged; /* owned, grown on first use */
    size_t count;
    size_t cap;
};

/* One Outcome while it is decided. */
typedef struct {
    broker_t *self;             /* to queue answers and note deliveries */
    const acc_policy_t *policy; /* the agreement in force */
    ledger_t *ledger;
    outcome_t *table; /* the broker's staged outcomes */
    peer_t *peer;
    const Accord__V1__Envelope *env;
    const Accord__V1__Outcome *req;
    uint8_t share_id[ACC_LOGROW_SHARE_BYTES];
    bool has_share_id;
    char share_text[37]; /* as the broker writes it, or the request's text */
    ledger_reported_t rep;
} s_outcome_t;

/* The answer, sent once the batch holding its row commits. */
static void s_queue_result(s_outcome_t *o, Accord__V1__ErrorCode code, const char *reason,
                           const uint8_t *outcome_id, int64_t seq, out_kind_t kind)
{
    Accord__V1__OutcomeResult result = ACCORD__V1__OUTCOME_RESULT__INIT;
    result.share_id = o->share_text;
    result.status = acc_pb_str(o->req->status);
    result.code = code;
    result.reason = acc_pb_str(reason);
    char id[37] = "";
    if (outcome_id != NULL) {
        acc_uuid_format(id, outcome_id);
    }
    result.outcome_id = id;
    result.seq = (uint64_t)seq;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = o->env->correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_OUTCOME_RESULT;
    env.outcome_result = &result;
    out_t *out = broker_queue(o->self, kind, o->peer, &env);
    out->record_id = acc_xstrdup(o->share_text);
    out->status = acc_xstrdup(acc_pb_str(o->req->status));
}

/* A refused outcome is logged too: who reported what on which share, and why
 * not; never a field's value. */
static void s_refuse(s_outcome_t *o, Accord__V1__ErrorCode code, const char *why)
{
    char reason[384];
    (void)snprintf(reason, sizeof(reason), "outcome \"%.16s\" refused: %s",
                   acc_pb_str(o->req->status), why);
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "refused";
    row.from_agency = o->peer->id;
    if (o->rep.found) {
        row.record_type = o->rep.record_type;
        row.record_id = o->rep.record_id;
        row.subject_tag = o->rep.has_tag ? o->rep.subject_tag : NULL;
        row.rule_count = o->rep.rule_count;
        memcpy(row.rule_ids, o->rep.rule_ids, sizeof(row.rule_ids));
    }
    row.error_code = acc_pb_code_name(code);
    row.reason = reason;
    row.agreement_hash = acc_policy_hash(o->policy);
    row.refers_to = o->has_share_id ? o->share_id : NULL;
    int64_t seq = ledger_stage(o->ledger, &row, NULL, 0);
    /* the code only: the reason may quote what the partner sent */
    acc_log_info("outcome", "refused an outcome from %s: %s", o->peer->id, acc_pb_code_name(code));
    s_queue_result(o, code, why, NULL, seq, OUT_RESULT);
}

/* The share's last status so far, from the log and from what is staged; a
 * status already reported is found in *seen (its id and seq). */
static unsigned s_last_status(const s_outcome_t *o, unsigned status, bool *seen, bool *committed,
                              uint8_t *seen_id, int64_t *seen_seq)
{
    unsigned last = 0;
    *seen = false;
    for (size_t i = 0; i < o->rep.outcome_count; i++) {
        unsigned s = acc_outcome_status_parse(o->rep.outcomes[i].status);
        if (acc_outcome_status_rank(s) > acc_outcome_status_rank(last)) {
            last = s;
        }
        if (s == status && !*seen) {
            *seen = true;
            *committed = true;
            memcpy(seen_id, o->rep.outcomes[i].id, ACC_LOGROW_SHARE_BYTES);
            *seen_seq = o->rep.outcomes[i].seq;
        }
    }
    const outcome_t *table = o->table;
    for (size_t i = 0; i < table->count; i++) {
        const staged_outcome_t *m = &table->staged[i];
        if (sodium_memcmp(m->share_id, o->share_id, ACC_LOGROW_SHARE_BYTES) != 0) {
            continue;
        }
        if (acc_outcome_status_rank(m->status) > acc_outcome_status_rank(last)) {
            last = m->status;
        }
        if (m->status == status && !*seen) {
            *seen = true;
            *committed = false;
            memcpy(seen_id, m->outcome_id, ACC_LOGROW_SHARE_BYTES);
            *seen_seq = m->seq;
        }
    }
    return last;
}

outcome_t *outcome_new(void)
{
    return acc_xcalloc(1, sizeof(outcome_t));
}

void outcome_destroy(outcome_t **self_p)
{
    if (self_p == NULL || *self_p == NULL) {
        return;
    }
    outcome_t *self = *self_p;
    free(self->staged);
    free(self);
    *self_p = NULL;
}

static void s_remember(outcome_t *self, const uint8_t *share_id, unsigned status,
                       const uint8_t *outcome_id, int64_t seq)
{
    if (self->count == self->cap) {
        self->cap = self->cap == 0 ? 16 : self->cap * 2;
        self->staged = acc_xrealloc(self->staged, self->cap * sizeof(*self->staged));
    }
    staged_outcome_t *m = &self->staged[self->count++];
    memcpy(m->share_id, share_id, sizeof(m->share_id));
    m->status = status;
    memcpy(m->outcome_id, outcome_id, sizeof(m->outcome_id));
    m->seq = seq;
}

void outcome_settle(outcome_t *self, const ledger_t *ledger)
{
    uint8_t hash[ACC_LOGROW_HASH_BYTES];
    int64_t head = ledger_head(ledger, hash);
    int64_t staged = ledger_staged_head(ledger);
    size_t kept = 0;
    for (size_t i = 0; i < self->count; i++) {
        /* committed rows are read from the log now; rows above the staged head
         * went with a failed batch */
        if (self->staged[i].seq > head && self->staged[i].seq <= staged) {
            self->staged[kept++] = self->staged[i];
        }
    }
    self->count = kept;
}

/* Logs the outcome and queues its answer and, for to_sender, its notice. */
static void s_accept(s_outcome_t *o, const acc_outcome_decision_t *d)
{
    const char *status = acc_outcome_status_name(d->status);
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    char outcome_id[37];
    acc_uuid_format(outcome_id, row.share_id);
    char at[BROKER_AT_TEXT_MAX];
    broker_now_text(at);
    char *rules[ACC_LOGROW_MAX_RULES];
    for (size_t i = 0; i < o->rep.rule_count; i++) {
        rules[i] = acc_pb_str(o->rep.rule_ids[i]);
    }
    Accord__V1__OutcomeNotice notice = ACCORD__V1__OUTCOME_NOTICE__INIT;
    notice.outcome_id = outcome_id;
    notice.share_id = o->share_text;
    notice.record_id = acc_pb_str(o->rep.record_id);
    notice.record_type = o->rep.record_type;
    notice.to_agency = o->peer->id;
    notice.status = acc_pb_str(status);
    notice.n_fields = o->req->n_fields;
    notice.fields = o->req->fields;
    notice.at = at;
    notice.n_rule_ids = o->rep.rule_count;
    notice.rule_ids = rules;
    size_t len = accord__v1__outcome_notice__get_packed_size(&notice);
    uint8_t *plain = acc_xmalloc(len > 0 ? len : 1);
    (void)accord__v1__outcome_notice__pack(&notice, plain);

    row.event = "outcome";
    row.from_agency = o->peer->id;
    row.to_agency = d->to_sender ? o->rep.from_agency : NULL;
    row.record_type = o->rep.record_type;
    row.record_id = o->rep.record_id;
    row.subject_tag = o->rep.has_tag ? o->rep.subject_tag : NULL;
    row.rule_count = o->rep.rule_count;
    memcpy(row.rule_ids, o->rep.rule_ids, sizeof(row.rule_ids));
    row.purpose = o->rep.purpose;
    row.lawful_basis = o->rep.lawful_basis;
    row.reason = status;
    row.agreement_hash = acc_policy_hash(o->policy);
    row.refers_to = o->share_id;
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    memcpy(id, row.share_id, sizeof(id));
    int64_t seq = ledger_stage(o->ledger, &row, plain, len);
    sodium_memzero(plain, len); /* the outcome's fields */
    free(plain);
    s_remember(o->table, o->share_id, d->status, id, seq);

    size_t publisher = 0;
    if (d->to_sender && acc_policy_find_agency(o->policy, o->rep.from_agency, &publisher)) {
        Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
        env.body_case = ACCORD__V1__ENVELOPE__BODY_OUTCOME_NOTICE;
        env.outcome_notice = &notice;
        out_t *out = broker_queue(o->self, OUT_DELIVER, o->peer, &env);
        out->from_agency = o->peer->who.index;
        out->to_agency = publisher;
        out->record_type = acc_xstrdup(LEDGER_STREAM_OUTCOME);
        out->seq = seq;
        memcpy(out->share_id, id, sizeof(out->share_id));
        delivery_note_share(o->self, o->rep.from_agency, LEDGER_STREAM_OUTCOME, seq);
    }
    acc_log_info("outcome", "%s reported %s on a share from %s (seq %lld)%s", o->peer->id, status,
                 o->rep.from_agency, (long long)seq,
                 d->to_sender ? "; the publisher will be told" : "");
    s_queue_result(o, ACCORD__V1__ERROR_CODE__OK, "logged", id, seq, OUT_RESULT);
}

/* Decides an outcome whose share was found and is the reporter's. */
static void s_decide(s_outcome_t *o)
{
    char today[11];
    broker_today(today);
    if (!acc_policy_is_in_force(o->policy, today)) {
        s_refuse(o, ACCORD__V1__ERROR_CODE__AGREEMENT_NOT_IN_FORCE,
                 "the agreement is not in force today");
        return;
    }
    unsigned status = acc_outcome_status_parse(acc_pb_str(o->req->status));
    bool seen = false;
    bool committed = false;
    uint8_t seen_id[ACC_LOGROW_SHARE_BYTES];
    int64_t seen_seq = 0;
    unsigned last = s_last_status(o, status, &seen, &committed, seen_id, &seen_seq);
    if (seen && committed) {
        /* the same report again (a retry): its first answer, nothing logged */
        s_queue_result(o, ACCORD__V1__ERROR_CODE__OK, "already logged", seen_id, seen_seq,
                       OUT_REPLY);
        return;
    }
    if (seen) {
        s_queue_result(o, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                       "the same outcome is still being logged; retry", NULL, 0, OUT_REPLY);
        return;
    }
    acc_outcome_decision_t d;
    acc_policy_decide_outcome(o->policy, o->rep.rule_ids, o->rep.rule_count,
                              acc_pb_str(o->req->status), last, o->req->fields, o->req->n_fields,
                              &d);
    if (d.code != ACCORD__V1__ERROR_CODE__OK) {
        s_refuse(o, d.code, d.reason);
        return;
    }
    s_accept(o, &d);
}

void outcome_on_outcome(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    if (peer->who.auditor) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__NOT_PERMITTED,
                           "auditors do not report outcomes");
        return;
    }
    s_outcome_t o = { .self = self,
                      .policy = broker_policy(self),
                      .ledger = broker_ledger(self),
                      .table = broker_outcomes(self),
                      .peer = peer,
                      .env = env,
                      .req = env->outcome };
    acc_err_t err;
    o.has_share_id = acc_uuid_parse(o.share_id, acc_pb_str(o.req->share_id), &err) == ACC_OK;
    if (!o.has_share_id) {
        (void)snprintf(o.share_text, sizeof(o.share_text), "%s", acc_pb_str(o.req->share_id));
        s_refuse(&o, ACCORD__V1__ERROR_CODE__UNKNOWN_SHARE, "share_id is not a share id (a UUID)");
        return;
    }
    acc_uuid_format(o.share_text, o.share_id);
    char why[BROKER_BUDGET_WHY_MAX];
    if (!broker_take(self, peer, BROKER_BUDGET_READS, why)) {
        /* not decided, so not logged: the agent sends it again */
        s_queue_result(&o, ACCORD__V1__ERROR_CODE__UNAVAILABLE, why, NULL, 0, OUT_REPLY);
        return;
    }
    if (ledger_find_reported(o.ledger, o.share_id, &o.rep, &err) != ACC_OK) {
        acc_log_warn("outcome", "an outcome from %s not decided: %s", peer->id, err.msg);
        s_queue_result(&o, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                       "the sharing log cannot be read just now; retry", NULL, 0, OUT_REPLY);
        return;
    }
    if (!o.rep.found) {
        s_refuse(&o, ACCORD__V1__ERROR_CODE__UNKNOWN_SHARE, "no share has this id");
    } else if (strcmp(o.rep.to_agency, peer->id) != 0) {
        s_refuse(&o, ACCORD__V1__ERROR_CODE__NOT_RECIPIENT,
                 "only the agency the share went to may report its outcome");
    } else {
        s_decide(&o);
    }
    ledger_reported_clear(&o.rep);
}
