/* publish.c - one Publish: check, decide under the agreement, stage rows, queue answers */
#include "publish.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accord/log.h"
#include "accord/nhs.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "broker.h"
#include "delivery.h"

#define PROVENANCE_MAX 1024

/* Everything one publish produces, kept together until its answer is queued. */
typedef struct {
    const Accord__V1__Envelope *env;
    const Accord__V1__ChildRecord *rec;
    peer_t *peer;
    uint8_t tag[ACC_LOGROW_TAG_BYTES];
    bool has_tag;
    char nhs[ACC_NHS_DIGITS + 1]; /* normalised NHS number, "" if none; wiped after */
    uint8_t content_hash[ACC_LOGROW_HASH_BYTES]; /* of the record as published */
    int64_t first_seq;
    bool accepting; /* its first row carries content_hash (idempotency) */
    Accord__V1__PublishResult result;
    Accord__V1__Recipient recipients[ACC_POLICY_MAX_RECIPIENTS];
    Accord__V1__Recipient *recipient_ptrs[ACC_POLICY_MAX_RECIPIENTS];
    char share_ids[ACC_POLICY_MAX_RECIPIENTS][37];
    char *rule_ptrs[ACC_POLICY_MAX_RECIPIENTS][ACC_POLICY_MAX_RULES_PER_RECIPIENT];
    Accord__V1__Withheld withheld[ACC_POLICY_MAX_RECIPIENTS];
    Accord__V1__Withheld *withheld_ptrs[ACC_POLICY_MAX_RECIPIENTS];
} s_publish_t;

/* The record's NHS number normalised once (recipients get it in that form), and
 * its tag. */
static void s_subject_tag(const broker_t *self, s_publish_t *p)
{
    const Accord__V1__Subject *subject = p->rec->subject;
    acc_err_t ignored;
    if (subject == NULL || subject->nhs_number[0] == '\0' ||
        acc_nhs_check(p->nhs, subject->nhs_number, &ignored) != ACC_OK) {
        p->nhs[0] = '\0';
    }
    p->has_tag =
        subject != NULL && broker_subject_tag(self, p->peer->id, p->nhs, subject->local_id, p->tag);
}

/* Only text that passed validation goes into the log or back to the publisher:
 * the record's own id and type when valid, else NULL. */
static const char *s_record_id(const Accord__V1__ChildRecord *rec)
{
    return acc_validate_is_record_id(rec->record_id) ? rec->record_id : NULL;
}

static const char *s_record_type(const Accord__V1__ChildRecord *rec)
{
    return acc_validate_is_record_type(rec->record_type) ? rec->record_type : NULL;
}

static const char *s_echo_id(const Accord__V1__ChildRecord *rec)
{
    const char *id = s_record_id(rec);
    return id != NULL ? id : "";
}

static void s_row_init(const broker_t *self, const s_publish_t *p, acc_logrow_t *row,
                       const char *event)
{
    memset(row, 0, sizeof(*row));
    acc_uuid_time_ordered(row->share_id);
    row->event = event;
    row->from_agency = p->peer->id;
    row->record_type = s_record_type(p->rec);
    row->record_id = s_record_id(p->rec);
    row->subject_tag = p->has_tag ? p->tag : NULL;
    row->consent = acc_pb_consent_name(p->rec->consent);
    row->agreement_hash = acc_policy_hash(broker_policy(self));
}

/* Stages row with plain (a packed record) encrypted as its payload. */
static int64_t s_stage(broker_t *self, s_publish_t *p, acc_logrow_t *row,
                       const Accord__V1__ChildRecord *plain)
{
    size_t len = accord__v1__child_record__get_packed_size(plain);
    uint8_t *buf = acc_xmalloc(len);
    (void)accord__v1__child_record__pack(plain, buf);
    if (p->accepting && p->first_seq == 0) {
        row->content_hash = p->content_hash; /* a repeat is answered from this row */
    }
    int64_t seq = ledger_stage(broker_ledger(self), row, buf, len);
    sodium_memzero(buf, len);
    free(buf);
    if (p->first_seq == 0) {
        p->first_seq = seq;
    }
    return seq;
}

