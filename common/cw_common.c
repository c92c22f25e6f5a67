/*
 * cw_common.c — error names, the JSON-lines logger, time parsing and
 * formatting, and small string helpers shared by every module.
 *
 * The logger writes one JSON object per line to stderr with a single
 * fputs-sized write so lines from the main loop and librdkafka's threads do
 * not interleave. Time parsing accepts RFC 3339 (with 'Z' or an offset,
 * optional fraction) and is strict: anything else is rejected.
 */
#include "cw_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int cw_log_level = CW_LOG_INFO;

const char *cw_err2str(cw_err_t err) {
    switch (err) {
    case CW_OK:
        return "ok";
    case CW_RETRY:
        return "retry";
    case CW_ERROR:
        return "error";
    case CW_NOENT:
        return "not found";
    }
    return "unknown error";
}

static const char *level_names[] = {"error", "warn", "info", "debug"};

int cw_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void cw_log_write(cw_log_level_t level, const char *comp, const char *fmt, ...) {
    char msg[1024];
    char esc[2048];
    char ts[32];
    char line[2304];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cw_json_escape(esc, sizeof(esc), msg, strlen(msg));
    cw_time_format(cw_time_now_ms(), ts, sizeof(ts));
    snprintf(line, sizeof(line),
             "{\"ts\":\"%s\",\"level\":\"%s\",\"comp\":\"%s\",\"msg\":\"%s\"}\n", ts,
             level_names[level < 0 || level > 3 ? 0 : level], comp, esc);
    fputs(line, stderr);
}

int64_t cw_time_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int64_t cw_time_mono_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

struct timespec cw_time_deadline(int ms) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += ms / 1000;
    t.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

int64_t cw_time_mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), Howard Hinnant's algorithm. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* "00".."99": two digits per division (cw_fmt_i64, cw_time_format) */
static const char two_digits[201] = "0001020304050607080910111213141516171819"
                                    "2021222324252627282930313233343536373839"
                                    "4041424344454647484950515253545556575859"
                                    "6061626364656667686970717273747576777879"
                                    "8081828384858687888990919293949596979899";

/* u in decimal at out, exactly `width` digits (leading zeros); u < 10^width. */
static void put_digits(char *out, uint64_t u, size_t width) {
    size_t i = width;
    while (i >= 2) {
        memcpy(out + i - 2, two_digits + 2 * (u % 100), 2);
        u /= 100;
        i -= 2;
    }
    if (i == 1) {
        out[0] = (char)('0' + u % 10);
    }
}

static size_t u64_width(uint64_t u) {
    size_t n = 1;
    while (u >= 10) {
        u /= 10;
        n++;
    }
    return n;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t n, int *out) {
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int cw_time_parse_rfc3339(const char *s, size_t len, int64_t *ms_out) {
    int Y, M, D, h, mi, sec, ms = 0;
    size_t i;
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        s[13] != ':' || s[16] != ':') {
        return -1;
    }
    if (digits(s, 4, &Y) || digits(s + 5, 2, &M) || digits(s + 8, 2, &D) || digits(s + 11, 2, &h) ||
        digits(s + 14, 2, &mi) || digits(s + 17, 2, &sec)) {
        return -1;
    }
    if (M < 1 || M > 12 || D < 1 || (unsigned)D > mdays[M - 1] || h > 23 || mi > 59 || sec > 60) {
        return -1;
    }
    if (M == 2 && D == 29 && !((Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0)) {
        return -1;
    }
    i = 19;
    if (i < len && s[i] == '.') {
        size_t nd = 0;
        int scale = 100;
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (nd < 3) {
                ms += (s[i] - '0') * scale;
                scale /= 10;
            }
            nd++;
            i++;
        }
        if (nd == 0) {
            return -1;
        }
    }
    int64_t off_min = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 || om > 59) {
            return -1;
        }
        off_min = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
        i += 6;
    } else {
        return -1;
    }
    if (i != len) {
        return -1;
    }
    if (sec == 60) {
        sec = 59; /* leap second: clamp */
    }
    int64_t days = days_from_civil(Y, (unsigned)M, (unsigned)D);
    *ms_out = ((days * 86400 + h * 3600 + mi * 60 + sec) - off_min * 60) * 1000 + ms;
    return 0;
}

void cw_time_format(int64_t ms, char *buf, size_t size) {
    int64_t day = cw_time_day(ms);
    int64_t rem = ms - day * CW_MS_PER_DAY;
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    if (y >= 0 && y <= 9999 && size >= 25) {
        /* what the snprintf below writes, digit by digit (snapshots carry
         * one per decision) */
        put_digits(buf, (uint64_t)y, 4);
        buf[4] = '-';
        put_digits(buf + 5, m, 2);
        buf[7] = '-';
        put_digits(buf + 8, d, 2);
        buf[10] = 'T';
        put_digits(buf + 11, (uint64_t)(rem / 3600000), 2);
        buf[13] = ':';
        put_digits(buf + 14, (uint64_t)(rem / 60000 % 60), 2);
        buf[16] = ':';
        put_digits(buf + 17, (uint64_t)(rem / 1000 % 60), 2);
        buf[19] = '.';
        put_digits(buf + 20, (uint64_t)(rem % 1000), 3);
        buf[23] = 'Z';
        buf[24] = '\0';
        return;
    }
    snprintf(buf, size, "%04lld-%02u-%02uT%02d:%02d:%02d.%03dZ", (long long)y, m, d,
             (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60),
             (int)(rem % 1000));
}

