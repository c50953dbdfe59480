#include "records.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/atomic.h"
#include "io/checkpoint.h"
#include "io/sha256.h"

typedef enum { FIELD_TEXT, FIELD_INT, FIELD_LONG, FIELD_DOUBLE } FieldType;

typedef struct RecordField {
    const char *name;
    FieldType type;
    size_t offset, size;
} RecordField;

#define RF(field, type) {#field, type, offsetof(EvalRecord, field), sizeof(((EvalRecord *)0)->field)}
static const RecordField FIELDS[] = {
    RF(metric, FIELD_TEXT), RF(value, FIELD_DOUBLE), RF(checkpoint, FIELD_TEXT), RF(step, FIELD_LONG),
    RF(method, FIELD_TEXT), RF(weights, FIELD_TEXT), RF(feature_net, FIELD_TEXT),
    RF(feature_hash, FIELD_TEXT), RF(feature_weights, FIELD_TEXT), RF(dataset, FIELD_TEXT),
    RF(reference, FIELD_TEXT), RF(reference_n, FIELD_LONG), RF(n, FIELD_INT), RF(seed, FIELD_INT),
    RF(sampler, FIELD_TEXT), RF(schedule, FIELD_TEXT), RF(nfe, FIELD_INT), RF(times, FIELD_TEXT),
    RF(options, FIELD_TEXT),    RF(sample_seconds, FIELD_DOUBLE), RF(feature_seconds, FIELD_DOUBLE), RF(grid, FIELD_TEXT),
    RF(date, FIELD_TEXT),
};

void eval_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

char *eval_record_json(const EvalRecord *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CM_ASSERT(f, "out of memory");
    fputc('{', f);
    for (size_t i = 0; i < CM_ARRAY_LEN(FIELDS); i++) {
        const RecordField *k = &FIELDS[i];
        const char *p = (const char *)r + k->offset;
        fprintf(f, "%s\"%s\": ", i ? ", " : "", k->name);
        switch (k->type) {
        case FIELD_TEXT: eval_json_string(f, p); break;
        case FIELD_INT: fprintf(f, "%d", *(const int *)p); break;
        case FIELD_LONG: fprintf(f, "%ld", *(const long *)p); break;
        case FIELD_DOUBLE: {
            double v = *(const double *)p;
            if (isfinite(v)) fprintf(f, "%.12g", v);
            else fprintf(f, "null");
            break;
        }
        }
    }
    fputc('}', f);
    fclose(f);
    return buf;
}

/* The file's text, or NULL when it cannot be read (eval.json does not exist yet). */
static char *read_text(const char *path)
{
    char *text;
    return cm_read_file(path, SIZE_MAX, &text, NULL) == 0 ? text : NULL;
}

int eval_json_append(const char *path, const EvalRecord *r, int count)
{
    char *old = read_text(path);
    char tmp[1100];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) {
        free(old);
        return -1;
    }
    /* The records already there, as lines between "[" and "]". */
    bool any = false;
    fprintf(f, "[\n");
    for (char *line = old ? strtok(old, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        size_t n = strlen(line);
        while (n && (isspace((unsigned char)line[n - 1]) || line[n - 1] == ',')) line[--n] = '\0';
        if (line[0] != '{') continue;
        fprintf(f, "%s%s", any ? ",\n" : "", line);
        any = true;
    }
    for (int i = 0; i < count; i++) {
        char *js = eval_record_json(&r[i]);
        fprintf(f, "%s%s", any ? ",\n" : "", js);
        any = true;
        free(js);
    }
    fprintf(f, "\n]\n");
    free(old);
    return atomic_commit(f, tmp, path, !ferror(f));
}

/* A JSON string at *p (after its opening quote) into out; advances *p past the closing quote. */
static bool scan_string(const char **p, char *out, size_t n)
{
    size_t k = 0;
    for (const char *s = *p; *s; s++) {
        char ch = *s;
        if (ch == '"') {
            out[CM_MIN(k, n - 1)] = '\0';
            *p = s + 1;
            return true;
        }
        if (ch == '\\') {
            s++;
            if (*s == 'u') {
                char hex[5] = {0};
                for (int d = 0; d < 4; d++)
                    if (!isxdigit((unsigned char)(hex[d] = s[1 + d]))) return false;
                ch = (char)strtol(hex, NULL, 16);
                s += 4;
            } else {
                ch = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
            }
            if (!ch) return false;
        }
        if (k + 1 < n) out[k] = ch;
        k++;
    }
    return false;
}