static void s_queue_result(broker_t *self, s_publish_t *p, Accord__V1__ErrorCode code,
                           const char *reason)
{
    p->result.record_id = acc_pb_str(s_echo_id(p->rec));
    p->result.code = code;
    p->result.reason = acc_pb_str(reason);
    p->result.seq = (uint64_t)p->first_seq;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = p->env->correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT;
    env.publish_result = &p->result;
    out_t *o = broker_queue(self, OUT_RESULT, p->peer, &env);
    o->record_id = acc_xstrdup(s_echo_id(p->rec));
}

static void s_refuse(broker_t *self, s_publish_t *p, Accord__V1__ErrorCode code, const char *reason)
{
    acc_logrow_t row;
    s_row_init(self, p, &row, "refused");
    row.error_code = acc_pb_code_name(code);
    row.reason = reason;
    (void)s_stage(self, p, &row, p->rec);
    s_queue_result(self, p, code, reason);
    acc_log_info("publish", "refused record from %s: %s (%s)", p->peer->id, acc_pb_code_name(code),
                 reason);
}

/* Purposes (or lawful bases) of every rule that allowed r, distinct, joined. */
static void s_join_rules(char *out, size_t out_len, const acc_policy_t *policy,
                         const acc_recipient_t *r, bool purpose)
{
    out[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < r->rule_count; i++) {
        const char *text = purpose ? acc_policy_rule_purpose(policy, r->rules[i])
                                   : acc_policy_rule_lawful_basis(policy, r->rules[i]);
        if (strstr(out, text) != NULL) {
            continue;
        }
        int n = snprintf(out + used, out_len - used, "%s%s", used > 0 ? "; " : "", text);
        if (n < 0 || (size_t)n >= out_len - used) {
            return;
        }
        used += (size_t)n;
    }
}

static void s_fill_rules(broker_t *self, s_publish_t *p, size_t slot, const acc_recipient_t *r,
                         acc_logrow_t *row)
{
    const acc_policy_t *policy = broker_policy(self);
    for (size_t i = 0; i < r->rule_count; i++) {
        const char *id = acc_policy_rule_id(policy, r->rules[i]);
        row->rule_ids[i] = id;
        p->rule_ptrs[slot][i] = acc_pb_str(id);
    }
    row->rule_count = r->rule_count;
}

static void s_queue_deliver(broker_t *self, s_publish_t *p, const acc_recipient_t *r,
                            const acc_logrow_t *row, Accord__V1__ChildRecord *minimised)
{
    Accord__V1__Deliver deliver = ACCORD__V1__DELIVER__INIT;
    char share_id[37];
    acc_uuid_format(share_id, row->share_id);
    deliver.share_id = share_id;
    deliver.from_agency = p->peer->id;
    deliver.n_rule_ids = row->rule_count;
    deliver.rule_ids = acc_xcalloc(row->rule_count, sizeof(char *));
    for (size_t i = 0; i < row->rule_count; i++) {
        deliver.rule_ids[i] = acc_pb_str(row->rule_ids[i]);
    }
    deliver.purpose = acc_pb_str(row->purpose);
    deliver.lawful_basis = acc_pb_str(row->lawful_basis);
    deliver.agreement_hash = acc_pb_str(acc_policy_hash_hex(broker_policy(self)));
    deliver.record = minimised;
    if (r->safeguarding_override) {
        deliver.safeguarding_justification = p->rec->safeguarding_justification;
    }
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER;
    env.deliver = &deliver;
    out_t *o = broker_queue(self, OUT_DELIVER, p->peer, &env);
    free(deliver.rule_ids);
    o->from_agency = p->peer->who.index;
    o->to_agency = r->agency;
    o->record_type = acc_xstrdup(p->rec->record_type);
    o->record_id = acc_xstrdup(p->rec->record_id);
    o->seq = row->seq;
    memcpy(o->share_id, row->share_id, sizeof(o->share_id));
    /* Pending until acknowledged, whether or not the recipient is connected now:
     * the shared row itself is what is read back for it. */
    delivery_note_share(self, row->to_agency, p->rec->record_type, row->seq);
}

