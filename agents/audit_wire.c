/* audit_wire.c - accord-audit log: the sharing log's rows, filtered by the broker,
 * printed as a table, CSV or JSON */
#include "audit_wire.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/clock.h"
#include "accord/keys.h"
#include "accord/log.h"
#include "accord/logrow.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "audit_acks.h"
#include "client.h"

#define EXIT_TAMPERED    1
#define EXIT_USAGE       2
#define EXIT_CONNECT     3
#define HELLO_MS         10000
#define ANSWER_MS        60000
#define RETRY_FIRST_MS   10     /* UNAVAILABLE: the first wait before asking again */
#define RETRY_MAX_MS     1000   /* ...doubling up to this */
#define TABLE_MAX        100000 /* rows a table is built from; use --csv or --json for more */
#define TABLE_RANGES_MAX 8      /* runs of acknowledged seqs a table or CSV cell lists */

static const char *const s_headers[] = { "seq",  "at",        "event", "from",  "to",
                                         "type", "record_id", "rules", "reason" };
enum { N_COLS = sizeof(s_headers) / sizeof(s_headers[0]) };

void audit_json_0008(json_t *obj, const uint8_t *content_hash, const int64_t *acked_seqs,
                     size_t acked_count)
{
    if (content_hash != NULL) {
        char hex[2 * ACC_LOGROW_HASH_BYTES + 1];
        acc_hex_encode(hex, sizeof(hex), content_hash, ACC_LOGROW_HASH_BYTES);
        json_object_set_new(obj, "content_hash", json_string(hex));
    }
    if (acked_count > 0) {
        json_t *seqs = json_array();
        for (size_t i = 0; i < acked_count; i++) {
            json_array_append_new(seqs, json_integer((json_int_t)acked_seqs[i]));
        }
        char *ranges = audit_acks_ranges(acked_seqs, acked_count, 0);
        json_object_set_new(obj, "acked_count", json_integer((json_int_t)acked_count));
        json_object_set_new(obj, "acked_ranges", json_string(ranges));
        json_object_set_new(obj, "acked_seqs", seqs);
        free(ranges);
    }
}

static json_t *s_row_json(const Accord__V1__AuditRow *r)
{
    json_t *rules = json_array();
    for (size_t i = 0; i < r->n_rule_ids; i++) {
        json_array_append_new(rules, json_string(r->rule_ids[i]));
    }
    json_t *obj = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:s}", "seq",
        (json_int_t)r->seq, "share_id", r->share_id, "at", r->at, "event", r->event, "from",
        r->from_agency, "to", r->to_agency, "record_type", r->record_type, "record_id",
        r->record_id, "rules", rules, "purpose", r->purpose, "lawful_basis", r->lawful_basis,
        "consent", r->consent, "error_code", r->error_code, "reason", r->reason);
    audit_json_0008(obj, r->content_hash.len == ACC_LOGROW_HASH_BYTES ? r->content_hash.data : NULL,
                    r->acked_seqs, r->n_acked_seqs);
    if (r->refers_to[0] != '\0') {
        json_object_set_new(obj, "refers_to", json_string(r->refers_to));
    }
    return obj;
}

/* The cells of one row, as text, in s_headers order (the caller frees each). */
static void s_cells(char *cells[N_COLS], const Accord__V1__AuditRow *r)
{
    size_t rules_len = 1;
    for (size_t i = 0; i < r->n_rule_ids; i++) {
        rules_len += strlen(r->rule_ids[i]) + 1;
    }
    char *rules = acc_xcalloc(rules_len, 1);
    size_t used = 0;
    for (size_t i = 0; i < r->n_rule_ids; i++) {
        used += (size_t)snprintf(rules + used, rules_len - used, "%s%s", i > 0 ? "," : "",
                                 r->rule_ids[i]);
    }
    cells[0] = acc_xasprintf("%llu", (unsigned long long)r->seq);
    cells[1] = acc_xstrdup(r->at);
    cells[2] = acc_xstrdup(r->event);
    cells[3] = acc_xstrdup(r->from_agency);
    cells[4] = acc_xstrdup(r->to_agency);
    cells[5] = acc_xstrdup(r->record_type);
    cells[6] = acc_xstrdup(r->record_id);
    cells[7] = rules;
    if (r->reason[0] == '\0' && r->error_code[0] == '\0' && r->n_acked_seqs > 0) {
        char *ranges = audit_acks_ranges(r->acked_seqs, r->n_acked_seqs, TABLE_RANGES_MAX);
        cells[8] = acc_xasprintf("acknowledges seq %s", ranges);
        free(ranges);
    } else {
        cells[8] = acc_xstrdup(r->reason[0] != '\0' ? r->reason : r->error_code);
    }
}

