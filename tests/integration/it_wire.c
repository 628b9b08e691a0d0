/* it_wire.c - every refusal the wire can give, over a real socket: the right code
 * and message, and the broker keeps serving */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
    snprintf(world->broker_extra, sizeof(world->broker_extra), "max_message_bytes: 8192\n");
    th_broker_start(world);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(wire, .init = setup, .fini = teardown, .timeout = 120);

/* Sends env on a fresh connection (after Hello when hello is true) and returns the
 * code of the Error that comes back. */
static Accord__V1__ErrorCode s_error_for(const char *agency, bool hello,
                                         const Accord__V1__Envelope *env, char *message,
                                         size_t message_len)
{
    acc_agent_config_t cfg;
    th_agent_config_load(world, agency, &cfg);
    client_t *c = NULL;
    acc_err_t err;
    cr_assert_eq(client_open(&c, &cfg, false, &err), ACC_OK, "%s", err.msg);
    if (hello) {
        cr_assert_eq(client_hello(c, 10000, &err), ACC_OK, "%s", err.msg);
    }
    cr_assert_eq(client_send(c, env, &err), ACC_OK);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 10000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(reply->body_case, ACCORD__V1__ENVELOPE__BODY_ERROR, "kind %d", reply->body_case);
    cr_assert_eq(reply->correlation_id, env->correlation_id);
    Accord__V1__ErrorCode code = reply->error->code;
    snprintf(message, message_len, "%s", reply->error->message);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    return code;
}

Test(wire, each_misuse_gets_its_own_code_and_message)
{
    Accord__V1__Publish publish = ACCORD__V1__PUBLISH__INIT;
    Accord__V1__ChildRecord record = ACCORD__V1__CHILD_RECORD__INIT;
    publish.record = &record;
    Accord__V1__Envelope pub = ACCORD__V1__ENVELOPE__INIT;
    pub.correlation_id = 11;
    pub.body_case = ACCORD__V1__ENVELOPE__BODY_PUBLISH;
    pub.publish = &publish;

    Accord__V1__AuditQuery query = ACCORD__V1__AUDIT_QUERY__INIT;
    Accord__V1__Envelope audit = ACCORD__V1__ENVELOPE__INIT;
    audit.correlation_id = 12;
    audit.body_case = ACCORD__V1__ENVELOPE__BODY_AUDIT_QUERY;
    audit.audit_query = &query;

    Accord__V1__Welcome welcome = ACCORD__V1__WELCOME__INIT;
    Accord__V1__Envelope odd = ACCORD__V1__ENVELOPE__INIT;
    odd.correlation_id = 13;
    odd.body_case = ACCORD__V1__ENVELOPE__BODY_WELCOME;
    odd.welcome = &welcome;

    Accord__V1__Hello hello = ACCORD__V1__HELLO__INIT;
    hello.protocol_version = 2;
    Accord__V1__Envelope future = ACCORD__V1__ENVELOPE__INIT;
    future.correlation_id = 14;
    future.body_case = ACCORD__V1__ENVELOPE__BODY_HELLO;
    future.hello = &hello;

    Accord__V1__Hello other = ACCORD__V1__HELLO__INIT;
    other.protocol_version = 1;
    other.agency_id = acc_pb_str("rmbc-childrens-centres");
    Accord__V1__Envelope spoof = ACCORD__V1__ENVELOPE__INIT;
    spoof.correlation_id = 15;
    spoof.body_case = ACCORD__V1__ENVELOPE__BODY_HELLO;
    spoof.hello = &other;

    Accord__V1__DeliverAck ack = ACCORD__V1__DELIVER_ACK__INIT;
    ack.share_id = acc_pb_str("00000000-0000-4000-8000-000000000000");
    Accord__V1__Envelope stray = ACCORD__V1__ENVELOPE__INIT;
    stray.correlation_id = 16;
    stray.body_case = ACCORD__V1__ENVELOPE__BODY_DELIVER_ACK;
    stray.deliver_ack = &ack;

    const struct {
        const char *agency;
        bool hello;
        const Accord__V1__Envelope *env;
        Accord__V1__ErrorCode code;
        const char *message;
    } cases[] = {
        { "rft-health-visiting", false, &pub, ACCORD__V1__ERROR_CODE__HELLO_REQUIRED,
          "send Hello first" },
        { "ig-officer", true, &pub, ACCORD__V1__ERROR_CODE__NOT_PERMITTED,
          "auditors may not publish" },
        { "rft-health-visiting", true, &audit, ACCORD__V1__ERROR_CODE__AUDIT_FORBIDDEN,
          "only auditors" },
        { "rft-health-visiting", true, &odd, ACCORD__V1__ERROR_CODE__UNKNOWN_MESSAGE,
          "does not accept this kind" },
        { "rft-health-visiting", false, &future, ACCORD__V1__ERROR_CODE__UNSUPPORTED_VERSION,
          "protocol version 1" },
        { "rft-health-visiting", false, &spoof, ACCORD__V1__ERROR_CODE__SPOOFED,
          "other than the one this key belongs to" },
        { "rmbc-childrens-centres", true, &stray, ACCORD__V1__ERROR_CODE__UNKNOWN_SHARE,
          "no delivery awaiting acknowledgement" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char message[256];
        Accord__V1__ErrorCode code =
            s_error_for(cases[i].agency, cases[i].hello, cases[i].env, message, sizeof(message));
        cr_assert_eq(code, cases[i].code, "case %zu: got %s (%s)", i, acc_pb_code_name(code),
                     message);
        cr_assert(strstr(message, cases[i].message) != NULL, "case %zu: %s", i, message);
    }
    cr_assert_eq(th_pg_count(world, "true"), 0, "no misuse wrote a log row");
}

Test(wire, an_oversized_frame_costs_only_its_sender_the_connection)
{
    acc_agent_config_t cfg;
    client_t *c = th_client(world, "rft-health-visiting", &cfg);
    size_t big = 64 * 1024;
    char *frame = calloc(1, big);
    acc_err_t err;
    cr_assert_eq(client_send_raw(c, frame, big, &err), ACC_OK);
    free(frame);
    Accord__V1__Envelope *reply = NULL;
    cr_assert_eq(client_recv(c, &reply, 1000, &err), ACC_ERR_TIMEOUT,
                 "the broker answered an oversized frame");
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
    cr_assert(th_broker_logged(world, "listening", 1000));
    c = th_client(world, "rft-health-visiting", &cfg);
    char *json = th_health_visit_json("hv-after-big", "9434765919");
    reply = th_publish(c, json, "");
    free(json);
    cr_assert_eq(reply->publish_result->code, ACCORD__V1__ERROR_CODE__OK);
    accord__v1__envelope__free_unpacked(reply, NULL);
    client_destroy(&c);
    acc_agent_config_clear(&cfg);
}
