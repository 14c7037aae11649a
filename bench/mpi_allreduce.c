/* The Open MPI reference for `cohort bench allreduce`: MPI_Allreduce of floats (sum) over
 * sizes from MIN to MAX bytes by FACTOR, ITERS timed iterations after WARMUP, printing
 * "size time_us busbw" per size with nccl-tests' bus bandwidth (algbw * 2(n-1)/n).
 * Usage: mpirun -np N mpi_allreduce [MIN MAX FACTOR ITERS WARMUP] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t min = argc > 1 ? strtoull(argv[1], NULL, 0) : 8;
    size_t max = argc > 2 ? strtoull(argv[2], NULL, 0) : (128u << 20);
    size_t factor = argc > 3 ? strtoull(argv[3], NULL, 0) : 2;
    int iters = argc > 4 ? atoi(argv[4]) : 20;
    int warmup = argc > 5 ? atoi(argv[5]) : 5;
    float *data = malloc(max);
    if (!data) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
    for (size_t i = 0; i < max / sizeof(float); i++) data[i] = 1.0f;
    for (size_t bytes = min; bytes <= max; bytes *= factor) {
        int count = (int)(bytes / sizeof(float));
        for (int i = 0; i < warmup; i++)
            MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double start = MPI_Wtime();
        for (int i = 0; i < iters; i++)
            MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double t = (MPI_Wtime() - start) / iters, slowest;
        MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        double algbw = count * sizeof(float) / slowest / 1e9;
        if (rank == 0)
            printf("%zu %.2f %.3f\n", (size_t)count * sizeof(float), slowest * 1e6,
                   algbw * 2.0 * (size - 1) / size);
        if (factor < 2) break;
    }
    free(data);
    MPI_Finalize();
    return 0;
}
