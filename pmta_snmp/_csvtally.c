/*
 * _csvtally: count the rows of a CSV buffer by a few of their columns, without building rows.
 *
 * An optional speed-up of pmta_snmp.acct.tally (without it Python's csv reads every row, and
 * the tests compare both). It knows nothing of PowerMTA: it is given a line width, the values of
 * the first column to count ("kinds") and, per kind, which columns make the key and how.
 *
 * scan() walks whole lines from `pos` while they are "simple", and stops at the first line
 * that is not, so that the caller reads that record with Python's csv module. A simple line:
 *   - ends with "\n" or "\r\n", holds no other "\r" and only ASCII bytes;
 *   - has exactly `width` fields, split at commas; a field is either quoted ("text" where a
 *     quote is doubled, with no newline inside, followed by a comma or the line end) or
 *     unquoted (text that does not start with a quote, up to the next comma; a quote inside
 *     it is literal, as in csv); no field longer than csv's field size limit;
 *   - has an unquoted first field that is a wanted kind, or else does not contain the header
 *     word (case-insensitive; such a line may be a header);
 *   - or is empty ("\n" alone: csv reads no row there).
 * Python's csv reader (excel dialect, strict) reads every simple line as exactly these fields,
 * with the quotes of a quoted field removed (and its doubled quotes made single), and each
 * line as one record.
 *
 * For a line of a wanted kind, the key is a bytes object: the kind, then for each key column
 * 0xFF and its piece (0xFF cannot occur: only ASCII lines are counted):
 *   TEXT     the field's value (as csv reads it: without its quotes, "" as one quote);
 *   ADDRESS  the value from its last "@" on ("" when it has none): its domain part;
 *   MINUTE   "I" + "YYYY-MM-DD HH:MM" + the text after the seconds when the field is an
 *            unquoted ISO time, else "R" + the value; "N" when the column is missing.
 *   MINUTE10 as MINUTE, with the minute's last digit written as "0" in the ISO form (ten-minute
 *            slots; the caller floors the "R" form alike).
 *   MASK     the value with each address made one "@" (an address: a run of characters
 *            between separators -- control characters, space and <>()[]{},;:"'`| -- that
 *            holds an "@"); a value over 2000 bytes is kept whole. (mask_addresses in
 *            pmta_snmp/acct/columns.py does the same to text.)
 *   HOST     the value up to its first space (the host of "host (ip)").
 *   DELAY    a delay in seconds, from three key columns in a row: DELAY (a seconds count,
 *            PowerMTA 5.5's totalSecondsQueued, -1 when absent), DELAY_END (the time
 *            logged) and DELAY_START (the time queued); one piece for the three: "" when
 *            unknown (empty fields), else the index of the first bound in `bounds` that the
 *            delay does not exceed (len(bounds): none), in decimal; the delay is the count
 *            when it is digits, else end - start (below zero: 0), and it is added to
 *            sums[key]. Times are Unix seconds (digits) or "YYYY-MM-DD HH:MM:SS" (or "T")
 *            followed by +HHMM, +HH:MM or Z. Anything else (another time form, a date that
 *            does not exist) gives "R" + the three fields, separated by 0xFE, for the caller
 *            to work out (and no sum).
 * A missing TEXT/ADDRESS column (column -1) gives "". counts[key] += 1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum {
    MODE_TEXT = 0, MODE_ADDRESS = 1, MODE_MINUTE = 2, MODE_MASK = 3, MODE_HOST = 4,
    MODE_DELAY = 5, MODE_DELAY_END = 6, MODE_DELAY_START = 7, MODE_MINUTE10 = 8
};
#define MASK_MAX 2000
#define MAX_BOUNDS 64
#define MAX_WIDTH 4096
#define MAX_KINDS 16
#define MAX_KEYCOLS 64

typedef struct {
    const char *p;  /* the field as written (inside the quotes of a quoted field) */
    Py_ssize_t n;
    int quoted;
    int doubled;    /* a quoted field holds "" pairs: its value has one quote for each */
} Span;

typedef struct {
    const char *name;
    Py_ssize_t len;
    int ncols;
    int col[MAX_KEYCOLS];
    int mode[MAX_KEYCOLS];
} Kind;

