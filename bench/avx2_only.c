/* Run a program as it runs on an x86-64 CPU with AVX2 and FMA but no AVX-512, AVX-VNNI, AMX or bf16
 * (an AMD EPYC Rome or Milan, most laptops), on a CPU that has them: bench/avx2_only.py builds this
 * file and preloads it (LD_PRELOAD) into every process of the benchmark.
 *
 * Libraries choose their kernels from what the CPUID instruction reports (MLAS in ONNX Runtime,
 * oneDNN and ATen in torch, OpenBLAS and numpy), and lectern reads the CPU's flags from /proc/cpuinfo.
 * Both are masked here:
 * - CPUID is made to fault (arch_prctl ARCH_SET_CPUID, which needs the `cpuid_fault` CPU flag; the
 *   setting is inherited by threads and forks and reset by exec, where the preload sets it again);
 *   the SIGSEGV handler runs the real CPUID and clears the AVX-512, AVX-VNNI, AMX and bf16 bits and
 *   the ZMM and tile state of leaf 0xD;
 * - an open of /proc/cpuinfo gets a copy without those flags.
 * The instructions then run at this CPU's own speed: the kernels are an AVX2 CPU's, the core is not.
 * glibc picks its string functions before any preload runs; those keep this CPU's best.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d) {
    if (leaf == 7 && sub == 0) {
        /* AVX512F DQ IFMA PF ER CD BW VL */
        *b &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* AVX512_VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
        *c &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* AVX512_4VNNIW 4FMAPS VP2INTERSECT, AMX_BF16, AVX512_FP16, AMX_TILE, AMX_INT8 */
        *d &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        *a &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23)); /* AVX_VNNI, AVX512_BF16, AMX_FP16, AVX_IFMA */
    } else if (leaf == 0xd && sub == 0) {
        *a &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18)); /* opmask, ZMM and tile state */
    }
}

static void on_segv(int sig, siginfo_t *info, void *raw) {
    (void)info;
    ucontext_t *uc = raw;
    unsigned char *ip = (unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault, not CPUID: die of it as without us */
        signal(sig, SIG_DFL);
        return; /* the instruction faults again, now fatally */
    }
    unsigned leaf = (unsigned)uc->uc_mcontext.gregs[REG_RAX];
    unsigned sub = (unsigned)uc->uc_mcontext.gregs[REG_RCX];
    unsigned a, b, c, d;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, sub, a, b, c, d);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    mask(leaf, sub, &a, &b, &c, &d);
    uc->uc_mcontext.gregs[REG_RAX] = a;
    uc->uc_mcontext.gregs[REG_RBX] = b;
    uc->uc_mcontext.gregs[REG_RCX] = c;
    uc->uc_mcontext.gregs[REG_RDX] = d;
    uc->uc_mcontext.gregs[REG_RIP] += 2;
}

static int hidden_flag(const char *word, size_t n) {
    static const char *prefixes[] = {"avx512", "amx", "avx_vnni", "avx_ifma"};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        size_t p = strlen(prefixes[i]);
        if (n >= p && strncmp(word, prefixes[i], p) == 0) return 1;
    }
    return 0;
}

/* /proc/cpuinfo with the masked flags dropped, in a memory file; -1 (errno set) on failure. */
static int masked_cpuinfo(int flags) {
    int src = (int)syscall(SYS_openat, AT_FDCWD, "/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
    if (src < 0) return -1;
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    ssize_t got;
    while (text && (got = read(src, text + len, cap - len)) > 0) {
        len += (size_t)got;
        if (len == cap) {
            char *grown = realloc(text, cap *= 2);
            if (!grown) free(text);
            text = grown;
        }
    }
    close(src);
    if (!text) return -1;
    int out = (int)syscall(SYS_memfd_create, "cpuinfo", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
    if (out < 0) {
        free(text);
        return -1;
    }
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && text[end] != '\n') end++;
        int is_flags = (end - i > 5 && (strncmp(text + i, "flags", 5) == 0));
        if (!is_flags) {
            if (write(out, text + i, end - i + (end < len)) < 0) break;
        } else {
            size_t j = i;
            while (j < end && text[j] != ':') j++;
            if (write(out, text + i, j - i + 1) < 0) break;
            for (j++; j < end;) {
                while (j < end && text[j] == ' ') j++;
                size_t w = j;
                while (w < end && text[w] != ' ') w++;
                if (w > j && !hidden_flag(text + j, w - j)) {
                    if (write(out, " ", 1) < 0 || write(out, text + j, w - j) < 0) break;
                }
                j = w;
            }
            if (write(out, "\n", 1) < 0) break;
        }
        i = end + 1;
    }
    free(text);
    lseek(out, 0, SEEK_SET);
    return out;
}

static int is_cpuinfo(const char *path) { return path && strcmp(path, "/proc/cpuinfo") == 0; }

static int real_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return (int)syscall(SYS_openat, dirfd, path, flags, mode);
}

#define MODE_ARG(flags, mode)                                  \
    mode_t mode = 0;                                           \
    if ((flags) & (O_CREAT | O_TMPFILE)) {                     \
        va_list ap;                                            \
        va_start(ap, flags);                                   \
        mode = (mode_t)va_arg(ap, int);                        \
        va_end(ap);                                            \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG(flags, mode)
    return is_cpuinfo(path) ? masked_cpuinfo(flags) : real_openat(AT_FDCWD, path, flags, mode);
}
int open64(const char *path, int flags, ...) {
    MODE_ARG(flags, mode)
    return is_cpuinfo(path) ? masked_cpuinfo(flags) : real_openat(AT_FDCWD, path, flags, mode);
}
int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags, mode)
    return is_cpuinfo(path) ? masked_cpuinfo(flags) : real_openat(dirfd, path, flags, mode);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags, mode)
    return is_cpuinfo(path) ? masked_cpuinfo(flags) : real_openat(dirfd, path, flags, mode);
}

__attribute__((constructor)) static void as_avx2_only(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        perror("avx2_only: cannot make CPUID fault (this CPU lacks the cpuid_fault flag)");
        _exit(3);
    }
}