static void s_csv_cell(const char *text, bool last)
{
    bool quote = strpbrk(text, ",\"\n\r") != NULL;
    if (quote) {
        (void)putchar('"');
        for (const char *c = text; *c != '\0'; c++) {
            if (*c == '"') {
                (void)putchar('"');
            }
            (void)putchar(*c);
        }
        (void)putchar('"');
    } else {
        (void)fputs(text, stdout);
    }
    (void)putchar(last ? '\n' : ',');
}

typedef struct {
    audit_format_t format;
    size_t rows;
    char **table; /* AUDIT_TABLE: N_COLS cells per row */
    size_t table_cap;
} s_out_t;

static void s_emit(s_out_t *out, const Accord__V1__AuditRow *r)
{
    if (out->format == AUDIT_JSON) {
        json_t *obj = s_row_json(r);
        char *text = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        (void)printf("%s%s", out->rows > 0 ? ",\n" : "[\n", text != NULL ? text : "null");
        free(text);
    } else {
        char *cells[N_COLS];
        s_cells(cells, r);
        if (out->format == AUDIT_CSV) {
            for (size_t c = 0; c < N_COLS; c++) {
                s_csv_cell(cells[c], c + 1 == N_COLS);
                free(cells[c]);
            }
        } else {
            if ((out->rows + 1) * N_COLS > out->table_cap) {
                out->table_cap = out->table_cap == 0 ? (size_t)64 * N_COLS : out->table_cap * 2;
                out->table = acc_xrealloc(out->table, out->table_cap * sizeof(char *));
            }
            memcpy(out->table + out->rows * N_COLS, cells, sizeof(cells));
        }
    }
    out->rows++;
}

static void s_print_table(const s_out_t *out)
{
    size_t width[N_COLS];
    for (size_t c = 0; c < N_COLS; c++) {
        width[c] = strlen(s_headers[c]);
        for (size_t r = 0; r < out->rows; r++) {
            size_t len = strlen(out->table[r * N_COLS + c]);
            width[c] = len > width[c] ? len : width[c];
        }
    }
    for (size_t c = 0; c < N_COLS; c++) {
        (void)printf("%-*s%s", c + 1 < N_COLS ? (int)width[c] : 0, s_headers[c],
                     c + 1 < N_COLS ? "  " : "\n");
    }
    for (size_t r = 0; r < out->rows; r++) {
        for (size_t c = 0; c < N_COLS; c++) {
            const char *cell = out->table[r * N_COLS + c];
            (void)printf("%-*s%s", c + 1 < N_COLS ? (int)width[c] : 0, cell,
                         c + 1 < N_COLS ? "  " : "\n");
        }
    }
    (void)printf("(%zu row%s)\n", out->rows, out->rows == 1 ? "" : "s");
}

