/* lookup.c - accord-agent lookup: which partner agencies already know a child,
 * asked of the broker under the agreement's lookups, printed as a table or JSON */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"
#include "accord/logrow.h"
#include "accord/nhs.h"
#include "accord/pbwipe.h"
#include "accord/record.h"
#include "accord/validate.h"
#include "agent.h"

#define LOOKUP_CORRELATION 1
#define CELL_MAX           48 /* characters of a table cell; longer ones are cut with "..." */

/* The child as the broker is asked about it. The NHS number is normalised
 * here (and its check digit checked), so a mistyped one is never sent. */
typedef struct {
    char nhs[ACC_NHS_DIGITS + 1];
    Accord__V1__Subject subject;
} s_child_t;

static void s_refused(const char *code, const char *reason)
{
    (void)fprintf(stderr, "accord-agent lookup: refused: %s: %s\n", code, reason);
}

static int s_child(s_child_t *c, const agent_args_t *args)
{
    accord__v1__subject__init(&c->subject);
    acc_err_t err;
    if (args->nhs != NULL) {
        if (acc_nhs_check(c->nhs, args->nhs, &err) != ACC_OK) {
            s_refused("INVALID_NHS_NUMBER", err.msg);
            return EXIT_REFUSED;
        }
        c->subject.nhs_number = c->nhs;
        return EXIT_SUCCESS;
    }
    size_t len = strlen(args->local_id);
    if (len == 0 || len > ACC_VALIDATE_LOCAL_ID_MAX || !acc_utf8_is_valid(args->local_id, len)) {
        s_refused("INVALID_SUBJECT", "--local-id is 1-128 bytes of UTF-8");
        return EXIT_REFUSED;
    }
    if (args->dob == NULL || !acc_is_date(args->dob)) {
        s_refused("INVALID_SUBJECT", "--local-id needs --dob YYYY-MM-DD, a real date");
        return EXIT_REFUSED;
    }
    c->subject.local_id = acc_pb_str(args->local_id);
    c->subject.date_of_birth = acc_pb_str(args->dob);
    return EXIT_SUCCESS;
}

/* ---- output ---- */

/* Text from the broker as JSON: a string that is not UTF-8 is not passed on. */
static json_t *s_text(const char *text)
{
    json_t *s = json_string(text);
    return s != NULL ? s : json_string("(not valid UTF-8)");
}

static json_t *s_involvement_json(const Accord__V1__Involvement *inv)
{
    json_t *types = json_array();
    for (size_t i = 0; i < inv->n_record_types; i++) {
        json_array_append_new(types, s_text(inv->record_types[i]));
    }
    json_t *obj = json_object();
    json_object_set_new(obj, "agency_id", s_text(inv->agency_id));
    json_object_set_new(obj, "agency_name", s_text(inv->agency_name));
    json_object_set_new(obj, "record_types", types);
    json_object_set_new(obj, "first_at", s_text(inv->first_at));
    json_object_set_new(obj, "last_at", s_text(inv->last_at));
    json_object_set_new(obj, "open_referrals", json_integer(inv->open_referrals));
    return obj;
}

static json_t *s_result_json(const Accord__V1__LookupResult *r)
{
    json_t *agencies = json_array();
    for (size_t i = 0; i < r->n_agencies; i++) {
        json_array_append_new(agencies, s_involvement_json(r->agencies[i]));
    }
    json_t *obj = json_object();
    json_object_set_new(obj, "code", json_string(acc_pb_code_name(r->code)));
    json_object_set_new(obj, "reason", s_text(r->reason));
    json_object_set_new(obj, "lookup_id", s_text(r->lookup_id));
    json_object_set_new(obj, "window_from", s_text(r->window_from));
    json_object_set_new(obj, "seq", json_integer((json_int_t)r->seq));
    json_object_set_new(obj, "agencies", agencies);
    return obj;
}

/* Characters (UTF-8 code points) in text, counting at most max bytes. */
static size_t s_width(const char *text, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < max && text[i] != '\0'; i++) {
        n += ((unsigned char)text[i] & 0xC0U) != 0x80U ? 1U : 0U;
    }
    return n;
}

