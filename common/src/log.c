/* log.c - one line per event on stderr */
#include "accord/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const s_level_names[] = {
    [ACC_LOG_ERROR] = "error", [ACC_LOG_WARN] = "warn",   [ACC_LOG_NOTICE] = "notice",
    [ACC_LOG_INFO] = "info",   [ACC_LOG_DEBUG] = "debug",
};

/* Set once from main before any thread starts; read-only afterwards. */
static acc_log_level_t s_threshold = ACC_LOG_INFO;

void acc_log_setup(acc_log_level_t level)
{
    s_threshold = level;
}

acc_log_level_t acc_log_threshold(void)
{
    return s_threshold;
}

acc_rc_t acc_log_level_parse(acc_log_level_t *out, const char *name)
{
    for (size_t i = 0; i < sizeof(s_level_names) / sizeof(s_level_names[0]); i++) {
        if (strcmp(name, s_level_names[i]) == 0) {
            *out = (acc_log_level_t)i;
            return ACC_OK;
        }
    }
    return ACC_ERR_INVALID;
}

/* One event, one line: a message may quote text with line breaks or tabs
 * (libpq's end in a newline, and put a hint on a line of its own), which would
 * otherwise start what journald shows as another event, with no time or level,
 * or let quoted text forge one. Each run of control characters becomes one
 * space; one at the end is dropped. */
static void s_one_line(char *text)
{
    char *out = text;
    bool gap = false;
    for (const char *in = text; *in != '\0'; in++) {
        unsigned char c = (unsigned char)*in;
        if (c < 0x20 || c == 0x7f) {
            gap = true;
            continue;
        }
        if (gap && out != text) {
            *out++ = ' ';
        }
        gap = false;
        *out++ = (char)c;
    }
    *out = '\0';
}

void acc_log_write(acc_log_level_t level, const char *module, const char *fmt, ...)
{
    struct timespec now;
    (void)clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    (void)gmtime_r(&now.tv_sec, &tm);
    char stamp[32];
    (void)strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

    char line[1024];
    int n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s: ", stamp, now.tv_nsec / 1000000L,
                     s_level_names[level], module);
    if (n < 0) {
        return;
    }
    size_t used = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(line + used, sizeof(line) - used, fmt, ap);
    va_end(ap);
    s_one_line(line + used);
    /* One fputs per line so concurrent writers do not interleave mid-line. */
    (void)fprintf(stderr, "%s\n", line);
}