/* True when some byte of [p, p + n) has its high bit set. */
static int
has_high_bit(const char *p, Py_ssize_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080))
            return 1;
    }
    for (; i < n; i++)
        if (s[i] & 0x80)
            return 1;
    return 0;
}

/* Case-insensitive (ASCII) search of the lowercase `word` in [p, p + n). */
static int
contains_word(const char *p, Py_ssize_t n, const char *word, Py_ssize_t wn)
{
    if (wn == 0)
        return 1;
    for (Py_ssize_t i = 0; i + wn <= n; i++) {
        Py_ssize_t j = 0;
        while (j < wn) {
            unsigned char c = (unsigned char)p[i + j];
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c + 32);
            if (c != (unsigned char)word[j])
                break;
            j++;
        }
        if (j == wn)
            return 1;
    }
    return 0;
}

/* Split the line [p, le) into exactly `width` fields; 0 when it is not simple. */
static int
split_line(const char *p, const char *le, int width, Py_ssize_t limit, Span *out)
{
    for (int i = 0; i < width; i++) {
        int last = i == width - 1;
        const char *end;
        if (p < le && *p == '"') {
            const char *q = p + 1;
            int doubled = 0;
            for (;;) {
                q = memchr(q, '"', (size_t)(le - q));
                if (q == NULL)
                    return 0; /* the quoted field runs over the line end */
                if (q + 1 < le && q[1] == '"') {
                    doubled = 1; /* "" stands for one quote */
                    q += 2;
                    continue;
                }
                break;
            }
            out[i].p = p + 1;
            out[i].n = q - p - 1;
            out[i].quoted = 1;
            out[i].doubled = doubled;
            end = q + 1;
            if (end < le && *end != ',')
                return 0; /* text after the closing quote */
        }
        else {
            end = memchr(p, ',', (size_t)(le - p));
            if (end == NULL)
                end = le;
            out[i].p = p;
            out[i].n = end - p;
            out[i].quoted = 0;
            out[i].doubled = 0;
        }
        if (out[i].n > limit)
            return 0;
        if (last) {
            if (end != le)
                return 0; /* more fields than the header names */
        }
        else {
            if (end == le)
                return 0; /* fewer fields */
            p = end + 1;
        }
    }
    return 1;
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* An unquoted "YYYY-MM-DD HH:MM:SS..." (or with "T"), seconds 00-59. */
static int
is_iso(const Span *s)
{
    const char *t = s->p;
    if (s->quoted || s->n < 19)
        return 0;
    for (int i = 0; i < 19; i++) {
        char c = t[i];
        switch (i) {
        case 4: case 7:
            if (c != '-') return 0;
            break;
        case 10:
            if (c != ' ' && c != 'T') return 0;
            break;
        case 13: case 16:
            if (c != ':') return 0;
            break;
        case 17:
            if (c < '0' || c > '5') return 0;
            break;
        default:
            if (!is_digit(c)) return 0;
        }
    }
    return 1;
}

/* The length of a field's value (as csv reads it: a "" pair of a quoted field is one quote). */
static Py_ssize_t
field_len(const Span *s)
{
    Py_ssize_t n = s->n;
    if (s->doubled) {
        for (Py_ssize_t i = 0; i < s->n; i++)
            if (s->p[i] == '"') {
                n--; /* the first quote of a pair is dropped, the second kept */
                i++;
            }
    }
    return n;
}

/* Write a field's value at w; returns the end. */
static char *
put_field(char *w, const Span *s)
{
    if (!s->doubled) {
        memcpy(w, s->p, (size_t)s->n);
        return w + s->n;
    }
    for (Py_ssize_t i = 0; i < s->n; i++) {
        *w++ = s->p[i];
        if (s->p[i] == '"')
            i++; /* the pair's second quote */
    }
    return w;
}

static int
is_separator(unsigned char c)
{
    if (c < 0x20 || c == 0x7f)
        return 1;
    switch (c) {
    case ' ': case '<': case '>': case '(': case ')': case '[': case ']': case '{': case '}':
    case ',': case ';': case ':': case '"': case '\'': case '`': case '|':
        return 1;
    default:
        return 0;
    }
}

/* Mask the addresses of the value v[0:n] in place (it only shrinks); returns its end. */
static char *
mask_value(char *v, Py_ssize_t n)
{
    if (n > MASK_MAX || memchr(v, '@', (size_t)n) == NULL)
        return v + n;
    Py_ssize_t r = 0, w = 0;
    while (r < n) {
        if (is_separator((unsigned char)v[r])) {
            v[w++] = v[r++];
            continue;
        }
        Py_ssize_t start = r;
        int at = 0;
        while (r < n && !is_separator((unsigned char)v[r])) {
            if (v[r] == '@')
                at = 1;
            r++;
        }
        if (at) {
            v[w++] = '@';
        }
        else {
            memmove(v + w, v + start, (size_t)(r - start));
            w += r - start;
        }
    }
    return v + w;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian). */
static int64_t
days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
digits(const char *p, int n, int64_t *out)
{
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

/* A time field as Unix seconds: 1 parsed, 0 empty, -1 another form (the caller decides). */
static int
parse_seconds(const Span *s, int64_t *out)
{
    if (s->n == 0)
        return 0;
    if (s->quoted)
        return -1;
    const char *t = s->p;
    Py_ssize_t n = s->n;
    if (n <= 11 && digits(t, (int)n, out))
        return 1;
    int64_t y, mo, d, h, mi, sec, oh = 0, om = 0;
    if (n < 20 || !is_iso(s) || !digits(t, 4, &y) || !digits(t + 5, 2, &mo)
        || !digits(t + 8, 2, &d) || !digits(t + 11, 2, &h) || !digits(t + 14, 2, &mi)
        || !digits(t + 17, 2, &sec))
        return -1;
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59)
        return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > dim[mo - 1] + (mo == 2 && leap))
        return -1;
    const char *z = t + 19;
    Py_ssize_t zn = n - 19;
    int sign = 0;
    if (zn == 1 && z[0] == 'Z') {
        sign = 1;
    }
    else if ((zn == 5 || zn == 6) && (z[0] == '+' || z[0] == '-')) {
        sign = z[0] == '+' ? 1 : -1;
        if (!digits(z + 1, 2, &oh))
            return -1;
        if (zn == 5 ? !digits(z + 3, 2, &om) : (z[3] != ':' || !digits(z + 4, 2, &om)))
            return -1;
        if (oh > 23 || om > 59)
            return -1;
    }
    else {
        return -1; /* no offset (local time) or another form */
    }
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
           - sign * (oh * 3600 + om * 60);
    return 1;
}

