/* load_accord.c - bench-load-accord: the load generator against accordd, through
 * the agents' client library (one connection per publisher and per subscriber) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/config.h"
#include "accord/pb.h"
#include "bench.h"
#include "client.h"

#define HELLO_TIMEOUT_MS 10000
#define BENCH_AGENCY_PUB "bench-publisher"
#define BENCH_RECORD     "bench-record"

typedef struct {
    acc_agent_config_t config;
    client_t *client;
    size_t pad; /* filler bytes in the notes field to reach opts->size */
    char *notes;
    int publisher; /* index: record ids are unique per publisher connection */
    char record_id[48];
} conn_t;

/* The agreement the run script writes names agencies bench-publisher and
 * bench-recipient-1..R, and one rule that lets every field below reach all of them. */
static void s_record(Accord__V1__ChildRecord *rec, Accord__V1__Subject *subject,
                     Accord__V1__Field fields[2], Accord__V1__Field *field_ptrs[2], conn_t *c,
                     uint64_t token, int64_t sent_ns)
{
    accord__v1__subject__init(subject);
    subject->nhs_number = acc_pb_str("9434765919");
    subject->given_name = acc_pb_str("Amelia");
    subject->family_name = acc_pb_str("Smith");
    subject->date_of_birth = acc_pb_str("2026-05-02");
    accord__v1__field__init(&fields[0]);
    fields[0].name = acc_pb_str("sent_ns");
    fields[0].value_case = ACCORD__V1__FIELD__VALUE_INTEGER;
    fields[0].integer = sent_ns;
    accord__v1__field__init(&fields[1]);
    fields[1].name = acc_pb_str("notes");
    fields[1].value_case = ACCORD__V1__FIELD__VALUE_TEXT;
    fields[1].text = c->notes;
    field_ptrs[0] = &fields[0];
    field_ptrs[1] = &fields[1];
    accord__v1__child_record__init(rec);
    (void)snprintf(c->record_id, sizeof(c->record_id), "b%d-%016llx", c->publisher,
                   (unsigned long long)token);
    rec->record_id = c->record_id;
    rec->record_type = acc_pb_str(BENCH_RECORD);
    rec->occurred_at = acc_pb_str("2026-11-20T10:15:00Z");
    rec->subject = subject;
    rec->n_fields = 2;
    rec->fields = field_ptrs;
    rec->consent = ACCORD__V1__CONSENT__CONSENT_GIVEN;
}

/* The notes filler that makes one encoded record opts->size bytes (or as near as
 * the fixed fields allow). */
static void s_size_notes(conn_t *c, size_t size)
{
    c->notes = calloc(1, 1);
    Accord__V1__ChildRecord rec;
    Accord__V1__Subject subject;
    Accord__V1__Field fields[2];
    Accord__V1__Field *ptrs[2];
    s_record(&rec, &subject, fields, ptrs, c, 0x0123456789abcdefULL, bench_now_ns());
    size_t base = accord__v1__child_record__get_packed_size(&rec);
    size_t pad = size > base ? size - base : 0;
    for (;;) {
        free(c->notes);
        c->notes = malloc(pad + 1);
        if (c->notes == NULL) {
            abort();
        }
        memset(c->notes, 'n', pad);
        c->notes[pad] = '\0';
        s_record(&rec, &subject, fields, ptrs, c, 0x0123456789abcdefULL, bench_now_ns());
        size_t now = accord__v1__child_record__get_packed_size(&rec);
        if (now <= size || pad == 0) {
            break;
        }
        pad -= now - size < pad ? now - size : pad;
    }
    c->pad = pad;
}

