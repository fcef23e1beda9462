/*
 * dynamic_loop: static_loop, dynamically linked.
 *
 * Exercises file-backed private mappings of ld.so, libc and (via dlopen)
 * libm.  Besides the static_loop checks it verifies after SIGTERM:
 *  - every file-backed line of /proc/self/maps (address range, permissions,
 *    offset, device, inode, path) is unchanged, after zdtm_normalize_maps()
 *    (adjacent mergeable VMAs merged);
 *  - dl_iterate_phdr() lists the same objects at the same load addresses;
 *  - code in those libraries still works: a PLT call (qsort with a callback
 *    into the executable), a dlsym'ed libm function, snprintf of a double.
 *
 * Corruptions: "pattern" flips a heap byte, "maps" adds a file mapping,
 * "counter" desynchronises the counter mirror.
 */
#include "zdtm.h"
#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>

#define BIG (1u << 20)
#define MAPS_MAX 65536

static volatile unsigned long mirror;
static char maps_before[MAPS_MAX], maps_after[MAPS_MAX];

struct obj {
	char name[256];
	ElfW(Addr) addr;
};
static struct obj objs_before[64], objs_after[64];
static int nobjs_before, nobjs_after;

static int collect(struct dl_phdr_info *info, size_t size, void *data)
{
	struct obj *arr = data;
	int *n = arr == objs_before ? &nobjs_before : &nobjs_after;

	(void)size;
	if (*n >= 64)
		return 0;
	snprintf(arr[*n].name, sizeof(arr[*n].name), "%s", info->dlpi_name);
	arr[*n].addr = info->dlpi_addr;
	(*n)++;
	return 0;
}

/* Normalised maps, only file-backed lines (whose path starts with '/'). */
static void file_maps(char *out, size_t size)
{
	static char raw[MAPS_MAX], norm[MAPS_MAX];
	char *line, *save = NULL;
	size_t off = 0;

	out[0] = 0;
	if (zdtm_read_file("/proc/self/maps", raw, sizeof(raw)) < 0) {
		zdtm_err("read /proc/self/maps: %s", strerror(errno));
		return;
	}
	zdtm_normalize_maps(raw, norm, sizeof(norm));
	for (line = strtok_r(norm, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *path = strchr(line, '/');
		if (!path)
			continue;
		off += snprintf(out + off, size - off, "%s\n", line);
		if (off >= size)
			break;
	}
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

int main(int argc, char **argv)
{
	unsigned long counter = 0, at_ready;
	pid_t pid = getpid(), ppid = getppid();
	unsigned char *big;
	double (*cosp)(double);
	void *libm;
	long bad;
	char buf[64];
	int arr[16];

	zdtm_init(argc, argv);
	big = malloc(BIG);
	if (!big)
		zdtm_fail("malloc failed");
	zdtm_fill(big, BIG, 0xd1a0001, 0);

	libm = dlopen("libm.so.6", RTLD_NOW);
	if (!libm)
		zdtm_fail("dlopen libm.so.6: %s", dlerror());
	cosp = (double (*)(double))dlsym(libm, "cos");
	if (!cosp)
		zdtm_fail("dlsym cos: %s", dlerror());

	for (int i = 0; i < 10; i++)
		mirror = ++counter;
	at_ready = counter;

	dl_iterate_phdr(collect, objs_before);
	file_maps(maps_before, sizeof(maps_before));
	zdtm_ready();

	do { /* at least once, even if SIGTERM came early */
		struct timespec ts = { 0, 1000000 };
		mirror = ++counter;
		nanosleep(&ts, NULL);
	} while (!zdtm_stopping());

	if (zdtm_corrupt("pattern"))
		big[12345] ^= 1;
	if (zdtm_corrupt("counter"))
		mirror = 0;
	if (zdtm_corrupt("maps")) {
		int fd = open("/proc/self/exe", O_RDONLY);
		if (mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
			zdtm_log("corrupt mmap failed");
		close(fd);
	}

	file_maps(maps_after, sizeof(maps_after));
	dl_iterate_phdr(collect, objs_after);

	ZCHECK(getpid() == pid, "getpid() = %d, expected %d", (int)getpid(), (int)pid);
	ZCHECK(getppid() == ppid, "getppid() = %d, expected %d", (int)getppid(), (int)ppid);
	bad = zdtm_check_pat(big, BIG, 0xd1a0001, 0);
	ZCHECK(bad < 0, "heap buffer differs at offset %ld", bad);
	ZCHECK(counter == mirror, "local counter %lu != global mirror %lu", counter, (unsigned long)mirror);
	ZCHECK(counter > at_ready, "counter %lu did not advance past %lu", counter, at_ready);

	zdtm_compare_text("file-backed mappings", maps_before, maps_after);
	ZCHECK(nobjs_before == nobjs_after, "dl_iterate_phdr: %d objects before, %d after", nobjs_before,
	       nobjs_after);
	for (int i = 0; i < nobjs_before && i < nobjs_after; i++) {
		ZCHECK(strcmp(objs_before[i].name, objs_after[i].name) == 0, "object %d: '%s' became '%s'", i,
		       objs_before[i].name, objs_after[i].name);
		ZCHECK(objs_before[i].addr == objs_after[i].addr, "object '%s' moved: %#lx -> %#lx",
		       objs_before[i].name, (unsigned long)objs_before[i].addr,
		       (unsigned long)objs_after[i].addr);
	}

	/* library code still works */
	for (int i = 0; i < 16; i++)
		arr[i] = (i * 7) % 16;
	qsort(arr, 16, sizeof(int), cmp_int);
	for (int i = 0; i < 16; i++)
		ZCHECK(arr[i] == i, "qsort result wrong at %d", i);
	snprintf(buf, sizeof(buf), "%.6f", cosp(0.5));
	ZCHECK(strcmp(buf, "0.877583") == 0, "cos(0.5) printed as %s", buf);

	free(big);
	zdtm_finish();
}
