/* ledger_audit.c - auditors' filtered reads of the sharing log, and their sealed epoch keys */
#include "ledger_audit.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"
#include "ledger_internal.h"

#define AUDIT_PARAMS 16

static const char s_columns[] =
    "SELECT seq, share_id::text, to_char(at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), (extract(epoch FROM at) * 1000000)::bigint, event, "
    "from_agency, to_agency, record_type, record_id, encode(subject_tag, 'hex'), "
    "array_to_string(rule_ids, chr(31)), purpose, lawful_basis, consent, error_code, reason, "
    "encode(agreement_hash, 'hex'), coalesce(key_epoch, 0), encode(nonce, 'hex'), ";

/* What follows the payload column (the payload, or NULL when the auditor did not
 * ask for payloads). bytes_before counts the payload bytes of the rows before
 * each one in the page, so that a page with payloads is cut in SQL; fetched is
 * how many rows matched before that cut, so a page the cut shortened says that
 * more follow even when it kept a single row. */
static const char s_columns_tail[] =
    ", encode(signature, 'hex'), encode(prev_hash, 'hex'), "
    "encode(entry_hash, 'hex'), encode(content_hash, 'hex'), array_to_string(acked_seqs, ','), "
    "coalesce(refers_to::text, ''), fetched "
    "FROM (SELECT *, sum(coalesce(octet_length(payload), 0)) OVER (ORDER BY seq) - "
    "coalesce(octet_length(payload), 0) AS bytes_before, count(*) OVER () AS fetched "
    "FROM (SELECT * FROM accord_log WHERE seq > $1";

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
    C_FETCHED,
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

typedef struct {
    char sql[4096];
    const char *values[AUDIT_PARAMS];
    int n;
    char after[24];
    char limit[24];
    char tag_hex[2 * ACC_LOGROW_TAG_BYTES + 3];
    char overdue_days[16];
    char *outcome_rules; /* a text[] literal, owned */
} s_query_t;

/* Adds "AND <column> <op> $n<cast>" for a non-empty value. */
static void s_add(s_query_t *q, const char *value, const char *prefix, const char *suffix)
{
    if (value == NULL || value[0] == '\0' || q->n >= AUDIT_PARAMS - 1) {
        return;
    }
    q->values[q->n] = value;
    q->n++;
    size_t len = strlen(q->sql);
    (void)snprintf(q->sql + len, sizeof(q->sql) - len, " AND %s$%d%s", prefix, q->n, suffix);
}

/* The child's rows, and the acknowledgements of what was shared about them:
 * gathered once through the subject tag and share id indexes, then paged by seq
 * (an OR here would walk the whole log). */
static void s_add_child(s_query_t *q, const uint8_t *tag)
{
    q->tag_hex[0] = '\\';
    q->tag_hex[1] = 'x';
    (void)sodium_bin2hex(q->tag_hex + 2, sizeof(q->tag_hex) - 2, tag, ACC_LOGROW_TAG_BYTES);
    s_add(q, q->tag_hex,
          "seq = ANY (ARRAY(SELECT seq FROM accord_log WHERE subject_tag = ", "::bytea");
    size_t len = strlen(q->sql);
    (void)snprintf(q->sql + len, sizeof(q->sql) - len,
                   " UNION SELECT seq FROM accord_log WHERE share_id IN (SELECT share_id "
                   "FROM accord_log WHERE subject_tag = $%d::bytea AND event = 'shared')"
                   " UNION " AUDIT_BATCH_ACK("s.subject_tag = $%d::bytea")
                   /* a restore may have taken rows about this child with it: the
                    * answer says so rather than look complete */
                   " UNION SELECT seq FROM accord_log WHERE event = 'restored'))",
                   q->n, q->n);
}

/* Referrals waiting too long: shares under a rule that takes outcomes, older
 * than days, on which nothing has been reported. */
