// LRA-EE exit-unit layers for hls4ml (registered through the extension API by hls/extension.py).
//
// Each function mirrors one stage of the bit-true numpy model exitlogic/fixedpoint/stages.py bit for bit:
// every "cast" of the numpy contract is one assignment to a typedef of the layer's config struct (its
// ap_fixed quantisation and overflow modes), every other operation is exact (ap_fixed operators return
// full-precision types; the config's accumulator and shift types are sized by hls/extension.py so
// nothing is lost).  Scalings by 2**e are products with the exact constant 2**e (a wire shift in
// hardware).  io_parallel versions take arrays; io_stream versions read whole packets into a local
// array and call them.
#ifndef NNET_LRAEE_H_
#define NNET_LRAEE_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_common.h"

namespace nnet {

// ------------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------------

// Position of the leading one of v (floor(log2 v)); -1 for v == 0.  A priority encoder.
template <int W> int lraee_leading_one(const ap_uint<W> &v) {
    int p = -1;
LeadingOne:
    for (int b = 0; b < W; b++) {
        #pragma HLS UNROLL
        if (v[b])
            p = b;
    }
    return p;
}

// ------------------------------------------------------------------------------------------------
// normalised reciprocal / reciprocal square root: LUT seed + Newton (stages.norm_unit)
// ------------------------------------------------------------------------------------------------

struct lraee_norm_unit_config {
    static const bool rsqrt = true;  // false: reciprocal
    static const int v_w = 26;       // input format: ap_ufixed<v_w, v_w - v_f>
    static const int v_f = 20;
    static const int lut_bits = 6;
    static const int newton_steps = 2;
    static const int mant_w = 26; // mantissa format ap_ufixed<mant_w, mant_w - mant_f, AP_TRN>
    static const int mant_f = 24;
    static const int shift_w = 27; // width of the unsigned code used for the mantissa bit slice
    typedef ap_ufixed<26, 2, AP_TRN, AP_SAT> mant_t;
    typedef ap_ufixed<18, 1, AP_RND_CONV, AP_SAT> lut_t;
    typedef ap_fixed<28, 3, AP_RND_CONV, AP_SAT> work_t;
    typedef ap_fixed<29, 3> y_t; // holds lut_t and work_t values exactly
};

template <class U, class y_T> typename U::work_t lraee_newton_step(const y_T &y, const typename U::mant_t &m) {
    #pragma HLS INLINE
    typename U::work_t r;
    if (U::rsqrt) {
        typename U::work_t a = y * y;       // cast[.work](y*y)
        typename U::work_t b = m * a;       // cast[.work](M*a)
        const ap_ufixed<2, 2> three = 3;
        const ap_ufixed<1, 0> half = 0.5;
        r = y * (three - b) * half; // cast[.work](y * (3 - b) / 2)
    } else {
        typename U::work_t b = m * y; // cast[.work](M*y)
        const ap_ufixed<2, 2> two = 2;
        r = y * (two - b); // cast[.work](y * (2 - b))
    }
    return r;
}

// r = y * 2**-k = 1/sqrt(v) (rsqrt) or 1/v (recip); v == 0 gives y = 0, k = 0.
template <class v_T, class U>
void lraee_norm_unit(const v_T &v, const typename U::lut_t table[], typename U::y_t &y, int &k) {
    #pragma HLS INLINE
    ap_uint<U::v_w> V = v.range(U::v_w - 1, 0);
    if (V == 0) {
        y = 0;
        k = 0;
        return;
    }
    const int p = lraee_leading_one<U::v_w>(V);
    const int e = p - U::v_f;
    const int par = U::rsqrt ? (e & 1) : 0;
    k = U::rsqrt ? (e - par) / 2 : e; // e - par is even: exact
    // mantissa m = v * 2**-(2k) (rsqrt) or v * 2**-k (recip): a truncating bit slice of V
    const int s = p - par - U::mant_f;
    ap_uint<U::shift_w> t = V;
    if (s >= 0)
        t = t >> s;
    else
        t = t << (-s);
    ap_uint<U::mant_w> mc = t.range(U::mant_w - 1, 0);
    typename U::mant_t m;
    m.range(U::mant_w - 1, 0) = mc;
    int idx = (int)(mc >> (U::mant_f + par - U::lut_bits)).to_int() - (1 << U::lut_bits);
    if (idx < 0)
        idx = 0;
    if (idx > (1 << U::lut_bits) - 1)
        idx = (1 << U::lut_bits) - 1;
    const typename U::lut_t y0 = table[par * (1 << U::lut_bits) + idx];
    if (U::newton_steps == 0) {
        y = y0;
        return;
    }
    typename U::work_t yw = lraee_newton_step<U>(y0, m);
Newton:
    for (int i = 1; i < U::newton_steps; i++) {
        yw = lraee_newton_step<U>(yw, m);
    }
    y = yw;
}

// ------------------------------------------------------------------------------------------------
// SSA: mean of the N patch tokens (stages.ssa_mean); input [N+1, d] int8 codes, token 0 = CLS
// ------------------------------------------------------------------------------------------------

struct lraee_ssa_config {
    static const unsigned n_tokens = 49;
    static const unsigned d = 128;
    static const unsigned reuse_factor = 1;
    typedef ap_fixed<16, 16> sum_t;   // exact sum of N int8 codes
    typedef ap_fixed<15, 15> acc_t;   // ssa.acc
    typedef ap_ufixed<24, -5> recip_t; // ssa.recip
    typedef ap_ufixed<1, -4> pow2_t;   // exactly 2**scale_exp (bit 0 set)
};

template <class data_T, class res_T, typename CONFIG_T>
void lraee_ssa_mean(data_T data[(CONFIG_T::n_tokens + 1) * CONFIG_T::d], res_T res[CONFIG_T::d],
                    const typename CONFIG_T::recip_t recip[1]) {
    typename CONFIG_T::pow2_t scale = 0;
    scale[0] = 1;
SSAFeature:
    for (unsigned j = 0; j < CONFIG_T::d; j++) {
        #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        typename CONFIG_T::sum_t s = 0;
    SSAToken:
        for (unsigned i = 1; i <= CONFIG_T::n_tokens; i++) {
            s += data[i * CONFIG_T::d + j];
        }
        typename CONFIG_T::acc_t acc = s; // cast[ssa.acc] (never overflows: validated width)
        res[j] = acc * recip[0] * scale;  // cast[ssa.out](acc * inv_N * 2**e)
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void lraee_ssa_mean(hls::stream<data_T> &data, hls::stream<res_T> &res, const typename CONFIG_T::recip_t recip[1]) {
    // tokens arrive one packet of d features at a time (CLS first); accumulate the N patch tokens
    typename CONFIG_T::pow2_t scale = 0;
    scale[0] = 1;
    typename CONFIG_T::sum_t s[CONFIG_T::d];
    for (unsigned j = 0; j < CONFIG_T::d; j++)
        s[j] = 0;
    const unsigned pk = data_T::size;
SSAStreamToken:
    for (unsigned i = 0; i < (CONFIG_T::n_tokens + 1) * CONFIG_T::d / pk; i++) {
        data_T in = data.read();
        for (unsigned j = 0; j < pk; j++) {
            const unsigned flat = i * pk + j;
            if (flat >= CONFIG_T::d)
                s[flat % CONFIG_T::d] += in[j];
        }
    }
    res_T out;
    unsigned o = 0;
SSAStreamOut:
    for (unsigned j = 0; j < CONFIG_T::d; j++) {
        typename CONFIG_T::acc_t acc = s[j];
        out[o++] = acc * recip[0] * scale;
        if (o == res_T::size) {
            res.write(out);
            o = 0;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// LayerNorm (stages.layernorm)
// ------------------------------------------------------------------------------------------------

struct lraee_layernorm_config {
    static const unsigned n_in = 128;
    static const unsigned reuse_factor = 1;
    typedef ap_fixed<33, 13> sum_t;       // exact sum of the d inputs
    typedef ap_ufixed<24, -6> recip_t;    // ln.recip
    typedef ap_fixed<26, 6> mean_t;       // ln.mean
    typedef ap_fixed<26, 6> diff_t;       // ln.diff
    typedef ap_fixed<60, 19> sumsq_acc_t; // exact sum of squares
    typedef ap_ufixed<26, 12> sumsq_t;    // ln.sumsq
    typedef ap_ufixed<26, 6> var_t;       // ln.var
    typedef ap_fixed<26, 4> norm_t;       // ln.norm
    typedef ap_fixed<80, 20> shift_t;     // c * y before the variable shift, with room for it
    typedef ap_fixed<22, 2> gamma_t;      // ln.weight
    typedef ap_fixed<22, 2> beta_t;       // ln.bias
    typedef lraee_norm_unit_config unit;  // ln.rsqrt
};

template <class data_T, class res_T, typename CONFIG_T>
void lraee_layernorm(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in], const typename CONFIG_T::recip_t recip[1],
                     const typename CONFIG_T::var_t eps[1], const typename CONFIG_T::unit::lut_t table[],
                     const typename CONFIG_T::gamma_t gamma[CONFIG_T::n_in],
                     const typename CONFIG_T::beta_t beta[CONFIG_T::n_in]) {
    typename CONFIG_T::sum_t s = 0;
LNSum:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        s += data[j];
    }
    const typename CONFIG_T::mean_t mu = s * recip[0]; // cast[ln.mean]
    typename CONFIG_T::diff_t c[CONFIG_T::n_in];
    typename CONFIG_T::sumsq_acc_t ssa = 0;
LNDiff:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        c[j] = data[j] - mu; // cast[ln.diff]
        ssa += c[j] * c[j];
    }
    const typename CONFIG_T::sumsq_t ss = ssa;        // cast[ln.sumsq]
    typename CONFIG_T::var_t v = ss * recip[0];       // cast[ln.var]
    v = v + eps[0];                                   // cast[ln.var](v + eps)
    typename CONFIG_T::unit::y_t y;
    int k;
    lraee_norm_unit<typename CONFIG_T::var_t, typename CONFIG_T::unit>(v, table, y, k);
LNNorm:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        typename CONFIG_T::shift_t t = c[j] * y; // exact
        if (k >= 0)
            t = t >> k; // lossless: shift_t has k_max extra fractional bits
        else
            t = t << (-k); // lossless: and -k_min extra integer bits
        const typename CONFIG_T::norm_t n = t; // cast[ln.norm](c * y * 2**-k)
        res[j] = n * gamma[j] + beta[j];       // cast[ln.out]
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void lraee_layernorm(hls::stream<data_T> &data, hls::stream<res_T> &res, const typename CONFIG_T::recip_t recip[1],
                     const typename CONFIG_T::var_t eps[1], const typename CONFIG_T::unit::lut_t table[],
                     const typename CONFIG_T::gamma_t gamma[CONFIG_T::n_in],
                     const typename CONFIG_T::beta_t beta[CONFIG_T::n_in]) {
    typename data_T::value_type in[CONFIG_T::n_in];
    typename res_T::value_type out[CONFIG_T::n_in];
    for (unsigned i = 0; i < CONFIG_T::n_in / data_T::size; i++) {
        data_T pk = data.read();
        for (unsigned j = 0; j < data_T::size; j++)
            in[i * data_T::size + j] = pk[j];
    }
    lraee_layernorm<typename data_T::value_type, typename res_T::value_type, CONFIG_T>(in, out, recip, eps, table, gamma,
                                                                                       beta);
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        res_T pk;
        for (unsigned j = 0; j < res_T::size; j++)
            pk[j] = out[i * res_T::size + j];
        res.write(pk);
    }
}

// ------------------------------------------------------------------------------------------------
// GELU = x * Phi(x), Phi piecewise linear from a breakpoint table (stages.gelu / stages.interp_lut)
// ------------------------------------------------------------------------------------------------

struct lraee_gelu_config {
    static const unsigned n_in = 128;
    static const unsigned reuse_factor = 1;
    static const int x_w = 26;      // input format ap_fixed<x_w, x_w - x_f>
    static const int a_w = 28;      // width of the code A = X + R * 2**F_x
    static const int r_shift = 23;  // F_x + log2(R)
    static const int sh = 14;       // F_x + log2(step): bits of A below the table index
    static const unsigned entries = 1024;
    typedef ap_ufixed<14, 0> frac_t; // the sh low bits of A as a fraction (width max(sh, 1))
    typedef ap_ufixed<22, 1> phi_t;  // gelu.phi
};

template <class data_T, class res_T, typename CONFIG_T>
void lraee_gelu(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in],
                const typename CONFIG_T::phi_t table[CONFIG_T::entries + 1]) {
GELU:
    for (unsigned j = 0; j < CONFIG_T::n_in; j++) {
        #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
        ap_int<CONFIG_T::x_w> X = data[j].range(CONFIG_T::x_w - 1, 0);
        ap_int<CONFIG_T::a_w> A = X;
        A += ap_int<CONFIG_T::a_w>(1) << CONFIG_T::r_shift; // a = x + R (exact)
        typename CONFIG_T::phi_t phi;
        if (A < 0) {
            phi = 0;
        } else if (A >= (ap_int<CONFIG_T::a_w>(1) << (CONFIG_T::r_shift + 1))) {
            phi = 1;
        } else {
            int idx;
            typename CONFIG_T::frac_t f = 0;
            if (CONFIG_T::sh > 0) {
                ap_int<CONFIG_T::a_w> hi = A >> CONFIG_T::sh;
                idx = hi.to_int();
                ap_int<CONFIG_T::a_w> lo = A - (hi << CONFIG_T::sh);
                f.range(CONFIG_T::frac_t::width - 1, 0) = lo.range(CONFIG_T::frac_t::width - 1, 0);
            } else {
                idx = (A << (-CONFIG_T::sh)).to_int();
            }
            const typename CONFIG_T::phi_t t0 = table[idx];
            const typename CONFIG_T::phi_t t1 = table[idx + 1];
            phi = t0 + (t1 - t0) * f; // cast[gelu.phi](T[i] + (T[i+1] - T[i]) * fr / 2**sh)
        }
        res[j] = data[j] * phi; // cast[gelu.out](x * phi)
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void lraee_gelu(hls::stream<data_T> &data, hls::stream<res_T> &res,
                const typename CONFIG_T::phi_t table[CONFIG_T::entries + 1]) {
    typename data_T::value_type in[CONFIG_T::n_in];
    typename res_T::value_type out[CONFIG_T::n_in];
    for (unsigned i = 0; i < CONFIG_T::n_in / data_T::size; i++) {
        data_T pk = data.read();
        for (unsigned j = 0; j < data_T::size; j++)
            in[i * data_T::size + j] = pk[j];
    }
    lraee_gelu<typename data_T::value_type, typename res_T::value_type, CONFIG_T>(in, out, table);
    for (unsigned i = 0; i < CONFIG_T::n_in / res_T::size; i++) {
        res_T pk;
        for (unsigned j = 0; j < res_T::size; j++)
            pk[j] = out[i * res_T::size + j];
        res.write(pk);
    }
}

// ------------------------------------------------------------------------------------------------
// threshold comparator (stages.gate): out[0] = g, out[1] = (g >= T) -- the exit decision bit
// ------------------------------------------------------------------------------------------------

struct lraee_comparator_config {
    typedef ap_fixed<24, 8> thr_t; // gate.out
};

template <class data_T, class res_T, typename CONFIG_T>
void lraee_exit_comparator(data_T data[1], res_T res[2], const typename CONFIG_T::thr_t thr[1]) {
    #pragma HLS INLINE
    res[0] = data[0];
    res[1] = (data[0] >= thr[0]) ? 1 : 0;
}

template <class data_T, class res_T, typename CONFIG_T>
void lraee_exit_comparator(hls::stream<data_T> &data, hls::stream<res_T> &res, const typename CONFIG_T::thr_t thr[1]) {
    data_T in = data.read();
    res_T out;
    out[0] = in[0];
    out[1] = (in[0] >= thr[0]) ? 1 : 0;
    res.write(out);
}

} // namespace nnet

#endif
