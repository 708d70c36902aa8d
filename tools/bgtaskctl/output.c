/* output.c - bgtaskctl's text: clean one-line text, numbers, times, terminal sizes, JSON, tables. */
#include "ctl.h"

/* ---- small helpers ---- */

/* Display width of UTF-8 text, counting each code point as one column. */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/*
 * Copy s into out (n >= 8 bytes) for one line of output: control characters
 * become spaces, and text wider than max code points (or than out) is cut to
 * end in "...", never inside a UTF-8 sequence. Returns out.
 */
const char *clean(const char *s, size_t max, char *out, size_t n)
{
    size_t o = 0, chars = 0, cap = n - 4; /* room for "..." and the NUL */
    size_t limit = s && text_width(s) <= max ? max : max > 3 ? max - 3 : 0;
    bool all = true;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool start = (ch & 0xC0) != 0x80;
        if ((start && (chars++ == limit || o + 4 > cap)) || o >= cap) {
            all = false;
            break;
        }
        out[o++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    if (!all) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
}

double jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* A number without a needless ".000000". */
const char *fmt_num(double v, char *buf, size_t n)
{
    snprintf(buf, n, v == floor(v) && fabs(v) < 1e15 ? "%.0f" : "%g", v);
    return buf;
}

/* Local time of a ms timestamp. */
const char *fmt_time(double ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

/* How long ago a ms timestamp was: "12s ago", "5m ago", "3h ago", "2d ago". */
const char *fmt_age(double ms, char *buf, size_t n)
{
    double s = fmax(0, (double)now_ms() - ms) / 1000;
    if (s < 120)
        snprintf(buf, n, "%.0fs ago", s);
    else if (s < 7200)
        snprintf(buf, n, "%.0fm ago", s / 60);
    else if (s < 172800)
        snprintf(buf, n, "%.0fh ago", s / 3600);
    else
        snprintf(buf, n, "%.0fd ago", s / 86400);
    return buf;
}

int term_columns(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

int term_rows(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
        return ws.ws_row;
    return 24;
}

/* Print a JSON value (pretty, or on one line) and a newline. */
void print_json(const cJSON *v, bool one_line)
{
    char *s = one_line ? cJSON_PrintUnformatted(v) : cJSON_Print(v);
    if (s)
        puts(s);
    free(s);
    fflush(stdout);
}

/* A JSON value as table text: arrays joined by ",", null as "-". Caller frees. */
char *cell_text(const cJSON *v)
{
    char buf[64];
    if (cJSON_IsString(v))
        return xstrdup(v->valuestring);
    if (cJSON_IsNumber(v))
        return xstrdup(fmt_num(v->valuedouble, buf, sizeof buf));
    if (!v || cJSON_IsNull(v))
        return xstrdup("-");
    if (!cJSON_IsArray(v)) {
        char *s = cJSON_PrintUnformatted(v);
        char *out = xstrdup(s ? s : "");
        free(s);
        return out;
    }
    char *out = xstrdup("");
    const cJSON *e;
    cJSON_ArrayForEach (e, v) {
        char *s = cell_text(e);
        char *joined = xasprintf("%s%s%s", out, *out ? "," : "", s);
        free(out);
        free(s);
        out = joined;
    }
    return out;
}

/* ---- tables ---- */

/* Append one row of ncols cells; takes ownership of each (malloc'd) string. */
void table_row(table *t, char **row)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->cells = xrealloc(t->cells, t->cap * (size_t)t->ncols * sizeof *t->cells);
    }
    memcpy(t->cells + t->nrows * (size_t)t->ncols, row, (size_t)t->ncols * sizeof *row);
    t->nrows++;
}

/* Print the header and the rows (nothing at all without rows), then free the cells. */
void table_print(table *t)
{
    size_t w[TABLE_MAX_COLS], nc = (size_t)t->ncols;
    for (size_t i = 0; i < nc; i++) {
        w[i] = strlen(t->head[i]);
        for (size_t r = 0; r < t->nrows; r++)
            if (text_width(t->cells[r * nc + i]) > w[i])
                w[i] = text_width(t->cells[r * nc + i]);
    }
    for (size_t r = 0; t->nrows && r <= t->nrows; r++)
        for (size_t i = 0; i < nc; i++) {
            const char *s = r == 0 ? t->head[i] : t->cells[(r - 1) * nc + i];
            if (i == nc - 1)
                printf("%s\n", s);
            else
                printf("%s%*s  ", s, (int)(w[i] - text_width(s)), "");
        }
    for (size_t i = 0; i < t->nrows * nc; i++)
        free(t->cells[i]);
    free(t->cells);
}

/* Print an array of objects as a table: one column per key, headed by the key in capitals. */
void print_objects(const cJSON *arr, int ncols, const char *const *keys)
{
    table tb = {.ncols = ncols};
    char heads[TABLE_MAX_COLS][32];
    const cJSON *o;
    for (int i = 0; i < ncols; i++) {
        size_t j = 0;
        for (; keys[i][j] && j < sizeof heads[i] - 1; j++)
            heads[i][j] = (char)toupper((unsigned char)keys[i][j]);
        heads[i][j] = '\0';
        tb.head[i] = heads[i];
    }
    cJSON_ArrayForEach (o, arr) {
        char *row[TABLE_MAX_COLS];
        for (int i = 0; i < ncols; i++)
            row[i] = cell_text(cJSON_GetObjectItemCaseSensitive(o, keys[i]));
        table_row(&tb, row);
    }
    table_print(&tb);
}
