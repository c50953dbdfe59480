/* chart.h: the charts of cmlab's reports (ablate_report.c's report.html, `cmlab trajectories`'
 * pca.svg): line charts as SVG, written into an HTML page or as a file of their own, and text
 * escaped for HTML and SVG. */
#ifndef CM_CHART_H
#define CM_CHART_H

#include <stdbool.h>
#include <stdio.h>

typedef struct ChartSeries {
    const char *name;
    const double *x, *y;
    int n;
} ChartSeries;

/* s with <, >, & and " escaped. */
void chart_text(FILE *f, const char *s);
/* A line chart as one <svg> element (a valid SVG file on its own): one polyline per series, axes
 * with five ticks each, a legend; "no data yet" when no point is finite. logy: the y axis in log10
 * (non-positive values are left out). */
void chart_svg(FILE *f, const char *title, const char *xlabel, const char *ylabel, const ChartSeries *s, int ns,
               bool logy);

#endif