/* One flat object {"key": value, ...} into r (unknown keys ignored). */
static bool scan_record(const char *s, EvalRecord *r)
{
    memset(r, 0, sizeof *r);
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    if (*p++ != '{') return false;
    char key[64], text[EVAL_TEXT];
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (*p == '}') return true;
        if (*p++ != '"' || !scan_string(&p, key, sizeof key)) return false;
        while (isspace((unsigned char)*p)) p++;
        if (*p++ != ':') return false;
        while (isspace((unsigned char)*p)) p++;
        bool is_text = *p == '"';
        double num = NAN;
        if (is_text) {
            p++;
            if (!scan_string(&p, text, sizeof text)) return false;
        } else if (!strncmp(p, "null", 4)) {
            p += 4;
        } else {
            char *end;
            num = strtod(p, &end);
            if (end == p) return false;
            p = end;
        }
        for (size_t i = 0; i < CM_ARRAY_LEN(FIELDS); i++) {
            const RecordField *k = &FIELDS[i];
            if (strcmp(k->name, key) != 0 || is_text != (k->type == FIELD_TEXT)) continue;
            char *f = (char *)r + k->offset;
            switch (k->type) {
            case FIELD_TEXT: snprintf(f, k->size, "%s", text); break;
            case FIELD_INT: *(int *)f = (int)num; break;
            case FIELD_LONG: *(long *)f = (long)num; break;
            case FIELD_DOUBLE: *(double *)f = num; break;
            }
        }
        while (isspace((unsigned char)*p)) p++;
        if (*p == ',') p++;
        else if (*p != '}') return false;
    }
}

int eval_json_read(const char *path, EvalRecord **out)
{
    *out = NULL;
    char *text = read_text(path);
    if (!text) return 0;
    int n = 0, cap = 0, lineno = 0;
    EvalRecord *rs = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        const char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (*p != '{') {
            if (*p && *p != '[' && *p != ']') {
                free(text);
                free(rs);
                return cm_fail("%s:%d: not a record of eval.json (one JSON object per line)", path, lineno);
            }
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            rs = realloc(rs, (size_t)cap * sizeof *rs);
            CM_ASSERT(rs, "out of memory");
        }
        if (!scan_record(p, &rs[n])) {
            free(text);
            free(rs);
            return cm_fail("%s:%d: malformed record", path, lineno);
        }
        n++;
    }
    free(text);
    *out = rs;
    return n;
}

void eval_record_name(const EvalRecord *r, char *out, size_t len)
{
    char weights[64];
    snprintf(weights, sizeof weights, "%s", r->weights);
    for (char *c = weights; *c; c++)
        if (*c == '/') *c = '-';
    if (r->nfe <= 0) {
        snprintf(out, len, "/eval/%s.%s", r->metric, weights);
        return;
    }
    /* The sampler's time points, schedule and options, hashed: a name stays short however many
     * time points there are. */
    Sha256 h;
    char hex[65];
    sha256_init(&h);
    const char *parts[] = {r->schedule, r->times, r->options};
    for (size_t i = 0; i < CM_ARRAY_LEN(parts); i++) sha256_update(&h, parts[i], strlen(parts[i]) + 1);
    sha256_final(&h, hex);
    snprintf(out, len, "/eval/%s.%s.nfe%d.n%d.seed%d.%s.%.8s.%.8s", r->metric, r->sampler, r->nfe, r->n, r->seed,
             weights, r->feature_hash + 7, hex);
}

/* The record as attributes of /eval/<name> in its checkpoint. */
int eval_record_stamp(const EvalRecord *r)
{
    CkptAttr attrs[CM_ARRAY_LEN(FIELDS) + 1];
    int n = 0;
    for (size_t i = 0; i < CM_ARRAY_LEN(FIELDS); i++) {
        const RecordField *k = &FIELDS[i];
        const char *p = (const char *)r + k->offset;
        CkptAttr a = {.name = k->name};
        switch (k->type) {
        case FIELD_TEXT: a.text = p; break;
        case FIELD_INT: a.number = *(const int *)p; a.integer = true; break;
        case FIELD_LONG: a.number = (double)*(const long *)p; a.integer = true; break;
        case FIELD_DOUBLE: a.number = *(const double *)p; break;
        }
        attrs[n++] = a;
    }
    char *js = eval_record_json(r);
    attrs[n++] = (CkptAttr){.name = "json", .text = js};
    char group[256];
    eval_record_name(r, group, sizeof group);
    int rc = ckpt_stamp(r->checkpoint, group, attrs, n);
    free(js);
    return rc;
}

