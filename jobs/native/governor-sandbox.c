/*
 * governor-sandbox: start one job in its sandbox with a single exec.
 *
 *   governor-sandbox WORKER_PID UID GID CPU_S AS_BYTES FSIZE_BYTES NPROC -- PROGRAM [ARGS...]
 *
 * The worker starts this with vfork (no preexec_fn, no user switch in Python: forking a
 * process that holds Django costs more than the job). It does what setpriv + prlimit do,
 * in one exec instead of two: resource limits (soft and hard), the run-as user with no
 * supplementary groups (UID and GID "-" keep the worker's identity, which is then not
 * root), SIGKILL when the worker dies, and no start at all if the worker is already gone.
 * Any failure exits 126 with a message on stderr, which becomes the run's output; the job
 * never starts half-confined.
 *
 * On x86-64 and arm64 it is built without a C library (-DGOVERNOR_NOLIBC -nostdlib): it
 * makes a dozen system calls, and starting a statically linked glibc cost 0.3 ms of CPU
 * per run, more than /bin/true itself (see bench/). Elsewhere it is built against libc.
 */

#define RLIMIT_CPU_ 0
#define RLIMIT_FSIZE_ 1
#define RLIMIT_CORE_ 4
#define RLIMIT_NPROC_ 6
#define RLIMIT_AS_ 9
#define PR_SET_PDEATHSIG_ 1
#define SIGKILL_ 9
#define EPERM_ 1
#define ENOENT_ 2
#define EACCES_ 13
#define EINVAL_ 22

typedef unsigned long long u64;
struct limit64 {
    u64 soft, hard;
};

#ifdef GOVERNOR_NOLIBC
/* --- the kernel's system calls, directly (Linux x86-64 and arm64) --- */
#if defined(__x86_64__)
enum { NR_write = 1, NR_execve = 59, NR_getuid = 102, NR_geteuid = 107, NR_getppid = 110, NR_setgroups = 116,
       NR_setresuid = 117, NR_setresgid = 119, NR_prctl = 157, NR_exit_group = 231, NR_prlimit64 = 302 };
static long sys(long n, long a, long b, long c, long d) {
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
    return ret;
}
__asm__(".text\n.global _start\n_start:\n xor %rbp, %rbp\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");
#elif defined(__aarch64__)
enum { NR_write = 64, NR_execve = 221, NR_getuid = 174, NR_geteuid = 175, NR_getppid = 173, NR_setgroups = 159,
       NR_setresuid = 147, NR_setresgid = 149, NR_prctl = 167, NR_exit_group = 94, NR_prlimit64 = 261 };
static long sys(long n, long a, long b, long c, long d) {
    register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c,
                  x3 __asm__("x3") = d;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
__asm__(".text\n.global _start\n_start:\n mov x0, sp\n and sp, x0, #-16\n bl start_c\n");
#else
#error "GOVERNOR_NOLIBC supports x86-64 and arm64; build without it elsewhere"
#endif
/* A negative return is -errno. */
static long call(long n, long a, long b, long c, long d) { return sys(n, a, b, c, d); }
static void leave(int code) {
    for (;;) sys(NR_exit_group, code, 0, 0, 0);
}
#else
/* --- the same calls through the C library --- */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
enum { NR_write = SYS_write, NR_execve = SYS_execve, NR_getuid = SYS_getuid, NR_geteuid = SYS_geteuid,
       NR_getppid = SYS_getppid, NR_setgroups = SYS_setgroups, NR_setresuid = SYS_setresuid,
       NR_setresgid = SYS_setresgid, NR_prctl = SYS_prctl, NR_prlimit64 = SYS_prlimit64 };
static long call(long n, long a, long b, long c, long d) {
    long ret = syscall(n, a, b, c, d);
    return ret < 0 ? -errno : ret;
}
static void leave(int code) { _exit(code); }
#endif

static unsigned long length(const char *text) {
    unsigned long n = 0;
    while (text[n]) n++;
    return n;
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

static void say(const char *text) { call(NR_write, 2, (long)text, (long)length(text), 0); }

static const char *error_name(long err) {
    switch (err) {
    case 1: return "Operation not permitted";
    case 2: return "No such file or directory";
    case 7: return "Argument list too long";
    case 8: return "Exec format error";
    case 11: return "Resource temporarily unavailable";
    case 12: return "Cannot allocate memory";
    case 13: return "Permission denied";
    case 20: return "Not a directory";
    case 22: return "Invalid argument";
    case 26: return "Text file busy";
    case 36: return "File name too long";
    case 40: return "Too many levels of symbolic links";
    default: return "system error";
    }
}

static void fail(const char *what, long err) {
    say("governor-sandbox: ");
    say(what);
    say(": ");
    say(error_name(err));
    say("\n");
    leave(126);
}

static u64 number(const char *text) {
    u64 value = 0;
    if (*text == '\0') fail(text, EINVAL_);
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9' || value > (~0ULL - 9) / 10) fail(text, EINVAL_);
        value = value * 10 + (u64)(*p - '0');
    }
    return value;
}

/* execvp: a name without a slash is looked up in the job's PATH. */
static void run(char **argv, char **envp) {
    const char *program = argv[0];
    for (const char *p = program; *p; p++)
        if (*p == '/') {
            fail(program, -call(NR_execve, (long)program, (long)argv, (long)envp, 0));
        }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = envp; *e; e++)
        if ((*e)[0] == 'P' && (*e)[1] == 'A' && (*e)[2] == 'T' && (*e)[3] == 'H' && (*e)[4] == '=') path = *e + 5;
    long err = ENOENT_;
    unsigned long name = length(program);
    char candidate[4096];
    while (*path) {
        unsigned long dir = 0;
        while (path[dir] && path[dir] != ':') dir++;
        if (dir + 1 + name < sizeof candidate) {
            unsigned long n = 0;
            for (unsigned long i = 0; i < dir; i++) candidate[n++] = path[i];
            if (dir == 0) candidate[n++] = '.';
            candidate[n++] = '/';
            for (unsigned long i = 0; i <= name; i++) candidate[n++] = program[i];
            long got = -call(NR_execve, (long)candidate, (long)argv, (long)envp, 0);
            if (got == EACCES_) err = EACCES_;
            else if (got != ENOENT_ && got != 20) fail(program, got);
        }
        path += dir;
        if (*path == ':') path++;
    }
    fail(program, err);
}