/* A connection the broker has welcomed as this auditor; NULL after printing why. */
static client_t *s_connect(const acc_agent_config_t *config)
{
    client_t *client = NULL;
    acc_err_t err;
    if (client_open(&client, config, false, &err) != ACC_OK ||
        client_hello(client, HELLO_MS, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        client_destroy(&client);
        return NULL;
    }
    return client;
}

/* Sends one page's question and waits for its answer, whatever it is; NULL after
 * printing why when none came. */
static Accord__V1__Envelope *s_ask_once(client_t *client, Accord__V1__AuditQuery *query,
                                        uint64_t id)
{
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = id;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    env.audit_query = query;
    acc_err_t err;
    if (client_send(client, &env, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        return NULL;
    }
    for (;;) {
        Accord__V1__Envelope *reply = NULL;
        if (client_recv(client, &reply, ANSWER_MS, &err) != ACC_OK) {
            (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
            return NULL;
        }
        if (reply->correlation_id == id) {
            return reply;
        }
        accord__v1__envelope__free_unpacked(reply, acc_pb_wiping_allocator());
    }
}

/* Sends one page's question and waits for its page; NULL after printing why. A
 * broker that cannot answer just now (UNAVAILABLE: this auditor's other
 * connections had the loop's page, or the log could not be read) is asked again,
 * waiting from RETRY_FIRST_MS to RETRY_MAX_MS between, for up to ANSWER_MS. */
static Accord__V1__Envelope *s_ask(client_t *client, Accord__V1__AuditQuery *query, uint64_t id)
{
    int64_t deadline_ms = acc_now_ms() + ANSWER_MS;
    bool said = false;
    for (int64_t wait_ms = RETRY_FIRST_MS;;
         wait_ms = wait_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : wait_ms * 2) {
        Accord__V1__Envelope *reply = s_ask_once(client, query, id);
        if (reply == NULL || reply->body_case == ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT) {
            return reply;
        }
        bool error = reply->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR;
        if (error && reply->error->code == ACCORD__V1__ERROR_CODE__UNAVAILABLE &&
            acc_now_ms() + wait_ms < deadline_ms) {
            if (wait_ms == RETRY_MAX_MS && !said) {
                said = true; /* a second and more: not another connection's page */
                (void)fprintf(stderr,
                              "accord-audit: the broker cannot answer just now (%s); asking "
                              "again for up to a minute\n",
                              reply->error->message);
            }
            accord__v1__envelope__free_unpacked(reply, acc_pb_wiping_allocator());
            acc_sleep_ms(wait_ms);
            continue;
        }
        if (error) {
            (void)fprintf(stderr, "accord-audit: the broker refused the query: %s (%s)\n",
                          reply->error->message, acc_pb_code_name(reply->error->code));
        } else {
            (void)fprintf(stderr, "accord-audit: the broker could not answer just now; retry\n");
        }
        accord__v1__envelope__free_unpacked(reply, acc_pb_wiping_allocator());
        return NULL;
    }
}

/* Asks page after page until the rows run out or wanted (0: all) are printed. */
static int s_pages(client_t *client, Accord__V1__AuditQuery *query, uint32_t wanted, s_out_t *out)
{
    for (uint64_t page = 1;; page++) {
        if (wanted > 0) {
            query->limit = wanted - (uint32_t)out->rows;
        }
        Accord__V1__Envelope *reply = s_ask(client, query, page);
        if (reply == NULL) {
            return EXIT_CONNECT;
        }
        const Accord__V1__AuditResult *res = reply->audit_result;
        for (size_t i = 0; i < res->n_rows; i++) {
            s_emit(out, res->rows[i]);
            query->after_seq = res->rows[i]->seq;
        }
        bool more = res->more && res->n_rows > 0;
        accord__v1__envelope__free_unpacked(reply, acc_pb_wiping_allocator());
        bool table_full = out->format == AUDIT_TABLE && out->rows >= TABLE_MAX;
        if (more && table_full) {
            (void)fprintf(stderr,
                          "accord-audit: the table stops at %d rows; use --csv or --json "
                          "for more\n",
                          TABLE_MAX);
        }
        if (!more || (wanted > 0 && out->rows >= wanted) || table_full) {
            return EXIT_SUCCESS;
        }
    }
}

int audit_log(const acc_agent_config_t *config, const audit_log_args_t *args)
{
    client_t *client = s_connect(config);
    if (client == NULL) {
        return EXIT_CONNECT;
    }
    Accord__V1__AuditQuery query = args->query;
    uint32_t wanted = query.limit;
    s_out_t out = { .format = args->format };
    if (out.format == AUDIT_CSV) {
        for (size_t c = 0; c < N_COLS; c++) {
            s_csv_cell(s_headers[c], c + 1 == N_COLS);
        }
    }
    int status = s_pages(client, &query, wanted, &out);
    if (status == EXIT_SUCCESS && out.format == AUDIT_JSON) {
        (void)printf(out.rows > 0 ? "\n]\n" : "[]\n");
    } else if (status == EXIT_SUCCESS && out.format == AUDIT_TABLE) {
        s_print_table(&out);
    }
    for (size_t i = 0; i < out.rows * N_COLS && out.table != NULL; i++) {
        free(out.table[i]);
    }
    free(out.table);
    client_destroy(&client);
    return status;
}

/* ---- decrypted rows: show and subject access ---- */

/* A wire row as the log row the chain and the payload's associated data cover. */
void audit_wire_logrow(acc_logrow_t *out, uint8_t refers_to[ACC_LOGROW_SHARE_BYTES],
                       const Accord__V1__AuditRow *r)
{
    memset(out, 0, sizeof(*out));
    acc_err_t ignored;
    out->seq = (int64_t)r->seq;
    if (acc_uuid_parse(out->share_id, r->share_id, &ignored) != ACC_OK) {
        memset(out->share_id, 0, sizeof(out->share_id)); /* its payload will not open */
    }
    out->at_us = r->at_us;
    out->event = r->event;
    const char *const cols[] = { r->to_agency,  r->record_type,  r->record_id,
                                 r->purpose,    r->lawful_basis, r->consent,
                                 r->error_code, r->reason,       r->from_agency };
    const char **dest[] = { &out->to_agency,  &out->record_type,  &out->record_id,
                            &out->purpose,    &out->lawful_basis, &out->consent,
                            &out->error_code, &out->reason,       &out->from_agency };
    for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
        *dest[i] = (r->null_columns & (1U << i)) != 0 ? NULL : cols[i];
    }
    out->subject_tag = r->subject_tag.len == ACC_LOGROW_TAG_BYTES ? r->subject_tag.data : NULL;
    out->rule_count = r->n_rule_ids < ACC_LOGROW_MAX_RULES ? r->n_rule_ids : ACC_LOGROW_MAX_RULES;
    for (size_t i = 0; i < out->rule_count; i++) {
        out->rule_ids[i] = r->rule_ids[i];
    }
    out->agreement_hash = r->agreement_hash.len == 32 ? r->agreement_hash.data : NULL;
    out->key_epoch = r->key_epoch;
    out->nonce = r->nonce.len == ACC_LOGROW_NONCE_BYTES ? r->nonce.data : NULL;
    out->payload = r->payload.len > ACC_LOGROW_MAC_BYTES ? r->payload.data : NULL;
    out->payload_len = out->payload != NULL ? r->payload.len : 0;
    out->signature = r->signature.len == ACC_LOGROW_SIG_BYTES ? r->signature.data : NULL;
    out->content_hash = r->content_hash.len == ACC_LOGROW_HASH_BYTES ? r->content_hash.data : NULL;
    out->acked_count = r->n_acked_seqs;
    out->acked_seqs = r->acked_seqs;
    if (r->refers_to[0] != '\0') {
        if (acc_uuid_parse(refers_to, r->refers_to, &ignored) != ACC_OK) {
            memset(refers_to, 0, ACC_LOGROW_SHARE_BYTES); /* its hash will not match */
        }
        out->refers_to = refers_to;
    }
}

typedef struct {
    uint8_t *box_secret; /* sodium_malloc */
    uint8_t box_public[crypto_box_PUBLICKEYBYTES];
    size_t failures;
} s_opener_t;

/* Fields and a subject as the NDJSON shape shows them: a record holding just
 * those, converted, and the one key taken. */
static json_t *s_part_json(Accord__V1__Field **fields, size_t n, Accord__V1__Subject *subject,
                           const char *key)
{
    Accord__V1__ChildRecord rec = ACCORD__V1__CHILD_RECORD__INIT;
    rec.n_fields = n;
    rec.fields = fields;
    rec.subject = subject;
    json_t *whole = acc_record_to_json(&rec);
    json_t *part = json_object_get(whole, key);
    part = part != NULL ? json_incref(part) : json_object();
    json_decref(whole);
    return part;
}

static json_t *s_outcome_json(const uint8_t *plain, size_t len)
{
    Accord__V1__OutcomeNotice *n =
        accord__v1__outcome_notice__unpack(acc_pb_wiping_allocator(), len, plain);
    if (n == NULL) {
        return NULL;
    }
    json_t *out =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "outcome_id", n->outcome_id, "share_id",
                  n->share_id, "status", n->status, "reported_by", n->to_agency, "at", n->at,
                  "fields", s_part_json(n->fields, n->n_fields, NULL, "fields"));
    protobuf_c_message_free_unpacked(&n->base, acc_pb_wiping_allocator());
    return out;
}

static json_t *s_lookup_notice_json(const uint8_t *plain, size_t len)
{
    Accord__V1__LookupNotice *n =
        accord__v1__lookup_notice__unpack(acc_pb_wiping_allocator(), len, plain);
    if (n == NULL) {
        return NULL;
    }
    json_t *out =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "lookup_id", n->lookup_id, "by_agency",
                  n->by_agency, "purpose", n->purpose, "lookup", n->lookup_rule, "at", n->at,
                  "subject", s_part_json(NULL, 0, n->subject, "subject"));
    protobuf_c_message_free_unpacked(&n->base, acc_pb_wiping_allocator());
    return out;
}

