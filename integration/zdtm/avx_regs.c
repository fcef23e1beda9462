/*
 * avx_regs (cf. zdtm fpu00..03): register state that only lives in the CPU.
 *
 * One inline-asm block loads distinct 256-bit values into ymm0..ymm15,
 * distinct 64-bit values into r8..r15, three x87 values onto the FPU stack,
 * a non-default MXCSR (round toward zero, DAZ) and a non-default x87 control
 * word, then spins (`pause`) until the SIGTERM flag becomes non-zero, and
 * finally stores everything back to memory.  The checkpoint therefore always
 * happens while these values are live in registers, and the comparison
 * covers the XSAVE area (SSE + AVX upper halves + x87) and the GPRs.
 *
 * SIGTERM: this test replaces zdtm's SIGTERM handler with an SA_SIGINFO one
 * that also sets the flag.  The signal frame saves and restores all these
 * registers, so the handler running in the middle of the loop is harmless.
 * Corruptions ("ymm", "ymm_high", "gpr", "mxcsr", "x87") are applied by the
 * handler by editing the saved ucontext, which is what a bad restore looks
 * like to the program.  The corrupt file is read at start for this test.
 */
#include "zdtm.h"
#include <stddef.h>
#include <ucontext.h>
#include <immintrin.h>

struct regs {
	unsigned char ymm_in[16][32];
	unsigned char ymm_out[16][32];
	uint64_t gpr_in[8];
	uint64_t gpr_out[8];
	long double x87_in[3];
	long double x87_out[3];
	uint32_t mxcsr_in, mxcsr_out;
	uint16_t fcw_in, fcw_out;
	uint64_t spins;
} __attribute__((aligned(64)));

static struct regs R;
static int c_ymm, c_ymm_high, c_gpr, c_mxcsr, c_x87;

static void term_handler(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;

	(void)sig;
	(void)si;
	if (c_gpr)
		uc->uc_mcontext.gregs[REG_R13] ^= 0x100;
	if (c_ymm)
		uc->uc_mcontext.fpregs->_xmm[5].element[1] ^= 0x1;
	if (c_mxcsr)
		uc->uc_mcontext.fpregs->mxcsr ^= 0x6000; /* rounding control */
	if (c_x87)
		uc->uc_mcontext.fpregs->_st[1].significand[0] ^= 0x10;
	if (c_ymm_high) {
		/* YMM_Hi128 state lives at offset 576 of the (standard) XSAVE area */
		unsigned char *xs = (unsigned char *)uc->uc_mcontext.fpregs;
		xs[576 + 7 * 16 + 3] ^= 0x80;
	}
	zdtm_term_flag = 1;
}

#define LOADY(n) "vmovdqu " #n "*32+%c[yi](%[r]), %%ymm" #n "\n\t"
#define STOREY(n) "vmovdqu %%ymm" #n ", " #n "*32+%c[yo](%[r])\n\t"

