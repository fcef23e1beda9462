/*
 * stopped (cf. zdtm stopped, stopped01): a child in group-stop.
 *
 * The child S writes one byte into a pipe every 2 ms until SIGTERM.  The
 * root waits for a few bytes (S runs), sends SIGSTOP, waits for the stop
 * with waitid(WSTOPPED|WNOWAIT) (so the stop stays reportable), drains the
 * pipe and declares ready.
 *
 * How "stopped" is verified after restore (robust without a /proc of the
 * test's own pid namespace):
 *  1. /proc state: the root lists its children's *host* pids from
 *     /proc/thread-self/children (/proc is the host's), maps them to
 *     namespace pids with the last field of "NSpid:" in /proc/<pid>/status
 *     and requires "State: T" for S;
 *  2. behaviour: no byte arrives in the pipe for 300 ms;
 *  3. wait state: waitid(P_PID, S, WSTOPPED|WNOWAIT|WNOHANG) still reports
 *     CLD_STOPPED/SIGSTOP (the parent had not consumed the notification);
 * then the root sends SIGCONT and requires CLD_CONTINUED from
 * waitid(WCONTINUED), bytes flowing again and a state other than T; finally
 * SIGTERM makes S exit with status 0.
 *
 * Corruption: "cont" (SIGCONT before the checks).
 */
#include "zdtm.h"
#include <dirent.h>
#include <sys/wait.h>

/* State letter of the child whose innermost pid is nspid, or 0. */
static char child_state(pid_t nspid)
{
	char buf[4096], path[64], st[8192];
	char *tok, *save = NULL;

	if (zdtm_read_file("/proc/thread-self/children", buf, sizeof(buf)) < 0) {
		zdtm_err("read /proc/thread-self/children: %s", strerror(errno));
		return 0;
	}
	for (tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		char *ns, *state, *last = NULL, *p;
		snprintf(path, sizeof(path), "/proc/%s/status", tok);
		if (zdtm_read_file(path, st, sizeof(st)) < 0)
			continue;
		ns = strstr(st, "\nNSpid:");
		state = strstr(st, "\nState:");
		if (!ns || !state)
			continue;
		ns += 7;
		for (p = ns; *p && *p != '\n';) {
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p && *p != '\n')
				last = p;
			while (*p && *p != ' ' && *p != '\t' && *p != '\n')
				p++;
		}
		if (last && atoi(last) == nspid) {
			state += 7;
			while (*state == ' ' || *state == '\t')
				state++;
			return *state;
		}
	}
	return 0;
}

static ssize_t drain(int fd)
{
	char buf[4096];
	ssize_t n = 0, r;

	while ((r = read(fd, buf, sizeof(buf))) > 0)
		n += r;
	return n;
}

int main(int argc, char **argv)
{
	int p[2], st;
	pid_t s, r;
	siginfo_t si;
	char c, state;
	ssize_t n;

	zdtm_init(argc, argv);
	if (pipe(p) < 0)
		zdtm_fail("pipe: %s", strerror(errno));
	s = fork();
	if (s < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (s == 0) {
		close(p[0]);
		while (!zdtm_stopping()) {
			if (write(p[1], "x", 1) < 0 && errno != EINTR)
				_exit(2);
			zdtm_sleep_ms(2);
		}
		_exit(0);
	}
	close(p[1]);
	for (int i = 0; i < 3; i++)
		if (zdtm_read_full(p[0], &c, 1, 5000) != 1)
			zdtm_fail("child does not write");
	kill(s, SIGSTOP);
	for (int i = 0;; i++) {
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, s, &si, WSTOPPED | WNOWAIT | WNOHANG) < 0)
			zdtm_fail("waitid: %s", strerror(errno));
		if (si.si_pid == s)
			break;
		if (i > 10000)
			zdtm_fail("child did not stop");
		zdtm_sleep_ms(1);
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	zdtm_sleep_ms(20);
	drain(p[0]);
	state = child_state(s);
	if (state != 'T')
		zdtm_fail("self-test: stopped child has state '%c' (is NSpid available?)", state ? state : '?');

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("cont"))
		kill(s, SIGCONT);

	state = child_state(s);
	ZCHECK(state == 'T', "child %d state '%c', expected 'T' (stopped)", (int)s, state ? state : '?');
	n = drain(p[0]);
	zdtm_sleep_ms(300);
	n += drain(p[0]);
	ZCHECK(n == 0, "stopped child wrote %zd bytes", n);
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, s, &si, WSTOPPED | WNOWAIT | WNOHANG) < 0)
		zdtm_err("waitid(WSTOPPED): %s", strerror(errno));
	else
		ZCHECK(si.si_pid == s && si.si_code == CLD_STOPPED && si.si_status == SIGSTOP,
		       "waitid(WSTOPPED) does not report the stop: pid %d code %d status %d", (int)si.si_pid,
		       si.si_code, si.si_status);

	kill(s, SIGCONT);
	memset(&si, 0, sizeof(si));
	for (int i = 0; i < 5000; i++) {
		if (waitid(P_PID, s, &si, WCONTINUED | WNOHANG) < 0 || si.si_pid == s)
			break;
		zdtm_sleep_ms(1);
	}
	ZCHECK(si.si_pid == s && si.si_code == CLD_CONTINUED, "no CLD_CONTINUED after SIGCONT (pid %d code %d)",
	       (int)si.si_pid, si.si_code);
	fcntl(p[0], F_SETFL, 0);
	ZCHECK(zdtm_read_full(p[0], &c, 1, 5000) == 1, "child does not run after SIGCONT");
	state = child_state(s);
	ZCHECK(state && state != 'T', "child state '%c' after SIGCONT", state ? state : '?');

	kill(s, SIGTERM);
	r = zdtm_waitpid(s, &st, 0, 10000);
	if (r != s)
		zdtm_err("child did not exit after SIGTERM");
	else
		ZCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
	zdtm_finish();
}