static json_t *s_lookup_result_json(const uint8_t *plain, size_t len)
{
    Accord__V1__LookupResult *r =
        accord__v1__lookup_result__unpack(acc_pb_wiping_allocator(), len, plain);
    if (r == NULL) {
        return NULL;
    }
    json_t *agencies = json_array();
    for (size_t i = 0; i < r->n_agencies; i++) {
        const Accord__V1__Involvement *v = r->agencies[i];
        json_t *types = json_array();
        for (size_t k = 0; k < v->n_record_types; k++) {
            json_array_append_new(types, json_string(v->record_types[k]));
        }
        json_array_append_new(agencies,
                              json_pack("{s:s, s:o, s:s, s:s, s:i}", "agency", v->agency_id,
                                        "record_types", types, "first", v->first_at, "last",
                                        v->last_at, "open_referrals", (int)v->open_referrals));
    }
    json_t *out = json_pack("{s:s, s:o}", "window_from", r->window_from, "agencies", agencies);
    protobuf_c_message_free_unpacked(&r->base, acc_pb_wiping_allocator());
    return out;
}

/* What an outcome, a lookup or a lookup's notification carries (schema 0009). */
static json_t *s_notice_json(const char *event, const uint8_t *plain, size_t len)
{
    if (strcmp(event, "outcome") == 0) {
        return s_outcome_json(plain, len);
    }
    if (strcmp(event, "notified") == 0) {
        return s_lookup_notice_json(plain, len);
    }
    return s_lookup_result_json(plain, len);
}

