/* Fused elementwise duals of ntkit (float64): one pass per dual over (var1, cov, var2).
 *
 * Built by ntkit/dual/native.py with the system C compiler and loaded with ctypes; no
 * torch headers. Each family's element body repeats its eager chain (ntkit/dual/ modules)
 * operation by operation, in the same order, with the constants computed in Python as
 * the eager code computes them, and is compiled with -ffp-contract=off (a fused
 * multiply-add would round differently, e.g. var1*var2 - cov*cov is exactly 0 on the
 * diagonal only without one). atan2 and exp are glibc's vector variants (libmvec),
 * which make the loops vectorize: the scalar libm calls would be slower than eager.
 *
 * Layout: the output is contiguous with shape (n0, n1, n2); var1, cov and var2 are read
 * through strides st[0..2], st[3..5], st[6..8] (0 on broadcast dimensions). The inner
 * stride of cov is 1, those of var1 and var2 are 0 or 1 (native.py guarantees it), and
 * each is a compile-time constant in one of the loop variants below. A call computes
 * the flat rows [r0, r1) of n0 * n1.
 */
#include <stddef.h>

/* Declared here, not from math.h: glibc's header announces the vector variants only
 * under -ffast-math, which would also change the rounding of everything else. */
#pragma omp declare simd notinbranch
double atan2(double, double);
#pragma omp declare simd notinbranch
double exp(double);

/* pos ? x : y as bit operations: gcc does not if-convert a select after a vector
 * call (nor one on a loaded parameter), which would leave the loop scalar. */
static inline __attribute__((always_inline)) double SEL(int pos, double x, double y) {
    unsigned long m = -(unsigned long)(pos != 0), xb, yb;
    __builtin_memcpy(&xb, &x, 8); __builtin_memcpy(&yb, &y, 8);
    xb = (xb & m) | (yb & ~m);
    __builtin_memcpy(&x, &xb, 8);
    return x;
}
#define SQRT(x) __builtin_sqrt(x)
#define INF __builtin_inf()
#define PI 3.141592653589793
#define NPARAM 8

/* s = sqrt(max(var1 var2 - cov^2, 0)) (NaN propagates, as clamp_min does), theta =
 * atan2(s, cov), and pi where var1 var2 <= 0 unless every variance is positive
 * (ntkit.dual.relu.angle). */
#define ANGLE                                              \
    double p_ = a * b, c2_ = c * c, g_ = p_ - c2_;         \
    g_ = g_ < 0.0 ? 0.0 : g_;                              \
    double s = SQRT(g_);                                   \
    int pos = allpos | (p_ > 0.0);                         \
    double th = SEL(pos, atan2(s, c), PI);

#define EL static inline __attribute__((always_inline)) void
#define EL_ARGS const double a, const double b, const double c, const double *P, \
    const int allpos, double *restrict Tp, double *restrict Dp

/* Without Tdot, d is NULL and D is stored into t before T overwrites it: one loop per
 * layout instead of two (half the code to compile), for one extra store to a line
 * that is written anyway. */
#define INNER(NAME, SA, SB)                                                             \
    _Pragma("omp simd")                                                                 \
    for (long k = 0; k < n2; k++) {                                                     \
        double T, D;                                                                    \
        NAME##_el(pa[k * SA], pb[k * SB], pc[k], Q, allpos, &T, &D);                    \
        pd[k] = D;                                                                      \
        pt[k] = T;                                                                      \
    }

#define ROWS(NAME)                                                                      \
    void ntkit_##NAME(long n1, long n2, const long *st, const double *v1,               \
                      const double *cv, const double *v2, double *t, double *d,         \
                      const double *P, int allpos, long r0, long r1) {                  \
        const int sa = st[2] != 0, sb = st[8] != 0;                                     \
        double Q[NPARAM];  /* a local copy: invariant in the loops (P could alias t) */ \
        for (int q = 0; q < NPARAM; q++) Q[q] = P[q];                                   \
        for (long r = r0; r < r1; r++) {                                                \
            long i = r / n1, j = r % n1;                                                \
            const double *pa = v1 + i * st[0] + j * st[1];                              \
            const double *pc = cv + i * st[3] + j * st[4];                              \
            const double *pb = v2 + i * st[6] + j * st[7];                              \
            double *pt = t + r * n2, *pd = d ? d + r * n2 : pt;                         \
            if (sa && sb) { INNER(NAME, 1, 1) }                                         \
            else if (sa) { INNER(NAME, 1, 0) }                                          \
            else if (sb) { INNER(NAME, 0, 1) }                                          \
            else { INNER(NAME, 0, 0) }                                                  \
        }                                                                               \
    }