/* One recipient: a withheld row, or a shared row and a delivery of the record
 * minimised for it. Both payloads hold what the recipient would see. */
static void s_decide_recipient(broker_t *self, s_publish_t *p, const acc_decision_t *d,
                               const acc_recipient_t *r)
{
    const acc_policy_t *policy = broker_policy(self);
    acc_projection_t projection;
    acc_policy_project(policy, d, r, p->rec, &projection);
    if (projection.subject.nhs_number[0] != '\0') {
        /* Recipients get the number in one form, whatever spacing the publisher used. */
        projection.subject.nhs_number = p->nhs;
    }
    char purpose[PROVENANCE_MAX];
    char basis[PROVENANCE_MAX];
    s_join_rules(purpose, sizeof(purpose), policy, r, true);
    s_join_rules(basis, sizeof(basis), policy, r, false);
    acc_logrow_t row;
    s_row_init(self, p, &row, r->withheld ? "withheld" : "shared");
    row.to_agency = acc_policy_agency_id(policy, r->agency);
    row.purpose = purpose;
    row.lawful_basis = basis;
    const char *agency = row.to_agency;
    if (r->withheld) {
        row.reason = r->withheld_reason;
        (void)s_stage(self, p, &row, &projection.record);
        Accord__V1__Withheld *w = &p->withheld[p->result.n_withheld];
        accord__v1__withheld__init(w);
        w->agency_id = acc_pb_str(agency);
        w->reason = acc_pb_str(r->withheld_reason);
        p->withheld_ptrs[p->result.n_withheld++] = w;
        return;
    }
    size_t slot = p->result.n_recipients;
    s_fill_rules(self, p, slot, r, &row);
    if (r->safeguarding_override) {
        row.reason = "shared without consent on safeguarding grounds; justification in payload";
    }
    (void)s_stage(self, p, &row, &projection.record);
    s_queue_deliver(self, p, r, &row, &projection.record);
    Accord__V1__Recipient *out = &p->recipients[slot];
    accord__v1__recipient__init(out);
    out->agency_id = acc_pb_str(agency);
    acc_uuid_format(p->share_ids[slot], row.share_id);
    out->share_id = p->share_ids[slot];
    out->n_rule_ids = r->rule_count;
    out->rule_ids = p->rule_ptrs[slot];
    p->recipient_ptrs[p->result.n_recipients++] = out;
}

/* An answer that wrote no row: it may leave before the batch commits. */
static void s_reply_result(broker_t *self, s_publish_t *p, Accord__V1__ErrorCode code,
                           const char *reason)
{
    p->result.record_id = acc_pb_str(s_echo_id(p->rec));
    p->result.code = code;
    p->result.reason = acc_pb_str(reason);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = p->env->correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT;
    env.publish_result = &p->result;
    (void)broker_queue(self, OUT_REPLY, p->peer, &env);
}

/* The first result as it is rebuilt, row by row. */
typedef struct {
    s_publish_t *p;
    char *rules[ACC_POLICY_MAX_RECIPIENTS];    /* copies the rule ids point into */
    char *texts[ACC_POLICY_MAX_RECIPIENTS][3]; /* agency, share id, reason */
    size_t rows;
} s_first_t;

