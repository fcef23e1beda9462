/* Test workload for container checkpoint/restore: a counter and a heap
 * pattern derived from it (4 MiB, or argv[2] MiB), checked and rewritten
 * every iteration.
 * Every 100 ms it writes "iter=N pid=P errors=E" to the state file (atomic
 * rename) and the same line to stdout. Built static by the tests. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "report.h"

#define GOLD 2654435761u

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/tmp/state";
	unsigned long mib = argc > 2 ? strtoul(argv[2], 0, 10) : 4;
	unsigned WORDS = (unsigned)(mib << 18);
	unsigned *heap = malloc((size_t)WORDS * sizeof *heap);
	unsigned long iter = 0, errors = 0;

	if (!heap)
		return 1;
	/* A reader that went away must not kill us: stdout is best effort. */
	signal(SIGPIPE, SIG_IGN);
	for (unsigned j = 0; j < WORDS; j++)
		heap[j] = j * GOLD;
	for (;;) {
		for (unsigned j = 0; j < WORDS; j++) {
			if (heap[j] != ((j * GOLD) ^ (unsigned)iter))
				errors++;
			heap[j] = (j * GOLD) ^ (unsigned)(iter + 1);
		}
		iter++;
		report(path, "iter=%lu pid=%d errors=%lu\n", iter, getpid(), errors);
		usleep(100000);
	}
}