/* A Dense layer and the dual after it, on fully connected (n1, n2) kernels, in one pass
 * (ntkit.layers.fc_fusion): per entry, the Dense map
 *     c = cov_in w2 + b2,   ntk = c + w2 ntk_in          ('ntk' parameterization)
 *                           ntk = (chan cov_in + w2 ntk_in) + one   ('standard')
 * (as ntkit.layers.Dense computes them), then the dual at (var1[i], c, var2[j]) with the
 * Dense's output variances: t = T, ntk_out = ntk Tdot. cov_in and ntk_in are contiguous
 * rows of n2 (row r at r * ld), the outputs contiguous (n1, n2); ntk_in NULL: no NTK.
 * A = {w2, b2, standard?, chan, one}. A call computes the rows [r0, r1). */
#define DENSE_ROWS(NAME)                                                                \
    void ntkit_dense_##NAME(long n2, const double *v1, const double *v2,                \
                            const double *cv, const double *nk, long ld, double *t,     \
                            double *nko, const double *P, int allpos, const double *A,  \
                            long r0, long r1) {                                         \
        double Q[NPARAM];                                                               \
        for (int q = 0; q < NPARAM; q++) Q[q] = P[q];                                   \
        const double w2 = A[0], b2 = A[1], chan = A[3], one = A[4];                     \
        const int stdp = A[2] != 0.0;                                                   \
        for (long r = r0; r < r1; r++) {                                                \
            const double a = v1[r];                                                     \
            const double *pc = cv + r * ld;                                             \
            double *pt = t + r * n2;                                                    \
            if (nk == 0) {                                                              \
                _Pragma("omp simd")                                                     \
                for (long k = 0; k < n2; k++) {                                         \
                    double T, D, c = pc[k] * w2 + b2;                                   \
                    NAME##_el(a, v2[k], c, Q, allpos, &T, &D);                          \
                    pt[k] = T;                                                          \
                }                                                                       \
                continue;                                                               \
            }                                                                           \
            const double *pn = nk + r * ld;                                             \
            double *po = nko + r * n2;                                                  \
            _Pragma("omp simd")                                                         \
            for (long k = 0; k < n2; k++) {                                             \
                double T, D, co = pc[k], c = co * w2 + b2;                              \
                double g = pn[k] * w2;                                                  \
                double nt = SEL(stdp, (chan * co + g) + one, c + g);                    \
                NAME##_el(a, v2[k], c, Q, allpos, &T, &D);                              \
                pt[k] = T;                                                              \
                po[k] = nt * D;                                                         \
            }                                                                           \
        }                                                                               \
    }

/* relu_dual: P = {1/(2 pi)} */
EL relu_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    ANGLE
    double rest = PI - th;
    T = (s + rest * c) * P[0];
    D = rest * P[0];
    *Tp = T; *Dp = D;
}
ROWS(relu)
DENSE_ROWS(relu)

/* abrelu_dual: P = {k, (a^2+b^2)/2, zero-variance rule?, (a+b)/2, phi'(0)} */
EL abrelu_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    ANGLE
    double dot = P[1] - P[0] * th;
    T = P[0] * s + dot * c;
    double d1 = a > 0.0 ? P[3] : P[4];
    double d2 = b > 0.0 ? P[3] : P[4];
    D = SEL(P[2] != 0.0 && !pos, d1 * d2, dot);
    *Tp = T; *Dp = D;
}
ROWS(abrelu)
DENSE_ROWS(abrelu)

/* sign_dual: P = {2/pi} */
EL sign_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    ANGLE
    T = SEL(pos, 1.0 - th * P[0], 0.0);
    D = 0.0;
    *Tp = T; *Dp = D;
}
ROWS(sign)
DENSE_ROWS(sign)

/* erf_dual: P = {4 b^4, 2 b^2, 2 a^2/pi, c^2, c != 0, 4 a^2 b^2/pi} */
EL erf_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    double p_ = a * b, c2_ = c * c, g_ = p_ - c2_;
    g_ = (g_ < 0.0 ? 0.0 : g_) * P[0];
    g_ = g_ + (a * P[1] + 1.0);
    g_ = g_ + b * P[1];
    double root = SQRT(g_);
    T = atan2(c * P[1], root) * P[2];
    T = SEL(P[4] != 0.0, T + P[3], T);
    D = (1.0 / root) * P[5];
    *Tp = T; *Dp = D;
}
ROWS(erf)
DENSE_ROWS(erf)