/* The last time text parsed and its result: the rows of one second share their texts. */
typedef struct {
    char text[40];
    Py_ssize_t len;
    int result;
    int64_t value;
} TimeCache;

typedef struct {
    PyObject *sums;
    const double *bounds;
    int nbounds;
    TimeCache end, start;
} DelaySpec;

/* parse_seconds through a one-entry cache (same answer, fewer parses). */
static int
parse_cached(const Span *s, int64_t *out, TimeCache *cache)
{
    if (s->quoted || s->n >= (Py_ssize_t)sizeof cache->text)
        return parse_seconds(s, out);
    if (cache->len == s->n && s->n > 0 && memcmp(cache->text, s->p, (size_t)s->n) == 0) {
        *out = cache->value;
        return cache->result;
    }
    int result = parse_seconds(s, out);
    memcpy(cache->text, s->p, (size_t)s->n);
    cache->len = s->n;
    cache->result = result;
    cache->value = result == 1 ? *out : 0;
    return result;
}

/* What a line's DELAY columns say: a delay (>= 0), unknown (-1: empty fields) or left to the
 * caller (-2: another form). */
static int64_t
line_delay(const Span *total, const Span *end, const Span *start, DelaySpec *ds)
{
    int64_t value, e = 0, st = 0;
    if (total->n > 0) {
        if (!total->quoted && total->n <= 15 && digits(total->p, (int)total->n, &value))
            return value;
        return -2;
    }
    int re = parse_cached(end, &e, &ds->end), rs = parse_cached(start, &st, &ds->start);
    if (re < 0 || rs < 0)
        return -2;
    if (re == 0 || rs == 0)
        return -1;
    return e > st ? e - st : 0;
}

