/* audit.c - auditors' questions about the sharing log, answered a page at a time;
 * every question is itself logged as a `queried` row */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"
#include "accord/nhs.h"
#include "accord/policy_outcome.h"
#include "broker.h"

/* A page holds at most AUDIT_PAGE_MAX rows and AUDIT_PAGE_BYTES of them, so that
 * with payloads it still fits an auditor's default max_message_bytes (1 MiB). */
#define AUDIT_PAGE_MAX   200
#define AUDIT_PAGE_BYTES ((size_t)768 * 1024)
#define AUDIT_PARAMS     16
#define AUDIT_VALUE_MAX  64 /* bytes of one filter value the queried row keeps */

static const char s_columns[] =
    "SELECT seq, share_id::text, to_char(at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), (extract(epoch FROM at) * 1000000)::bigint, event, "
    "from_agency, to_agency, record_type, record_id, encode(subject_tag, 'hex'), "
    "array_to_string(rule_ids, chr(31)), purpose, lawful_basis, consent, error_code, reason, "
    "encode(agreement_hash, 'hex'), coalesce(key_epoch, 0), encode(nonce, 'hex'), ";

/* What follows the payload column (the payload, or NULL when the auditor did not
 * ask for payloads). bytes_before counts the payload bytes of the rows before
 * each one in the page, so that a page with payloads is cut in SQL. */
static const char s_columns_tail[] =
    ", encode(signature, 'hex'), encode(prev_hash, 'hex'), "
    "encode(entry_hash, 'hex'), encode(content_hash, 'hex'), array_to_string(acked_seqs, ','), "
    "coalesce(refers_to::text, '') "
    "FROM (SELECT *, sum(coalesce(octet_length(payload), 0)) OVER (ORDER BY seq) - "
    "coalesce(octet_length(payload), 0) AS bytes_before FROM (SELECT * FROM accord_log "
    "WHERE seq > $1";

enum {
    C_SEQ,
    C_SHARE,
    C_AT,
    C_AT_US,
    C_EVENT,
    C_FROM,
    C_TO,
    C_TYPE,
    C_RECORD,
    C_TAG,
    C_RULES,
    C_PURPOSE,
    C_BASIS,
    C_CONSENT,
    C_CODE,
    C_REASON,
    C_AGREEMENT,
    C_EPOCH,
    C_NONCE,
    C_PAYLOAD,
    C_SIGNATURE,
    C_PREV,
    C_HASH,
    C_CONTENT,
    C_ACKED,
    C_REFERS,
};

/* The first batched acknowledgement (schema 0008) of each share the condition
 * `shares` selects: the first `acknowledged` row to the same agency after the share
 * that lists its seq, found through the index on (to_agency, seq) of those rows. A
 * share acknowledged in a row of its own (before 0008) is not looked for: that
 * row is found by its share id, and the walk would pass every later row. Nor is
 * one its recipient's cursor holds pending (above acked_to, not in acked_above),
 * which the walk would pass every later acknowledgement for: 2.5 s for a share
 * early in a log of 10 million rows, a few ms with the cursor. The broker moves
 * the cursor in the commit that writes the acknowledgement; verify, which
 * trusts no broker state, checks the log alone. */
#define AUDIT_BATCH_ACK(shares)                                                           \
    "SELECT (SELECT a.seq FROM accord_log a WHERE a.event = 'acknowledged' AND "          \
    "a.to_agency = s.to_agency AND a.seq > s.seq AND s.seq = ANY (a.acked_seqs) "         \
    "ORDER BY a.seq LIMIT 1) FROM accord_log s WHERE " shares " AND s.event = 'shared' "  \
    "AND NOT EXISTS (SELECT 1 FROM accord_log p WHERE p.share_id = s.share_id AND "       \
    "p.event = 'acknowledged') AND NOT EXISTS (SELECT 1 FROM accord_cursor c WHERE "      \
    "c.to_agency = s.to_agency AND c.record_type = s.record_type AND s.seq > c.acked_to " \
    "AND NOT s.seq = ANY (c.acked_above))"