/* The record a row carries, opened with the epoch key sealed to this auditor;
 * json null when the row carries none, NULL (after printing why) when it does
 * not open. */
static json_t *s_open_record(s_opener_t *op, const Accord__V1__AuditResult *res,
                             const Accord__V1__AuditRow *r)
{
    acc_logrow_t row;
    uint8_t refers_to[ACC_LOGROW_SHARE_BYTES];
    audit_wire_logrow(&row, refers_to, r);
    if (row.payload == NULL) {
        return json_null();
    }
    const Accord__V1__SealedEpochKey *sealed = NULL;
    for (size_t i = 0; i < res->n_keys; i++) {
        sealed = res->keys[i]->epoch == r->key_epoch ? res->keys[i] : sealed;
    }
    uint8_t *key = sodium_malloc(ACC_LOGROW_KEY_BYTES);
    acc_assert(key != NULL);
    json_t *out = NULL;
    acc_err_t err;
    size_t len = row.payload_len - ACC_LOGROW_MAC_BYTES;
    uint8_t *plain = acc_xmalloc(len);
    if (sealed == NULL || sealed->sealed_key.len != crypto_box_SEALBYTES + ACC_LOGROW_KEY_BYTES ||
        crypto_box_seal_open(key, sealed->sealed_key.data, sealed->sealed_key.len, op->box_public,
                             op->box_secret) != 0) {
        (void)fprintf(stderr,
                      "accord-audit: seq %llu: epoch %lld's key is not sealed to this "
                      "auditor key, or the seal does not open\n",
                      (unsigned long long)r->seq, (long long)r->key_epoch);
    } else if (acc_logrow_open(plain, len, &row, key, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: seq %llu: %s\n", (unsigned long long)r->seq, err.msg);
    } else if (strcmp(r->event, "outcome") == 0 || strcmp(r->event, "notified") == 0 ||
               strcmp(r->event, "looked-up") == 0) {
        out = s_notice_json(r->event, plain, len);
    } else {
        Accord__V1__ChildRecord *rec =
            accord__v1__child_record__unpack(acc_pb_wiping_allocator(), len, plain);
        out = rec != NULL ? acc_record_to_json(rec) : NULL;
        acc_record_free(&rec);
    }
    op->failures += out == NULL ? 1 : 0;
    sodium_memzero(plain, len);
    free(plain);
    sodium_free(key);
    return out;
}

typedef void s_row_fn(void *ctx, json_t *row); /* takes the reference */

typedef struct {
    s_opener_t op;
    s_row_fn *fn;
    void *ctx;
} s_decrypting_t;

static bool s_decrypt_row(void *ctx, const Accord__V1__AuditResult *page,
                          const Accord__V1__AuditRow *row)
{
    s_decrypting_t *d = ctx;
    json_t *obj = s_row_json(row);
    json_t *record = s_open_record(&d->op, page, row);
    json_object_set_new(obj, "record", record != NULL ? record : json_null());
    d->fn(d->ctx, obj);
    return true;
}

/* Every row matching query, each as JSON with its decrypted "record", to fn.
 * Returns an exit status. */
static int s_fetch_decrypted(const acc_agent_config_t *config, Accord__V1__AuditQuery *query,
                             const char *key_path, s_row_fn *fn, void *ctx)
{
    s_decrypting_t d = { .op = { .box_secret = sodium_malloc(crypto_box_SECRETKEYBYTES) },
                         .fn = fn,
                         .ctx = ctx };
    acc_assert(d.op.box_secret != NULL);
    acc_err_t err;
    int status = EXIT_CONNECT;
    if (acc_keys_read_box_secret(d.op.box_secret, key_path, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
    } else {
        (void)crypto_scalarmult_base(d.op.box_public, d.op.box_secret);
        status = audit_each_row(config, query, s_decrypt_row, &d);
    }
    sodium_free(d.op.box_secret);
    return status == EXIT_SUCCESS && d.op.failures > 0 ? EXIT_TAMPERED : status;
}

static void s_collect(void *ctx, json_t *row)
{
    json_array_append_new(ctx, row);
}

static const char *s_get(json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    return v != NULL ? v : "";
}

static json_int_t s_seq(json_t *row)
{
    return json_integer_value(json_object_get(row, "seq"));
}

/* Whether row ack acknowledges the shared row share: a row of its own naming the
 * share's id (before schema 0008), or a batched row to the share's recipient
 * listing its seq. */
static bool s_acknowledges(json_t *ack, json_t *share)
{
    if (strcmp(s_get(ack, "event"), "acknowledged") != 0 || s_seq(ack) <= s_seq(share)) {
        return false;
    }
    json_t *seqs = json_object_get(ack, "acked_seqs");
    if (seqs == NULL) {
        return strcmp(s_get(ack, "share_id"), s_get(share, "share_id")) == 0;
    }
    if (strcmp(s_get(ack, "to"), s_get(share, "to")) != 0) {
        return false;
    }
    for (size_t i = 0; i < json_array_size(seqs); i++) {
        if (json_integer_value(json_array_get(seqs, i)) == s_seq(share)) {
            return true;
        }
    }
    return false;
}

/* Gives each shared row among rows (in seq order) when it was acknowledged,
 * "acknowledged_at" and "acknowledged_seq" (null while it is not), from the first
 * later row that acknowledges it; with drop_batches, then removes the batched rows,
 * which speak of other shares too. */
static void s_fold_acks(json_t *rows, bool drop_batches)
{
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *share = json_array_get(rows, i);
        if (strcmp(s_get(share, "event"), "shared") != 0) {
            continue;
        }
        json_t *ack = NULL;
        for (size_t j = i + 1; j < json_array_size(rows) && ack == NULL; j++) {
            ack = s_acknowledges(json_array_get(rows, j), share) ? json_array_get(rows, j) : NULL;
        }
        json_object_set_new(share, "acknowledged_at",
                            ack != NULL ? json_string(s_get(ack, "at")) : json_null());
        json_object_set_new(share, "acknowledged_seq",
                            ack != NULL ? json_integer(s_seq(ack)) : json_null());
    }
    for (size_t i = json_array_size(rows); drop_batches && i > 0; i--) {
        if (json_object_get(json_array_get(rows, i - 1), "acked_seqs") != NULL) {
            (void)json_array_remove(rows, i - 1);
        }
    }
}

int audit_show(const acc_agent_config_t *config, const char *share_id, const char *key_path)
{
    Accord__V1__AuditQuery query = ACCORD__V1__AUDIT_QUERY__INIT;
    query.share_id = acc_pb_str(share_id);
    json_t *rows = json_array();
    int status = s_fetch_decrypted(config, &query, key_path, s_collect, rows);
    if (status != EXIT_CONNECT && json_array_size(rows) == 0) {
        (void)fprintf(stderr, "accord-audit: no log row has share id %s\n", share_id);
        status = EXIT_USAGE;
    }
    s_fold_acks(rows, false);
    if (json_array_size(rows) > 0) {
        (void)json_dumpf(rows, stdout, JSON_INDENT(2));
        (void)putchar('\n');
    }
    json_decref(rows);
    return status;
}

/* An outcome, a lookup or a lookup's notification, in a subject-access report. */
static void s_report_notice(json_t *row, const char *event)
{
    json_t *what = json_object_get(row, "record");
    char *text = json_is_object(what) ? json_dumps(what, JSON_COMPACT) : NULL;
    if (strcmp(event, "outcome") == 0) {
        (void)printf(" - %s reported \"%s\" on the %s record %s from %s (share %s)\n",
                     s_get(row, "from"), s_get(row, "reason"), s_get(row, "record_type"),
                     s_get(row, "record_id"),
                     s_get(row, "to")[0] != '\0' ? s_get(row, "to") : "its publisher",
                     s_get(row, "refers_to"));
        (void)printf("    reported:      %s\n", text != NULL ? text : "");
    } else if (strcmp(event, "looked-up") == 0) {
        (void)printf(" - %s asked who is involved with this child\n", s_get(row, "from"));
        (void)printf("    purpose:       %s\n    answer:        %s\n", s_get(row, "purpose"),
                     s_get(row, "reason"));
        (void)printf("    disclosed:     %s\n", text != NULL ? text : "");
    } else {
        (void)printf(" - %s was told that %s looked this child up (lookup %s)\n", s_get(row, "to"),
                     s_get(row, "from"), s_get(row, "refers_to"));
        (void)printf("    purpose:       %s\n", s_get(row, "purpose"));
    }
    free(text);
}

/* One event of a subject-access report, for a reader rather than a program. */
static void s_report_row(void *ctx, json_t *row)
{
    size_t *n = ctx;
    (*n)++;
    const char *event = s_get(row, "event");
    (void)printf("%s  %s", s_get(row, "at"), event);
    if (strcmp(event, "queried") == 0) {
        (void)printf(" by %s: %s\n", s_get(row, "from"), s_get(row, "reason"));
        json_decref(row);
        return;
    }
    if (strcmp(event, "restored") == 0) {
        (void)printf(": %s\n    note:          anything about this child in the lost rows is "
                     "not in this report\n",
                     s_get(row, "reason"));
        json_decref(row);
        return;
    }
    if (strcmp(event, "outcome") == 0 || strcmp(event, "looked-up") == 0 ||
        strcmp(event, "notified") == 0) {
        s_report_notice(row, event);
        json_decref(row);
        return;
    }
    (void)printf(" - %s record %s from %s", s_get(row, "record_type"), s_get(row, "record_id"),
                 s_get(row, "from"));
    if (s_get(row, "to")[0] != '\0') {
        (void)printf(" to %s", s_get(row, "to"));
    }
    (void)printf("\n");
    json_t *rules = json_object_get(row, "rules");
    for (size_t i = 0; i < json_array_size(rules); i++) {
        (void)printf("    rule:          %s\n", json_string_value(json_array_get(rules, i)));
    }
    const char *const labels[][2] = { { "purpose", "purpose:       " },
                                      { "lawful_basis", "lawful basis:  " },
                                      { "consent", "consent:       " },
                                      { "error_code", "refused:       " },
                                      { "reason", "reason:        " } };
    for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
        if (s_get(row, labels[i][0])[0] != '\0') {
            (void)printf("    %s%s\n", labels[i][1], s_get(row, labels[i][0]));
        }
    }
    json_t *record = json_object_get(row, "record");
    if (json_is_object(record)) {
        char *text = json_dumps(record, JSON_COMPACT);
        (void)printf("    as received:   %s\n", text != NULL ? text : "");
        free(text);
    }
    if (strcmp(event, "shared") == 0) {
        json_t *seq = json_object_get(row, "acknowledged_seq");
        if (json_is_integer(seq)) {
            (void)printf("    acknowledged:  %s (log row %lld)\n", s_get(row, "acknowledged_at"),
                         (long long)json_integer_value(seq));
        } else {
            (void)printf("    acknowledged:  not yet\n");
        }
    }
    json_decref(row);
}

