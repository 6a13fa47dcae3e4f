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
 * A missing TEXT/ADDRESS column (column -1) gives "". counts[key] += 1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { MODE_TEXT = 0, MODE_ADDRESS = 1, MODE_MINUTE = 2 };
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

/* One key column's piece: the text p[0:n] as written, a one-byte tag (0: none), and whether
 * its "" pairs stand for one quote each. */
typedef struct {
    const char *p;
    Py_ssize_t n;
    char tag;
    int doubled;
} Piece;

static Piece
piece_of(const Span *fields, int col, int mode)
{
    Piece piece = {"", 0, 0, 0};
    if (col < 0) {
        if (mode == MODE_MINUTE)
            piece.tag = 'N';
        return piece;
    }
    const Span *s = &fields[col];
    piece.doubled = s->doubled;
    if (mode == MODE_ADDRESS) {
        /* From the last "@" ("" when none); a "" pair holds no "@", so none is cut in two. */
        for (Py_ssize_t i = s->n; i > 0; i--) {
            if (s->p[i - 1] == '@') {
                piece.p = s->p + i - 1;
                piece.n = s->n - (i - 1);
                break;
            }
        }
    }
    else {
        piece.p = s->p;
        piece.n = s->n;
        if (mode == MODE_MINUTE)
            piece.tag = is_iso(s) ? 'I' : 'R';
    }
    return piece;
}

/* The length of a piece's value. */
static Py_ssize_t
value_len(const Piece *piece)
{
    if (piece->tag == 'I')
        return piece->n - 3; /* the ":SS" of the seconds is left out */
    Py_ssize_t n = piece->n;
    if (piece->doubled) {
        for (Py_ssize_t i = 0; i < piece->n; i++)
            if (piece->p[i] == '"') {
                n--; /* the first quote of a pair is dropped, the second kept */
                i++;
            }
    }
    return n;
}

/* Write a piece's value at w; returns the end. */
static char *
put_value(char *w, const Piece *piece)
{
    if (piece->tag == 'I') {
        memcpy(w, piece->p, 16);
        memcpy(w + 16, piece->p + 19, (size_t)(piece->n - 19));
        return w + piece->n - 3;
    }
    if (!piece->doubled) {
        memcpy(w, piece->p, (size_t)piece->n);
        return w + piece->n;
    }
    for (Py_ssize_t i = 0; i < piece->n; i++) {
        *w++ = piece->p[i];
        if (piece->p[i] == '"')
            i++; /* the pair's second quote */
    }
    return w;
}

/* counts[key] += 1 for the key of a line of `kind`. */
static int
count_key(PyObject *counts, const Kind *kind, const Span *fields)
{
    Piece pieces[MAX_KEYCOLS];
    Py_ssize_t total = kind->len;
    for (int k = 0; k < kind->ncols; k++) {
        pieces[k] = piece_of(fields, kind->col[k], kind->mode[k]);
        total += 1 + (pieces[k].tag != 0) + value_len(&pieces[k]);
    }
    PyObject *key = PyBytes_FromStringAndSize(NULL, total);
    if (key == NULL)
        return -1;
    char *w = PyBytes_AS_STRING(key);
    memcpy(w, kind->name, (size_t)kind->len);
    w += kind->len;
    for (int k = 0; k < kind->ncols; k++) {
        *w++ = (char)0xFF;
        if (pieces[k].tag)
            *w++ = pieces[k].tag;
        w = put_value(w, &pieces[k]);
    }
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
    Py_DECREF(key);
    return rc;
}

/* Parse the kinds argument: a tuple of (bytes, tuple of (int column, int mode)). */
static int
parse_kinds(PyObject *spec, int width, Kind *kinds, int *nkinds)
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
            if (col < -1 || col == 0 || col >= width || mode < MODE_TEXT || mode > MODE_MINUTE) {
                PyErr_SetString(PyExc_ValueError, "kinds: a column out of range or a bad mode");
                return -1;
            }
            kinds[i].col[k] = col;
            kinds[i].mode[k] = mode;
        }
    }
    return 0;
}

PyDoc_STRVAR(scan_doc,
"scan(buf, pos, end, width, kinds, header_word, limit, counts) -> (stop, lines)\n\n"
"Count the simple lines of buf[pos:end] (pos at a line start) into the dict counts; stop\n"
"at the first line that is not simple. Returns its offset (end when every line was simple)\n"
"and the number of lines passed. kinds: ((kind, ((column, mode), ...)), ...).");

static PyObject *
scan(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer view;
    Py_ssize_t pos, end, limit;
    int width;
    PyObject *spec, *counts;
    const char *word;
    Py_ssize_t word_len;
    if (!PyArg_ParseTuple(args, "y*nniOy#nO!", &view, &pos, &end, &width, &spec, &word,
                          &word_len, &limit, &PyDict_Type, &counts))
        return NULL;
    PyObject *result = NULL;
    Span *fields = NULL;
    Kind kinds[MAX_KINDS];
    int nkinds = 0;
    if (pos < 0 || end > view.len || pos > end) {
        PyErr_SetString(PyExc_ValueError, "pos and end must lie within the buffer");
        goto done;
    }
    if (width < 1 || width > MAX_WIDTH) {
        PyErr_SetString(PyExc_ValueError, "width must be between 1 and 4096");
        goto done;
    }
    if (parse_kinds(spec, width, kinds, &nkinds) < 0)
        goto done;
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
            if (count_key(counts, kind, fields) < 0)
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
        || PyModule_AddIntConstant(m, "MINUTE", MODE_MINUTE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