/* The string columns whose NULL the hash chain distinguishes from "". */
static const int s_nullable[] = { C_TO,      C_TYPE, C_RECORD, C_PURPOSE, C_BASIS,
                                  C_CONSENT, C_CODE, C_REASON, C_FROM };

typedef struct {
    char sql[4096];
    const char *values[AUDIT_PARAMS];
    char after[24];
    char limit[16];
    char tag_hex[2 * ACC_LOGROW_TAG_BYTES + 3];
    char summary[768]; /* the filter, for the queried row: never the NHS number */
    int n;
    uint8_t tag[ACC_LOGROW_TAG_BYTES];
    bool has_tag;
    char overdue_days[16];
    char outcome_rules[4096]; /* a text[] literal */
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

/* Adds "AND <column> <op> $n<cast>" for a non-empty value, and names it in the summary. */
static void s_add(s_query_t *q, const char *value, const char *prefix, const char *suffix,
                  const char *label)
{
    if (value == NULL || value[0] == '\0' || q->n >= AUDIT_PARAMS - 1) {
        return;
    }
    q->values[q->n] = value;
    q->n++;
    size_t len = strlen(q->sql);
    (void)snprintf(q->sql + len, sizeof(q->sql) - len, " AND %s$%d%s", prefix, q->n, suffix);
    len = strlen(q->summary);
    (void)snprintf(q->summary + len, sizeof(q->summary) - len, "%s%s=%.*s", len > 0 ? " " : "",
                   label, (int)s_utf8_prefix(value, AUDIT_VALUE_MAX), value);
}

/* The child is found by the same keyed tag the publish wrote; the number itself
 * goes no further than this function. */
static bool s_child_tag(const broker_t *self, s_query_t *q, const char *child, acc_err_t *err)
{
    char nhs[ACC_NHS_DIGITS + 1];
    if (acc_nhs_check(nhs, child, err) != ACC_OK) {
        return false;
    }
    (void)broker_subject_tag(self, "", nhs, "", q->tag);
    sodium_memzero(nhs, sizeof(nhs));
    q->tag_hex[0] = '\\';
    q->tag_hex[1] = 'x';
    (void)sodium_bin2hex(q->tag_hex + 2, sizeof(q->tag_hex) - 2, q->tag, sizeof(q->tag));
    q->has_tag = true;
    return true;
}

/* Referrals waiting too long: shares under a rule of the agreement in force that
 * takes outcomes, older than days, on which nothing has been reported. */
static void s_overdue(const broker_t *self, s_query_t *q, uint32_t days)
{
    size_t used = 0;
    q->outcome_rules[used++] = '{';
    for (size_t r = 0; r < acc_policy_rule_count(self->policy); r++) {
        const char *id = acc_policy_rule_id(self->policy, r);
        if (acc_policy_rule_outcomes(self->policy, r, NULL, NULL) &&
            used + strlen(id) + 4 < sizeof(q->outcome_rules)) {
            used += (size_t)snprintf(q->outcome_rules + used, sizeof(q->outcome_rules) - used,
                                     "%s\"%s\"", used > 1 ? "," : "", id);
        }
    }
    q->outcome_rules[used++] = '}';
    q->outcome_rules[used] = '\0';
    (void)snprintf(q->overdue_days, sizeof(q->overdue_days), "%u", days);
    s_add(q, q->overdue_days, "event = 'shared' AND at < now() - interval '1 day' * ", "::int",
          "overdue_days");
    s_add(q, q->outcome_rules, "rule_ids && ",
          "::text[] AND NOT EXISTS (SELECT 1 FROM "
          "accord_log o WHERE o.refers_to = accord_log.share_id AND o.event = 'outcome')",
          "taking_outcomes");
}

/* The share's own rows, its acknowledgement when that was batched, and the
 * outcomes reported on it (or, given a lookup's id, the agencies told of it). */
static void s_add_share(s_query_t *q, const char *share_id)
{
    if (share_id[0] == '\0') {
        return;
    }
    s_add(q, share_id, "seq = ANY (ARRAY(SELECT seq FROM accord_log WHERE share_id = ", "::uuid",
          "share");
    size_t len = strlen(q->sql);
    (void)snprintf(q->sql + len, sizeof(q->sql) - len,
                   " UNION SELECT seq FROM accord_log WHERE refers_to = $%d::uuid"
                   " UNION " AUDIT_BATCH_ACK("s.share_id = $%d::uuid") "))",
                   q->n, q->n);
}

static bool s_build(const broker_t *self, s_query_t *q, const Accord__V1__AuditQuery *a,
                    acc_err_t *err)
{
    memset(q, 0, sizeof(*q));
    (void)snprintf(q->sql, sizeof(q->sql), "%s%s%s", s_columns,
                   a->payloads ? "encode(payload, 'hex')" : "NULL", s_columns_tail);
    (void)snprintf(q->after, sizeof(q->after), "%llu", (unsigned long long)a->after_seq);
    q->values[q->n++] = q->after;
    if (a->child[0] != '\0') {
        if (!s_child_tag(self, q, a->child, err)) {
            return false;
        }
        /* the child's rows, and the acknowledgements of what was shared about them:
         * gathered once through the subject tag and share id indexes, then paged
         * by seq (an OR here would walk the whole log) */
        s_add(q, q->tag_hex,
              "seq = ANY (ARRAY(SELECT seq FROM accord_log WHERE subject_tag = ", "::bytea",
              "child");
        size_t len = strlen(q->sql);
        (void)snprintf(q->sql + len, sizeof(q->sql) - len,
                       " UNION SELECT seq FROM accord_log WHERE share_id IN (SELECT share_id "
                       "FROM accord_log WHERE subject_tag = $%d::bytea AND event = 'shared')"
                       " UNION " AUDIT_BATCH_ACK("s.subject_tag = $%d::bytea")
                       /* a restore may have taken rows about this child with it: the
                        * answer says so rather than look complete */
                       " UNION SELECT seq FROM accord_log WHERE event = 'restored'))",
                       q->n, q->n);
        /* the summary names the tag, not the number */
        char *at = strstr(q->summary, "child=");
        if (at != NULL) {
            (void)snprintf(at, sizeof(q->summary) - (size_t)(at - q->summary), "child=tag:%.16s",
                           q->tag_hex + 2);
        }
    }
    if (a->agency[0] != '\0') {
        /* either side: the same parameter twice */
        s_add(q, a->agency, "(from_agency = ", "", "agency");
        size_t len = strlen(q->sql);
        (void)snprintf(q->sql + len, sizeof(q->sql) - len, " OR to_agency = $%d)", q->n);
    }
    s_add(q, a->from_agency, "from_agency = ", "", "from");
    s_add(q, a->to_agency, "to_agency = ", "", "to");
    s_add(q, a->record_type, "record_type = ", "", "type");
    s_add(q, a->event, "event = ", "", "event");
    /* containment, not "= ANY(rule_ids)": only this form can use the GIN index */
    s_add(q, a->rule, "rule_ids @> ARRAY[", "::text]", "rule");
    s_add(q, a->since, "at >= ", "::timestamptz", "since");
    s_add(q, a->until, "at < ", "::timestamptz", "until");
    s_add_share(q, a->share_id);
    if (a->overdue_days > 0) {
        s_overdue(self, q, a->overdue_days);
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
    uint32_t limit = a->limit == 0 || a->limit > AUDIT_PAGE_MAX ? AUDIT_PAGE_MAX : a->limit;
    (void)snprintf(q->limit, sizeof(q->limit), "%u", limit + 1); /* one more: is there more? */
    q->values[q->n++] = q->limit;
    size_t len = strlen(q->sql);
    /* with payloads, rows past the page's byte bound are not fetched: 200 large
     * records would otherwise come back whole (and in hex) to make a page of a
     * few; without, a page is not cut for bytes it does not carry */
    char cut[48] = "";
    if (a->payloads) {
        (void)snprintf(cut, sizeof(cut), " WHERE bytes_before <= %zu", AUDIT_PAGE_BYTES);
    }
    (void)snprintf(q->sql + len, sizeof(q->sql) - len,
                   " ORDER BY seq LIMIT $%d) l) w%s ORDER BY seq", q->n, cut);
    if (q->summary[0] == '\0') {
        (void)snprintf(q->summary, sizeof(q->summary), "everything");
    }
    return true;
}

static ProtobufCBinaryData s_hex(PGresult *res, int row, int col)
{
    ProtobufCBinaryData out = { 0, NULL };
    const char *hex = PQgetvalue(res, row, col);
    size_t hex_len = strlen(hex);
    if (PQgetisnull(res, row, col) || hex_len == 0) {
        return out;
    }
    out.data = acc_xmalloc(hex_len / 2);
    (void)sodium_hex2bin(out.data, hex_len / 2, hex, hex_len, NULL, &out.len, NULL);
    return out;
}

static char *s_str(PGresult *res, int row, int col)
{
    return PQgetvalue(res, row, col); /* "" for NULL; null_columns tells them apart */
}

/* acked_seqs, as the comma-separated list the query made of them. */
static void s_fill_acked(Accord__V1__AuditRow *r, const char *list)
{
    size_t count = list[0] != '\0' ? 1 : 0;
    for (const char *c = list; *c != '\0'; c++) {
        count += *c == ',';
    }
    r->acked_seqs = count > 0 ? acc_xcalloc(count, sizeof(int64_t)) : NULL;
    for (const char *c = list; r->n_acked_seqs < count; c++) {
        char *end = NULL;
        r->acked_seqs[r->n_acked_seqs++] = strtoll(c, &end, 10);
        c = end;
    }
}

static void s_fill_row(Accord__V1__AuditRow *r, PGresult *res, int i, bool payloads)
{
    accord__v1__audit_row__init(r);
    r->seq = strtoull(PQgetvalue(res, i, C_SEQ), NULL, 10);
    r->share_id = s_str(res, i, C_SHARE);
    r->at = s_str(res, i, C_AT);
    r->at_us = strtoll(PQgetvalue(res, i, C_AT_US), NULL, 10);
    r->event = s_str(res, i, C_EVENT);
    r->from_agency = s_str(res, i, C_FROM);
    r->to_agency = s_str(res, i, C_TO);
    r->record_type = s_str(res, i, C_TYPE);
    r->record_id = s_str(res, i, C_RECORD);
    r->purpose = s_str(res, i, C_PURPOSE);
    r->lawful_basis = s_str(res, i, C_BASIS);
    r->consent = s_str(res, i, C_CONSENT);
    r->error_code = s_str(res, i, C_CODE);
    r->reason = s_str(res, i, C_REASON);
    for (size_t k = 0; k < sizeof(s_nullable) / sizeof(s_nullable[0]); k++) {
        r->null_columns |= PQgetisnull(res, i, s_nullable[k]) ? 1U << k : 0;
    }
    r->subject_tag = s_hex(res, i, C_TAG);
    r->agreement_hash = s_hex(res, i, C_AGREEMENT);
    r->key_epoch = strtoll(PQgetvalue(res, i, C_EPOCH), NULL, 10);
    r->signature = s_hex(res, i, C_SIGNATURE);
    r->prev_hash = s_hex(res, i, C_PREV);
    r->entry_hash = s_hex(res, i, C_HASH);
    r->content_hash = s_hex(res, i, C_CONTENT);
    if (payloads) {
        r->nonce = s_hex(res, i, C_NONCE);
        r->payload = s_hex(res, i, C_PAYLOAD);
    }
    s_fill_acked(r, s_str(res, i, C_ACKED));
    r->refers_to = s_str(res, i, C_REFERS);
    /* rule ids: split in place on the unit separator */
    char *rules = s_str(res, i, C_RULES);
    size_t count = rules[0] != '\0' ? 1 : 0;
    for (const char *c = rules; *c != '\0'; c++) {
        count += *c == '\x1f';
    }
    r->rule_ids = acc_xcalloc(count + 1, sizeof(char *));
    for (char *save = NULL, *tok = strtok_r(rules, "\x1f", &save); tok != NULL;
         tok = strtok_r(NULL, "\x1f", &save)) {
        r->rule_ids[r->n_rule_ids++] = tok;
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
    free(r->rule_ids);
}

/* This auditor's sealed keys for the epochs the page's payloads use. */
static PGresult *s_keys(broker_t *self, const peer_t *peer, PGresult *rows, int n, acc_err_t *err)
{
    char list[4096] = "{";
    size_t len = 1;
    for (int i = 0; i < n && len < sizeof(list) - 32; i++) {
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len > 1 ? "," : "",
                                PQgetvalue(rows, i, C_EPOCH));
    }
    (void)snprintf(list + len, sizeof(list) - len, "}");
    const char *values[2] = { peer->id, list };
    return ledger_read(self->ledger,
                       "SELECT epoch, encode(sealed_key, 'hex') FROM accord_epoch_seal "
                       "WHERE auditor = $1 AND epoch = ANY($2::bigint[])",
                       2, values, err);
}

static void s_log_queried(broker_t *self, const peer_t *peer, const s_query_t *q, int rows,
                          bool more)
{
    char reason[1024];
    (void)snprintf(reason, sizeof(reason), "%s; after seq %s; %d row(s)%s", q->summary, q->after,
                   rows, more ? ", more follow" : "");
    acc_logrow_t row = { 0 };
    acc_uuid_time_ordered(row.share_id);
    row.event = "queried";
    row.from_agency = peer->id;
    row.subject_tag = q->has_tag ? q->tag : NULL;
    row.reason = reason;
    row.agreement_hash = acc_policy_hash(self->policy);
    (void)ledger_stage(self->ledger, &row, NULL, 0);
}

static Accord__V1__SealedEpochKey **s_sealed_keys(PGresult *keys, size_t *count)
{
    *count = keys != NULL ? (size_t)PQntuples(keys) : 0;
    Accord__V1__SealedEpochKey **out =
        acc_xcalloc(*count + 1, sizeof(Accord__V1__SealedEpochKey *));
    for (size_t i = 0; i < *count; i++) {
        out[i] = acc_xmalloc(sizeof(Accord__V1__SealedEpochKey));
        accord__v1__sealed_epoch_key__init(out[i]);
        out[i]->epoch = strtoll(PQgetvalue(keys, (int)i, 0), NULL, 10);
        out[i]->sealed_key = s_hex(keys, (int)i, 1);
    }
    return out;
}

/* One page of rows for the asker, and the keys to its payloads. */
typedef struct {
    PGresult *res;
    PGresult *keys; /* NULL without payloads */
    Accord__V1__AuditRow **rows;
    int n;
    bool more;
    bool payloads;
} s_page_t;

/* Fills up to page->n rows, stopping before the one that would take the page past
 * AUDIT_PAGE_BYTES (the first row always goes: one row is at most a record's
 * payload, under max_message_bytes); a page cut short says more. */
static void s_fill_page(s_page_t *page)
{
    page->rows = acc_xcalloc((size_t)page->n + 1, sizeof(Accord__V1__AuditRow *));
    size_t bytes = 0;
    for (int i = 0; i < page->n; i++) {
        Accord__V1__AuditRow *r = acc_xmalloc(sizeof(*r));
        s_fill_row(r, page->res, i, page->payloads);
        size_t row_bytes = accord__v1__audit_row__get_packed_size(r) + 8; /* tag, length */
        if (i > 0 && bytes + row_bytes > AUDIT_PAGE_BYTES) {
            s_free_row(r);
            free(r);
            page->n = i;
            page->more = true;
            return;
        }
        bytes += row_bytes;
        page->rows[i] = r;
    }
}

static void s_free_page(s_page_t *page)
{
    for (int i = 0; i < page->n; i++) {
        s_free_row(page->rows[i]);
        free(page->rows[i]);
    }
    free(page->rows);
    PQclear(page->keys);
    PQclear(page->res);
}

static void s_answer(broker_t *self, peer_t *peer, uint64_t correlation_id, const s_page_t *page)
{
    Accord__V1__AuditResult result = ACCORD__V1__AUDIT_RESULT__INIT;
    result.n_rows = (size_t)page->n;
    result.rows = page->rows;
    result.more = page->more;
    result.keys = s_sealed_keys(page->keys, &result.n_keys);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = correlation_id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT;
    env.audit_result = &result;
    /* sent after the queried row commits, like every other answer */
    (void)broker_queue(self, OUT_RESULT, peer, &env);
    for (size_t i = 0; i < result.n_keys; i++) {
        s_free_bytes(&result.keys[i]->sealed_key);
        free(result.keys[i]);
    }
    free(result.keys);
}

/* Bytes an auditor's connection may leave unread in the kernel's send queue
 * before it is sent another page. */
#define AUDIT_UNREAD_MAX ((size_t)256 * 1024)

/* A page is large and ZMQ_SNDHWM counts frames, so an auditor that asks without
 * reading could pile pages up in the broker's memory. It gets a page only when
 * its connection has taken in what it was sent (the TCP send queue, which fills
 * when the far end stops reading), and at most one page a loop turn, so pages
 * cannot queue up inside libzmq faster than TCP drains them. */
static bool s_is_reading(const broker_t *self, peer_t *peer)
{
    if (peer->audit_turn == self->turn) {
        return false;
    }
    if (peers_unread_bytes(peer) > AUDIT_UNREAD_MAX) {
        return false;
    }
    peer->audit_turn = self->turn;
    return true;
}

void audit_on_query(broker_t *self, peer_t *peer, const Accord__V1__Envelope *env)
{
    if (!peer->who.auditor) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__AUDIT_FORBIDDEN,
                           "only auditors named in the agreement may query the log");
        return;
    }
    if (!s_is_reading(self, peer)) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                           "the answers already sent have not been read: read them, then ask "
                           "again (one question at a time)");
        return;
    }
    const Accord__V1__AuditQuery *a = env->audit_query;
    s_query_t q;
    acc_err_t err;
    if (!s_build(self, &q, a, &err)) {
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__INVALID_FIELD,
                           err.msg);
        return;
    }
    PGresult *res = ledger_read(self->ledger, q.sql, q.n, q.values, &err);
    sodium_memzero(q.tag_hex, sizeof(q.tag_hex));
    if (res == NULL) {
        acc_log_warn("audit", "query from %s not answered: %s", peer->id, err.msg);
        broker_reply_error(self, peer, env->correlation_id, ACCORD__V1__ERROR_CODE__UNAVAILABLE,
                           "the sharing log cannot be read just now (or a filter is malformed, "
                           "or the query took too long: narrow it)");
        return;
    }
    uint32_t limit = (uint32_t)strtoul(q.limit, NULL, 10) - 1;
    s_page_t page = { .res = res, .n = PQntuples(res), .payloads = a->payloads };
    page.more = page.n > (int)limit;
    page.n = page.more ? (int)limit : page.n;
    s_fill_page(&page);
    page.keys = a->payloads ? s_keys(self, peer, res, page.n, &err) : NULL;
    s_log_queried(self, peer, &q, page.n, page.more);
    s_answer(self, peer, env->correlation_id, &page);
    acc_log_info("audit", "%s queried the log: %d row(s)%s", peer->id, page.n,
                 page.more ? ", more" : "");
    s_free_page(&page);
}