int audit_subject_access(const acc_agent_config_t *config, const char *nhs, const char *key_path,
                         audit_format_t format)
{
    Accord__V1__AuditQuery query = ACCORD__V1__AUDIT_QUERY__INIT;
    query.child = acc_pb_str(nhs);
    if (format == AUDIT_JSON) {
        json_t *rows = json_array();
        int status = s_fetch_decrypted(config, &query, key_path, s_collect, rows);
        s_fold_acks(rows, true);
        (void)json_dumpf(rows, stdout, JSON_INDENT(2));
        (void)putchar('\n');
        json_decref(rows);
        return status;
    }
    (void)printf("Subject access report: everything the sharing log holds about one child\n"
                 "(shared, withheld, refused, acknowledged, the outcomes reported on\n"
                 "referrals, every lookup of who is involved and who was told of it, and\n"
                 "every time the log was queried about them), oldest first. Records are\n"
                 "shown exactly as each recipient received them, with when the recipient\n"
                 "acknowledged them.\n\n");
    json_t *rows = json_array();
    int status = s_fetch_decrypted(config, &query, key_path, s_collect, rows);
    s_fold_acks(rows, true);
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(rows); i++) {
        s_report_row(&n, json_incref(json_array_get(rows, i)));
    }
    json_decref(rows);
    (void)printf("\n%zu event(s)\n", n);
    return status;
}

int audit_each_row(const acc_agent_config_t *config, Accord__V1__AuditQuery *query,
                   audit_row_fn *fn, void *ctx)
{
    client_t *client = s_connect(config);
    if (client == NULL) {
        return EXIT_CONNECT;
    }
    query->payloads = true;
    int status = EXIT_SUCCESS;
    bool go_on = true;
    for (uint64_t page = 1; go_on; page++) {
        Accord__V1__Envelope *reply = s_ask(client, query, page);
        if (reply == NULL) {
            status = EXIT_CONNECT;
            break;
        }
        const Accord__V1__AuditResult *res = reply->audit_result;
        for (size_t i = 0; i < res->n_rows && go_on; i++) {
            go_on = fn(ctx, res, res->rows[i]);
            query->after_seq = res->rows[i]->seq;
        }
        go_on = go_on && res->more && res->n_rows > 0;
        accord__v1__envelope__free_unpacked(reply, acc_pb_wiping_allocator());
    }
    client_destroy(&client);
    return status;
}
