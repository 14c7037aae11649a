/* Single-thread memcpy bandwidth, the yardstick for shared-memory collectives:
 * copies SIZE bytes (default 64 MiB) ITERS times between two warmed buffers and prints GB/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    size_t size = argc > 1 ? strtoull(argv[1], NULL, 0) : (64u << 20);
    int iters = argc > 2 ? atoi(argv[2]) : 20;
    char *a = malloc(size), *b = malloc(size);
    if (!a || !b) { fprintf(stderr, "out of memory\n"); return 1; }
    memset(a, 1, size);
    memset(b, 2, size);
    memcpy(b, a, size);
    double start = now();
    for (int i = 0; i < iters; i++) {
        memcpy(i % 2 ? a : b, i % 2 ? b : a, size);
    }
    double seconds = (now() - start) / iters;
    printf("memcpy %zu bytes: %.3f GB/s\n", size, size / seconds / 1e9);
    return a[size / 2] == 3;
}
