/* test_readme.c: the key lists in README.md and experiments/README.md are the output of
 * config_markdown (the key table), so the docs cannot drift from the parser. argv[1..]: the files.
 * To refresh them: cmlab train --keys-markdown, pasted between the keys:begin/keys:end markers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "io/experiment.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    s[n] = 0;
    return s;
}

int main(int argc, char **argv)
{
    char *gen = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&gen, &len);
    config_markdown(m);
    fclose(m);
    for (int i = 1; i < argc; i++) {
        char *doc = slurp(argv[i]);
        CHECK(doc != NULL, "cannot read %s", argv[i]);
        if (!doc) continue;
        char *b = strstr(doc, "<!-- keys:begin");
        char *e = strstr(doc, "<!-- keys:end -->");
        CHECK(b && e && e > b, "%s: no keys:begin / keys:end markers", argv[i]);
        if (b && e && e > b) {
            b = strchr(b, '\n') + 1;
            size_t n = (size_t)(e - b);
            CHECK(n == len && memcmp(b, gen, len) == 0,
                  "%s: the key list differs from `cmlab train --keys-markdown`; regenerate it", argv[i]);
        }
        free(doc);
    }
    free(gen);
    return test_summary("readme");
}
