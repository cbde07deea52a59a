/* The machine's limit for a lookup's bytes: one shard's table in memory, a memcpy gather
 * of the requested rows and a plain write of them on a loopback TCP connection.
 *
 *   cc -O2 -o limit_probe bench/limit_probe.c
 *   limit_probe PORT ROWS ROW_BYTES
 *
 * Serves one connection at a time; each request is a little-endian uint64 count followed
 * by that many uint64 row numbers, each answer count * ROW_BYTES bytes of rows in request
 * order. No index, no framing beyond that: what any server must at least do. Started and
 * read by bench/limit_probe.py (4 processes, one client).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n) {
        ssize_t got = read(fd, p, n);
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        ssize_t put = write(fd, p, n);
        if (put <= 0) return -1;
        p += put;
        n -= (size_t)put;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT ROWS ROW_BYTES\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    size_t rows = strtoull(argv[2], NULL, 10), row_bytes = strtoull(argv[3], NULL, 10);
    char *table = malloc(rows * row_bytes);
    if (!table) return 1;
    for (size_t i = 0; i < rows * row_bytes; i++) table[i] = (char)(i * 2654435761u >> 13);

    int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(srv, (struct sockaddr *)&addr, sizeof addr) || listen(srv, 4)) {
        perror("bind/listen");
        return 1;
    }
    uint64_t *positions = NULL;
    char *out = NULL;
    size_t capacity = 0;
    for (;;) {
        int fd = accept(srv, NULL, NULL);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        uint64_t count;
        while (read_all(fd, &count, sizeof count) == 0) {
            if (count > capacity) {
                positions = realloc(positions, count * sizeof *positions);
                out = realloc(out, count * row_bytes);
                capacity = count;
            }
            if (read_all(fd, positions, count * sizeof *positions)) break;
            for (uint64_t i = 0; i < count; i++)
                memcpy(out + i * row_bytes, table + (positions[i] % rows) * row_bytes,
                       row_bytes);
            if (write_all(fd, out, count * row_bytes)) break;
        }
        close(fd);
    }
}
