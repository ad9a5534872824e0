/* Quick decimal text of a double for _tickjson.c: 15 or 17 significant digits in plain
 * notation, checked by strtod; plain C (no libm, no GIL). Included once, by _tickjson.c. */

static const long double P10[] = {
    1e0L, 1e1L, 1e2L, 1e3L, 1e4L, 1e5L, 1e6L, 1e7L, 1e8L, 1e9L, 1e10L, 1e11L, 1e12L, 1e13L,
    1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L,
    1e26L, 1e27L};

/* |v| as 17 significant digits d (10^16 <= d < 10^17) and the decimal exponent of the first,
 * for 1e-4 <= |v| < 1e15 (where "%g" prints plain decimals); -1 outside. One long double
 * product (10^k for k <= 27 is exact in its 64-bit mantissa) errs by under 0.01 of the last
 * digit, which keeps 17 digits parsing back to `v`; the caller checks that anyway. */
static int digits17(double a, uint64_t *d, int *e) {
    if (!(a >= 1e-4 && a < 1e15)) return -1;
    long double x = (long double)a * 1e4L;
    int exp10 = -4;
    while (exp10 < 14 && x >= P10[exp10 + 5]) exp10++;
    uint64_t digits = (uint64_t)((long double)a * P10[16 - exp10] + 0.5L);
    if (digits >= (uint64_t)P10[17]) { /* rounded up to the next power of ten */
        digits = (digits + 5) / 10;
        exp10++;
    }
    if (digits < (uint64_t)P10[16] || exp10 >= 15) return -1;
    *d = digits;
    *e = exp10;
    return 0;
}

/* The `sig` digits of d (sig of them, d < 10^sig) with first exponent e, as "%.*g" would print
 * them in plain notation: trailing fraction zeros dropped, ".0" kept. NUL-ended; returns the
 * length. */
static int plain_text(char *s, int negative, uint64_t d, int sig, int e) {
    char digits[20];
    for (int i = sig - 1; i >= 0; i--) {
        digits[i] = (char)('0' + d % 10);
        d /= 10;
    }
    int last = sig, whole = e < 0 ? 0 : e + 1, n = 0;
    while (last > whole && last > 1 && digits[last - 1] == '0') last--;
    if (negative) s[n++] = '-';
    if (e < 0) {
        s[n++] = '0';
        s[n++] = '.';
        for (int i = -1; i > e; i--) s[n++] = '0';
    } else {
        memcpy(s + n, digits, (size_t)whole);
        n += whole;
        s[n++] = '.';
        if (last == whole) s[n++] = '0';
    }
    memcpy(s + n, digits + whole, (size_t)(last - whole));
    n += last - whole;
    s[n] = '\0';
    return n;
}

/* Plain-notation text of v that parses back to v: 15 significant digits when they do (every
 * decimal of up to 15 digits survives the round trip, so short values print as Python prints
 * them), else 17. 15 are tried only when the 17 end near a multiple of 100 (elsewhere they
 * cannot round-trip), so most values cost one strtod. Returns the length, or -1 (use snprintf). */
static int fast_double(char *s, double v) {
    uint64_t d;
    int e;
    if (digits17(v < 0 ? -v : v, &d, &e) < 0) return -1;
    uint64_t r = d % 100;
    if (r <= 12 || r >= 88) {
        int n = plain_text(s, v < 0, (d + 50) / 100, 15, e);
        if ((d + 50) / 100 < (uint64_t)P10[15] && strtod(s, NULL) == v) return n;
    }
    int n = plain_text(s, v < 0, d, 17, e);
    return strtod(s, NULL) == v ? n : -1;
}
