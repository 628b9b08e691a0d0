/* harden.h - process hardening every accord program applies before it reads a key */
#ifndef ACCORD_HARDEN_H
#define ACCORD_HARDEN_H

#include "accord/rc.h"

/* Turns core dumps off for this process: RLIMIT_CORE 0 (soft and hard, so no
 * child can raise it) and PR_SET_DUMPABLE 0 (no core even when the kernel's
 * core_pattern pipes to a helper, and no ptrace attach by the same user). A
 * crash then writes no keys, epoch keys or child records to disk. ACC_ERR_IO
 * with err set if either call fails. */
ACC_NODISCARD acc_rc_t acc_process_harden(acc_err_t *err);

#endif