static void s_add_overdue(s_query_t *q, const ledger_audit_filter_t *f)
{
    q->outcome_rules = ledger_text_array(f->outcome_rules, f->outcome_rule_count);
    (void)snprintf(q->overdue_days, sizeof(q->overdue_days), "%u", f->overdue_days);
    s_add(q, q->overdue_days, "event = 'shared' AND at < now() - interval '1 day' * ", "::int");
    s_add(q, q->outcome_rules, "rule_ids && ",
          "::text[] AND NOT EXISTS (SELECT 1 FROM "
          "accord_log o WHERE o.refers_to = accord_log.share_id AND o.event = 'outcome')");
}

/* The share's own rows, its acknowledgement when that was batched, and the
 * outcomes reported on it (or, given a lookup's id, the agencies told of it). */
static void s_add_share(s_query_t *q, const char *share_id)
{
    if (share_id == NULL || share_id[0] == '\0') {
        return;
    }
    s_add(q, share_id, "seq = ANY (ARRAY(SELECT seq FROM accord_log WHERE share_id = ", "::uuid");
    size_t len = strlen(q->sql);
    (void)snprintf(q->sql + len, sizeof(q->sql) - len,
                   " UNION SELECT seq FROM accord_log WHERE refers_to = $%d::uuid"
                   " UNION " AUDIT_BATCH_ACK("s.share_id = $%d::uuid") "))",
                   q->n, q->n);
}

static void s_build(s_query_t *q, const ledger_audit_filter_t *f)
{
    memset(q, 0, sizeof(*q));
    (void)snprintf(q->sql, sizeof(q->sql), "%s%s%s", s_columns,
                   f->payloads ? "encode(payload, 'hex')" : "NULL", s_columns_tail);
    (void)snprintf(q->after, sizeof(q->after), "%llu", (unsigned long long)f->after_seq);
    q->values[q->n++] = q->after;
    if (f->subject_tag != NULL) {
        s_add_child(q, f->subject_tag);
    }
    if (f->agency != NULL && f->agency[0] != '\0') {
        /* either side: the same parameter twice */
        s_add(q, f->agency, "(from_agency = ", "");
        size_t len = strlen(q->sql);
        (void)snprintf(q->sql + len, sizeof(q->sql) - len, " OR to_agency = $%d)", q->n);
    }
    s_add(q, f->from_agency, "from_agency = ", "");
    s_add(q, f->to_agency, "to_agency = ", "");
    s_add(q, f->record_type, "record_type = ", "");
    s_add(q, f->event, "event = ", "");
    /* containment, not "= ANY(rule_ids)": only this form can use the GIN index */
    s_add(q, f->rule, "rule_ids @> ARRAY[", "::text]");
    s_add(q, f->since, "at >= ", "::timestamptz");
    s_add(q, f->until, "at < ", "::timestamptz");
    s_add_share(q, f->share_id);
    if (f->overdue_days > 0) {
        s_add_overdue(q, f);
    }
    (void)snprintf(q->limit, sizeof(q->limit), "%zu", f->limit + 1); /* one more: is there more? */
    q->values[q->n++] = q->limit;
    size_t len = strlen(q->sql);
    /* with payloads, rows past the page's byte bound are not fetched: 200 large
     * records would otherwise come back whole (and in hex) to make a page of a
     * few; without, a page is not cut for bytes it does not carry */
    char cut[48] = "";
    if (f->payloads) {
        (void)snprintf(cut, sizeof(cut), " WHERE bytes_before <= %zu", f->max_bytes);
    }
    (void)snprintf(q->sql + len, sizeof(q->sql) - len,
                   " ORDER BY seq LIMIT $%d) l) w%s ORDER BY seq", q->n, cut);
}