/* counts[key] += 1 for the key of a line of `kind` (and sums[key] += its delay). */
static int
count_key(PyObject *counts, const Kind *kind, const Span *fields, DelaySpec *ds)
{
    static const Span none = {"", 0, 0, 0};
    Span spans[MAX_KEYCOLS];     /* per column: the text its piece is made of */
    char tags[MAX_KEYCOLS];      /* per column: a tag byte written first (0: none) */
    int64_t delay = -1;
    int bucket = 0;
    Py_ssize_t total = kind->len;
    for (int k = 0; k < kind->ncols; k++) {
        int col = kind->col[k], mode = kind->mode[k];
        const Span *s = col >= 0 ? &fields[col] : &none;
        spans[k] = *s;
        tags[k] = 0;
        if (mode == MODE_DELAY_END || mode == MODE_DELAY_START)
            continue; /* read with their DELAY column */
        total += 1;
        if (mode == MODE_DELAY) {
            const Span *e = kind->col[k + 1] >= 0 ? &fields[kind->col[k + 1]] : &none;
            const Span *st = kind->col[k + 2] >= 0 ? &fields[kind->col[k + 2]] : &none;
            delay = line_delay(s, e, st, ds);
            if (delay == -2) /* "R" total 0xFE end 0xFE start */
                total += 3 + field_len(s) + field_len(e) + field_len(st);
            else if (delay >= 0) {
                while (bucket < ds->nbounds && (double)delay > ds->bounds[bucket])
                    bucket++;
                total += bucket >= 10 ? 2 : 1; /* at most 64 bounds */
            }
            continue;
        }
        if (col < 0) {
            if (mode == MODE_MINUTE || mode == MODE_MINUTE10)
                tags[k] = 'N';
            total += tags[k] != 0;
            spans[k] = none;
            continue;
        }
        if (mode == MODE_ADDRESS) {
            /* From the last "@" ("" when none); a "" pair holds no "@". */
            Span tail = none;
            for (Py_ssize_t i = s->n; i > 0; i--) {
                if (s->p[i - 1] == '@') {
                    tail = (Span){s->p + i - 1, s->n - (i - 1), s->quoted, s->doubled};
                    break;
                }
            }
            spans[k] = tail;
        }
        else if (mode == MODE_MINUTE || mode == MODE_MINUTE10) {
            tags[k] = is_iso(s) ? (mode == MODE_MINUTE10 ? 'J' : 'I') : 'R';
            total += 1;
            if (tags[k] == 'I' || tags[k] == 'J') {
                total += s->n - 3; /* the ":SS" of the seconds is left out */
                continue;
            }
        }
        else if (mode == MODE_HOST) {
            const char *sp = memchr(s->p, ' ', (size_t)s->n);
            if (sp != NULL)
                spans[k].n = sp - s->p;
        }
        total += field_len(&spans[k]);
    }
    PyObject *key = PyBytes_FromStringAndSize(NULL, total);
    if (key == NULL)
        return -1;
    char *w = PyBytes_AS_STRING(key);
    memcpy(w, kind->name, (size_t)kind->len);
    w += kind->len;
    for (int k = 0; k < kind->ncols; k++) {
        int mode = kind->mode[k];
        const Span *piece = &spans[k];
        if (mode == MODE_DELAY_END || mode == MODE_DELAY_START)
            continue;
        *w++ = (char)0xFF;
        if (mode == MODE_DELAY) {
            if (delay == -2) {
                *w++ = 'R';
                w = put_field(w, piece);
                *w++ = (char)0xFE;
                w = put_field(w, &spans[k + 1]);
                *w++ = (char)0xFE;
                w = put_field(w, &spans[k + 2]);
            }
            else if (delay >= 0) {
                if (bucket >= 10)
                    *w++ = (char)('0' + bucket / 10);
                *w++ = (char)('0' + bucket % 10);
            }
            continue;
        }
        if (tags[k])
            *w++ = tags[k];
        if (tags[k] == 'I' || tags[k] == 'J') {
            w[-1] = 'I';
            memcpy(w, piece->p, 16);
            memcpy(w + 16, piece->p + 19, (size_t)(piece->n - 19));
            if (tags[k] == 'J')
                w[15] = '0'; /* the ten-minute slot */
            w += piece->n - 3;
            continue;
        }
        char *from = w;
        w = put_field(w, piece);
        if (mode == MODE_MASK)
            w = mask_value(from, w - from);
    }
    Py_ssize_t len = w - PyBytes_AS_STRING(key);
    if (len != total && _PyBytes_Resize(&key, len) < 0) /* masking shortened it */
        return -1;
    PyObject *old = PyDict_GetItemWithError(counts, key);
    PyObject *now;
    if (old == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        now = PyLong_FromLong(1);
    }
    else {
        Py_ssize_t v = PyLong_AsSsize_t(old);
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        now = PyLong_FromSsize_t(v + 1);
    }
    if (now == NULL) {
        Py_DECREF(key);
        return -1;
    }
    int rc = PyDict_SetItem(counts, key, now);
    Py_DECREF(now);
    if (rc == 0 && delay > 0) {
        PyObject *prev = PyDict_GetItemWithError(ds->sums, key);
        PyObject *sum = NULL, *add = PyLong_FromLongLong(delay);
        if (add != NULL && prev == NULL)
            sum = PyErr_Occurred() ? NULL : Py_NewRef(add);
        else if (add != NULL)
            sum = PyNumber_Add(prev, add); /* Python ints: no overflow */
        rc = sum == NULL ? -1 : PyDict_SetItem(ds->sums, key, sum);
        Py_XDECREF(sum);
        Py_XDECREF(add);
    }
    Py_DECREF(key);
    return rc;
}