static int sandbox(int argc, char **argv, char **envp) {
    if (argc < 10 || !same(argv[8], "--")) fail("usage", EINVAL_);
    long worker = (long)number(argv[1]);
    u64 cpu = number(argv[4]), as = number(argv[5]), fsize = number(argv[6]), nproc = number(argv[7]);
    /* Soft then hard CPU: SIGXCPU first, SIGKILL a few seconds later if it is ignored. */
    const struct {
        int resource;
        struct limit64 limit;
        const char *name;
    } limits[] = {
        {RLIMIT_CPU_, {cpu, cpu + 5}, "RLIMIT_CPU"},   {RLIMIT_AS_, {as, as}, "RLIMIT_AS"},
        {RLIMIT_FSIZE_, {fsize, fsize}, "RLIMIT_FSIZE"}, {RLIMIT_NPROC_, {nproc, nproc}, "RLIMIT_NPROC"},
        {RLIMIT_CORE_, {0, 0}, "RLIMIT_CORE"},
    };
    /* Limits first, while still privileged: a root worker may set any hard limit. */
    for (unsigned long i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        long err = call(NR_prlimit64, 0, limits[i].resource, (long)&limits[i].limit, 0);
        if (err < 0) fail(limits[i].name, -err);
    }
    if (!same(argv[2], "-") || !same(argv[3], "-")) {
        long uid = (long)number(argv[2]), gid = (long)number(argv[3]), err;
        if (uid == 0 || gid == 0) fail("jobs never run as root", EPERM_);
        if ((err = call(NR_setgroups, 0, 0, 0, 0)) < 0) fail("setgroups", -err);
        if ((err = call(NR_setresgid, gid, gid, gid, 0)) < 0) fail("setresgid", -err);
        if ((err = call(NR_setresuid, uid, uid, uid, 0)) < 0) fail("setresuid", -err);
        if (call(NR_getuid, 0, 0, 0, 0) == 0 || call(NR_geteuid, 0, 0, 0, 0) == 0)
            fail("still root after the user switch", EPERM_);
    } else if (call(NR_geteuid, 0, 0, 0, 0) == 0) {
        fail("a root worker must name the run-as user", EPERM_);
    }
    /* After the user switch, which clears it. */
    long err = call(NR_prctl, PR_SET_PDEATHSIG_, SIGKILL_, 0, 0);
    if (err < 0) fail("PR_SET_PDEATHSIG", -err);
    if (call(NR_getppid, 0, 0, 0, 0) != worker) leave(125); /* the worker died before the signal was armed */
    run(&argv[9], envp);
    return 126;
}

#ifdef GOVERNOR_NOLIBC
__attribute__((noreturn, used)) void start_c(long *stack) {
    int argc = (int)stack[0];
    char **argv = (char **)(stack + 1);
    leave(sandbox(argc, argv, argv + argc + 1));
    __builtin_unreachable();
}
#else
int main(int argc, char **argv, char **envp) { return sandbox(argc, argv, envp); }
#endif