uint64_t cw_fnv1a(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

uint64_t cw_hash_account(const char *id, size_t len, int partition) {
    return cw_fnv1a(cw_fnv1a(CW_FNV_INIT, id, len), &partition, sizeof(partition));
}

char *cw_strlcpy(char *dst, const char *src, size_t size) {
    if (size == 0) {
        return dst;
    }
    size_t n = strlen(src);
    if (n >= size) {
        n = size - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
    return dst;
}

/* Length of the well-formed UTF-8 sequence at s[0..len) (2..4 bytes; no
 * overlong forms, surrogates or code points past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len) {
    size_t n;
    unsigned cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        return 0;
    }
    return n;
}

size_t cw_json_escape(char *out, size_t out_size, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    char tmp[8];
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        size_t rl = 0;
        switch (c) {
        case '"':
            rep = "\\\"";
            break;
        case '\\':
            rep = "\\\\";
            break;
        case '\n':
            rep = "\\n";
            break;
        case '\r':
            rep = "\\r";
            break;
        case '\t':
            rep = "\\t";
            break;
        default:
            if (c >= 0x80) {
                size_t n = utf8_seq((const unsigned char *)s + i, len - i);
                if (n > 0) { /* well-formed: copied as it is */
                    for (size_t k = 0; k < n; k++, o++) {
                        if (o + 1 < out_size) {
                            out[o] = s[i + k];
                        }
                    }
                    i += n - 1;
                    continue;
                }
            }
            if (c < 0x20 || c >= 0x7f) { /* controls, and bytes that are not UTF-8 */
                tmp[0] = '\\';
                tmp[1] = 'u';
                tmp[2] = '0';
                tmp[3] = '0';
                tmp[4] = hex[c >> 4];
                tmp[5] = hex[c & 15];
                rep = tmp;
                rl = 6;
            }
        }
        if (rep != NULL) {
            if (rl == 0) {
                rl = strlen(rep);
            }
            for (size_t k = 0; k < rl; k++, o++) {
                if (o + 1 < out_size) {
                    out[o] = rep[k];
                }
            }
        } else {
            if (o + 1 < out_size) {
                out[o] = (char)c;
            }
            o++;
        }
    }
    if (out_size > 0) {
        out[o < out_size ? o : out_size - 1] = '\0';
    }
    return o;
}

size_t cw_fmt_i64(char *out, int64_t v) {
    size_t len = 0;
    /* the magnitude as unsigned: -INT64_MIN does not fit an int64_t */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0) {
        out[len++] = '-';
    }
    size_t w = u64_width(u);
    put_digits(out + len, u, w);
    len += w;
    out[len] = '\0';
    return len;
}

/* Exact powers of ten (every one up to 1e22 is a double). */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The fast path of cw_fmt_g: 0 when it cannot tell the digits for sure (the
 * caller then asks snprintf). |v| * 10^s is computed with one rounding
 * (10^s exact), so for prec <= 9 its error is below 2.3e-7: a fraction not
 * within 1e-6 of one half rounds as the exact value does. */
static size_t fmt_g_fast(char *out, double v, int prec) {
    double a = fabs(v);
    if (prec < 1 || prec > 9 || !(a >= 1e-4) || !(a < pow10_exact[prec])) {
        return 0; /* also NaN (comparisons false); exponent notation: snprintf */
    }
    int e = (int)floor(log10(a)); /* the decimal exponent, perhaps off by one */
    double y = 0.0;
    for (int tries = 0; tries < 3; tries++) {
        int s = prec - 1 - e; /* in [-1, prec + 4] for a in [1e-4, 10^prec) */
        if (s < -22 || s > 22) {
            return 0;
        }
        y = s >= 0 ? a * pow10_exact[s] : a / pow10_exact[-s];
        if (y < pow10_exact[prec - 1]) {
            e--;
        } else if (y >= pow10_exact[prec]) {
            e++;
        } else {
            break;
        }
    }
    if (!(y >= pow10_exact[prec - 1] && y < pow10_exact[prec])) {
        return 0;
    }
    double fl = floor(y), f = y - fl;
    if (fabs(f - 0.5) < 1e-6) {
        return 0; /* a tie or near one: printf rounds the exact binary value */
    }
    uint64_t n = (uint64_t)fl + (f > 0.5);
    if (n == (uint64_t)pow10_exact[prec]) {
        n /= 10; /* 9.99999 -> 10.0000 */
        e++;
    }
    if (e < -4 || e >= prec) {
        return 0; /* %g writes this one with an exponent */
    }
    char d[9];
    put_digits(d, n, (size_t)prec);
    size_t nd = (size_t)prec, len = 0;
    size_t keep = e >= 0 ? (size_t)e + 1 : 0; /* integer digits are never stripped */
    while (nd > keep && d[nd - 1] == '0') {
        nd--; /* %g drops trailing zeros of the fraction */
    }
    if (v < 0) {
        out[len++] = '-';
    }
    if (e >= 0) {
        memcpy(out + len, d, keep);
        len += keep;
        if (nd > keep) {
            out[len++] = '.';
            memcpy(out + len, d + keep, nd - keep);
            len += nd - keep;
        }
    } else {
        out[len++] = '0';
        out[len++] = '.';
        for (int z = -1; z > e; z--) {
            out[len++] = '0';
        }
        memcpy(out + len, d, nd);
        len += nd;
    }
    out[len] = '\0';
    return len;
}

size_t cw_fmt_g(char *out, double v, int prec) {
    size_t n = fmt_g_fast(out, v, prec);
    if (n > 0) {
        return n;
    }
    int r = snprintf(out, CW_G_MAX_CHARS, "%.*g", prec, v);
    return r < 0 ? 0 : (size_t)r < CW_G_MAX_CHARS ? (size_t)r : CW_G_MAX_CHARS - 1;
}