/* gelu_dual: P = {2 pi} */
EL gelu_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    double p = (1.0 + a) * (1.0 + b);
    double prod = a * b, g_ = prod - c * c;
    g_ = g_ < 0.0 ? 0.0 : g_;
    double delta2 = ((1.0 + a) + b) + g_;
    double delta = SQRT(delta2);
    double th = atan2(c, delta);
    T = c / 4.0 + (c * th + (c * c + prod * delta2) / (p * delta)) / P[0];
    D = (0.25 + th / P[0])
        + (c / (P[0] * delta)) * ((1.0 + (1.0 - prod) / p) + 1.0 / delta2);
    *Tp = T; *Dp = D;
}
ROWS(gelu)
DENSE_ROWS(gelu)

/* exp_dual: P = {a^2, b^2/2, b^2} */
EL exp_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    T = P[0] * exp(P[1] * ((a + b) + 2.0 * c));
    D = P[2] * T;
    *Tp = T; *Dp = D;
}
ROWS(exp)
DENSE_ROWS(exp)

/* gaussian_dual: P = {a^2, 2b, 4b^2, 4a^2b^2, b > 0} (a = 0 is done in Python) */
EL gaussian_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    double g_ = a * b - c * c;
    g_ = g_ < 0.0 ? 0.0 : g_;
    double dd = (1.0 - P[1] * (a + b)) + P[2] * g_;
    int ok = 1;
    if (P[4] != 0.0) {
        ok = (dd > 0.0) & (1.0 - P[1] * a > 0.0) & (1.0 - P[1] * b > 0.0);
        dd = ok ? dd : 1.0;
    }
    double root = SQRT(dd);
    T = (1.0 / root) * P[0];  /* a scalar over a tensor is reciprocal() * scalar */
    D = (P[3] * c) / (dd * root);
    T = SEL(ok, T, INF);
    D = SEL(ok, D, __builtin_copysign(INF, c));
    *Tp = T; *Dp = D;
}
ROWS(gaussian)
DENSE_ROWS(gaussian)

/* sin_dual: P = {-b^2/2, cos(2c), a^2/2, a^2 b^2/2} */
EL sin_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    double tot = a + b;
    double s1 = exp(P[0] * (tot - 2.0 * c));
    double s2 = P[1] * exp(P[0] * (tot + 2.0 * c));
    T = P[2] * (s1 - s2);
    D = P[3] * (s1 + s2);
    *Tp = T; *Dp = D;
}
ROWS(sin)
DENSE_ROWS(sin)

/* rbf_dual: P = {-gamma, 2 gamma} */
EL rbf_el(EL_ARGS) {
    (void)P; (void)allpos;
    double T, D;
    T = exp(P[0] * ((a + b) - 2.0 * c));
    D = P[1] * T;
    *Tp = T; *Dp = D;
}
ROWS(rbf)
DENSE_ROWS(rbf)

/* 1 if every x[k * stride] > 0 (NaN is not), else 0: the "all variances positive" test
 * of ntkit.dual.relu.angle without two torch calls per vector. */
int ntkit_allpos(long n, const double *x, long stride) {
    int ok = 1;
    for (long k = 0; k < n; k++) ok &= x[k * stride] > 0.0;
    return ok;
}

/* 1 if every nonzero |x[k * stride]| is within [lo, hi] (NaN is ignored), else 0: the
 * "moderate variances" test of ntkit.dual.relu.moderate without six torch calls. */
int ntkit_within(long n, const double *x, long stride, double lo, double hi) {
    int ok = 1;
    for (long k = 0; k < n; k++) {
        double a = __builtin_fabs(x[k * stride]);
        ok &= !(a > 0.0) | ((a < hi) & (a > lo));
    }
    return ok;
}

/* dst[j, i] = src[i, j] for an (n1, n2) src with row stride lds into a dst with row
 * stride ldd, in 16 x 16 blocks: a symmetric kernel's mirror tile written a few cache
 * lines at a time instead of one entry per line. */
void ntkit_transpose(long n1, long n2, const double *src, long lds, double *dst, long ldd) {
    const long B = 16;
    for (long i0 = 0; i0 < n1; i0 += B) {
        long i1 = i0 + B < n1 ? i0 + B : n1;
        for (long j0 = 0; j0 < n2; j0 += B) {
            long j1 = j0 + B < n2 ? j0 + B : n2;
            for (long j = j0; j < j1; j++)
                for (long i = i0; i < i1; i++) dst[j * ldd + i] = src[i * lds + j];
        }
    }
}

/* The elementwise floor of the benchmarks: out = atan2(sqrt(x), y) in one pass. */
void ntkit_floor(long n, const double *x, const double *y, double *out) {
    _Pragma("omp simd")
    for (long k = 0; k < n; k++) out[k] = atan2(SQRT(x[k]), y[k]);
}
