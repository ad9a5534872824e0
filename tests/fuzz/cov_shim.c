/* Comparison hooks for a gcc build of the encoder with -fsanitize-coverage=trace-cmp, forwarded
 * to libFuzzer inside atheris. atheris loads its libFuzzer privately (RTLD_LOCAL), so a gcc-built
 * extension cannot link to the hooks directly: each is looked up on first call in the library
 * named by $ATHERIS_CORE. The comparisons guide the fuzzer through the frame's lengths and
 * counts. Float comparisons, which libFuzzer does not take, are dropped. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

static void *core(void) {
    static void *handle;
    if (handle == NULL) {
        const char *path = getenv("ATHERIS_CORE");
        if (path != NULL) handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    }
    return handle;
}

#define FORWARD(name, type)                                                        \
    void name(type a, type b) {                                                    \
        static void (*real)(type, type);                                           \
        if (real == NULL && core() != NULL) real = (void (*)(type, type))dlsym(core(), #name); \
        if (real != NULL) real(a, b);                                              \
    }

FORWARD(__sanitizer_cov_trace_cmp1, uint8_t)
FORWARD(__sanitizer_cov_trace_cmp2, uint16_t)
FORWARD(__sanitizer_cov_trace_cmp4, uint32_t)
FORWARD(__sanitizer_cov_trace_cmp8, uint64_t)
FORWARD(__sanitizer_cov_trace_const_cmp1, uint8_t)
FORWARD(__sanitizer_cov_trace_const_cmp2, uint16_t)
FORWARD(__sanitizer_cov_trace_const_cmp4, uint32_t)
FORWARD(__sanitizer_cov_trace_const_cmp8, uint64_t)

void __sanitizer_cov_trace_switch(uint64_t value, void *cases) {
    static void (*real)(uint64_t, void *);
    if (real == NULL && core() != NULL)
        real = (void (*)(uint64_t, void *))dlsym(core(), "__sanitizer_cov_trace_switch");
    if (real != NULL) real(value, cases);
}

void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a; (void)b; }
