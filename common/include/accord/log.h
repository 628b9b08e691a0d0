/* log.h - one line per event on stderr, level tested before arguments are evaluated */
#ifndef ACCORD_LOG_H
#define ACCORD_LOG_H

#include "accord/rc.h"

typedef enum {
    ACC_LOG_ERROR = 0,
    ACC_LOG_WARN = 1,
    ACC_LOG_NOTICE = 2,
    ACC_LOG_INFO = 3,
    ACC_LOG_DEBUG = 4,
} acc_log_level_t;

/* The process-wide threshold; set once from main before any thread starts. */
void acc_log_setup(acc_log_level_t level);
acc_log_level_t acc_log_threshold(void);

/* Parses "error", "warn", "notice", "info" or "debug". */
ACC_NODISCARD acc_rc_t acc_log_level_parse(acc_log_level_t *out, const char *name);

/* Writes "2026-11-20T10:15:00.123Z info module: message" to stderr. */
void acc_log_write(acc_log_level_t level, const char *module, const char *fmt, ...)
    ACC_PRINTF(3, 4);

/* An expression, not a statement, so call sites gain no nesting or branches. */
#define ACC_LOG_(lvl, module, ...) \
    ((lvl) <= acc_log_threshold() ? acc_log_write((lvl), (module), __VA_ARGS__) : (void)0)

#define acc_log_error(module, ...)  ACC_LOG_(ACC_LOG_ERROR, module, __VA_ARGS__)
#define acc_log_warn(module, ...)   ACC_LOG_(ACC_LOG_WARN, module, __VA_ARGS__)
#define acc_log_notice(module, ...) ACC_LOG_(ACC_LOG_NOTICE, module, __VA_ARGS__)
#define acc_log_info(module, ...)   ACC_LOG_(ACC_LOG_INFO, module, __VA_ARGS__)
#define acc_log_debug(module, ...)  ACC_LOG_(ACC_LOG_DEBUG, module, __VA_ARGS__)

#endif
