/* audit_wire.c - accord-audit log: the sharing log's rows, filtered by the broker,
 * printed as a table, CSV or JSON */
#include "audit_wire.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"
#include "client.h"

#define EXIT_USAGE   2
#define EXIT_CONNECT 3
#define HELLO_MS     10000
#define ANSWER_MS    60000
#define TABLE_MAX    100000 /* rows a table is built from; use --csv or --json for more */

static const char *const s_headers[] = { "seq",  "at",        "event", "from",  "to",
                                         "type", "record_id", "rules", "reason" };
enum { N_COLS = sizeof(s_headers) / sizeof(s_headers[0]) };

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
    for (size_t i = 0; i < r->n_rule_ids; i++) {
        if (i > 0) {
            strcat(rules, ",");
        }
        strcat(rules, r->rule_ids[i]);
    }
    cells[0] = acc_xasprintf("%llu", (unsigned long long)r->seq);
    cells[1] = acc_xstrdup(r->at);
    cells[2] = acc_xstrdup(r->event);
    cells[3] = acc_xstrdup(r->from_agency);
    cells[4] = acc_xstrdup(r->to_agency);
    cells[5] = acc_xstrdup(r->record_type);
    cells[6] = acc_xstrdup(r->record_id);
    cells[7] = rules;
    cells[8] = acc_xstrdup(r->reason[0] != '\0' ? r->reason : r->error_code);
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
                out->table_cap = out->table_cap == 0 ? 64 * N_COLS : out->table_cap * 2;
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

/* Sends one page's question and waits for its answer; NULL after printing why. */
static Accord__V1__Envelope *s_ask(client_t *client, Accord__V1__AuditQuery *query, uint64_t id)
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
        if (reply->correlation_id != id) {
            accord__v1__envelope__free_unpacked(reply, NULL);
            continue;
        }
        if (reply->body_case == ACCORD__V1__ENVELOPE__BODY_AUDIT_RESULT) {
            return reply;
        }
        if (reply->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
            (void)fprintf(stderr, "accord-audit: the broker refused the query: %s (%s)\n",
                          reply->error->message, acc_pb_code_name(reply->error->code));
        } else {
            (void)fprintf(stderr, "accord-audit: the broker could not answer just now; retry\n");
        }
        accord__v1__envelope__free_unpacked(reply, NULL);
        return NULL;
    }
}

int audit_log(const acc_agent_config_t *config, const audit_log_args_t *args)
{
    client_t *client = NULL;
    acc_err_t err;
    if (client_open(&client, config, false, &err) != ACC_OK ||
        client_hello(client, HELLO_MS, &err) != ACC_OK) {
        (void)fprintf(stderr, "accord-audit: %s\n", err.msg);
        client_destroy(&client);
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
    int status = EXIT_SUCCESS;
    for (uint64_t page = 1;; page++) {
        if (wanted > 0) {
            query.limit = wanted - (uint32_t)out.rows;
        }
        Accord__V1__Envelope *reply = s_ask(client, &query, page);
        if (reply == NULL) {
            status = EXIT_CONNECT;
            break;
        }
        const Accord__V1__AuditResult *res = reply->audit_result;
        for (size_t i = 0; i < res->n_rows; i++) {
            s_emit(&out, res->rows[i]);
            query.after_seq = res->rows[i]->seq;
        }
        bool more = res->more && res->n_rows > 0;
        accord__v1__envelope__free_unpacked(reply, NULL);
        if (more && out.format == AUDIT_TABLE && out.rows >= TABLE_MAX) {
            (void)fprintf(stderr,
                          "accord-audit: the table stops at %d rows; use --csv or "
                          "--json for more\n",
                          TABLE_MAX);
        }
        if (!more || (wanted > 0 && out.rows >= wanted) ||
            (out.format == AUDIT_TABLE && out.rows >= TABLE_MAX)) {
            break;
        }
    }
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
