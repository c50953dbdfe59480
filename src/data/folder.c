#include "folder.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "image.h"

static int folder_is_png_name(const char *name)
{
    size_t len = strlen(name);
    return len > 4 && strcasecmp(name + len - 4, ".png") == 0;
}

static int folder_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *folder_channels_name(int c) { return c == 1 ? "gray" : "RGB"; }

/* The sorted names of the regular *.png files in dir (malloc'd array of malloc'd strings). */
static int folder_list(const char *dir, char ***names, int *count)
{
    *names = NULL;
    *count = 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return cm_fail("%s: cannot open the directory: %s; data.path of a folder dataset is a "
                       "directory of .png images", dir, strerror(errno));
    int n = 0, cap = 0;
    char **list = NULL;
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (!folder_is_png_name(e->d_name)) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(list, (size_t)cap * sizeof *list);
            CM_ASSERT(grown, "out of memory listing %s", dir);
            list = grown;
        }
        list[n] = cm_malloc(strlen(e->d_name) + 1);
        strcpy(list[n], e->d_name);
        n++;
    }
    closedir(dp);
    if (n == 0) {
        free(list);
        return cm_fail("%s: no .png files in the directory; a folder dataset is a directory of "
                       "same-sized .png images", dir);
    }
    qsort(list, (size_t)n, sizeof *list, folder_cmp_names);
    *names = list;
    *count = n;
    return 0;
}

/* [h, w, c] interleaved (image_read_png) to [c, h, w] planar (Dataset). */
static void folder_to_planar(uint8_t *dst, const uint8_t *src, int c, int h, int w)
{
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < h * w; i++) dst[(size_t)ch * h * w + i] = src[(size_t)i * c + ch];
}

int folder_load(Dataset *d, const char *dir)
{
    memset(d, 0, sizeof *d);
    char **names;
    int n;
    if (folder_list(dir, &names, &n)) return -1;

    int rc = 0;
    size_t per_image = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        uint8_t *pix;
        int w, h, c;
        if (image_read_png(path, &pix, &w, &h, &c)) {
            rc = -1;
            break;
        }
        if (i == 0) {
            /* Sized from the first image; image_read_png bounds one image to 1 GiB. */
            d->n = n;
            d->c = c;
            d->h = h;
            d->w = w;
            per_image = (size_t)c * h * w;
            d->pix = cm_malloc((size_t)n * per_image);
            d->labels = cm_malloc((size_t)n * sizeof *d->labels);
        } else if (w != d->w || h != d->h || c != d->c) {
            rc = cm_fail("%s: %dx%d %s, but %s/%s (the first image by name) is %dx%d %s; every "
                         "image of a folder dataset must have the same size and channels",
                         path, w, h, folder_channels_name(c), dir, names[0], d->w, d->h,
                         folder_channels_name(d->c));
        }
        if (rc == 0) {
            folder_to_planar(d->pix + (size_t)i * per_image, pix, c, h, w);
            d->labels[i] = -1;
        }
        free(pix);
    }

    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc) {
        dataset_free(d);
        return -1;
    }
    snprintf(d->source, sizeof d->source, "folder %s (%d images)", dir, n);
    return 0;
}
