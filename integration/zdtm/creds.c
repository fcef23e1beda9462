/*
 * creds (cf. zdtm caps00, groups, setuid): credentials of a process that
 * left root survive checkpoint/restore, on every thread.
 *
 * As root, the process drops CAP_SYS_ADMIN from its bounding set, sets its
 * supplementary groups to 1001,1002 and keep-caps, moves to uid/gid 1000
 * (real, effective, saved; fs ids follow), then narrows its capabilities to
 * DAC_OVERRIDE (it must still write its state directory), KILL and
 * NET_BIND_SERVICE, the last also inheritable and ambient. Before that,
 * still root, it installs a seccomp filter (getpgid fails with EACCES)
 * without no_new_privs, as container engines do: a restore must install it
 * before taking CAP_SYS_ADMIN away. A second thread is created after all
 * that, so it shares the same credentials and filter.
 *
 * Recorded before the checkpoint and compared after, in the main thread and
 * (from /proc/self/task/<tid>/status) in the other thread: the Uid, Gid,
 * Groups, CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs, Seccomp and
 * Seccomp_filters lines of /proc status, plus PR_GET_KEEPCAPS,
 * PR_GET_SECUREBITS and whether getpgid fails with EACCES.
 *
 * Corruptions: "caps" (CAP_KILL leaves the effective set), "keepcaps"
 * (keep-caps is cleared), "nnp" (no_new_privs gets set).
 */
#include "zdtm.h"
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <pthread.h>
#include <sys/prctl.h>

static const char *const FIELDS[] = { "Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:" };
#define NFIELDS (sizeof(FIELDS) / sizeof(FIELDS[0]))

/* The FIELDS lines of a status file, then keep-caps and securebits, as one string. */
static void snapshot(const char *status, char *out, size_t size)
{
	char buf[8192];
	size_t n = 0;

	out[0] = 0;
	if (zdtm_read_file(status, buf, sizeof(buf)) < 0) {
		zdtm_err("cannot read %s", status);
		return;
	}
	for (size_t i = 0; i < NFIELDS; i++) {
		char key[32], *p, *nl;
		snprintf(key, sizeof(key), "\n%s", FIELDS[i]);
		p = strstr(buf, key);
		if (!p) {
			zdtm_err("%s: no %s line", status, FIELDS[i]);
			continue;
		}
		p++;
		nl = strchr(p, '\n');
		n += snprintf(out + n, size - n, "%.*s|", nl ? (int)(nl - p) : (int)strlen(p), p);
	}
	errno = 0;
	n += snprintf(out + n, size - n, "getpgid=%s|", syscall(SYS_getpgid, 0) == -1 && errno == EACCES ? "EACCES" : "allowed");
	snprintf(out + n, size - n, "keepcaps=%d securebits=%d", prctl(PR_GET_KEEPCAPS), prctl(PR_GET_SECUREBITS));
}

static int deny_getpgid(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpgid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int set_caps(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	uint32_t keep = (1u << CAP_DAC_OVERRIDE) | (1u << CAP_KILL) | (1u << CAP_NET_BIND_SERVICE);

	memset(d, 0, sizeof(d));
	d[0].effective = keep;
	d[0].permitted = keep;
	d[0].inheritable = 1u << CAP_NET_BIND_SERVICE;
	return syscall(SYS_capset, &h, d);
}

static int drop_kill(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		return -1;
	d[0].effective &= ~(1u << CAP_KILL);
	return syscall(SYS_capset, &h, d);
}

static volatile int go, thread_ready, thread_done;
static char thread_before[2048], thread_after[2048];

/* The other thread snapshots its own credentials, before and after. */
static void *thread(void *arg)
{
	(void)arg;
	snapshot("/proc/thread-self/status", thread_before, sizeof(thread_before));
	thread_ready = 1;
	while (!go)
		zdtm_sleep_ms(5);
	snapshot("/proc/thread-self/status", thread_after, sizeof(thread_after));
	thread_done = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	gid_t groups[] = { 1001, 1002 };
	char before[2048], after[2048];
	pthread_t t;

	zdtm_init(argc, argv);
	if (deny_getpgid() || prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) || setgroups(2, groups) || prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) ||
	    setresgid(1000, 1000, 1000) || setresuid(1000, 1000, 1000) || set_caps() ||
	    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		zdtm_fail("cannot set up credentials: %s", strerror(errno));
	if (pthread_create(&t, NULL, thread, NULL))
		zdtm_fail("pthread_create failed");
	snapshot("/proc/thread-self/status", before, sizeof(before));
	while (!thread_ready)
		zdtm_sleep_ms(5);
	ZCHECK(strcmp(before, thread_before) == 0, "threads differ before: %s vs %s", before, thread_before);
	ZCHECK(strstr(before, "Uid:\t1000\t1000\t1000\t1000|") != NULL, "setup: uids not 1000: %s", before);
	ZCHECK(strstr(before, "keepcaps=1") != NULL, "setup: keep-caps not set: %s", before);
	ZCHECK(strstr(before, "getpgid=EACCES|") != NULL && strstr(before, "NoNewPrivs:\t0|") != NULL, "setup: filter or nnp: %s", before);
	if (zdtm_errors())
		zdtm_finish();
	zdtm_ready();
	zdtm_wait();
	if (zdtm_corrupt("caps") && drop_kill())
		zdtm_err("corrupt caps: %s", strerror(errno));
	if (zdtm_corrupt("keepcaps"))
		prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	if (zdtm_corrupt("nnp"))
		prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	snapshot("/proc/thread-self/status", after, sizeof(after));
	ZCHECK(strcmp(before, after) == 0, "main thread credentials changed: before %s after %s", before, after);
	go = 1;
	pthread_join(t, NULL);
	ZCHECK(thread_done, "thread did not finish");
	ZCHECK(strcmp(thread_before, thread_after) == 0, "thread credentials changed: before %s after %s", thread_before, thread_after);
	zdtm_finish();
}