/* Parse the kinds argument: a tuple of (bytes, tuple of (int column, int mode)). */
static int
parse_kinds(PyObject *spec, int width, Kind *kinds, int *nkinds, int *needs_sums)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) > MAX_KINDS) {
        PyErr_SetString(PyExc_ValueError, "kinds: a tuple of at most 16 (kind, columns)");
        return -1;
    }
    *nkinds = (int)PyTuple_GET_SIZE(spec);
    for (int i = 0; i < *nkinds; i++) {
        PyObject *item = PyTuple_GET_ITEM(spec, i);
        PyObject *name, *cols;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "SO!", &name, &PyTuple_Type, &cols))
            return -1;
        kinds[i].name = PyBytes_AS_STRING(name);
        kinds[i].len = PyBytes_GET_SIZE(name);
        if (PyTuple_GET_SIZE(cols) > MAX_KEYCOLS) {
            PyErr_SetString(PyExc_ValueError, "kinds: at most 64 key columns");
            return -1;
        }
        kinds[i].ncols = (int)PyTuple_GET_SIZE(cols);
        for (int k = 0; k < kinds[i].ncols; k++) {
            int col, mode;
            PyObject *pair = PyTuple_GET_ITEM(cols, k);
            if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "ii", &col, &mode))
                return -1;
            if (col < -1 || col == 0 || col >= width || mode < MODE_TEXT
                || mode > MODE_MINUTE10) {
                PyErr_SetString(PyExc_ValueError, "kinds: a column out of range or a bad mode");
                return -1;
            }
            kinds[i].col[k] = col;
            kinds[i].mode[k] = mode;
        }
        for (int k = 0; k < kinds[i].ncols; k++) {
            int mode = kinds[i].mode[k];
            int ok = 1;
            if (mode == MODE_DELAY)
                ok = k + 2 < kinds[i].ncols && kinds[i].mode[k + 1] == MODE_DELAY_END
                     && kinds[i].mode[k + 2] == MODE_DELAY_START;
            else if (mode == MODE_DELAY_END)
                ok = k >= 1 && kinds[i].mode[k - 1] == MODE_DELAY;
            else if (mode == MODE_DELAY_START)
                ok = k >= 1 && kinds[i].mode[k - 1] == MODE_DELAY_END;
            if (!ok) {
                PyErr_SetString(PyExc_ValueError,
                                "kinds: DELAY, DELAY_END, DELAY_START go together in this order");
                return -1;
            }
            if (mode == MODE_DELAY)
                *needs_sums = 1;
        }
    }
    return 0;
}

PyDoc_STRVAR(scan_doc,
"scan(buf, pos, end, width, kinds, header_word, limit, counts[, sums, bounds]) -> (stop, lines)\n\n"
"Count the simple lines of buf[pos:end] (pos at a line start) into the dict counts; stop\n"
"at the first line that is not simple. Returns its offset (end when every line was simple)\n"
"and the number of lines passed. kinds: ((kind, ((column, mode), ...)), ...). With DELAY\n"
"columns, sums (a dict) gets the delays per key and bounds (floats) are the buckets.");

