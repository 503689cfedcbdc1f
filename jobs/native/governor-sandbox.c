/*
 * governor-sandbox: start one job in its sandbox with a single exec.
 *
 *   governor-sandbox WORKER_PID UID GID CPU_S AS_BYTES FSIZE_BYTES NPROC -- PROGRAM [ARGS...]
 *
 * The worker starts this with vfork (no preexec_fn, no user switch in Python: forking a
 * process that holds Django costs more than the job). It does what setpriv + prlimit do,
 * in one statically linked exec instead of two dynamically linked ones (see bench/):
 * resource limits (soft and hard), the run-as user with no supplementary groups (UID and
 * GID "-" keep the worker's identity, which is then not root), SIGKILL when the worker
 * dies, and no start at all if the worker is already gone. Any failure exits 126 with a
 * message on stderr, which becomes the run's output; the job never starts half-confined.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static void fail(const char *what, int err) {
    dprintf(2, "governor-sandbox: %s: %s\n", what, strerror(err));
    _exit(126);
}

static unsigned long long number(const char *text) {
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || *text == '\0' || *end != '\0' || *text == '-') fail(text, EINVAL);
    return value;
}

int main(int argc, char **argv) {
    if (argc < 10 || strcmp(argv[8], "--") != 0) fail("usage", EINVAL);
    pid_t worker = (pid_t)number(argv[1]);
    unsigned long long cpu = number(argv[4]), as = number(argv[5]), fsize = number(argv[6]), nproc = number(argv[7]);
    /* Soft then hard CPU: SIGXCPU first, SIGKILL a few seconds later if it is ignored. */
    const struct { int resource; struct rlimit limit; const char *name; } limits[] = {
        {RLIMIT_CPU, {cpu, cpu + 5}, "RLIMIT_CPU"},
        {RLIMIT_AS, {as, as}, "RLIMIT_AS"},
        {RLIMIT_FSIZE, {fsize, fsize}, "RLIMIT_FSIZE"},
        {RLIMIT_NPROC, {nproc, nproc}, "RLIMIT_NPROC"},
        {RLIMIT_CORE, {0, 0}, "RLIMIT_CORE"},
    };
    /* Limits first, while still privileged: a root worker may set any hard limit. */
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        if (setrlimit(limits[i].resource, &limits[i].limit) != 0) fail(limits[i].name, errno);
    if (strcmp(argv[2], "-") != 0 || strcmp(argv[3], "-") != 0) {
        uid_t uid = (uid_t)number(argv[2]);
        gid_t gid = (gid_t)number(argv[3]);
        if (uid == 0 || gid == 0) fail("jobs never run as root", EPERM);
        if (setgroups(0, NULL) != 0) fail("setgroups", errno);
        if (setresgid(gid, gid, gid) != 0) fail("setresgid", errno);
        if (setresuid(uid, uid, uid) != 0) fail("setresuid", errno);
        if (getuid() == 0 || geteuid() == 0) fail("still root after the user switch", EPERM);
    } else if (geteuid() == 0) {
        fail("a root worker must name the run-as user", EPERM);
    }
    /* After the user switch, which clears it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail("PR_SET_PDEATHSIG", errno);
    if (getppid() != worker) _exit(125); /* the worker died before the signal was armed */
    execvp(argv[9], &argv[9]);
    fail(argv[9], errno);
}
