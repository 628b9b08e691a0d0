/* rc.c - error detail, invariant checks and fail-stop allocation */
#include "accord/rc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/log.h"

acc_rc_t acc_err_set(acc_err_t *err, acc_rc_t code, const char *fmt, ...)
{
    if (err != NULL) {
        /* formatted apart first: a caller may wrap the message it replaces
         * ("context: %s", err->msg), and vsnprintf's source and destination
         * must not overlap */
        char msg[sizeof(err->msg)];
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        memcpy(err->msg, msg, strlen(msg) + 1);
        err->code = code;
    }
    return code;
}

void acc_err_clear(acc_err_t *err)
{
    if (err != NULL) {
        err->code = ACC_OK;
        err->msg[0] = '\0';
    }
}

const char *acc_rc_name(acc_rc_t code)
{
    switch (code) {
    case ACC_OK:
        return "ok";
    case ACC_ERR_INVALID:
        return "invalid";
    case ACC_ERR_IO:
        return "io";
    case ACC_ERR_PERMISSION:
        return "permission";
    case ACC_ERR_NOT_FOUND:
        return "not found";
    case ACC_ERR_CRYPTO:
        return "crypto";
    case ACC_ERR_DB:
        return "database";
    case ACC_ERR_NET:
        return "network";
    case ACC_ERR_TIMEOUT:
        return "timeout";
    case ACC_ERR_LIMIT:
        return "limit";
    case ACC_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}

void acc_assert_fail(const char *expr, const char *file, int line)
{
    acc_log_write(ACC_LOG_ERROR, "assert", "%s:%d: invariant failed: %s", file, line, expr);
    abort();
}

static void *s_check(void *p, size_t size)
{
    if (p == NULL && size > 0) {
        acc_log_write(ACC_LOG_ERROR, "alloc", "out of memory allocating %zu bytes", size);
        abort();
    }
    return p;
}

void *acc_xmalloc(size_t size)
{
    return s_check(malloc(size == 0 ? 1 : size), size);
}

void *acc_xcalloc(size_t count, size_t size)
{
    return s_check(calloc(count == 0 ? 1 : count, size == 0 ? 1 : size), count * size);
}

void *acc_xrealloc(void *ptr, size_t size)
{
    return s_check(realloc(ptr, size == 0 ? 1 : size), size);
}

char *acc_xstrdup(const char *s)
{
    return acc_xstrndup(s, strlen(s));
}

char *acc_xstrndup(const char *s, size_t len)
{
    char *copy = acc_xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *acc_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    acc_assert(n >= 0);
    size_t size = (size_t)n + 1;
    char *out = acc_xmalloc(size);
    va_start(ap, fmt);
    (void)vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return out;
}