static PyObject *
scan(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    Py_ssize_t pos, end, limit;
    int width;
    PyObject *spec, *counts, *sums = Py_None, *bounds = NULL;
    const char *word;
    Py_ssize_t word_len;
    if (!PyArg_ParseTuple(args, "y*nniOy#nO!|OO!", &view, &pos, &end, &width, &spec, &word,
                          &word_len, &limit, &PyDict_Type, &counts, &sums, &PyTuple_Type,
                          &bounds))
        return NULL;
    PyObject *result = NULL;
    Span *fields = NULL;
    Kind kinds[MAX_KINDS];
    int nkinds = 0, needs_sums = 0;
    double bound_values[MAX_BOUNDS];
    DelaySpec ds = {NULL, bound_values, 0, {{0}, -1, 0, 0}, {{0}, -1, 0, 0}};
    if (pos < 0 || end > view.len || pos > end) {
        PyErr_SetString(PyExc_ValueError, "pos and end must lie within the buffer");
        goto done;
    }
    if (width < 1 || width > MAX_WIDTH) {
        PyErr_SetString(PyExc_ValueError, "width must be between 1 and 4096");
        goto done;
    }
    if (parse_kinds(spec, width, kinds, &nkinds, &needs_sums) < 0)
        goto done;
    if (needs_sums) {
        if (!PyDict_Check(sums) || bounds == NULL || PyTuple_GET_SIZE(bounds) > MAX_BOUNDS) {
            PyErr_SetString(PyExc_ValueError, "DELAY columns need a sums dict and at most 64 "
                            "bounds");
            goto done;
        }
        ds.sums = sums;
        ds.nbounds = (int)PyTuple_GET_SIZE(bounds);
        for (int i = 0; i < ds.nbounds; i++) {
            bound_values[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
            if (bound_values[i] == -1.0 && PyErr_Occurred())
                goto done;
        }
    }
    fields = PyMem_New(Span, (size_t)width);
    if (fields == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const char *base = view.buf;
    const char *p = base + pos, *stop = base + end;
    Py_ssize_t lines = 0;
    while (p < stop) {
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        if (nl == NULL)
            break; /* an unterminated line: for the caller */
        const char *le = nl;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == nl && le == p) { /* an empty line */
            p = nl + 1;
            lines++;
            continue;
        }
        if (le == p || memchr(p, '\r', (size_t)(le - p)) != NULL || has_high_bit(p, le - p))
            break;
        if (!split_line(p, le, width, limit, fields) || fields[0].quoted)
            break;
        const Kind *kind = NULL;
        for (int i = 0; i < nkinds; i++) {
            if (kinds[i].len == fields[0].n && memcmp(kinds[i].name, fields[0].p,
                                                      (size_t)fields[0].n) == 0) {
                kind = &kinds[i];
                break;
            }
        }
        if (kind != NULL) {
            if (count_key(counts, kind, fields, &ds) < 0)
                goto done;
        }
        else if (contains_word(fields[0].p, fields[0].n, word, word_len)) {
            break; /* maybe a header line */
        }
        p = nl + 1;
        lines++;
    }
    result = Py_BuildValue("nn", (Py_ssize_t)(p - base), lines);
done:
    PyMem_Free(fields);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_csvtally",
    "Count CSV rows by a few columns (an optional speed-up of pmta_snmp.acct.tally).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__csvtally(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "TEXT", MODE_TEXT) < 0
        || PyModule_AddIntConstant(m, "ADDRESS", MODE_ADDRESS) < 0
        || PyModule_AddIntConstant(m, "MINUTE", MODE_MINUTE) < 0
        || PyModule_AddIntConstant(m, "MASK", MODE_MASK) < 0
        || PyModule_AddIntConstant(m, "HOST", MODE_HOST) < 0
        || PyModule_AddIntConstant(m, "DELAY", MODE_DELAY) < 0
        || PyModule_AddIntConstant(m, "DELAY_END", MODE_DELAY_END) < 0
        || PyModule_AddIntConstant(m, "DELAY_START", MODE_DELAY_START) < 0
        || PyModule_AddIntConstant(m, "MINUTE10", MODE_MINUTE10) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