static const char *s_text(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

/* The hex column decoded at *next (advanced past it): the row's bytes share one
 * buffer, sized for every hex column of the row. */
static ledger_bytes_t s_hex(const PGresult *res, int row, int col, uint8_t **next)
{
    ledger_bytes_t out = { NULL, 0 };
    const char *hex = PQgetvalue(res, row, col);
    size_t hex_len = strlen(hex);
    if (PQgetisnull(res, row, col) || hex_len == 0) {
        return out;
    }
    (void)sodium_hex2bin(*next, hex_len / 2, hex, hex_len, NULL, &out.len, NULL);
    out.data = *next;
    *next += out.len;
    return out;
}

static const int s_hex_columns[] = { C_TAG,       C_AGREEMENT, C_NONCE, C_PAYLOAD,
                                     C_SIGNATURE, C_PREV,      C_HASH,  C_CONTENT };

/* The bytes and lists of one row: decoded into memory of their own, wiped before
 * it is freed, so that what came from the log leaves no copy in the heap. */
typedef struct {
    uint8_t *bytes;
    size_t bytes_len;
    char *rules; /* the rule ids, split in place */
    const char **rule_ids;
    int64_t *acked;
} s_decoded_t;

static void s_decoded_free(s_decoded_t *d)
{
    if (d->bytes != NULL) {
        sodium_memzero(d->bytes, d->bytes_len);
    }
    free(d->bytes);
    free(d->rules);
    free(d->rule_ids);
    free(d->acked);
}

/* acked_seqs, as the comma-separated list the query made of them. */
static void s_parse_acked(ledger_audit_row_t *row, s_decoded_t *d, const char *list)
{
    size_t count = list[0] != '\0' ? 1 : 0;
    for (const char *c = list; *c != '\0'; c++) {
        count += *c == ',';
    }
    d->acked = count > 0 ? acc_xcalloc(count, sizeof(int64_t)) : NULL;
    for (const char *c = list; row->acked_count < count; c++) {
        char *end = NULL;
        d->acked[row->acked_count++] = strtoll(c, &end, 10);
        c = end;
    }
    row->acked_seqs = d->acked;
}

/* The rule ids, joined by the unit separator in the query. */
static void s_split_rules(ledger_audit_row_t *row, s_decoded_t *d, const char *joined)
{
    d->rules = acc_xstrdup(joined);
    size_t count = d->rules[0] != '\0' ? 1 : 0;
    for (const char *c = d->rules; *c != '\0'; c++) {
        count += *c == '\x1f';
    }
    d->rule_ids = acc_xcalloc(count + 1, sizeof(char *));
    for (char *save = NULL, *tok = strtok_r(d->rules, "\x1f", &save); tok != NULL;
         tok = strtok_r(NULL, "\x1f", &save)) {
        d->rule_ids[row->rule_count++] = tok;
    }
    row->rule_ids = d->rule_ids;
}

static void s_decode_bytes(ledger_audit_row_t *row, s_decoded_t *d, const PGresult *res, int i,
                           bool payloads)
{
    for (size_t k = 0; k < sizeof(s_hex_columns) / sizeof(s_hex_columns[0]); k++) {
        d->bytes_len += strlen(PQgetvalue(res, i, s_hex_columns[k])) / 2;
    }
    d->bytes = acc_xmalloc(d->bytes_len + 1);
    uint8_t *next = d->bytes;
    row->subject_tag = s_hex(res, i, C_TAG, &next);
    row->agreement_hash = s_hex(res, i, C_AGREEMENT, &next);
    row->signature = s_hex(res, i, C_SIGNATURE, &next);
    row->prev_hash = s_hex(res, i, C_PREV, &next);
    row->entry_hash = s_hex(res, i, C_HASH, &next);
    row->content_hash = s_hex(res, i, C_CONTENT, &next);
    if (payloads) {
        row->nonce = s_hex(res, i, C_NONCE, &next);
        row->payload = s_hex(res, i, C_PAYLOAD, &next);
    }
}

static void s_decode_row(ledger_audit_row_t *row, s_decoded_t *d, const PGresult *res, int i,
                         bool payloads)
{
    memset(row, 0, sizeof(*row));
    memset(d, 0, sizeof(*d));
    row->seq = strtoll(PQgetvalue(res, i, C_SEQ), NULL, 10);
    row->share_id = s_text(res, i, C_SHARE);
    row->at = s_text(res, i, C_AT);
    row->at_us = strtoll(PQgetvalue(res, i, C_AT_US), NULL, 10);
    row->event = s_text(res, i, C_EVENT);
    row->from_agency = s_text(res, i, C_FROM);
    row->to_agency = s_text(res, i, C_TO);
    row->record_type = s_text(res, i, C_TYPE);
    row->record_id = s_text(res, i, C_RECORD);
    row->purpose = s_text(res, i, C_PURPOSE);
    row->lawful_basis = s_text(res, i, C_BASIS);
    row->consent = s_text(res, i, C_CONSENT);
    row->error_code = s_text(res, i, C_CODE);
    row->reason = s_text(res, i, C_REASON);
    row->key_epoch = strtoll(PQgetvalue(res, i, C_EPOCH), NULL, 10);
    row->refers_to = PQgetvalue(res, i, C_REFERS);
    s_decode_bytes(row, d, res, i, payloads);
    s_parse_acked(row, d, PQgetvalue(res, i, C_ACKED));
    s_split_rules(row, d, PQgetvalue(res, i, C_RULES));
}

acc_rc_t ledger_audit_page(ledger_t *self, const ledger_audit_filter_t *filter,
                           ledger_audit_row_fn *fn, void *ctx, bool *more, acc_err_t *err)
{
    acc_assert(filter->limit > 0);
    *more = false;
    s_query_t q;
    s_build(&q, filter);
    PGresult *res = ledger_read(self, q.sql, q.n, q.values, err);
    sodium_memzero(q.tag_hex, sizeof(q.tag_hex));
    free(q.outcome_rules);
    if (res == NULL) {
        return ACC_ERR_DB;
    }
    size_t rows = (size_t)PQntuples(res);
    size_t fetched = rows > 0 ? strtoull(PQgetvalue(res, 0, C_FETCHED), NULL, 10) : 0;
    *more = rows > filter->limit || fetched > rows;
    rows = rows > filter->limit ? filter->limit : rows;
    for (size_t i = 0; i < rows; i++) {
        ledger_audit_row_t row;
        s_decoded_t decoded;
        s_decode_row(&row, &decoded, res, (int)i, filter->payloads);
        bool taken = fn(ctx, &row);
        s_decoded_free(&decoded);
        if (!taken) {
            *more = true;
            break;
        }
    }
    PQclear(res);
    return ACC_OK;
}

acc_rc_t ledger_audit_epoch_keys(ledger_t *self, const ledger_audit_keys_t *q, acc_err_t *err)
{
    char list[4096] = "{";
    size_t len = 1;
    for (size_t i = 0; i < q->epoch_count && len < sizeof(list) - 32; i++) {
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%lld", len > 1 ? "," : "",
                                (long long)q->epochs[i]);
    }
    (void)snprintf(list + len, sizeof(list) - len, "}");
    const char *values[2] = { q->auditor, list };
    PGresult *res = ledger_read(self,
                                "SELECT epoch, encode(sealed_key, 'hex') FROM accord_epoch_seal "
                                "WHERE auditor = $1 AND epoch = ANY($2::bigint[])",
                                2, values, err);
    if (res == NULL) {
        return ACC_ERR_DB;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *hex = PQgetvalue(res, i, 1);
        size_t hex_len = strlen(hex);
        uint8_t *sealed = acc_xmalloc(hex_len / 2 + 1);
        ledger_sealed_key_t key = { .epoch = strtoll(PQgetvalue(res, i, 0), NULL, 10),
                                    .sealed_key = { sealed, 0 } };
        if (!PQgetisnull(res, i, 1) && hex_len > 0) {
            (void)sodium_hex2bin(sealed, hex_len / 2, hex, hex_len, NULL, &key.sealed_key.len,
                                 NULL);
        }
        key.sealed_key.data = key.sealed_key.len > 0 ? sealed : NULL;
        q->fn(q->ctx, &key);
        sodium_memzero(sealed, hex_len / 2 + 1);
        free(sealed);
    }
    PQclear(res);
    return ACC_OK;
}