/* A cell as printed: control characters as '?', cut at CELL_MAX characters. */
static void s_cell(char *out, size_t out_len, const char *text)
{
    size_t len = strlen(text);
    size_t keep = acc_utf8_is_valid(text, len) ? len : 0;
    bool cut = s_width(text, keep) > CELL_MAX;
    size_t o = 0;
    size_t chars = 0;
    for (size_t i = 0; i < keep && o + 4 < out_len; i++) {
        unsigned char ch = (unsigned char)text[i];
        bool starts = (ch & 0xC0U) != 0x80U;
        if (starts && cut && chars == CELL_MAX - 3) {
            break;
        }
        chars += starts ? 1U : 0U;
        out[o] = text[i];
        if (ch < 0x20U || ch == 0x7FU) {
            out[o] = '?';
        }
        o++;
    }
    out[o] = '\0';
    if (cut) {
        (void)strncat(out, "...", out_len - o - 1);
    }
}

/* The day of an RFC 3339 time or a date: its first ten characters. */
static void s_day(char *out, size_t out_len, const char *text)
{
    char day[11];
    (void)snprintf(day, sizeof(day), "%s", text);
    s_cell(out, out_len, acc_is_date(day) ? day : text);
}

enum { COL_ID, COL_NAME, COL_TYPES, COL_FIRST, COL_LAST, COL_OPEN, COLS };

typedef char s_row_t[COLS][CELL_MAX * 4 + 8];

static void s_row(s_row_t row, const Accord__V1__Involvement *inv)
{
    char types[CELL_MAX * 4 + 8] = "";
    for (size_t i = 0; i < inv->n_record_types && strlen(types) + 2 < sizeof(types); i++) {
        (void)snprintf(types + strlen(types), sizeof(types) - strlen(types), "%s%s",
                       i > 0 ? ", " : "", inv->record_types[i]);
    }
    s_cell(row[COL_ID], sizeof(row[COL_ID]), inv->agency_id);
    s_cell(row[COL_NAME], sizeof(row[COL_NAME]), inv->agency_name);
    s_cell(row[COL_TYPES], sizeof(row[COL_TYPES]), types);
    s_day(row[COL_FIRST], sizeof(row[COL_FIRST]), inv->first_at);
    s_day(row[COL_LAST], sizeof(row[COL_LAST]), inv->last_at);
    (void)snprintf(row[COL_OPEN], sizeof(row[COL_OPEN]), "%u", inv->open_referrals);
}

static void s_print_row(s_row_t row, const size_t *widths)
{
    for (size_t c = 0; c < COLS; c++) {
        size_t pad = widths[c] - s_width(row[c], SIZE_MAX);
        (void)fputs(row[c], stdout);
        for (size_t i = 0; c + 1 < COLS && i < pad + 2; i++) {
            (void)fputc(' ', stdout);
        }
    }
    (void)fputc('\n', stdout);
}

static void s_print_table(const Accord__V1__LookupResult *r)
{
    char window[CELL_MAX * 4 + 8];
    char id[CELL_MAX * 4 + 8];
    s_day(window, sizeof(window), r->window_from);
    s_cell(id, sizeof(id), r->lookup_id);
    (void)printf("shares since %s (lookup %s, log seq %llu)\n", window, id,
                 (unsigned long long)r->seq);
    if (r->n_agencies == 0) {
        (void)printf("no agency has shared records about this child in the window\n");
        return;
    }
    s_row_t *rows = acc_xcalloc(r->n_agencies + 1, sizeof(*rows));
    static const char *const heads[COLS] = { "AGENCY", "NAME", "RECORD TYPES",
                                             "FIRST",  "LAST", "OPEN REFERRALS" };
    size_t widths[COLS] = { 0 };
    for (size_t c = 0; c < COLS; c++) {
        (void)snprintf(rows[0][c], sizeof(rows[0][c]), "%s", heads[c]);
    }
    for (size_t i = 0; i < r->n_agencies; i++) {
        s_row(rows[i + 1], r->agencies[i]);
    }
    for (size_t i = 0; i <= r->n_agencies; i++) {
        for (size_t c = 0; c < COLS; c++) {
            size_t w = s_width(rows[i][c], SIZE_MAX);
            widths[c] = w > widths[c] ? w : widths[c];
        }
    }
    for (size_t i = 0; i <= r->n_agencies; i++) {
        s_print_row(rows[i], widths);
    }
    free(rows);
}

/* ---- asking ---- */

