/*
 * seccomp (cf. zdtm seccomp_filter): two stacked seccomp filters survive
 * checkpoint/restore, in order, on every thread.
 *
 * With no_new_privs set, the process installs filter A (getppid fails with
 * EPERM) then filter B (getpgid fails with EACCES); a second thread is
 * created after both, so it inherits them.
 *
 * Verified after SIGTERM, in the main thread and in the other thread:
 *  - /proc/thread-self/status says "Seccomp: 2" and "Seccomp_filters: 2";
 *  - getppid() and getpgid(0) fail with EPERM and EACCES (both filters
 *    active), getpid() still works (nothing else filtered);
 *  - NoNewPrivs is still 1.
 *
 * Corruption: "filters" (a third filter appears, denying getsid).
 */
#include "zdtm.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>

static int deny(int nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static void check(const char *who)
{
	char buf[4096], *p;
	errno = 0;
	ZCHECK(syscall(SYS_getppid) == -1 && errno == EPERM, "%s: getppid not refused with EPERM (errno %d)", who, errno);
	errno = 0;
	ZCHECK(syscall(SYS_getpgid, 0) == -1 && errno == EACCES, "%s: getpgid not refused with EACCES (errno %d)", who, errno);
	ZCHECK(syscall(SYS_getpid) > 0, "%s: getpid failed", who);
	errno = 0;
	ZCHECK(syscall(SYS_getsid, 0) >= 0, "%s: getsid refused (errno %d)", who, errno);
	if (zdtm_read_file("/proc/thread-self/status", buf, sizeof(buf)) < 0) {
		zdtm_err("%s: cannot read status", who);
		return;
	}
	p = strstr(buf, "Seccomp:");
	ZCHECK(p && strncmp(p, "Seccomp:\t2", 10) == 0, "%s: seccomp mode is not 2", who);
	p = strstr(buf, "Seccomp_filters:");
	ZCHECK(p && strncmp(p, "Seccomp_filters:\t2", 18) == 0, "%s: not exactly 2 filters", who);
	p = strstr(buf, "NoNewPrivs:");
	ZCHECK(p && strncmp(p, "NoNewPrivs:\t1", 13) == 0, "%s: NoNewPrivs lost", who);
}

static volatile int go;

static void *thread(void *arg)
{
	(void)arg;
	while (!go)
		zdtm_sleep_ms(5);
	check("thread");
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;

	zdtm_init(argc, argv);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || deny(SYS_getppid, EPERM) || deny(SYS_getpgid, EACCES))
		zdtm_fail("cannot install filters: %s", strerror(errno));
	if (pthread_create(&t, NULL, thread, NULL))
		zdtm_fail("pthread_create failed");
	check("main before");
	if (zdtm_errors())
		zdtm_finish();
	zdtm_ready();
	zdtm_wait();
	if (zdtm_corrupt("filters"))
		deny(SYS_getsid, EPERM);
	check("main");
	go = 1;
	pthread_join(t, NULL);
	zdtm_finish();
}
