/* audit.c - auditors' questions about the sharing log, answered a page at a time;
 * every question is itself logged as a `queried` row */
#include "audit.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"
#include "accord/nhs.h"
#include "accord/policy_outcome.h"
#include "broker.h"
#include "ledger_audit.h"

/* A page holds at most AUDIT_PAGE_MAX rows and AUDIT_PAGE_BYTES of them, so that
 * with payloads it still fits an auditor's default max_message_bytes (1 MiB). */
#define AUDIT_PAGE_MAX   200
#define AUDIT_PAGE_BYTES ((size_t)768 * 1024)
#define AUDIT_VALUE_MAX  64 /* bytes of one filter value the queried row keeps */

/* An auditor's question, checked, as the ledger takes it; and as the queried
 * row names it. */
typedef struct {
    ledger_audit_filter_t filter;
    uint8_t tag[ACC_LOGROW_TAG_BYTES];
    bool has_tag;
    const char **outcome_rules; /* owned array, borrowed ids */
    char summary[768];          /* the filter, for the queried row: never the NHS number */
} s_query_t;

/* The length of the longest prefix of text of at most max bytes that ends on a
 * character boundary: a cut inside a UTF-8 sequence would leave bytes PostgreSQL
 * refuses, and with them the whole batch the queried row is committed in. */
static size_t s_utf8_prefix(const char *text, size_t max)
{
    size_t len = strnlen(text, max + 1);
    if (len <= max) {
        return len;
    }
    len = max;
    while (len > 0 && ((unsigned char)text[len] & 0xC0U) == 0x80U) {
        len--; /* text[len] continues a character that began before it */
    }
    return len;
}

/* Names a non-empty filter value in the summary. */
static void s_note(s_query_t *q, const char *label, const char *value)
{
    if (value[0] == '\0') {
        return;
    }
    size_t len = strlen(q->summary);
    (void)snprintf(q->summary + len, sizeof(q->summary) - len, "%s%s=%.*s", len > 0 ? " " : "",
                   label, (int)s_utf8_prefix(value, AUDIT_VALUE_MAX), value);
}

/* The child is found by the same keyed tag the publish wrote; the number itself
 * goes no further than this function, and the summary names the tag. */
static bool s_child_tag(const broker_t *self, s_query_t *q, const char *child, acc_err_t *err)
{
    char nhs[ACC_NHS_DIGITS + 1];
    if (acc_nhs_check(nhs, child, err) != ACC_OK) {
        return false;
    }
    (void)broker_subject_tag(self, "", nhs, "", q->tag);
    sodium_memzero(nhs, sizeof(nhs));
    q->has_tag = true;
    q->filter.subject_tag = q->tag;
    char hex[17];
    (void)sodium_bin2hex(hex, sizeof(hex), q->tag, (sizeof(hex) - 1) / 2);
    (void)snprintf(q->summary, sizeof(q->summary), "child=tag:%s", hex);
    sodium_memzero(hex, sizeof(hex));
    return true;
}

/* Referrals waiting too long: shares under a rule of the agreement in force that
 * takes outcomes, older than days, on which nothing has been reported. The
 * summary shows the rules as the text[] literal the query's parameter was, up to
 * AUDIT_VALUE_MAX bytes. */
static void s_overdue(const acc_policy_t *policy, s_query_t *q, uint32_t days)
{
    size_t rules = acc_policy_rule_count(policy);
    q->outcome_rules = acc_xcalloc(rules + 1, sizeof(*q->outcome_rules));
    char shown[2 * AUDIT_VALUE_MAX + 32] = "{";
    size_t used = 1;
    for (size_t r = 0; r < rules; r++) {
        const char *id = acc_policy_rule_id(policy, r);
        if (!acc_policy_rule_outcomes(policy, r, NULL, NULL)) {
            continue;
        }
        q->outcome_rules[q->filter.outcome_rule_count++] = id;
        if (used + strlen(id) + 4 < sizeof(shown)) {
            used += (size_t)snprintf(shown + used, sizeof(shown) - used, "%s\"%s\"",
                                     used > 1 ? "," : "", id);
        }
    }
    shown[used++] = '}';
    shown[used] = '\0';
    q->filter.outcome_rules = q->outcome_rules;
    q->filter.overdue_days = days;
    char days_text[16];
    (void)snprintf(days_text, sizeof(days_text), "%u", days);
    s_note(q, "overdue_days", days_text);
    s_note(q, "taking_outcomes", shown);
}

