/*
 * async_owner (cf. zdtm file_fown, sk-unix-... with O_ASYNC): files whose
 * readiness raises a signal (O_ASYNC), as nginx's channels do.
 *
 * State built before the checkpoint:
 *  - a pipe whose read end is O_ASYNC | O_NONBLOCK, owned by the process
 *    (F_SETOWN_EX F_OWNER_PID), with F_SETSIG SIGRTMIN+1 (blocked);
 *  - a socket pair whose end 0 is O_ASYNC, owned by the main thread
 *    (F_OWNER_TID), with the default signal, SIGIO (blocked);
 *  - a second pipe with O_ASYNC and no owner.
 *
 * Verified after SIGTERM: F_GETOWN_EX and F_GETSIG say the same; a write
 * into the pipe raises SIGRTMIN+1 with si_fd naming its read end and
 * POLL_IN; a write into the pair raises SIGIO; the ownerless pipe stays
 * ownerless and raises nothing.
 *
 * Corruptions: "owner" (the pipe gets no owner), "sig" (its signal back to
 * SIGIO).
 */
#include "zdtm.h"
#include <sys/socket.h>

#ifndef F_SETOWN_EX
#define F_SETOWN_EX 15
#define F_GETOWN_EX 16
#define F_OWNER_TID 0
#define F_OWNER_PID 1
struct f_owner_ex {
	int type;
	pid_t pid;
};
#endif

static int owner_of(int fd, int *type)
{
	struct f_owner_ex o = { -1, -1 };

	fcntl(fd, F_GETOWN_EX, &o);
	*type = o.type;
	return o.pid;
}

/* The signal `sig` arrives within 2 s; its siginfo in *si. */
static int got(int sig, siginfo_t *si)
{
	sigset_t s;
	struct timespec ts = { 2, 0 };

	sigemptyset(&s);
	sigaddset(&s, sig);
	return sigtimedwait(&s, si, &ts) == sig;
}

int main(int argc, char **argv)
{
	int p[2], q[2], s[2], type;
	struct f_owner_ex own = { F_OWNER_PID, 0 };
	siginfo_t si;
	sigset_t blk;
	pid_t me;

	zdtm_init(argc, argv);
	me = getpid();
	sigemptyset(&blk);
	sigaddset(&blk, SIGRTMIN + 1);
	sigaddset(&blk, SIGIO);
	sigprocmask(SIG_BLOCK, &blk, NULL);
	if (pipe(p) || pipe(q) || socketpair(AF_UNIX, SOCK_STREAM, 0, s))
		zdtm_fail("pipe: %s", strerror(errno));
	own.pid = me;
	if (fcntl(p[0], F_SETOWN_EX, &own) || fcntl(p[0], F_SETSIG, SIGRTMIN + 1) ||
	    fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK))
		zdtm_fail("pipe owner: %s", strerror(errno));
	own.type = F_OWNER_TID;
	own.pid = zdtm_gettid();
	if (fcntl(s[0], F_SETOWN_EX, &own) || fcntl(s[0], F_SETFL, O_ASYNC))
		zdtm_fail("socket owner: %s", strerror(errno));
	if (fcntl(q[0], F_SETFL, O_ASYNC))
		zdtm_fail("ownerless: %s", strerror(errno));
	zdtm_ready();
	zdtm_wait();

	if (zdtm_corrupt("owner")) {
		own.type = F_OWNER_PID;
		own.pid = 0;
		fcntl(p[0], F_SETOWN_EX, &own);
	}
	if (zdtm_corrupt("sig"))
		fcntl(p[0], F_SETSIG, 0);

	ZCHECK(owner_of(p[0], &type) == me && type == F_OWNER_PID, "pipe owner %d type %d", owner_of(p[0], &type), type);
	ZCHECK(fcntl(p[0], F_GETSIG) == SIGRTMIN + 1, "pipe signal %d", fcntl(p[0], F_GETSIG));
	ZCHECK(owner_of(s[0], &type) == me && type == F_OWNER_TID, "socket owner %d type %d", owner_of(s[0], &type), type);
	ZCHECK(owner_of(q[0], &type) == 0 && (fcntl(q[0], F_GETFL) & O_ASYNC), "the ownerless pipe");
	ZCHECK(write(p[1], "x", 1) == 1 && got(SIGRTMIN + 1, &si) && si.si_fd == p[0] && si.si_code == POLL_IN,
	       "no SIGRTMIN+1 for the pipe");
	ZCHECK(write(s[1], "y", 1) == 1 && got(SIGIO, &si), "no SIGIO for the socket");
	ZCHECK(write(q[1], "z", 1) == 1 && !got(SIGIO, &si), "a signal from the ownerless pipe");
	zdtm_finish();
}