/* Fills one recipient or withheld entry of the first result from one log row. */
static void s_first_row(void *ctx, const ledger_result_row_t *row)
{
    s_first_t *f = ctx;
    s_publish_t *p = f->p;
    if (f->rows == ACC_POLICY_MAX_RECIPIENTS) {
        return;
    }
    if (f->rows == 0) {
        p->result.seq = (uint64_t)row->seq;
    }
    char **texts = f->texts[f->rows];
    texts[0] = acc_xstrdup(row->to_agency);
    texts[1] = acc_xstrdup(row->share_id);
    texts[2] = acc_xstrdup(row->reason);
    char **rules = &f->rules[f->rows++];
    if (row->withheld) {
        Accord__V1__Withheld *w = &p->withheld[p->result.n_withheld];
        accord__v1__withheld__init(w);
        w->agency_id = texts[0];
        w->reason = texts[2];
        p->withheld_ptrs[p->result.n_withheld++] = w;
        return;
    }
    size_t slot = p->result.n_recipients;
    Accord__V1__Recipient *r = &p->recipients[slot];
    accord__v1__recipient__init(r);
    r->agency_id = texts[0];
    r->share_id = texts[1];
    *rules = acc_xstrdup(row->rule_ids);
    char *save = NULL;
    for (char *id = strtok_r(*rules, ",", &save);
         id != NULL && r->n_rule_ids < ACC_POLICY_MAX_RULES_PER_RECIPIENT;
         id = strtok_r(NULL, ",", &save)) {
        p->rule_ptrs[slot][r->n_rule_ids++] = id;
    }
    r->rule_ids = p->rule_ptrs[slot];
    p->recipient_ptrs[p->result.n_recipients++] = r;
}

/* The same record again: the first result, rebuilt from the log; nothing shared. */
static void s_answer_first(broker_t *self, s_publish_t *p)
{
    acc_err_t err;
    s_first_t first = { .p = p };
    p->result.recipients = p->recipient_ptrs;
    p->result.withheld = p->withheld_ptrs;
    char why[BROKER_BUDGET_WHY_MAX];
    if (!broker_take(self, p->peer, BROKER_BUDGET_READS, why)) {
        s_reply_result(self, p, ACCORD__V1__ERROR_CODE__UNAVAILABLE, why);
        return;
    }
    if (ledger_first_result(broker_ledger(self), p->peer->id, p->rec->record_id, s_first_row,
                            &first, &err) != ACC_OK) {
        s_reply_result(self, p, ACCORD__V1__ERROR_CODE__UNAVAILABLE, err.msg);
    } else {
        s_reply_result(self, p, ACCORD__V1__ERROR_CODE__OK,
                       "already shared: this is the first result");
        acc_log_info("publish", "repeated record from %s answered with its first result seq=%llu",
                     p->peer->id, (unsigned long long)p->result.seq);
    }
    for (size_t i = 0; i < first.rows; i++) {
        free(first.rules[i]);
        for (size_t k = 0; k < 3; k++) {
            free(first.texts[i][k]);
        }
    }
}

/* Decides what a record seen before gets: true when the answer is already queued,
 * false to go on (with *code set to DUPLICATE_CONFLICT when the content differs). */
static bool s_check_repeat(broker_t *self, s_publish_t *p, Accord__V1__ErrorCode *code,
                           acc_err_t *reason)
{
    size_t len = accord__v1__child_record__get_packed_size(p->rec);
    uint8_t *packed = acc_xmalloc(len);
    (void)accord__v1__child_record__pack(p->rec, packed);
    (void)crypto_generichash(p->content_hash, sizeof(p->content_hash), packed, len, NULL, 0);
    sodium_memzero(packed, len);
    free(packed);
    ledger_publish_t first;
    acc_err_t err;
    if (ledger_find_publish(broker_ledger(self), p->peer->id, p->rec->record_id, &first, &err) !=
        ACC_OK) {
        s_reply_result(self, p, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                       "the sharing log cannot be read just now; retry");
        return true;
    }
    /* a repeat while replaying reached the database unasked and cost its batch */
    peers_note_publish(p->peer, first.found, first.found && broker_replaying(self));
    if (!first.found) {
        return false;
    }
    if (sodium_memcmp(first.hash, p->content_hash, sizeof(first.hash)) != 0) {
        *code = ACCORD__V1__ERROR_CODE__DUPLICATE_CONFLICT;
        (void)acc_err_set(reason, ACC_ERR_INVALID,
                          "record_id was already published with other content");
        return false;
    }
    if (first.staged) {
        s_reply_result(self, p, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                       "the same record is being committed; retry for its result");
    } else {
        s_answer_first(self, p);
    }
    return true;
}

