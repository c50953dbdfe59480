/* ablate_report.c's charts, shared: HTML-escaped text and line charts as inline SVG (chart.h). */
#include "eval/chart.h"

#include <math.h>

#include "common.h"

void chart_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                      "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

void chart_svg(FILE *f, const char *title, const char *xlabel, const char *ylabel, const ChartSeries *s, int ns,
               bool logy)
{
    const double W = 640, H = 360, L = 70, R = 170, T = 30, B = 50;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++) {
            double y = s[i].y[k];
            if (!isfinite(y) || (logy && y <= 0)) continue;
            y = logy ? log10(y) : y;
            x0 = fmin(x0, s[i].x[k]), x1 = fmax(x1, s[i].x[k]);
            y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    fprintf(f, "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"18\" font-size=\"13\" font-weight=\"bold\">", L);
    chart_text(f, title);
    fprintf(f, "</text>\n");
    if (!(x0 <= x1)) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">no data yet</text></svg>\n", L, H / 2);
        return;
    }
    if (x1 == x0) x0 -= 1, x1 += 1;
    if (y1 == y0) y0 -= 0.5, y1 += 0.5;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
#define PX(x) (L + ((x) - x0) / (x1 - x0) * (W - L - R))
#define PY(y) (H - B - ((y) - y0) / (y1 - y0) * (H - T - B))
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", L, T,
            W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) {
        double xv = x0 + (x1 - x0) * k / 4, yv = y0 + (y1 - y0) * k / 4;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>", PX(xv), T, PX(xv), H - B);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.4g</text>\n", PX(xv), H - B + 15, xv);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>", L, PY(yv), W - R, PY(yv));
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", L - 5, PY(yv) + 4,
                logy ? pow(10, yv) : yv);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", (L + W - R) / 2, H - 12);
    chart_text(f, xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(16 %.0f) rotate(-90)\" text-anchor=\"middle\">", (T + H - B) / 2);
    chart_text(f, ylabel);
    fprintf(f, "%s</text>\n", logy ? " (log scale)" : "");
    for (int i = 0; i < ns; i++) {
        const char *color = PALETTE[i % CM_ARRAY_LEN(PALETTE)];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
        for (int k = 0; k < s[i].n; k++) {
            double y = s[i].y[k];
            if (!isfinite(y) || (logy && y <= 0)) continue;
            fprintf(f, "%.1f,%.1f ", PX(s[i].x[k]), PY(logy ? log10(y) : y));
        }
        fprintf(f, "\"/>\n");
        for (int k = 0; k < s[i].n && s[i].n <= 16; k++) {
            double y = s[i].y[k];
            if (!isfinite(y) || (logy && y <= 0)) continue;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", PX(s[i].x[k]), PY(logy ? log10(y) : y),
                    color);
        }
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                   "<text x=\"%.0f\" y=\"%.0f\">", W - R + 10, T + 8 + 16.0 * i, color, W - R + 27, T + 12 + 16.0 * i);
        chart_text(f, s[i].name);
        fprintf(f, "</text>\n");
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
}
