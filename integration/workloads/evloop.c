/* Event-loop workload for container checkpoint/restore, shaped like the
 * loops of libuv or Go's netpoller: one epoll instance watching a 10 ms
 * periodic timerfd (data 1), an eventfd (data 2, edge-triggered), a
 * signalfd for SIGUSR2 (data 3; the signal is blocked) and one end of a
 * Unix socket pair (data 4; the self-pipe of Python's asyncio).
 *
 * Every timer tick adds the tick count to `iter` and 1 to the eventfd; when
 * epoll reports the eventfd, the value read must equal the adds since the
 * last read. Every other tick it also writes one byte into the socket
 * pair, and each byte read at the other end must be the next in sequence.
 * An event with unknown data, a failed call, or an eventfd value or byte
 * off by any amount counts as an error. Each SIGUSR2 read from the
 * signalfd bumps `sigs`. Every 10 ticks it writes
 * "iter=N pid=P errors=E sigs=S why=W" (W: the last error's kind) to the state file (atomic rename) and the
 * same line to stdout, like the counter workload. Built static by the
 * tests. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "report.h"

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/tmp/state";
	struct itimerspec its = { { 0, 10000000 }, { 0, 10000000 } };
	struct epoll_event ev, evs[4];
	struct signalfd_siginfo si;
	unsigned long iter = 0, errors = 0, sigs = 0, last = 0;
	const char *why = "-"; /* the last error's kind */
	uint64_t v, added = 0;
	sigset_t set;
	int ep, tfd, efd, sfd, sp[2];
	unsigned char sent = 0, next = 0, byte;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	ep = epoll_create1(EPOLL_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	efd = eventfd(0, EFD_NONBLOCK);
	sfd = signalfd(-1, &set, SFD_NONBLOCK);
	if (ep < 0 || tfd < 0 || efd < 0 || sfd < 0 || timerfd_settime(tfd, 0, &its, NULL) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp))
		return 1;
	ev.events = EPOLLIN;
	ev.data.u64 = 1;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev))
		return 1;
	ev.events = EPOLLIN | EPOLLET;
	ev.data.u64 = 2;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
		return 1;
	ev.events = EPOLLIN;
	ev.data.u64 = 3;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev))
		return 1;
	ev.data.u64 = 4;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sp[0], &ev))
		return 1;
	for (;;) {
		int n = epoll_wait(ep, evs, 4, 1000);

		/* Linux ends an epoll_wait with EINTR after any stop of the process
		 * (signal(7)), a checkpoint's freeze included: event loops retry. */
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0 || iter > 0) { /* a timeout: the timer stopped */
				errors++;
				why = n < 0 ? "epoll_wait-failed" : "timeout";
			}
			continue;
		}
		for (int i = 0; i < n; i++) {
			switch (evs[i].data.u64) {
			case 1:
				if (read(tfd, &v, 8) != 8)
					break;
				iter += v;
				if (write(efd, &(uint64_t){ 1 }, 8) != 8) {
					errors++;
					why = "eventfd-write";
				}
				added++;
				if (iter % 2 == 0 && write(sp[1], &sent, 1) == 1)
					sent++;
				break;
			case 2:
				/* edge-triggered: drain it all */
				if (read(efd, &v, 8) == 8) {
					if (v != added) {
						errors++;
						why = "eventfd-count";
					}
					added = 0;
				}
				break;
			case 3:
				while (read(sfd, &si, sizeof si) == sizeof si)
					sigs += si.ssi_signo == SIGUSR2;
				break;
			case 4:
				while (read(sp[0], &byte, 1) == 1)
					if (byte != next++) {
						errors++;
						why = "socketpair-byte";
					}
				break;
			default:
				errors++;
				why = "unknown-data";
			}
		}
		if (iter / 10 != last / 10) {
			last = iter;
			report(path, "iter=%lu pid=%d errors=%lu sigs=%lu why=%s\n", iter, (int)getpid(), errors, sigs, why);
		}
	}
}