static void s_filter(s_query_t *q, const Accord__V1__AuditQuery *a)
{
    ledger_audit_filter_t *f = &q->filter;
    f->after_seq = a->after_seq;
    f->agency = a->agency;
    f->from_agency = a->from_agency;
    f->to_agency = a->to_agency;
    f->record_type = a->record_type;
    f->event = a->event;
    f->rule = a->rule;
    f->since = a->since;
    f->until = a->until;
    f->share_id = a->share_id;
    f->payloads = a->payloads;
    f->max_bytes = AUDIT_PAGE_BYTES;
    f->limit = a->limit == 0 || a->limit > AUDIT_PAGE_MAX ? AUDIT_PAGE_MAX : a->limit;
    s_note(q, "agency", a->agency);
    s_note(q, "from", a->from_agency);
    s_note(q, "to", a->to_agency);
    s_note(q, "type", a->record_type);
    s_note(q, "event", a->event);
    s_note(q, "rule", a->rule);
    s_note(q, "since", a->since);
    s_note(q, "until", a->until);
    s_note(q, "share", a->share_id);
}

/* Checks the question and turns it into the ledger's filter; false with err set
 * (the first reason) when a value is malformed. */
static bool s_check(const broker_t *self, s_query_t *q, const Accord__V1__AuditQuery *a,
                    acc_err_t *err)
{
    memset(q, 0, sizeof(*q));
    if (a->child[0] != '\0' && !s_child_tag(self, q, a->child, err)) {
        return false;
    }
    s_filter(q, a);
    if (a->overdue_days > 0) {
        s_overdue(broker_policy(self), q, a->overdue_days);
    }
    uint8_t share[ACC_LOGROW_SHARE_BYTES];
    if (a->share_id[0] != '\0' && acc_uuid_parse(share, a->share_id, err) != ACC_OK) {
        return false;
    }
    if (strspn(a->since, "0123456789-:T.Z+ ") != strlen(a->since) ||
        strspn(a->until, "0123456789-:T.Z+ ") != strlen(a->until)) {
        (void)acc_err_set(err, ACC_ERR_INVALID, "since and until are ISO 8601 dates or times");
        return false;
    }
    if (q->summary[0] == '\0') {
        (void)snprintf(q->summary, sizeof(q->summary), "everything");
    }
    return true;
}

static void s_query_clear(s_query_t *q)
{
    free(q->outcome_rules);
    q->outcome_rules = NULL;
}

static char *s_copy(const char *text)
{
    return acc_xstrdup(text != NULL ? text : ""); /* NULL as ""; null_columns tells them apart */
}

static ProtobufCBinaryData s_copy_bytes(ledger_bytes_t bytes)
{
    ProtobufCBinaryData out = { 0, NULL };
    if (bytes.len == 0) {
        return out;
    }
    out.data = acc_xmalloc(bytes.len);
    memcpy(out.data, bytes.data, bytes.len);
    out.len = bytes.len;
    return out;
}

static void s_fill_strings(Accord__V1__AuditRow *r, const ledger_audit_row_t *row)
{
    r->share_id = s_copy(row->share_id);
    r->at = s_copy(row->at);
    r->event = s_copy(row->event);
    r->from_agency = s_copy(row->from_agency);
    r->to_agency = s_copy(row->to_agency);
    r->record_type = s_copy(row->record_type);
    r->record_id = s_copy(row->record_id);
    r->purpose = s_copy(row->purpose);
    r->lawful_basis = s_copy(row->lawful_basis);
    r->consent = s_copy(row->consent);
    r->error_code = s_copy(row->error_code);
    r->reason = s_copy(row->reason);
    r->refers_to = s_copy(row->refers_to);
    /* the string columns whose NULL the hash chain distinguishes from "", bit by bit */
    const char *const nullable[] = { row->to_agency,  row->record_type,  row->record_id,
                                     row->purpose,    row->lawful_basis, row->consent,
                                     row->error_code, row->reason,       row->from_agency };
    for (size_t k = 0; k < sizeof(nullable) / sizeof(nullable[0]); k++) {
        r->null_columns |= nullable[k] == NULL ? 1U << k : 0;
    }
}

