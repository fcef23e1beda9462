/*
 * zombie (cf. zdtm zombie00): unreaped children.
 *
 * The root forks Z1, which exits with code 7, and Z2, which kills itself
 * with SIGUSR2 (default action: terminate), plus L, a live child sleeping in
 * zdtm_wait().  The root waits for Z1/Z2 to become zombies with
 * waitid(WEXITED|WNOWAIT), which does not reap them.
 *
 * Verified after SIGTERM (all with WNOHANG, so a zombie restored as a live
 * process or not at all is detected instead of waited for):
 *  - waitid(P_PID, Z, WEXITED|WNOWAIT|WNOHANG) reports Z1 with CLD_EXITED/7
 *    and Z2 with CLD_KILLED/SIGUSR2 without reaping;
 *  - waitpid(Z1) returns Z1 with WEXITSTATUS 7, waitpid(Z2) WTERMSIG SIGUSR2;
 *  - L is alive (kill 0), has exactly the recorded pid, and after SIGTERM
 *    exits with code 0;
 *  - no other child is left (waitpid(-1, WNOHANG) fails with ECHILD).
 *
 * Corruption: "reap" (the root reaps Z1 before checking).
 */
#include "zdtm.h"
#include <sys/wait.h>

static int wait_zombie(pid_t pid, int code, int status)
{
	for (int i = 0; i < 10000; i++) {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT | WNOHANG) < 0)
			zdtm_fail("waitid(%d): %s", (int)pid, strerror(errno));
		if (si.si_pid == pid) {
			if (si.si_code != code || si.si_status != status)
				zdtm_fail("child %d: code %d status %d", (int)pid, si.si_code, si.si_status);
			return 0;
		}
		zdtm_sleep_ms(1);
	}
	zdtm_fail("child %d did not become a zombie", (int)pid);
}

static void check_zombie(pid_t pid, int code, int status, const char *what)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT | WNOHANG) < 0) {
		zdtm_err("%s (%d): waitid: %s", what, (int)pid, strerror(errno));
		return;
	}
	if (si.si_pid != pid) {
		zdtm_err("%s (%d) is not a zombie (still running?)", what, (int)pid);
		return;
	}
	ZCHECK(si.si_code == code && si.si_status == status, "%s: si_code %d si_status %d, expected %d %d", what,
	       si.si_code, si.si_status, code, status);
}

int main(int argc, char **argv)
{
	pid_t z1, z2, l, r;
	int st;

	zdtm_init(argc, argv);

	z1 = fork();
	if (z1 == 0)
		_exit(7);
	z2 = fork();
	if (z2 == 0) {
		signal(SIGUSR2, SIG_DFL);
		raise(SIGUSR2);
		_exit(1);
	}
	l = fork();
	if (l == 0) {
		pid_t me = getpid(), pp = getppid();
		zdtm_wait();
		_exit(getpid() == me && getppid() == pp ? 0 : 3);
	}
	if (z1 < 0 || z2 < 0 || l < 0)
		zdtm_fail("fork: %s", strerror(errno));
	wait_zombie(z1, CLD_EXITED, 7);
	wait_zombie(z2, CLD_KILLED, SIGUSR2);

	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("reap"))
		waitpid(z1, NULL, 0);

	check_zombie(z1, CLD_EXITED, 7, "Z1");
	check_zombie(z2, CLD_KILLED, SIGUSR2, "Z2");
	ZCHECK(kill(l, 0) == 0, "live child %d: %s", (int)l, strerror(errno));

	r = waitpid(z1, &st, WNOHANG);
	if (r != z1)
		zdtm_err("waitpid(Z1=%d) = %d (%s)", (int)z1, (int)r, r < 0 ? strerror(errno) : "not a zombie");
	else
		ZCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7, "Z1 status %#x, expected exit 7", st);
	r = waitpid(z2, &st, WNOHANG);
	if (r != z2)
		zdtm_err("waitpid(Z2=%d) = %d (%s)", (int)z2, (int)r, r < 0 ? strerror(errno) : "not a zombie");
	else
		ZCHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR2, "Z2 status %#x, expected SIGUSR2", st);

	kill(l, SIGTERM);
	r = zdtm_waitpid(l, &st, 0, 10000);
	if (r != l)
		zdtm_err("live child %d did not exit: %d (%s)", (int)l, (int)r, r < 0 ? strerror(errno) : "timeout");
	else
		ZCHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "live child status %#x", st);

	r = waitpid(-1, &st, WNOHANG);
	ZCHECK(r < 0 && errno == ECHILD, "unexpected extra child: waitpid(-1) = %d", (int)r);
	zdtm_finish();
}
