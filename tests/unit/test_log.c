/* test_log.c - the broker's and agents' log: one line per event, whatever a
 * message it quotes holds */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"

static char *s_logged(void)
{
    (void)fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    cr_assert_not_null(f);
    size_t cap = 4096;
    char *text = calloc(1, cap);
    cr_assert_not_null(text);
    size_t len = fread(text, 1, cap - 1, f);
    text[len] = '\0';
    return text;
}

static void setup(void)
{
    cr_redirect_stderr();
    acc_log_setup(ACC_LOG_INFO);
}

TestSuite(log, .init = setup);

/* libpq's messages end in a newline and may hold more (a hint on a line of its
 * own, after a tab): quoted in a log line, they must not start another line,
 * which journald would show as a separate event with no time or level. */
Test(log, a_message_quoting_line_breaks_stays_one_line)
{
    acc_log_warn("metrics", "pending deliveries not counted: %s",
                 "connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" failed: No "
                 "such file or directory\n\tIs the server running locally?\n");
    char *text = s_logged();
    cr_assert_eq(strchr(text, '\n'), text + strlen(text) - 1, "more than one line: [%s]", text);
    cr_assert(strstr(text, "No such file or directory Is the server running locally?\n") != NULL,
              "[%s]", text);
    cr_assert(strchr(text, '\t') == NULL && strchr(text, '\r') == NULL, "[%s]", text);
    free(text);
}

/* Nor can a name a partner chose (a Hello's software string, say) forge a line. */
Test(log, a_line_break_in_a_quoted_value_cannot_forge_a_second_event)
{
    acc_log_info("router", "welcomed agency \"%s\"",
                 "x\"\r\n2026-01-01T00:00:00.000Z error broker: forged");
    char *text = s_logged();
    cr_assert_eq(strchr(text, '\n'), text + strlen(text) - 1, "more than one line: [%s]", text);
    free(text);
}

Test(log, a_plain_message_is_written_as_it_is)
{
    acc_log_notice("broker", "listening on %s", "tcp://127.0.0.1:5555");
    char *text = s_logged();
    cr_assert(strstr(text, " notice broker: listening on tcp://127.0.0.1:5555\n") != NULL, "[%s]",
              text);
    free(text);
}