static void s_fill_row(Accord__V1__AuditRow *r, const ledger_audit_row_t *row, bool payloads)
{
    accord__v1__audit_row__init(r);
    r->seq = (uint64_t)row->seq;
    r->at_us = row->at_us;
    s_fill_strings(r, row);
    r->subject_tag = s_copy_bytes(row->subject_tag);
    r->agreement_hash = s_copy_bytes(row->agreement_hash);
    r->key_epoch = row->key_epoch;
    r->signature = s_copy_bytes(row->signature);
    r->prev_hash = s_copy_bytes(row->prev_hash);
    r->entry_hash = s_copy_bytes(row->entry_hash);
    r->content_hash = s_copy_bytes(row->content_hash);
    if (payloads) {
        r->nonce = s_copy_bytes(row->nonce);
        r->payload = s_copy_bytes(row->payload);
    }
    r->n_acked_seqs = row->acked_count;
    r->acked_seqs = row->acked_count > 0 ? acc_xcalloc(row->acked_count, sizeof(int64_t)) : NULL;
    for (size_t i = 0; i < row->acked_count; i++) {
        r->acked_seqs[i] = row->acked_seqs[i];
    }
    r->n_rule_ids = row->rule_count;
    r->rule_ids = acc_xcalloc(row->rule_count + 1, sizeof(char *));
    for (size_t i = 0; i < row->rule_count; i++) {
        r->rule_ids[i] = acc_xstrdup(row->rule_ids[i]);
    }
}

/* Wiped before it is freed: what came from the log leaves no copy in the heap. */
static void s_free_bytes(ProtobufCBinaryData *b)
{
    if (b->data != NULL) {
        sodium_memzero(b->data, b->len);
    }
    free(b->data);
    b->data = NULL;
}

static void s_free_strings(Accord__V1__AuditRow *r)
{
    char *const strings[] = { r->share_id,     r->at,          r->event,      r->from_agency,
                              r->to_agency,    r->record_type, r->record_id,  r->purpose,
                              r->lawful_basis, r->consent,     r->error_code, r->reason,
                              r->refers_to };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        free(strings[i]);
    }
    for (size_t i = 0; i < r->n_rule_ids; i++) {
        free(r->rule_ids[i]);
    }
    free(r->rule_ids);
}

static void s_free_row(Accord__V1__AuditRow *r)
{
    s_free_bytes(&r->subject_tag);
    s_free_bytes(&r->agreement_hash);
    s_free_bytes(&r->signature);
    s_free_bytes(&r->prev_hash);
    s_free_bytes(&r->entry_hash);
    s_free_bytes(&r->nonce);
    s_free_bytes(&r->payload);
    s_free_bytes(&r->content_hash);
    free(r->acked_seqs);
    s_free_strings(r);
}

static void s_log_queried(broker_t *self, const peer_t *peer, const s_query_t *q, size_t rows,
                          bool more)
{
    char reason[1024];
    (void)snprintf(reason, sizeof(reason), "%s; after seq %llu; %zu row(s)%s", q->summary,
                   (unsigned long long)q->filter.after_seq, rows, more ? ", more follow" : "");
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "queried";
    row.from_agency = peer->id;
    row.subject_tag = q->has_tag ? q->tag : NULL;
    row.reason = reason;
    row.agreement_hash = acc_policy_hash(broker_policy(self));
    (void)ledger_stage(broker_ledger(self), &row, NULL, 0);
}

/* One page of rows for the asker, and the keys to its payloads. */
typedef struct {
    Accord__V1__AuditRow **rows;
    int64_t *epochs; /* each row's key epoch */
    size_t n;
    size_t bytes;
    bool more;
    bool payloads;
    Accord__V1__SealedEpochKey **keys;
    size_t n_keys;
} s_page_t;

/* Takes a row unless it would take the page past AUDIT_PAGE_BYTES (the first row
 * always goes: one row is at most a record's payload, under max_message_bytes);
 * a page cut short says more. */
static bool s_on_row(void *ctx, const ledger_audit_row_t *row)
{
    s_page_t *page = ctx;
    Accord__V1__AuditRow *r = acc_xmalloc(sizeof(*r));
    s_fill_row(r, row, page->payloads);
    size_t row_bytes = accord__v1__audit_row__get_packed_size(r) + 8; /* tag, length */
    if (page->n > 0 && page->bytes + row_bytes > AUDIT_PAGE_BYTES) {
        s_free_row(r);
        free(r);
        return false;
    }
    page->bytes += row_bytes;
    page->epochs[page->n] = row->key_epoch;
    page->rows[page->n++] = r;
    return true;
}

static void s_on_key(void *ctx, const ledger_sealed_key_t *key)
{
    s_page_t *page = ctx;
    page->keys =
        acc_xrealloc(page->keys, (page->n_keys + 2) * sizeof(Accord__V1__SealedEpochKey *));
    Accord__V1__SealedEpochKey *k = acc_xmalloc(sizeof(*k));
    accord__v1__sealed_epoch_key__init(k);
    k->epoch = key->epoch;
    k->sealed_key = s_copy_bytes(key->sealed_key);
    page->keys[page->n_keys++] = k;
    page->keys[page->n_keys] = NULL;
}

