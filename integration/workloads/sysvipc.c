/* Test workload: SysV semaphores and a message queue in the container's
 * own IPC namespace, checked every iteration.
 *
 * At start: a semaphore set (key 0x5354, mode 0640, values 1 42 7), a
 * private one (one semaphore, value 3) and a message queue (key 0x4d53,
 * mode 0600, byte limit 8192) holding "hello" (type 1), "world!" (type 5)
 * and 1000 bytes of a pattern (type 2). Each iteration, with the ids taken
 * at start: the values, modes and limit are as set; a semop takes and
 * gives back semaphore 0; the oldest message is received and queued again
 * (the three rotate) and must be one of the three, whole.
 * Every 100 ms it writes "iter=N pid=P errors=E" to /tmp/state (atomic
 * rename) and to stdout, like counter.c. Built static by the tests. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <unistd.h>

#include "report.h"

struct msg {
	long mtype;
	char text[1024];
};

static char pattern[1000];

/* The message's text is the one its type names. */
static int known(const struct msg *m, ssize_t n)
{
	switch (m->mtype) {
	case 1:
		return n == 5 && !memcmp(m->text, "hello", 5);
	case 5:
		return n == 6 && !memcmp(m->text, "world!", 6);
	case 2:
		return n == 1000 && !memcmp(m->text, pattern, 1000);
	}
	return 0;
}

int main(void)
{
	unsigned short want[3] = { 1, 42, 7 }, got[3];
	unsigned long iter = 0, errors = 0;
	struct msqid_ds q;
	struct semid_ds s;
	struct msg m;
	int sem, priv, mq;

	signal(SIGPIPE, SIG_IGN);
	for (int i = 0; i < 1000; i++)
		pattern[i] = (char)(i * 7 + 3);
	sem = semget(0x5354, 3, IPC_CREAT | IPC_EXCL | 0640);
	priv = semget(IPC_PRIVATE, 1, 0600);
	mq = msgget(0x4d53, IPC_CREAT | IPC_EXCL | 0600);
	if (sem < 0 || priv < 0 || mq < 0 || semctl(sem, 0, SETALL, want) || semctl(priv, 0, SETVAL, 3) ||
	    msgctl(mq, IPC_STAT, &q))
		return 1;
	q.msg_qbytes = 8192;
	if (msgctl(mq, IPC_SET, &q))
		return 2;
	m.mtype = 1;
	memcpy(m.text, "hello", 5);
	if (msgsnd(mq, &m, 5, 0))
		return 3;
	m.mtype = 5;
	memcpy(m.text, "world!", 6);
	if (msgsnd(mq, &m, 6, 0))
		return 3;
	m.mtype = 2;
	memcpy(m.text, pattern, 1000);
	if (msgsnd(mq, &m, 1000, 0))
		return 3;
	for (;;) {
		struct sembuf down = { 0, -1, IPC_NOWAIT }, up = { 0, 1, IPC_NOWAIT };
		ssize_t n;

		if (semctl(sem, 0, GETALL, got) || memcmp(got, want, sizeof(want)))
			errors++;
		if (semctl(priv, 0, GETVAL) != 3)
			errors++;
		if (semctl(sem, 0, IPC_STAT, &s) || (s.sem_perm.mode & 0777) != 0640 || s.sem_perm.__key != 0x5354)
			errors++;
		if (semop(sem, &down, 1) || semop(sem, &up, 1))
			errors++;
		if (msgctl(mq, IPC_STAT, &q) || q.msg_qnum != 3 || q.msg_qbytes != 8192 || (q.msg_perm.mode & 0777) != 0600)
			errors++;
		n = msgrcv(mq, &m, sizeof(m.text), 0, IPC_NOWAIT);
		if (n < 0 || !known(&m, n) || msgsnd(mq, &m, n, IPC_NOWAIT))
			errors++;
		iter++;
		report("/tmp/state", "iter=%lu pid=%d errors=%lu\n", iter, getpid(), errors);
		usleep(100000);
	}
}
