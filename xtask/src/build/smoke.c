/* Smoke test for a profiling jemalloc: compiled against the target sysroot and run by the
 * target's own dynamic loader with the new library preloaded. It keeps what it allocates,
 * so the final heap profile must attribute the bytes to smoke_alloc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) void *smoke_alloc(size_t n) {
    void *p = malloc(n);
    if (p != NULL) {
        memset(p, 0x5a, n);
    }
    return p;
}

int main(void) {
    enum { N = 2048 };
    static void *keep[N];
    size_t sum = 0;
    for (int i = 0; i < N; i++) {
        keep[i] = smoke_alloc(4096 + (size_t)(i % 64) * 64);
        if (keep[i] == NULL) {
            return 1;
        }
    }
    for (int i = 0; i < N; i++) {
        sum += ((unsigned char *)keep[i])[0];
    }
    printf("smoke: %zu\n", sum);
    return 0;
}
