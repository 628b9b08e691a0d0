/* rc.h - return codes and the caller-supplied error detail every action fills */
#ifndef ACCORD_RC_H
#define ACCORD_RC_H

#include <stddef.h>

#if defined(__GNUC__)
#define ACC_NODISCARD      __attribute__((warn_unused_result))
#define ACC_PRINTF(fmt, a) __attribute__((format(printf, fmt, a)))
#define ACC_NORETURN       __attribute__((noreturn))
#else
#define ACC_NODISCARD
#define ACC_PRINTF(fmt, a)
#define ACC_NORETURN
#endif

typedef enum {
    ACC_OK = 0,
    ACC_ERR_INVALID = -1,    /* bad input: file, record, frame, argument */
    ACC_ERR_IO = -2,         /* the operating system said no */
    ACC_ERR_PERMISSION = -3, /* a secret file readable by others, a forbidden action */
    ACC_ERR_NOT_FOUND = -4,  /* a named thing does not exist */
    ACC_ERR_CRYPTO = -5,     /* a key, signature or ciphertext did not verify */
    ACC_ERR_DB = -6,         /* PostgreSQL refused or is unreachable */
    ACC_ERR_NET = -7,        /* ZeroMQ refused */
    ACC_ERR_TIMEOUT = -8,    /* a deadline passed */
    ACC_ERR_LIMIT = -9,      /* a configured bound was exceeded */
    ACC_ERR_INTERNAL = -10,  /* a bug in accord */
} acc_rc_t;

#define ACC_ERR_MSG_MAX 512

/* Detail for the caller: the code returned and one line for people. */
typedef struct {
    acc_rc_t code;
    char msg[ACC_ERR_MSG_MAX];
} acc_err_t;

/* Formats err (which may be NULL) and returns code, so callers can write
 * `return acc_err_set(err, ACC_ERR_IO, "...", ...);`. */
acc_rc_t acc_err_set(acc_err_t *err, acc_rc_t code, const char *fmt, ...) ACC_PRINTF(3, 4);

/* Clears err to ACC_OK and an empty message. */
void acc_err_clear(acc_err_t *err);

/* A short lower-case name for code ("invalid", "io", ...). Never NULL. */
const char *acc_rc_name(acc_rc_t code);

/* Checks our own invariants in every build type; aborts with file and line. */
#define acc_assert(cond) ((cond) ? (void)0 : acc_assert_fail(#cond, __FILE__, __LINE__))
ACC_NORETURN void acc_assert_fail(const char *expr, const char *file, int line);

/* Allocation within accord's bounds is fail-stop: these log and abort on failure. */
void *acc_xmalloc(size_t size);
void *acc_xcalloc(size_t count, size_t size);
void *acc_xrealloc(void *ptr, size_t size);
char *acc_xstrdup(const char *s);
char *acc_xstrndup(const char *s, size_t len);
/* printf into a new string, yours to free. */
char *acc_xasprintf(const char *fmt, ...) ACC_PRINTF(1, 2);

#endif