static void s_free_page(s_page_t *page)
{
    for (size_t i = 0; i < page->n; i++) {
        s_free_row(page->rows[i]);
        free(page->rows[i]);
    }
    free(page->rows);
    free(page->epochs);
    for (size_t i = 0; i < page->n_keys; i++) {
        s_free_bytes(&page->keys[i]->sealed_key);
        free(page->keys[i]);
    }
    free(page->keys);
}

static void s_answer(broker_t *self, peer_t *peer, uint64_t correlation_id, const s_page_t *page)
{
    Accord__V1__AuditResult result = ACCORD__V1__AUDIT_RESULT__INIT;
    result.n_rows = page->n;
    result.rows = page->rows;
    result.more = page->more;
    result.n_keys = page->n_keys;
    result.keys = page->keys;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT;
    env.audit_result = &result;
    /* sent after the queried row commits, like every other answer */
    (void)broker_queue(self, OUT_RESULT, peer, &env);
}

/* Bytes an auditor's connection may leave unread in the kernel's send queue
 * before it is sent another page. */
#define AUDIT_UNREAD_MAX ((size_t)256 * 1024)

/* Why the auditor may not have a page now, or NULL (and the page is taken).
 *
 * A page is large and ZMQ_SNDHWM counts frames, so an auditor that asks without
 * reading could pile pages up in the broker's memory. It gets a page only when
 * its connection has taken in what it was sent (the TCP send queue, which fills
 * when the far end stops reading), and at most one page a loop turn, so pages
 * cannot queue up inside libzmq faster than TCP drains them.
 *
 * A page is also a query the loop waits for, as every agency does. The turn's
 * page is the auditor's, not the connection's: with one a connection, a key
 * holding its 16 connections would make each turn wait for 16 pages. */
static const char *s_not_now(broker_t *self, const peer_t *peer)
{
    if (peers_unread_bytes(peer) > AUDIT_UNREAD_MAX) {
        return "the answers already sent have not been read: read them, then ask again (one "
               "question at a time)";
    }
    if (!broker_take_audit_turn(self, peer)) {
        return "this auditor had a page in this turn of the broker's loop, on this connection "
               "or another: ask again (an auditor's connections share one page a turn)";
    }
    return NULL;
}

void audit_on_query(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    if (!peer->who.auditor) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__AUDIT_FORBIDDEN,
                           "only auditors named in the agreement may query the log");
        return;
    }
    const char *why = s_not_now(self, peer);
    if (why != NULL) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                           why);
        return;
    }
    const Accord__V1__AuditQuery *a = env->audit_query;
    s_query_t q;
    acc_err_t err;
    if (!s_check(self, &q, a, &err)) {
        s_query_clear(&q);
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__INVALID_FIELD,
                           err.msg);
        return;
    }
    ledger_t *ledger = broker_ledger(self);
    s_page_t page = { .payloads = a->payloads };
    page.rows = acc_xcalloc(q.filter.limit + 1, sizeof(Accord__V1__AuditRow *));
    page.epochs = acc_xcalloc(q.filter.limit, sizeof(*page.epochs));
    if (ledger_audit_page(ledger, &q.filter, s_on_row, &page, &page.more, &err) != ACC_OK) {
        acc_log_warn("audit", "query from %s not answered: %s", peer->id, err.msg);
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                           "the sharing log cannot be read just now (or a filter is malformed, "
                           "or the query took too long: narrow it)");
        s_free_page(&page);
        s_query_clear(&q);
        return;
    }
    if (a->payloads) {
        ledger_audit_keys_t keys = { .auditor = peer->id,
                                     .epochs = page.epochs,
                                     .epoch_count = page.n,
                                     .fn = s_on_key,
                                     .ctx = &page };
        /* a page whose keys cannot be read still goes, without them, as before */
        if (ledger_audit_epoch_keys(ledger, &keys, &err) != ACC_OK) {
            acc_log_warn("audit", "keys for %s's page not read: %s", peer->id, err.msg);
        }
    }
    s_log_queried(self, peer, &q, page.n, page.more);
    s_answer(self, peer, env->correlation_id, &page);
    acc_log_info("audit", "%s queried the log: %zu row(s)%s", peer->id, page.n,
                 page.more ? ", more" : "");
    s_free_page(&page);
    s_query_clear(&q);
}