static void s_share(broker_t *self, s_publish_t *p, const acc_decision_t *d)
{
    p->result.recipients = p->recipient_ptrs;
    p->result.withheld = p->withheld_ptrs;
    p->accepting = true;
    for (size_t i = 0; i < d->recipient_count; i++) {
        s_decide_recipient(self, p, d, &d->recipients[i]);
    }
    s_queue_result(self, p, ACCORD__V1__ERROR_CODE__OK,
                   p->result.n_recipients > 0 ? "shared" : "every recipient was withheld");
    ledger_note_publish(broker_ledger(self), p->peer->id, p->rec->record_id, p->content_hash);
    acc_log_info("publish", "accepted record from %s type=%s shared=%zu withheld=%zu seq=%lld",
                 p->peer->id, p->rec->record_type, p->result.n_recipients, p->result.n_withheld,
                 (long long)p->first_seq);
}

void publish_on_publish(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    const Accord__V1__Publish *pub = env->publish;
    if (peer->who.auditor) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__NOT_PERMITTED,
                           "auditors may not publish records");
        return;
    }
    if (pub->record == NULL) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__MALFORMED,
                           "Publish carries no record");
        return;
    }
    s_publish_t *p = acc_xcalloc(1, sizeof(*p));
    p->env = env;
    p->rec = pub->record;
    p->peer = peer;
    accord__v1__publish_result__init(&p->result);
    s_subject_tag(self, p);
    acc_err_t reason;
    acc_err_clear(&reason);
    Accord__V1__ErrorCode code = ACCORD__V1__ERROR_CODE__OK;
    if (pub->from_agency[0] != '\0' && strcmp(pub->from_agency, peer->id) != 0) {
        code = ACCORD__V1__ERROR_CODE__SPOOFED;
        (void)acc_err_set(&reason, ACC_ERR_PERMISSION,
                          "the record names another agency as its publisher");
    } else {
        code = acc_validate_record(p->rec, &reason);
    }
    if (code == ACCORD__V1__ERROR_CODE__OK && s_check_repeat(self, p, &code, &reason)) {
        sodium_memzero(p, sizeof(*p));
        free(p);
        return;
    }
    acc_decision_t *d = acc_xmalloc(sizeof(*d));
    if (code == ACCORD__V1__ERROR_CODE__OK) {
        char today[11];
        broker_today(today);
        acc_policy_decide(broker_policy(self), peer->who.index, today, p->rec, d);
        code = d->code;
        (void)acc_err_set(&reason, ACC_ERR_INVALID, "%s", d->reason);
    }
    if (code == ACCORD__V1__ERROR_CODE__OK) {
        s_share(self, p, d);
    } else {
        s_refuse(self, p, code, reason.msg);
    }
    free(d);
    sodium_memzero(p, sizeof(*p));
    free(p);
}

void publish_refuse_unwritable(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    static const char reason[] = "the sharing log refused this record's data";
    s_publish_t *p = acc_xcalloc(1, sizeof(*p));
    p->env = env;
    p->rec = env->publish->record;
    p->peer = peer;
    accord__v1__publish_result__init(&p->result);
    acc_logrow_t row;
    s_row_init(self, p, &row, "refused");
    row.record_type = NULL;
    row.record_id = NULL;
    row.error_code = acc_pb_code_name(ACCORD__V1__ERROR_CODE__INVALID_RECORD);
    row.reason = reason;
    (void)s_stage(self, p, &row, p->rec);
    s_queue_result(self, p, ACCORD__V1__ERROR_CODE__INVALID_RECORD, reason);
    acc_log_warn("publish", "refused record from %s: the sharing log refused its data", peer->id);
    sodium_memzero(p, sizeof(*p));
    free(p);
}
