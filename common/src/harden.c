/* harden.c - no core dumps: a crash must not write secrets or records to disk */
#include "accord/harden.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

acc_rc_t acc_process_harden(acc_err_t *err)
{
    const struct rlimit none = { 0, 0 };
    if (setrlimit(RLIMIT_CORE, &none) != 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not turn core dumps off: %s", strerror(errno));
    }
    if (prctl(PR_SET_DUMPABLE, 0L, 0L, 0L, 0L) != 0) {
        return acc_err_set(err, ACC_ERR_IO, "could not make the process undumpable: %s",
                           strerror(errno));
    }
    return ACC_OK;
}