static int s_answer(const Accord__V1__Envelope *env, bool as_json)
{
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        s_refused(acc_pb_code_name(env->error->code), env->error->message);
        return EXIT_REFUSED;
    }
    const Accord__V1__LookupResult *r = env->lookup_result;
    int status = EXIT_SUCCESS;
    if (as_json && agent_print_json(s_result_json(r)) != 0) {
        status = EXIT_OUTPUT;
    }
    if (r->code != ACCORD__V1__ERROR_CODE__OK) {
        s_refused(acc_pb_code_name(r->code), r->reason);
        acc_log_info("lookup", "refused: %s", acc_pb_code_name(r->code));
        return status == EXIT_SUCCESS ? EXIT_REFUSED : status;
    }
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    acc_err_t ignored;
    bool has_id = acc_uuid_parse(id, r->lookup_id, &ignored) == ACC_OK;
    acc_log_info("lookup", "lookup %s: %zu agencies involved", has_id ? r->lookup_id : "?",
                 r->n_agencies);
    if (!as_json) {
        s_print_table(r);
        status = fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_OUTPUT;
    }
    return status;
}

int lookup_run(const acc_agent_config_t *config, const agent_args_t *args)
{
    s_child_t child;
    int status = s_child(&child, args);
    if (status != EXIT_SUCCESS) {
        return status;
    }
    Accord__V1__Lookup msg = ACCORD__V1__LOOKUP__INIT;
    msg.subject = &child.subject;
    msg.purpose = acc_pb_str(args->purpose);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = LOOKUP_CORRELATION;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_LOOKUP;
    env.lookup = &msg;
    int64_t deadline =
        acc_now_ms() + 1000 * (args->timeout_s > 0 ? args->timeout_s : AGENT_TIMEOUT_DEFAULT_S);
    client_t *client = NULL;
    status = agent_connect_until(&client, config, false, deadline);
    Accord__V1__Envelope *answer = NULL;
    if (status == EXIT_SUCCESS) {
        /* not sent again for silence alone: each lookup is logged, and the
         * agencies named may be told of it */
        status = agent_ask(client, &env, ACCORD__V1__ENVELOPE__BODY_LOOKUP_RESULT, false, deadline,
                           &answer);
    }
    if (status == EXIT_SUCCESS) {
        status = s_answer(answer, args->json);
        accord__v1__envelope__free_unpacked(answer, acc_pb_wiping_allocator());
    }
    client_destroy(&client);
    sodium_memzero(child.nhs, sizeof(child.nhs));
    return status;
}

void lookup_usage(FILE *out)
{
    (void)fputs(
        "usage: accord-agent lookup --config FILE NHS_NUMBER --purpose TEXT [--json]\n"
        "       accord-agent lookup --config FILE --local-id ID --dob YYYY-MM-DD\n"
        "                           --purpose TEXT [--json] [--timeout SECONDS]\n"
        "\n"
        "lookup     asks which partner agencies already know a child (a front door's\n"
        "           \"who is involved\"), when the agreement's lookups: let this agency ask\n"
        "           for this purpose (--purpose, word for word as the agreement lists it).\n"
        "           The broker answers from its log alone, never from records' contents:\n"
        "           each agency that shared or received records about the child within\n"
        "           the lookup's window, the record types, the first and last date, and\n"
        "           its open referrals (shares from or to it whose rule takes outcomes and\n"
        "           that are not yet declined or closed). The lookup is logged, and where\n"
        "           the agreement says notify, each agency named is told who looked and\n"
        "           why.\n"
        "           The child is an NHS number (checked here: a mistyped one is not\n"
        "           sent), or --local-id with --dob: this agency's own id for a child\n"
        "           without one (it matches this agency's own records only). The number\n"
        "           is never written to this program's log; it is in the command line,\n"
        "           which other users of the machine may see while it runs.\n"
        "           Prints a table:\n"
        "             shares since 2024-11-21 (lookup ID, log seq N)\n"
        "             AGENCY  NAME  RECORD TYPES  FIRST  LAST  OPEN REFERRALS\n"
        "           or \"no agency has shared records about this child in the window\".\n"
        "           --json prints the answer as one JSON object instead:\n"
        "           {\"code\",\"reason\",\"lookup_id\",\"window_from\",\"seq\",\"agencies\":\n"
        "            [{\"agency_id\",\"agency_name\",\"record_types\",\"first_at\",\"last_at\",\n"
        "              \"open_referrals\"}]}\n"
        "           Refused: the code and reason on stderr (NOT_PERMITTED: this agency\n"
        "           may not look up; PURPOSE_NOT_PERMITTED; INVALID_NHS_NUMBER;\n"
        "           INVALID_SUBJECT; AGREEMENT_NOT_IN_FORCE), exit 1. A broker that\n"
        "           cannot answer now (UNAVAILABLE) is asked again for up to --timeout\n"
        "           SECONDS (default 30), then exit 69.\n",
        out);
}