static void spin_with_live_registers(void)
{
	asm volatile(
		"ldmxcsr %c[mi](%[r])\n\t"
		"fninit\n\t"
		"fldcw %c[fi](%[r])\n\t"
		"fldt %c[xi]+0(%[r])\n\t"
		"fldt %c[xi]+16(%[r])\n\t"
		"fldt %c[xi]+32(%[r])\n\t"
		LOADY(0) LOADY(1) LOADY(2) LOADY(3) LOADY(4) LOADY(5) LOADY(6) LOADY(7)
		LOADY(8) LOADY(9) LOADY(10) LOADY(11) LOADY(12) LOADY(13) LOADY(14) LOADY(15)
		"mov %c[gi]+0(%[r]), %%r8\n\t"
		"mov %c[gi]+8(%[r]), %%r9\n\t"
		"mov %c[gi]+16(%[r]), %%r10\n\t"
		"mov %c[gi]+24(%[r]), %%r11\n\t"
		"mov %c[gi]+32(%[r]), %%r12\n\t"
		"mov %c[gi]+40(%[r]), %%r13\n\t"
		"mov %c[gi]+48(%[r]), %%r14\n\t"
		"mov %c[gi]+56(%[r]), %%r15\n\t"
		"xor %%eax, %%eax\n\t"
		"1:\n\t"
		"inc %%rax\n\t"
		"pause\n\t"
		"cmpl $0, (%[flag])\n\t"
		"je 1b\n\t"
		"mov %%rax, %c[sp](%[r])\n\t"
		"mov %%r8, %c[go]+0(%[r])\n\t"
		"mov %%r9, %c[go]+8(%[r])\n\t"
		"mov %%r10, %c[go]+16(%[r])\n\t"
		"mov %%r11, %c[go]+24(%[r])\n\t"
		"mov %%r12, %c[go]+32(%[r])\n\t"
		"mov %%r13, %c[go]+40(%[r])\n\t"
		"mov %%r14, %c[go]+48(%[r])\n\t"
		"mov %%r15, %c[go]+56(%[r])\n\t"
		STOREY(0) STOREY(1) STOREY(2) STOREY(3) STOREY(4) STOREY(5) STOREY(6) STOREY(7)
		STOREY(8) STOREY(9) STOREY(10) STOREY(11) STOREY(12) STOREY(13) STOREY(14) STOREY(15)
		"vzeroupper\n\t"
		"fstpt %c[xo]+32(%[r])\n\t"
		"fstpt %c[xo]+16(%[r])\n\t"
		"fstpt %c[xo]+0(%[r])\n\t"
		"fnstcw %c[fo](%[r])\n\t"
		"stmxcsr %c[mo](%[r])\n\t"
		:
		: [r] "r"(&R), [flag] "r"(&zdtm_term_flag),
		  [yi] "i"(offsetof(struct regs, ymm_in)), [yo] "i"(offsetof(struct regs, ymm_out)),
		  [gi] "i"(offsetof(struct regs, gpr_in)), [go] "i"(offsetof(struct regs, gpr_out)),
		  [xi] "i"(offsetof(struct regs, x87_in)), [xo] "i"(offsetof(struct regs, x87_out)),
		  [mi] "i"(offsetof(struct regs, mxcsr_in)), [mo] "i"(offsetof(struct regs, mxcsr_out)),
		  [fi] "i"(offsetof(struct regs, fcw_in)), [fo] "i"(offsetof(struct regs, fcw_out)),
		  [sp] "i"(offsetof(struct regs, spins))
		: "memory", "cc", "rax", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
		  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
		  "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
		  "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)");
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	uint32_t def_mxcsr = 0x1f80;
	uint16_t def_fcw = 0x037f;

	zdtm_init(argc, argv);
	if (!__builtin_cpu_supports("avx2"))
		zdtm_fail("CPU has no AVX2");

	c_ymm = zdtm_corrupt("ymm");
	c_ymm_high = zdtm_corrupt("ymm_high");
	c_gpr = zdtm_corrupt("gpr");
	c_mxcsr = zdtm_corrupt("mxcsr");
	c_x87 = zdtm_corrupt("x87");

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = term_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);

	for (int i = 0; i < 16; i++)
		for (int j = 0; j < 32; j++)
			R.ymm_in[i][j] = (unsigned char)(0x11 * (i + 1) + j * 3 + (j >= 16 ? 0x80 : 0));
	for (int i = 0; i < 8; i++)
		R.gpr_in[i] = 0x0123456789abcdefull * (i + 3) ^ (0x1111111111111111ull << (i % 4));
	R.x87_in[0] = 3.14159265358979323846264338327950288L;
	R.x87_in[1] = -1234567.890123456789L;
	R.x87_in[2] = 1.0L / 3.0L;
	R.mxcsr_in = def_mxcsr | 0x6000 /* RZ */ | 0x0040 /* DAZ */;
	R.fcw_in = (def_fcw & ~0x0c00) | 0x0400 /* round down */;

	zdtm_ready();
	spin_with_live_registers();

	asm volatile("ldmxcsr %0" : : "m"(def_mxcsr));
	asm volatile("fldcw %0" : : "m"(def_fcw));

	for (int i = 0; i < 16; i++) {
		if (memcmp(R.ymm_in[i], R.ymm_out[i], 32) == 0)
			continue;
		for (int j = 0; j < 32; j++)
			if (R.ymm_in[i][j] != R.ymm_out[i][j]) {
				zdtm_err("ymm%d byte %d: %#x, expected %#x (%s half)", i, j, R.ymm_out[i][j],
					 R.ymm_in[i][j], j < 16 ? "xmm" : "upper");
				break;
			}
	}
	for (int i = 0; i < 8; i++)
		ZCHECK(R.gpr_in[i] == R.gpr_out[i], "r%d = %#llx, expected %#llx", i + 8,
		       (unsigned long long)R.gpr_out[i], (unsigned long long)R.gpr_in[i]);
	for (int i = 0; i < 3; i++)
		ZCHECK(memcmp(&R.x87_in[i], &R.x87_out[i], 10) == 0, "x87 value %d: %Lg, expected %Lg", i,
		       R.x87_out[i], R.x87_in[i]);
	ZCHECK((R.mxcsr_out & ~0x3fu) == R.mxcsr_in, "MXCSR %#x, expected %#x", R.mxcsr_out, R.mxcsr_in);
	ZCHECK((R.fcw_out & 0x1f3f) == (R.fcw_in & 0x1f3f), "x87 control word %#x, expected %#x", R.fcw_out,
	       R.fcw_in);
	ZCHECK(R.spins > 0, "spin loop never ran");
	zdtm_log("spun %llu times", (unsigned long long)R.spins);
	zdtm_finish();
}
