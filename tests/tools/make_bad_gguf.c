/*
 * make_bad_gguf.c - writes every malformed GGUF case of bad_gguf_cases.h to OUTDIR, one file
 * per defect named <defect>.gguf, plus the valid base file as valid_base.gguf.
 *
 * usage: make_bad_gguf OUTDIR
 */
#include <stdio.h>
#include <stdlib.h>

#include "bad_gguf_cases.h"

static int write_file(const char *dir, const char *name, const uint8_t *buf, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    size_t n = size ? fwrite(buf, 1, size, f) : 0;
    if (fclose(f) != 0 || n != size) {
        fprintf(stderr, "make_bad_gguf: short write to %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    int bad = 0;
    uint8_t *buf;
    size_t size;
    if (bt_bad_gguf_build_valid(&buf, &size) != BT_OK)
        return 1;
    bad |= write_file(argv[1], "valid_base", buf, size);
    free(buf);
    size_t n = bt_bad_gguf_n_cases();
    for (size_t i = 0; i < n; i++) {
        if (bt_bad_gguf_build(i, &buf, &size) != BT_OK) {
            fprintf(stderr, "make_bad_gguf: building %s failed\n", bt_bad_gguf_name(i));
            return 1;
        }
        bad |= write_file(argv[1], bt_bad_gguf_name(i), buf, size);
        free(buf);
    }
    if (!bad)
        printf("wrote %zu malformed files and valid_base.gguf to %s\n", n, argv[1]);
    return bad;
}