static int s_open(void **out, const bench_opts_t *opts, const char *agency, bool subscribe)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        abort();
    }
    char path[1024];
    (void)snprintf(path, sizeof(path), "%s/%s.yaml", opts->config, agency);
    acc_err_t err;
    if (acc_agent_config_load(&c->config, path, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench: %s\n", err.msg);
        free(c);
        return -1;
    }
    if (client_open(&c->client, &c->config, subscribe, &err) != ACC_OK ||
        client_hello(c->client, HELLO_TIMEOUT_MS, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench: %s: %s\n", agency, err.msg);
        client_destroy(&c->client);
        acc_agent_config_clear(&c->config);
        free(c);
        return -1;
    }
    s_size_notes(c, opts->size);
    *out = c;
    return 0;
}

static void s_close(void **conn)
{
    conn_t *c = *conn;
    client_destroy(&c->client);
    acc_agent_config_clear(&c->config);
    free(c->notes);
    free(c);
    *conn = NULL;
}

static int s_pub_open(void **out, const bench_opts_t *opts, int index)
{
    if (s_open(out, opts, BENCH_AGENCY_PUB, false) != 0) {
        return -1;
    }
    conn_t *c = *out;
    c->publisher = index;
    return 0;
}

static int s_pub_send(void *conn, uint64_t token, int64_t sent_ns)
{
    conn_t *c = conn;
    Accord__V1__ChildRecord rec;
    Accord__V1__Subject subject;
    Accord__V1__Field fields[2];
    Accord__V1__Field *ptrs[2];
    s_record(&rec, &subject, fields, ptrs, c, token, sent_ns);
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    publish.record = &rec;
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.correlation_id = token;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    env.publish = &publish;
    acc_err_t err;
    if (client_send(c->client, &env, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    return 0;
}

typedef int envelope_fn(conn_t *c, const Accord__V1__Envelope *env, void *ctx);

/* Waits up to timeout_ms for the first envelope, then takes whatever else is
 * already there, handing each to fn; -1 on a broken connection or fn's -1. */
static int s_drain(conn_t *c, int timeout_ms, envelope_fn *fn, void *ctx)
{
    for (int wait_ms = timeout_ms;; wait_ms = 0) {
        Accord__V1__Envelope *env = NULL;
        acc_err_t err;
        acc_rc_t rc = client_recv(c->client, &env, wait_ms, &err);
        if (rc == ACC_ERR_TIMEOUT) {
            return 0;
        }
        if (rc != ACC_OK) {
            (void)fprintf(stderr, "bench: %s\n", err.msg);
            return -1;
        }
        int ok = fn(c, env, ctx);
        accord__v1__envelope__free_unpacked(env, NULL);
        if (ok != 0) {
            return -1;
        }
    }
}

static int s_on_result(conn_t *c, const Accord__V1__Envelope *env, void *ctx)
{
    (void)c;
    bench_pub_t *pub = ctx;
    if (env->body_case == ACCORD__V1__ENVELOPE__BODY_PUBLISH_RESULT) {
        bench_pub_result(pub, env->correlation_id,
                         env->publish_result->code == ACCORD__V1__ERROR_CODE__OK);
    } else if (env->body_case == ACCORD__V1__ENVELOPE__BODY_ERROR) {
        bench_pub_result(pub, env->correlation_id, false);
    }
    return 0;
}

static int s_pub_poll(void *conn, bench_pub_t *pub, int timeout_ms)
{
    return s_drain(conn, timeout_ms, s_on_result, pub);
}

static int s_sub_open(void **out, const bench_opts_t *opts, int index)
{
    char agency[64];
    (void)snprintf(agency, sizeof(agency), "bench-recipient-%d", index + 1);
    return s_open(out, opts, agency, true);
}

static int64_t s_sent_ns(const Accord__V1__Deliver *d)
{
    if (d->record == NULL) {
        return 0;
    }
    for (size_t i = 0; i < d->record->n_fields; i++) {
        const Accord__V1__Field *f = d->record->fields[i];
        if (f->value_case == ACCORD__V1__FIELD__VALUE_INTEGER && strcmp(f->name, "sent_ns") == 0) {
            return f->integer;
        }
    }
    return 0;
}

static int s_ack(conn_t *c, const char *share_id)
{
    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    ack.share_id = acc_pb_str(share_id);
    Accord__V1__Envelope env = ACCORD__V1__ENVELOPE__INIT;
    env.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    env.deliver_ack = &ack;
    acc_err_t err;
    if (client_send(c->client, &env, &err) != ACC_OK) {
        (void)fprintf(stderr, "bench: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int s_on_delivery(conn_t *c, const Accord__V1__Envelope *env, void *ctx)
{
    if (env->body_case != ACCORD__V1__ENVELOPE__BODY_DELIVER) {
        return 0;
    }
    int ok = s_ack(c, env->deliver->share_id);
    bench_sub_delivery(ctx, s_sent_ns(env->deliver));
    return ok;
}

static int s_sub_poll(void *conn, bench_sub_t *sub, int timeout_ms)
{
    return s_drain(conn, timeout_ms, s_on_delivery, sub);
}

int main(int argc, char **argv)
{
    static const bench_transport_t transport = {
        .name = "accord",
        .pub_open = s_pub_open,
        .pub_send = s_pub_send,
        .pub_poll = s_pub_poll,
        .pub_close = s_close,
        .sub_open = s_sub_open,
        .sub_poll = s_sub_poll,
        .sub_close = s_close,
    };
    return bench_main(argc, argv, &transport);
}
