/* The state report every workload here writes: one formatted line to the
 * state file `path`, through `path`.tmp and an atomic rename so that a
 * reader never sees half a line, and the same line to stdout (best effort:
 * callers ignore SIGPIPE). Included by the workloads, which the tests build
 * static, one file each. */
#include <stdarg.h>
#include <stdio.h>

static void report(const char *path, const char *fmt, ...)
{
	char line[512], tmp[256];
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f) {
		fputs(line, f);
		fclose(f);
		rename(tmp, path);
	}
	fputs(line, stdout);
	fflush(stdout);
}
