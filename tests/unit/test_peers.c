/* test_peers.c - a connection's unread bound (peers_unread_within), against a real
 * loopback TCP connection whose far end does not read */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "peers.h"

#define LIMIT ((size_t)256 * 1024)

typedef struct {
    int listener;
    int near; /* the broker's side: written to, its send queue measured */
    int far;  /* the peer: never reads */
} pair_t;

static pair_t s_pair(void)
{
    pair_t p;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(addr);
    p.listener = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(p.listener, 0);
    cr_assert_eq(bind(p.listener, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(listen(p.listener, 1), 0);
    cr_assert_eq(getsockname(p.listener, (struct sockaddr *)&addr, &len), 0);
    p.near = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(p.near, (struct sockaddr *)&addr, sizeof(addr)), 0);
    p.far = accept(p.listener, NULL, NULL);
    cr_assert_geq(p.far, 0);
    int small = 64 * 1024; /* the far end's window fills soon: the rest stays queued */
    (void)setsockopt(p.far, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    cr_assert_eq(fcntl(p.near, F_SETFL, O_NONBLOCK), 0);
    return p;
}

static void s_close(pair_t *p)
{
    close(p->near);
    close(p->far);
    close(p->listener);
}

/* Writes until at least want bytes sit unread in near's send queue. */
static size_t s_fill(const pair_t *p, size_t want)
{
    static char chunk[16384];
    size_t sent = 0;
    peer_t probe = { .fd = p->near };
    while (peers_unread_bytes(&probe) < want) {
        ssize_t n = write(p->near, chunk, sizeof(chunk));
        cr_assert_gt(n, 0, "the send queue took less than %zu bytes", want);
        sent += (size_t)n;
    }
    return sent;
}

Test(peers, the_bound_counts_what_is_sent_and_asks_the_kernel_once_it_passes_the_limit)
{
    pair_t pair = s_pair();
    peer_t p = { .fd = pair.near };
    cr_assert(peers_unread_within(&p, LIMIT, 1000), "nothing sent yet");
    cr_assert_eq(p.unread_bound, 0);
    /* counted sends below the limit are taken on the bound alone */
    peers_note_sent(&p, 1000);
    cr_assert(peers_unread_within(&p, LIMIT, 1001));
    cr_assert_gt(p.unread_bound, 1000, "framing is counted as well");
    /* the queue really fills, and the sends are counted: past the limit the kernel
     * is asked, and it says so */
    size_t sent = s_fill(&pair, 2 * LIMIT);
    peers_note_sent(&p, sent);
    cr_assert_not(peers_unread_within(&p, LIMIT, 1002), "2 x limit sits unread");
    cr_assert_geq(p.unread_bound, 2 * LIMIT, "the kernel's answer replaced the bound");
    s_close(&pair);
}

Test(peers, frames_not_counted_are_seen_within_the_interval)
{
    pair_t pair = s_pair();
    peer_t p = { .fd = pair.near };
    cr_assert(peers_unread_within(&p, LIMIT, 1000));
    (void)s_fill(&pair, 2 * LIMIT); /* answers and Welcomes: not counted */
    cr_assert(peers_unread_within(&p, LIMIT, 1000 + PEERS_UNREAD_ASK_MS - 1),
              "within the interval the bound is trusted");
    cr_assert_not(peers_unread_within(&p, LIMIT, 1000 + PEERS_UNREAD_ASK_MS),
                  "after it the kernel is asked again");
    s_close(&pair);
}

Test(peers, a_queue_that_drained_is_within_again)
{
    pair_t pair = s_pair();
    peer_t p = { .fd = pair.near };
    cr_assert(peers_unread_within(&p, LIMIT, 1000));
    peers_note_sent(&p, 4 * LIMIT); /* counted, and taken in since (never queued here) */
    cr_assert(peers_unread_within(&p, LIMIT, 1001),
              "past the limit the kernel is asked at once, and it says nothing waits");
    cr_assert_lt(p.unread_bound, LIMIT);
    s_close(&pair);
}

/* ---- trust in a connection's publishes ---- */

static void s_fresh(peer_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        peers_note_publish(p, false, false);
    }
}

Test(peers, a_connection_is_trusted_after_a_run_of_new_records_and_not_before)
{
    peer_t p = { 0 };
    s_fresh(&p, PEERS_TRUST_AFTER - 1);
    cr_assert_not(peers_trusted(&p));
    s_fresh(&p, 1);
    cr_assert(peers_trusted(&p));
    p.gone = true;
    cr_assert_not(peers_trusted(&p), "a connection that ended is trusted with nothing");
}

Test(peers, any_repeat_ends_the_run_and_one_caught_at_commit_doubles_the_next)
{
    peer_t p = { 0 };
    s_fresh(&p, PEERS_TRUST_AFTER);
    peers_note_publish(&p, true, false); /* looked up: cost nothing */
    cr_assert_not(peers_trusted(&p));
    s_fresh(&p, PEERS_TRUST_AFTER);
    cr_assert(peers_trusted(&p), "a repeat that was looked up does not raise the bar");
    peers_note_publish(&p, true, true); /* reached the database and failed a batch */
    s_fresh(&p, 2 * PEERS_TRUST_AFTER - 1);
    cr_assert_not(peers_trusted(&p));
    s_fresh(&p, 1);
    cr_assert(peers_trusted(&p));
    for (int i = 0; i < 2 * PEERS_DISTRUST_MAX; i++) {
        peers_note_publish(&p, true, true);
    }
    cr_assert_eq(p.distrust, PEERS_DISTRUST_MAX, "the bar stops rising");
    s_fresh(&p, (uint32_t)PEERS_TRUST_AFTER << PEERS_DISTRUST_MAX);
    cr_assert(peers_trusted(&p));
}
