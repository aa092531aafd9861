// Dev harness for the MoBA CUDA kernels: loads moba.fatbin by name (exactly as the JCuda backend
// does), runs the forward on random inputs and checks it against its own float64 CPU reference
// of docs/semantics.md; `time` mode measures the benchmark shapes. Not part of the Maven build.
//
//   kernel_check <moba.fatbin> check [seed]     correctness matrix (exit 1 on any failure)
//   kernel_check <moba.fatbin> time             timings (CUDA events, median of 25)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../../main/cuda/moba_attn_bwd.cuh"
#include "../../main/cuda/moba_bwd_hopper.cuh"
#include "../../main/cuda/moba_attn_fwd_hopper.cuh"
#include "../../main/cuda/moba_attn_selected.cuh"
#include "../../main/cuda/moba_gate.cuh"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#define CHECK(x)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            std::exit(2);                                                                     \
        }                                                                                     \
    } while (0)

// ------------------------------------------------------------------------------------------ host utils
static void parallel_for(long n, const std::function<void(long, long)>& body) {
    const int threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    const long per = (n + threads - 1) / threads;
    for (int t = 0; t < threads; ++t) {
        const long lo = t * per, hi = std::min(n, lo + per);
        if (lo < hi) pool.emplace_back(body, lo, hi);
    }
    for (auto& th : pool) th.join();
}

enum DType { FP16 = 0, BF16 = 1 };
static const char* dtype_name(int dt) { return dt == FP16 ? "fp16" : "bf16"; }
static float to_float(uint16_t bits, int dt) {
    if (dt == FP16) { __half_raw r; r.x = bits; return __half2float(__half(r)); }
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static uint16_t from_float(float x, int dt) {
    if (dt == FP16) { __half h = __float2half_rn(x); return static_cast<__half_raw>(h).x; }
    __nv_bfloat16 b = __float2bfloat16_rn(x);
    return static_cast<__nv_bfloat16_raw>(b).x;
}

static uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// i.i.d. standard normal values rounded to the dtype (Box-Muller on a counter-based stream).
static void fill_normal(std::vector<uint16_t>& x, uint64_t seed, int dt) {
    parallel_for(static_cast<long>(x.size() + 1) / 2, [&](long lo, long hi) {
        for (long i = lo; i < hi; ++i) {
            uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (i + 1));
            const double u1 = ((splitmix(s) >> 11) + 1.0) / 9007199254740993.0, u2 = (splitmix(s) >> 11) / 9007199254740992.0;
            const double r = std::sqrt(-2.0 * std::log(u1));
            x[2 * i] = from_float(static_cast<float>(r * std::cos(2 * M_PI * u2)), dt);
            if (2 * i + 1 < static_cast<long>(x.size())) x[2 * i + 1] = from_float(static_cast<float>(r * std::sin(2 * M_PI * u2)), dt);
        }
    });
}

// ------------------------------------------------------------------------------------------ kernels
struct Kernels {
    cudaLibrary_t lib;
    cudaKernel_t chunk_mean[2], gate[2][2], attn[2][2], selected[2][2], combine[2][2], sel_sort;
    cudaKernel_t sel_all_past = nullptr;  // absent from fatbins before it (A/B timing): the gate then scores every tile
    cudaKernel_t attn_h[2][2], combine_h[2][2], selected_h[2][2], union_h[2][2];  // sm_90a engine (9.0 only)
    // The persistent gathered kernel for C <= 128 (absent from older fatbins: null, and the per-group one runs).
    cudaKernel_t selected_rh[2][2] = {};
    bool hopper = false;
    int sms = 0;
    cudaKernel_t route_count, route_scan, route_fill;
    cudaKernel_t bwd_delta[2], bwd_dq_selected[2][2], bwd_dq[2][2], bwd_dkdv[2][2];
    cudaKernel_t bwd_route_count, bwd_route_totals, bwd_route_place, bwd_route_fill;
    // The fused sm_90a backward (D = 128; null off Hopper, in older fatbins, or with MOBA_KC_BWD_FUSED=0).
    cudaKernel_t bwd_fused_h[2] = {};
    // Step 9 on wgmma over the 128-row tiles (null off Hopper, in older fatbins, or with MOBA_KC_BWD_DQ_H=0).
    cudaKernel_t bwd_dq_h[2][2] = {};
    static int bwd_fused_h_smem() { return moba::HopperBwdConfig<128>::kSmemBytes; }
    // Dynamic shared memory per kernel family from the kernels' own traits structs (as moba-geometry.properties).
#define MOBA_SMEM_OF(Config, member, d) ((d) == 64 ? moba::Config<64>::member : moba::Config<128>::member)
    static int bwd_dq_h_smem(int d) { return MOBA_SMEM_OF(HopperDqConfig, kSmemBytes, d); }
    static int bwd_dq_smem(int d) { return MOBA_SMEM_OF(BwdConfig, kDqSmemBytes, d); }
    static int bwd_dq_selected_smem(int d) { return MOBA_SMEM_OF(BwdConfig, kDqSelectedSmemBytes, d); }
    static int bwd_dkdv_smem(int d) { return MOBA_SMEM_OF(BwdConfig, kDkdvSmemBytes, d); }
    static int hd_index(int d) { return d == 64 ? 0 : 1; }
    static int gate_smem(int d) { return MOBA_SMEM_OF(GateConfig, kSmemBytes, d); }
    static int selected_smem(int d) { return MOBA_SMEM_OF(SelectedConfig, kSmemBytes, d); }
    static int attn_smem(int d) { return MOBA_SMEM_OF(FlashConfig, kSmemBytes, d); }
    static int attn_h_smem(int d) { return MOBA_SMEM_OF(HopperFwdConfig, kSmemBytes, d); }
    static int selected_h_smem(int d) { return MOBA_SMEM_OF(HopperSelectedConfig, kSmemBytes, d); }
    static int selected_rh_smem(int d) { return MOBA_SMEM_OF(HopperResidentConfig, kSmemBytes, d); }
#undef MOBA_SMEM_OF
    void load(const char* path) {
        CHECK(cudaFree(nullptr));
        cudaDeviceProp prop;
        CHECK(cudaGetDeviceProperties(&prop, 0));
        hopper = prop.major == 9 && prop.minor == 0;
        sms = prop.multiProcessorCount;
        CHECK(cudaLibraryLoadFromFile(&lib, path, nullptr, nullptr, 0, nullptr, nullptr, 0));
        auto get = [&](cudaKernel_t& k, const std::string& name) { CHECK(cudaLibraryGetKernel(&k, lib, name.c_str())); };
        if (cudaLibraryGetKernel(&sel_all_past, lib, "moba_sel_all_past") != cudaSuccess) {
            sel_all_past = nullptr;
            (void)cudaGetLastError();
        }
        for (int dt = 0; dt < 2; ++dt) {
            get(chunk_mean[dt], std::string("moba_chunk_mean_") + dtype_name(dt));
            for (int d : {64, 128}) {
                const std::string suffix = std::string(dtype_name(dt)) + "_d" + std::to_string(d);
                get(gate[dt][hd_index(d)], "moba_gate_topk_" + suffix);
                get(attn[dt][hd_index(d)], "moba_attn_fwd_" + suffix);
                get(selected[dt][hd_index(d)], "moba_attn_selected_" + suffix);
                get(combine[dt][hd_index(d)], "moba_attn_own_combine_" + suffix);
                if (hopper) {
                    get(attn_h[dt][hd_index(d)], "moba_attn_fwd_h_" + suffix);
                    get(combine_h[dt][hd_index(d)], "moba_attn_own_combine_h_" + suffix);
                    get(selected_h[dt][hd_index(d)], "moba_attn_selected_h_" + suffix);
                    get(union_h[dt][hd_index(d)], "moba_attn_union_h_" + suffix);
                    cudaKernel_t& rh = selected_rh[dt][hd_index(d)];
                    if (cudaLibraryGetKernel(&rh, lib, ("moba_attn_selected_resident_h_" + suffix).c_str()) == cudaSuccess)
                        CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(rh),
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, selected_rh_smem(d)));
                    else {
                        rh = nullptr;
                        (void)cudaGetLastError();
                    }
                    CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(selected_h[dt][hd_index(d)]),
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, selected_h_smem(d)));
                    for (cudaKernel_t kh : {attn_h[dt][hd_index(d)], combine_h[dt][hd_index(d)], union_h[dt][hd_index(d)]})
                        CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kh),
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, attn_h_smem(d)));
                }
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(selected[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, selected_smem(d)));
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(combine[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, attn_smem(d)));
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(gate[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, gate_smem(d)));
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(attn[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, attn_smem(d)));
                get(bwd_dq_selected[dt][hd_index(d)], "moba_bwd_dq_selected_" + suffix);
                get(bwd_dq[dt][hd_index(d)], "moba_bwd_dq_" + suffix);
                get(bwd_dkdv[dt][hd_index(d)], "moba_bwd_dkdv_" + suffix);
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(bwd_dq_selected[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_dq_selected_smem(d)));
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(bwd_dq[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_dq_smem(d)));
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(bwd_dkdv[dt][hd_index(d)]),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_dkdv_smem(d)));
            }
        }
        get(sel_sort, "moba_sel_sort");
        for (int dt = 0; dt < 2; ++dt) get(bwd_delta[dt], std::string("moba_bwd_delta_") + dtype_name(dt));
        get(bwd_route_count, "moba_bwd_route_count");
        const char* dq_h_env = std::getenv("MOBA_KC_BWD_DQ_H");
        for (int dt = 0; hopper && !(dq_h_env && std::string(dq_h_env) == "0") && dt < 2; ++dt)
            for (int d : {64, 128}) {
                cudaKernel_t& kd = bwd_dq_h[dt][hd_index(d)];
                const std::string name = std::string("moba_bwd_dq_h_") + dtype_name(dt) + "_d" + std::to_string(d);
                if (cudaLibraryGetKernel(&kd, lib, name.c_str()) != cudaSuccess) {
                    kd = nullptr;
                    (void)cudaGetLastError();
                    continue;
                }
                CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kd),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_dq_h_smem(d)));
            }
        const char* fused_env = std::getenv("MOBA_KC_BWD_FUSED");
        for (int dt = 0; hopper && !(fused_env && std::string(fused_env) == "0") && dt < 2; ++dt) {
            const std::string name = std::string("moba_bwd_fused_h_") + dtype_name(dt) + "_d128";
            if (cudaLibraryGetKernel(&bwd_fused_h[dt], lib, name.c_str()) != cudaSuccess) {
                bwd_fused_h[dt] = nullptr;
                (void)cudaGetLastError();
                continue;
            }
            CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(bwd_fused_h[dt]),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, bwd_fused_h_smem()));
        }
        get(bwd_route_totals, "moba_bwd_route_totals");
        get(bwd_route_place, "moba_bwd_route_place");
        get(bwd_route_fill, "moba_bwd_route_fill");
        get(route_count, "moba_route_count");
        get(route_scan, "moba_route_scan");
        get(route_fill, "moba_route_fill");
        CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(sel_sort), cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    }
};

static void launch(cudaKernel_t k, dim3 grid, dim3 block, size_t smem, cudaStream_t st, std::vector<void*> args) {
    CHECK(cudaLaunchKernel(reinterpret_cast<const void*>(k), grid, block, args.data(), smem, st));
    CHECK(cudaGetLastError());
}

// ------------------------------------------------------------------------------------------ problem
struct Case {
    std::string name;
    int dt, D, H, Hkv, C, topk;
    bool dense;
    bool gathered;  // MoBA via route + gathered kernel + own/combine (else the union kernel)
    std::vector<int> lengths;
    bool hopper = false;  // dense / own-chunk / combine on the sm_90a kernels (128-row tiles)
    bool fused_bwd = false;  // backward through moba_bwd_fused_h (dk, dv, partial dq) + moba_bwd_dq
};

// Whether the fused sm_90a backward serves a case (the same rule as MobaBackwardKernels.fusedBackward).
static bool fused_bwd_applies(const Kernels& K, const Case& c) {
    // C = 128 (and dense): dK, dV and the partials; a longer multiple of 128: dK and dV, dq_selected the partials.
    return K.bwd_fused_h[c.dt] != nullptr && c.D == 128 && (c.dense || c.C % 128 == 0);
}

struct Layout {  // host index arrays, built exactly as the ABI says
    // tiles: pairs (b, start) of 64 rows; tiles128 of 128; gate_tiles of 128, most candidate chunks first
    std::vector<int> cu, chunk_base, tiles, tiles128, gate_tiles;
    int T = 0, B = 0, max_len = 0, nfc = 0, W = 0;
    explicit Layout(const Case& c) {
        B = static_cast<int>(c.lengths.size());
        cu.assign(B + 1, 0);
        chunk_base.assign(B + 1, 0);
        for (int b = 0; b < B; ++b) {
            cu[b + 1] = cu[b] + c.lengths[b];
            chunk_base[b + 1] = chunk_base[b] + c.lengths[b] / c.C;
            max_len = std::max(max_len, c.lengths[b]);
        }
        T = cu[B];
        nfc = chunk_base[B];
        const int max_chunks = (max_len + c.C - 1) / c.C;
        W = c.dense ? 0 : std::min(c.topk - 1, std::max(0, max_chunks - 1));
        struct Tile { int b, start; long work; };
        std::vector<Tile> t;
        for (int b = 0; b < B; ++b)
            for (int s = 0; s < c.lengths[b]; s += 64) {
                const int own = s / c.C;
                const long work = c.dense ? s + 64L : static_cast<long>(std::min(W, own)) * c.C + (s - own * c.C) + 64;
                t.push_back({b, s, work});
            }
        std::stable_sort(t.begin(), t.end(), [](const Tile& a, const Tile& b) { return a.work > b.work; });
        for (auto& x : t) { tiles.push_back(x.b); tiles.push_back(x.start); }
        // 128-row tiles of the sm_90a kernels: dense / own-chunk work only, longest first.
        std::vector<Tile> t128;
        for (int b = 0; b < B; ++b)
            for (int s = 0; s < c.lengths[b]; s += 128)
                t128.push_back({b, s, c.dense ? s + 128L : (s - (s / c.C) * c.C) + 128L});
        std::stable_sort(t128.begin(), t128.end(), [](const Tile& a, const Tile& b) { return a.work > b.work; });
        for (auto& x : t128) { tiles128.push_back(x.b); tiles128.push_back(x.start); }
        std::vector<Tile> tg;
        for (int b = 0; b < B; ++b)
            for (int s = 0; s < c.lengths[b]; s += 128)
                tg.push_back({b, s, (std::min(s + 128, c.lengths[b]) - 1L) / c.C});
        std::stable_sort(tg.begin(), tg.end(), [](const Tile& a, const Tile& b) { return a.work > b.work; });
        for (auto& x : tg) { gate_tiles.push_back(x.b); gate_tiles.push_back(x.start); }
        // The scored prefix: tiles whose last row's own chunk c > W (the rest select every past chunk).
        while (scored_gate_tiles < static_cast<int>(tg.size()) && tg[scored_gate_tiles].work > W) ++scored_gate_tiles;
    }
    int scored_gate_tiles = 0;
    int num_tiles() const { return static_cast<int>(tiles.size() / 2); }
    int num_tiles128() const { return static_cast<int>(tiles128.size() / 2); }
    int num_gate_tiles() const { return static_cast<int>(gate_tiles.size() / 2); }
    int seq_of(int t) const { return static_cast<int>(std::upper_bound(cu.begin(), cu.end(), t) - cu.begin()) - 1; }
};

template <class T>
struct DevBuf {
    T* p = nullptr;
    size_t n = 0;
    void alloc(size_t count) { n = count; if (count) CHECK(cudaMalloc(&p, count * sizeof(T))); }
    void upload(const std::vector<T>& h) { alloc(h.size()); if (n) CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice)); }
    std::vector<T> download() const { std::vector<T> h(n); if (n) CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost)); return h; }
    void free_() { if (p) CHECK(cudaFree(p)); p = nullptr; n = 0; }
};

struct DeviceRun {  // device state of one (case, input set)
    DevBuf<uint16_t> q, k, v, out, planes, partial_o;
    DevBuf<float> lse, mu, unscale, sel_score, partial_lse;
    DevBuf<int> cu, chunk_base, tiles, tiles128, gate_tiles, sel, bucket_count, bucket_row0, bucket_tile0, bucket_cursor, rows;
    void setup(const Case& c, const Layout& L) {
        cu.upload(L.cu);
        chunk_base.upload(L.chunk_base);
        tiles.upload(L.tiles);
        tiles128.upload(L.tiles128);
        gate_tiles.upload(L.gate_tiles);
        out.alloc(static_cast<size_t>(L.T) * c.H * c.D);
        lse.alloc(static_cast<size_t>(L.T) * c.H);
        if (L.W > 0) {
            sel.alloc(static_cast<size_t>(L.T) * c.H * L.W);
            if (L.W > 16) sel_score.alloc(static_cast<size_t>(L.T) * c.H * L.W);
            mu.alloc(static_cast<size_t>(L.nfc) * c.Hkv * c.D);
            planes.alloc(static_cast<size_t>(3) * L.nfc * c.Hkv * c.D);
            unscale.alloc(static_cast<size_t>(L.nfc) * c.Hkv);
            if (c.gathered) {
                const size_t buckets = static_cast<size_t>(c.H) * L.nfc, entries = static_cast<size_t>(L.T) * c.H * L.W;
                bucket_count.alloc(buckets);
                bucket_row0.alloc(buckets + 1);
                bucket_tile0.alloc(buckets + 1);
                bucket_cursor.alloc(buckets);
                rows.alloc(entries);
                partial_o.alloc(entries * c.D);
                partial_lse.alloc(entries);
            }
        }
    }
    void poison() {
        if (out.n) CHECK(cudaMemset(out.p, 0xff, out.n * 2));  // NaN in fp16 and bf16
        if (lse.n) CHECK(cudaMemset(lse.p, 0xff, lse.n * 4));  // NaN
        if (sel.n) CHECK(cudaMemset(sel.p, 0x7f, sel.n * 4));  // an impossible chunk index
    }
    void free_all() {
        q.free_(); k.free_(); v.free_(); out.free_(); planes.free_(); lse.free_(); mu.free_(); unscale.free_();
        sel_score.free_(); cu.free_(); chunk_base.free_(); tiles.free_(); tiles128.free_(); gate_tiles.free_(); sel.free_();
        bucket_count.free_(); bucket_row0.free_(); bucket_tile0.free_(); bucket_cursor.free_(); rows.free_();
        partial_o.free_(); partial_lse.free_();
    }
};

static void run_gate(const Kernels& K, const Case& c, const Layout& L, DeviceRun& r, cudaStream_t st) {
    if (L.W == 0 || L.nfc == 0) {
        if (L.W > 0) CHECK(cudaMemsetAsync(r.sel.p, 0xff, r.sel.n * 4, st));  // no candidates anywhere: all -1
        return;
    }
    int B = L.B, Hkv = c.Hkv, D = c.D, C = c.C, W = L.W, H = c.H, nfc = L.nfc;
    launch(K.chunk_mean[c.dt], dim3(nfc, Hkv), dim3(256), 0, st,
           {&r.k.p, &r.cu.p, &r.chunk_base.p, &B, &Hkv, &D, &C, &r.mu.p, &r.planes.p, &r.unscale.p});
    const int scored = K.sel_all_past != nullptr ? L.scored_gate_tiles : L.num_gate_tiles();
    for (int slot = 0; scored > 0 && slot < W; slot += 16) {
        launch(K.gate[c.dt][Kernels::hd_index(D)], dim3(scored, H), dim3(128), Kernels::gate_smem(D), st,
               {&r.q.p, &r.planes.p, &r.unscale.p, &r.cu.p, &r.chunk_base.p, &r.gate_tiles.p, &r.sel.p, &r.sel_score.p, &W,
                &slot, &H, &Hkv, &C, &nfc});
    }
    if (scored < L.num_gate_tiles()) {
        int* rest = r.gate_tiles.p + 2 * scored;
        launch(K.sel_all_past, dim3(L.num_gate_tiles() - scored, H), dim3(128), 0, st,
               {&r.cu.p, &rest, &r.sel.p, &W, &H, &C});
    }
    if (W > 16) launch(K.sel_sort, dim3(L.T * H), dim3(128), W * 4, st, {&r.sel.p, &W});
}

// phase (timing only, may be null): on the gathered path, events recorded after the routing and after the selected
// kernel, so that the attention splits into route, selected and own + merge.
static void run_attn(const Kernels& K, const Case& c, const Layout& L, DeviceRun& r, cudaStream_t st,
                     cudaEvent_t* phase = nullptr) {
    int W = L.W, nt = L.num_tiles(), H = c.H, Hkv = c.Hkv, C = c.C, dense = c.dense ? 1 : 0, B = L.B, nfc = L.nfc;
    float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.D)));
    const int hd = Kernels::hd_index(c.D), smem = Kernels::attn_smem(c.D);
    int nt128 = L.num_tiles128();
    if (c.hopper && (c.dense || W == 0)) {
        launch(K.attn_h[c.dt][hd], dim3(nt128, H), dim3(384), Kernels::attn_h_smem(c.D), st,
               {&r.q.p, &r.k.p, &r.v.p, &r.out.p, &r.lse.p, &r.cu.p, &r.tiles128.p, &H, &Hkv, &C, &scale, &dense});
        return;
    }
    if (c.hopper && !c.gathered) {  // the union walk on sm_90a (chunk % 128 == 0)
        launch(K.union_h[c.dt][hd], dim3(nt128, H), dim3(384), Kernels::attn_h_smem(c.D), st,
               {&r.q.p, &r.k.p, &r.v.p, &r.out.p, &r.lse.p, &r.cu.p, &r.sel.p, &W, &r.tiles128.p, &H, &Hkv, &C, &scale});
        return;
    }
    if (!c.gathered || c.dense || W == 0) {
        launch(K.attn[c.dt][hd], dim3(nt, H), dim3(128), smem, st,
               {&r.q.p, &r.k.p, &r.v.p, &r.out.p, &r.lse.p, &r.cu.p, &r.sel.p, &W, &r.tiles.p, &nt, &H, &Hkv, &C, &scale, &dense});
        return;
    }
    int entries = L.T * H * W, buckets = H * nfc;
    CHECK(cudaMemsetAsync(r.bucket_count.p, 0, buckets * 4, st));
    const unsigned entry_blocks = (entries + 255) / 256;
    launch(K.route_count, dim3(entry_blocks), dim3(256), 0, st,
           {&r.sel.p, &r.cu.p, &r.chunk_base.p, &B, &H, &W, &nfc, &entries, &C, &r.bucket_count.p});
    // Groups of 8 tiles keep a C <= 128 chunk resident in shared memory; longer chunks stream. The sm_90a kernel
    // takes 128-row tiles: four of them against a resident C <= 256 chunk, else one.
    int rows_per_group = c.hopper ? (C <= 256 ? 4 * 128 : 128) : (C <= 128 ? 8 * 64 : 64);
    // MOBA_KC_ROWS_PER_GROUP overrides the sm90a gathered kernel's group size (timing experiments only).
    if (const char* rows = std::getenv("MOBA_KC_ROWS_PER_GROUP"); rows != nullptr && c.hopper && C <= 256)
        rows_per_group = std::atoi(rows);
    launch(K.route_scan, dim3(1), dim3(1024), 0, st,
           {&r.bucket_count.p, &buckets, &rows_per_group, &r.bucket_row0.p, &r.bucket_tile0.p, &r.bucket_cursor.p});
    launch(K.route_fill, dim3(entry_blocks), dim3(256), 0, st,
           {&r.sel.p, &r.cu.p, &r.chunk_base.p, &B, &H, &W, &nfc, &entries, &C, &r.bucket_cursor.p, &r.rows.p});
    if (phase) CHECK(cudaEventRecord(phase[0], st));
    const unsigned max_groups = (entries + rows_per_group - 1) / rows_per_group + buckets;
    // The persistent kernel for C <= 128 unless MOBA_KC_RESIDENT=0 (A/B against the per-group one).
    const char* resident_env = std::getenv("MOBA_KC_RESIDENT");
    const bool resident = c.hopper && C <= 128 && K.selected_rh[c.dt][hd] != nullptr &&
                          !(resident_env != nullptr && std::string(resident_env) == "0");
    if (resident)
        launch(K.selected_rh[c.dt][hd], dim3(std::min<unsigned>(max_groups, K.sms)), dim3(384),
               Kernels::selected_rh_smem(c.D), st,
               {&r.q.p, &r.k.p, &r.v.p, &r.cu.p, &r.chunk_base.p, &B, &r.bucket_row0.p, &r.bucket_tile0.p, &r.rows.p,
                &rows_per_group, &r.partial_o.p, &r.partial_lse.p, &H, &Hkv, &W, &C, &nfc, &scale});
    else if (c.hopper)
        launch(K.selected_h[c.dt][hd], dim3(max_groups), dim3(384), Kernels::selected_h_smem(c.D), st,
               {&r.q.p, &r.k.p, &r.v.p, &r.cu.p, &r.chunk_base.p, &B, &r.bucket_row0.p, &r.bucket_tile0.p, &r.rows.p,
                &rows_per_group, &r.partial_o.p, &r.partial_lse.p, &H, &Hkv, &W, &C, &nfc, &scale});
    else
        launch(K.selected[c.dt][hd], dim3(max_groups), dim3(128), Kernels::selected_smem(c.D), st,
               {&r.q.p, &r.k.p, &r.v.p, &r.cu.p, &r.chunk_base.p, &B, &r.bucket_row0.p, &r.bucket_tile0.p, &r.rows.p,
                &rows_per_group, &r.partial_o.p, &r.partial_lse.p, &H, &Hkv, &W, &C, &nfc, &scale});
    if (phase) CHECK(cudaEventRecord(phase[1], st));
    // MOBA_KC_COMBINE=mma: the own chunk + merge on the mma.sync kernel (64-row tiles) after a sm_90a gathered kernel.
    const char* combine_env = std::getenv("MOBA_KC_COMBINE");
    if (c.hopper && !(combine_env != nullptr && std::string(combine_env) == "mma"))
        launch(K.combine_h[c.dt][hd], dim3(nt128, H), dim3(384), Kernels::attn_h_smem(c.D), st,
               {&r.q.p, &r.k.p, &r.v.p, &r.out.p, &r.lse.p, &r.cu.p, &r.sel.p, &W, &r.tiles128.p, &H, &Hkv, &C, &scale,
                &r.partial_o.p, &r.partial_lse.p});
    else
        launch(K.combine[c.dt][hd], dim3(nt, H), dim3(128), smem, st,
               {&r.q.p, &r.k.p, &r.v.p, &r.out.p, &r.lse.p, &r.cu.p, &r.sel.p, &W, &r.tiles.p, &H, &Hkv, &C, &scale,
                &r.partial_o.p, &r.partial_lse.p});
}

// ------------------------------------------------------------------------------------------ reference
struct HostInputs {
    std::vector<uint16_t> q, k, v;
};

struct RefRow {  // reference for one (token, head)
    std::vector<double> out;
    double lse;
    std::vector<int> selected;  // ascending
    double margin;              // relative gap weakest selected vs strongest unselected (+inf: none left out)
};

struct Reference {
    const Case& c;
    const Layout& L;
    std::vector<double> q, k, v, mu;  // mu [nfc, Hkv, D]
    Reference(const Case& c_, const Layout& L_, const HostInputs& in) : c(c_), L(L_) {
        auto conv = [&](const std::vector<uint16_t>& x) {
            std::vector<double> y(x.size());
            parallel_for(static_cast<long>(x.size()), [&](long lo, long hi) { for (long i = lo; i < hi; ++i) y[i] = to_float(x[i], c.dt); });
            return y;
        };
        q = conv(in.q); k = conv(in.k); v = conv(in.v);
        mu.assign(static_cast<size_t>(L.nfc) * c.Hkv * c.D, 0.0);
        for (int b = 0; b < L.B; ++b)
            for (int j = 0; j < L.chunk_base[b + 1] - L.chunk_base[b]; ++j)
                for (int hk = 0; hk < c.Hkv; ++hk)
                    for (int d = 0; d < c.D; ++d) {
                        double s = 0;
                        for (int t = 0; t < c.C; ++t) s += k[((static_cast<long>(L.cu[b]) + j * c.C + t) * c.Hkv + hk) * c.D + d];
                        mu[((static_cast<long>(L.chunk_base[b]) + j) * c.Hkv + hk) * c.D + d] = s / c.C;
                    }
    }
    double score(int t, int h, int b, int j) const {
        const int hk = h / (c.H / c.Hkv);
        double s = 0;
        for (int d = 0; d < c.D; ++d)
            s += q[(static_cast<long>(t) * c.H + h) * c.D + d] * mu[((static_cast<long>(L.chunk_base[b]) + j) * c.Hkv + hk) * c.D + d];
        return s;
    }
    // Selection per docs/semantics.md; `use` (if non-null) overrides it for the attention part.
    RefRow row(int t, int h, const std::vector<int>* use) const {
        RefRow r;
        const int b = L.seq_of(t), p = t - L.cu[b], own = p / c.C, hk = h / (c.H / c.Hkv);
        r.margin = INFINITY;
        if (!c.dense) {
            std::vector<std::pair<double, int>> cand;
            for (int j = 0; j < own; ++j) cand.push_back({score(t, h, b, j), j});
            std::sort(cand.begin(), cand.end(), [](auto& a, auto& b2) { return a.first > b2.first || (a.first == b2.first && a.second < b2.second); });
            const int keep = std::min(c.topk - 1, own);
            for (int i = 0; i < keep; ++i) r.selected.push_back(cand[i].second);
            std::sort(r.selected.begin(), r.selected.end());
            if (keep > 0 && keep < own) {
                const double a = cand[keep - 1].first, z = cand[keep].first;
                r.margin = (a - z) / std::max(std::max(std::fabs(a), std::fabs(z)), 1e-300);
            }
        }
        std::vector<int> keys;
        const std::vector<int>& chosen = use ? *use : r.selected;
        if (c.dense) {
            for (int key = 0; key <= p; ++key) keys.push_back(key);
        } else {
            for (int j : chosen) for (int key = j * c.C; key < (j + 1) * c.C; ++key) keys.push_back(key);
            for (int key = own * c.C; key <= p; ++key) keys.push_back(key);
        }
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
        const double* qr = &q[(static_cast<long>(t) * c.H + h) * c.D];
        std::vector<double> s(keys.size());
        double mx = -INFINITY;
        for (size_t i = 0; i < keys.size(); ++i) {
            const double* kr = &k[((static_cast<long>(L.cu[b]) + keys[i]) * c.Hkv + hk) * c.D];
            double dot = 0;
            for (int d = 0; d < c.D; ++d) dot += qr[d] * kr[d];
            s[i] = dot * scale;
            mx = std::max(mx, s[i]);
        }
        double den = 0;
        r.out.assign(c.D, 0.0);
        for (size_t i = 0; i < keys.size(); ++i) {
            const double w = std::exp(s[i] - mx);
            den += w;
            const double* vr = &v[((static_cast<long>(L.cu[b]) + keys[i]) * c.Hkv + hk) * c.D];
            for (int d = 0; d < c.D; ++d) r.out[d] += w * vr[d];
        }
        for (int d = 0; d < c.D; ++d) r.out[d] /= den;
        r.lse = mx + std::log(den);
        return r;
    }
};

// ------------------------------------------------------------------------------------------ check
struct Outputs {
    std::vector<uint16_t> out;
    std::vector<float> lse;
    std::vector<int> sel;
};

static Outputs run_forward(const Kernels& K, const Case& c, const Layout& L, DeviceRun& r) {
    r.poison();
    run_gate(K, c, L, r, nullptr);
    run_attn(K, c, L, r, nullptr);
    CHECK(cudaDeviceSynchronize());
    return {r.out.download(), r.lse.download(), r.sel.download()};
}

// Attended (query, key) pairs x heads: the causal prefix for dense, else the own chunk's causal prefix plus C
// per selected chunk, read from a forward's device-side selection.
static double attended_pairs(const Case& c, const Layout& L, const DevBuf<int>& sel_device) {
    if (c.dense) {
        double pairs = 0;
        for (int len : c.lengths) pairs += 0.5 * len * (len + 1.0) * c.H;
        return pairs;
    }
    const std::vector<int> sel = sel_device.download();
    std::vector<double> part(L.T, 0);
    parallel_for(L.T, [&](long lo, long hi) {
        for (long t = lo; t < hi; ++t) {
            const int b = L.seq_of(static_cast<int>(t)), p = static_cast<int>(t) - L.cu[b];
            for (int h = 0; h < c.H; ++h) {
                double n = p - (p / c.C) * c.C + 1;
                for (int s = 0; s < L.W; ++s) n += sel[(t * c.H + h) * L.W + s] >= 0 ? c.C : 0;
                part[t] += n;
            }
        }
    });
    return std::accumulate(part.begin(), part.end(), 0.0);
}

// The rows of sequence b of a packed [T, heads, D] tensor.
static std::vector<uint16_t> sequence_rows(const std::vector<uint16_t>& x, const Layout& L, int b, int heads, int d) {
    return std::vector<uint16_t>(x.begin() + static_cast<long>(L.cu[b]) * heads * d,
                                 x.begin() + static_cast<long>(L.cu[b + 1]) * heads * d);
}

static int failures = 0;

static void check_case(const Kernels& K, const Case& c, uint64_t seed) {
    const Layout L(c);
    HostInputs in;
    in.q.resize(static_cast<size_t>(L.T) * c.H * c.D);
    in.k.resize(static_cast<size_t>(L.T) * c.Hkv * c.D);
    in.v.resize(in.k.size());
    fill_normal(in.q, seed * 3 + 1, c.dt);
    fill_normal(in.k, seed * 3 + 2, c.dt);
    fill_normal(in.v, seed * 3 + 3, c.dt);
    DeviceRun r;
    r.setup(c, L);
    r.q.upload(in.q); r.k.upload(in.k); r.v.upload(in.v);
    const Outputs o1 = run_forward(K, c, L, r);
    const Outputs o2 = run_forward(K, c, L, r);

    // Every row written, finite; sel well formed (ascending, in range, -1 padding).
    long bad_rows = 0, bad_sel = 0;
    for (int t = 0; t < L.T; ++t) {
        const int b = L.seq_of(t), own = (t - L.cu[b]) / c.C;
        for (int h = 0; h < c.H; ++h) {
            bool ok = std::isfinite(o1.lse[static_cast<long>(t) * c.H + h]);
            for (int d = 0; d < c.D; ++d) ok &= std::isfinite(to_float(o1.out[(static_cast<long>(t) * c.H + h) * c.D + d], c.dt));
            bad_rows += !ok;
            int prev = -1;
            bool padding = false;
            for (int s = 0; s < L.W; ++s) {
                const int x = o1.sel[(static_cast<long>(t) * c.H + h) * L.W + s];
                if (x == -1) { padding = true; continue; }
                if (padding || x <= prev || x >= own) { ++bad_sel; break; }
                prev = x;
            }
        }
    }
    const bool deterministic = o1.out == o2.out && o1.sel == o2.sel &&
                               std::memcmp(o1.lse.data(), o2.lse.data(), o1.lse.size() * 4) == 0;

    // Reference on a sample of rows (all rows when small), all heads.
    Reference ref(c, L, in);
    std::vector<int> rows;
    const long row_cost = static_cast<long>(c.H) * c.D * (c.dense ? L.max_len / 2 + 1 : std::min(c.topk, L.max_len / c.C + 1) * c.C);
    const long max_rows = std::max(64L, std::min(4096L, 6000000000L / std::max(1L, row_cost)));
    if (L.T <= max_rows) {
        rows.resize(L.T);
        std::iota(rows.begin(), rows.end(), 0);
    } else {
        std::mt19937_64 rng(seed);
        for (int b = 0; b < L.B; ++b)
            for (int t : {L.cu[b], L.cu[b + 1] - 1}) if (t >= L.cu[b] && t < L.cu[b + 1]) rows.push_back(t);
        while (static_cast<long>(rows.size()) < max_rows) rows.push_back(static_cast<int>(rng() % L.T));
    }
    std::vector<double> e_out(rows.size(), 0), n_out(rows.size(), 0), e_lse(rows.size(), 0), n_lse(rows.size(), 0);
    std::vector<long> mismatch(rows.size(), 0), near_tie(rows.size(), 0);
    parallel_for(static_cast<long>(rows.size()), [&](long lo, long hi) {
        for (long i = lo; i < hi; ++i) {
            const int t = rows[i];
            for (int h = 0; h < c.H; ++h) {
                std::vector<int> gpu_sel;
                for (int s = 0; s < L.W; ++s) {
                    const int x = o1.sel[(static_cast<long>(t) * c.H + h) * L.W + s];
                    if (x >= 0) gpu_sel.push_back(x);
                }
                RefRow rr = ref.row(t, h, nullptr);
                if (!c.dense && rr.selected != gpu_sel) {
                    if (rr.margin < 1e-6) { ++near_tie[i]; rr = ref.row(t, h, &gpu_sel); }
                    else ++mismatch[i];
                }
                for (int d = 0; d < c.D; ++d) {
                    const double g = to_float(o1.out[(static_cast<long>(t) * c.H + h) * c.D + d], c.dt);
                    e_out[i] += (g - rr.out[d]) * (g - rr.out[d]);
                    n_out[i] += rr.out[d] * rr.out[d];
                }
                const double gl = o1.lse[static_cast<long>(t) * c.H + h];
                e_lse[i] += (gl - rr.lse) * (gl - rr.lse);
                n_lse[i] += rr.lse * rr.lse;
            }
        }
    });
    auto total = [](const std::vector<double>& x) { return std::accumulate(x.begin(), x.end(), 0.0); };
    const double rel_out = std::sqrt(total(e_out) / total(n_out)), rel_lse = std::sqrt(total(e_lse) / total(n_lse));
    const long mism = std::accumulate(mismatch.begin(), mismatch.end(), 0L), ties = std::accumulate(near_tie.begin(), near_tie.end(), 0L);
    const double tol_out = c.dt == FP16 ? 2e-3 : 1e-2;
    const bool pass = !std::isnan(rel_out) && rel_out < tol_out && rel_lse < 1e-5 && mism == 0 && bad_rows == 0 &&
                      bad_sel == 0 && deterministic;
    failures += !pass;
    std::printf("%-4s %-44s T=%6d W=%2d rows=%5zu  out_relL2=%.2e lse_relL2=%.2e sel_mismatch=%ld near_ties=%ld "
                "unwritten=%ld bad_sel=%ld deterministic=%s\n",
                pass ? "PASS" : "FAIL", c.name.c_str(), L.T, L.W, rows.size(), rel_out, rel_lse, mism, ties, bad_rows, bad_sel,
                deterministic ? "yes" : "NO");

    // Packing: the longest sequence run alone must give bit-identical rows.
    if (L.B > 1) {
        const int b = static_cast<int>(std::max_element(c.lengths.begin(), c.lengths.end()) - c.lengths.begin());
        Case solo = c;
        solo.lengths = {c.lengths[b]};
        const Layout LS(solo);
        auto slice = [&](const std::vector<uint16_t>& x, int heads) { return sequence_rows(x, L, b, heads, c.D); };
        DeviceRun rs;
        rs.setup(solo, LS);
        rs.q.upload(slice(in.q, c.H)); rs.k.upload(slice(in.k, c.Hkv)); rs.v.upload(slice(in.v, c.Hkv));
        const Outputs os = run_forward(K, solo, LS, rs);
        bool same = std::memcmp(os.out.data(), o1.out.data() + static_cast<long>(L.cu[b]) * c.H * c.D, os.out.size() * 2) == 0 &&
                    std::memcmp(os.lse.data(), o1.lse.data() + static_cast<long>(L.cu[b]) * c.H, os.lse.size() * 4) == 0;
        for (long i = 0; same && i < static_cast<long>(LS.T) * c.H; ++i)
            for (int s = 0; s < L.W; ++s) {
                const int packed = o1.sel[(static_cast<long>(L.cu[b]) * c.H + i) * L.W + s];
                const int alone = s < LS.W ? os.sel[i * LS.W + s] : -1;
                same &= packed == alone;
            }
        failures += !same;
        std::printf("%-4s   packing: sequence %d (L=%d) alone vs packed bit-identical: %s\n", same ? "PASS" : "FAIL", b,
                    c.lengths[b], same ? "yes" : "NO");
        rs.free_all();
    }
    r.free_all();
}

// ------------------------------------------------------------------------------------------ timing
__global__ void fill_normal_device(uint16_t* x, long n, uint64_t seed, int dt) {
    for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < n; i += static_cast<long>(gridDim.x) * blockDim.x) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u1 = ((z >> 40) + 1.0f) / 16777217.0f, u2 = ((z >> 16) & 0xffffff) / 16777216.0f;
        const float val = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
        x[i] = dt == FP16 ? __half_as_ushort(__float2half_rn(val)) : __bfloat16_as_ushort(__float2bfloat16_rn(val));
    }
}

static void time_case(const Kernels& K, const Case& c) {
    const Layout L(c);
    constexpr int kSets = 3, kWarm = 3, kIters = 25;
    DeviceRun r[kSets];
    for (int s = 0; s < kSets; ++s) {
        r[s].setup(c, L);
        r[s].q.alloc(static_cast<size_t>(L.T) * c.H * c.D);
        r[s].k.alloc(static_cast<size_t>(L.T) * c.Hkv * c.D);
        r[s].v.alloc(r[s].k.n);
        fill_normal_device<<<1024, 256>>>(r[s].q.p, r[s].q.n, 11 + 7 * s, c.dt);
        fill_normal_device<<<1024, 256>>>(r[s].k.p, r[s].k.n, 12 + 7 * s, c.dt);
        fill_normal_device<<<1024, 256>>>(r[s].v.p, r[s].v.n, 13 + 7 * s, c.dt);
        CHECK(cudaGetLastError());
    }
    cudaEvent_t ev[3], phase[2];
    for (auto& e : ev) CHECK(cudaEventCreate(&e));
    for (auto& e : phase) CHECK(cudaEventCreate(&e));
    // The gathered path records its phases: route, selected, own + merge.
    const bool phased = c.gathered && !c.dense && L.W > 0;
    std::vector<float> gate_ms, attn_ms, route_ms, selected_ms;
    for (int it = 0; it < kWarm + kIters; ++it) {
        DeviceRun& d = r[it % kSets];
        CHECK(cudaEventRecord(ev[0]));
        run_gate(K, c, L, d, nullptr);
        CHECK(cudaEventRecord(ev[1]));
        run_attn(K, c, L, d, nullptr, phased ? phase : nullptr);
        CHECK(cudaEventRecord(ev[2]));
        CHECK(cudaEventSynchronize(ev[2]));
        float g, a, route = 0, selected = 0;
        CHECK(cudaEventElapsedTime(&g, ev[0], ev[1]));
        CHECK(cudaEventElapsedTime(&a, ev[1], ev[2]));
        if (phased) {
            CHECK(cudaEventElapsedTime(&route, ev[1], phase[0]));
            CHECK(cudaEventElapsedTime(&selected, phase[0], phase[1]));
        }
        if (it >= kWarm) { gate_ms.push_back(g); attn_ms.push_back(a); route_ms.push_back(route); selected_ms.push_back(selected); }
    }
    auto median = [](std::vector<float> x) { std::sort(x.begin(), x.end()); return x[x.size() / 2]; };
    const float gm = median(gate_ms), am = median(attn_ms);
    // Attended (query, key) pairs, counted from the selection of the last input set.
    const double pairs = attended_pairs(c, L, r[(kWarm + kIters - 1) % kSets].sel);
    const double flops = 4.0 * c.D * pairs;
    double causal = 0;
    for (int len : c.lengths) causal += 0.5 * len * (len + 1.0) * c.H;
    std::printf("TIME %-46s gate %8.3f ms  attn %8.3f ms  total %8.3f ms  useful TFLOP/s attn %6.1f total %6.1f  "
                "(%.2f%% of causal pairs)\n",
                c.name.c_str(), gm, am, gm + am, flops / (am * 1e9), flops / ((gm + am) * 1e9), 100.0 * pairs / causal);
    if (phased)
        std::printf("PHASES %-44s route %8.3f ms  selected %8.3f ms  own + merge %8.3f ms (medians; own + merge = attention minus the two)\n",
                    c.name.c_str(), median(route_ms), median(selected_ms),
                    median(attn_ms) - median(route_ms) - median(selected_ms));
    std::fflush(stdout);
    for (auto& e : ev) CHECK(cudaEventDestroy(e));
    for (auto& e : phase) CHECK(cudaEventDestroy(e));
    for (auto& d : r) d.free_all();
}

// ------------------------------------------------------------------------------------------ backward
struct BwdRun {  // backward state of one (case, input set), on top of a DeviceRun's forward
    DevBuf<uint16_t> dout, dq, dk, dv, partial_dq;
    DevBuf<float> delta;
    DevBuf<int> group_count, bucket_count, bucket_row0, bucket_group0, bucket_cursor, rows;
    int group_tokens = 64, num_groups = 0;
    void setup(const Case& c, const Layout& L) {
        dq.alloc(static_cast<size_t>(L.T) * c.H * c.D);
        dk.alloc(static_cast<size_t>(L.T) * c.Hkv * c.D);
        dv.alloc(dk.n);
        delta.alloc(static_cast<size_t>(L.T) * c.H);
        if (!c.dense && L.W > 0 && L.nfc > 0) {
            const size_t buckets = static_cast<size_t>(c.H) * L.nfc, entries = static_cast<size_t>(L.T) * c.H * L.W;
            while (buckets * ((L.T + group_tokens - 1) / group_tokens) > (1u << 24)) group_tokens *= 2;
            num_groups = (L.T + group_tokens - 1) / group_tokens;
            group_count.alloc(buckets * num_groups);
            bucket_count.alloc(buckets);
            bucket_row0.alloc(buckets + 1);
            bucket_group0.alloc(buckets + 1);
            bucket_cursor.alloc(buckets);
            rows.alloc(entries);
            partial_dq.alloc(entries * c.D);
        }
    }
    void poison() {
        for (auto* b : {&dq, &dk, &dv}) if (b->n) CHECK(cudaMemset(b->p, 0xff, b->n * 2));
        if (partial_dq.n) CHECK(cudaMemset(partial_dq.p, 0xff, partial_dq.n * 2));
        if (rows.n) CHECK(cudaMemset(rows.p, 0xff, rows.n * 4));
    }
    void free_all() {
        dout.free_(); dq.free_(); dk.free_(); dv.free_(); partial_dq.free_(); delta.free_(); group_count.free_();
        bucket_count.free_(); bucket_row0.free_(); bucket_group0.free_(); bucket_cursor.free_(); rows.free_();
    }
};

// Phases recorded between events: ev[0] delta ev[1] route ev[2] dq_selected + dq ev[3] dkdv ev[4]; fused: ev[2] fused
// ev[3] dq ev[4].
static void run_backward(const Kernels& K, const Case& c, const Layout& L, DeviceRun& f, BwdRun& r, cudaStream_t st,
                         cudaEvent_t* ev) {
    int B = L.B, H = c.H, Hkv = c.Hkv, C = c.C, D = c.D, nfc = L.nfc, nt = L.num_tiles();
    int W = c.dense ? 0 : L.W, dense = c.dense ? 1 : 0, rows_hd = L.T * H;
    float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.D)));
    const int hd = Kernels::hd_index(D);
    if (ev) CHECK(cudaEventRecord(ev[0], st));
    launch(K.bwd_delta[c.dt], dim3((rows_hd + 3) / 4), dim3(128), 0, st, {&f.out.p, &r.dout.p, &r.delta.p, &rows_hd, &D});
    if (ev) CHECK(cudaEventRecord(ev[1], st));
    const bool routed = r.rows.n > 0;
    int rows_per_group = C <= 128 ? 8 * 64 : 64;
    if (routed) {
        int entries = L.T * H * W, buckets = H * nfc, gt = r.group_tokens, ng = r.num_groups, T = L.T;
        CHECK(cudaMemsetAsync(r.group_count.p, 0, r.group_count.n * 4, st));
        launch(K.bwd_route_count, dim3((entries + 255) / 256), dim3(256), 0, st,
               {&f.sel.p, &f.cu.p, &f.chunk_base.p, &B, &H, &W, &nfc, &entries, &gt, &ng, &r.group_count.p});
        launch(K.bwd_route_totals, dim3((buckets + 3) / 4), dim3(128), 0, st, {&r.group_count.p, &buckets, &ng, &r.bucket_count.p});
        launch(K.route_scan, dim3(1), dim3(1024), 0, st,
               {&r.bucket_count.p, &buckets, &rows_per_group, &r.bucket_row0.p, &r.bucket_group0.p, &r.bucket_cursor.p});
        launch(K.bwd_route_place, dim3((buckets + 3) / 4), dim3(128), 0, st, {&r.group_count.p, &r.bucket_row0.p, &buckets, &ng});
        launch(K.bwd_route_fill, dim3((ng * H + 3) / 4), dim3(128), 0, st,
               {&f.sel.p, &f.cu.p, &f.chunk_base.p, &B, &H, &W, &nfc, &T, &gt, &ng, &r.group_count.p, &r.rows.p});
    }
    if (ev) CHECK(cudaEventRecord(ev[2], st));
    // With C = 128 the fused kernel writes the partials too; otherwise dq_selected does. dq adds them last.
    const bool fused_partials = c.fused_bwd && C == 128;
    if (c.fused_bwd) {
        int nt128 = L.num_tiles128();
        launch(K.bwd_fused_h[c.dt], dim3(nt128, Hkv), dim3(moba::HopperBwdConfig<128>::kThreads),
               Kernels::bwd_fused_h_smem(), st,
               {&f.q.p, &f.k.p, &f.v.p, &r.dout.p, &f.lse.p, &r.delta.p, &r.dk.p, &r.dv.p, &r.partial_dq.p, &f.cu.p,
                &f.chunk_base.p, &f.tiles128.p, &r.bucket_row0.p, &r.rows.p, &H, &Hkv, &W, &C, &nfc, &scale, &dense});
        if (ev) CHECK(cudaEventRecord(ev[3], st));
    }
    if (routed && !fused_partials) {
        int entries = L.T * H * W, buckets = H * nfc;
        const unsigned max_groups = (entries + rows_per_group - 1) / rows_per_group + buckets;
        launch(K.bwd_dq_selected[c.dt][hd], dim3(max_groups), dim3(128), Kernels::bwd_dq_selected_smem(D), st,
               {&f.q.p, &f.k.p, &f.v.p, &r.dout.p, &f.lse.p, &r.delta.p, &f.cu.p, &f.chunk_base.p, &B, &r.bucket_row0.p,
                &r.bucket_group0.p, &r.rows.p, &rows_per_group, &r.partial_dq.p, &H, &Hkv, &W, &C, &nfc, &scale});
    }
    if (K.bwd_dq_h[c.dt][hd] != nullptr) {
        int nt128 = L.num_tiles128();
        launch(K.bwd_dq_h[c.dt][hd], dim3(nt128, H), dim3(moba::HopperDqConfig<128>::kThreads), Kernels::bwd_dq_h_smem(D),
               st, {&f.q.p, &f.k.p, &f.v.p, &r.dout.p, &f.lse.p, &r.delta.p, &r.dq.p, &f.cu.p, &f.sel.p, &W, &f.tiles128.p,
                    &H, &Hkv, &C, &scale, &dense, &r.partial_dq.p});
    } else {
        launch(K.bwd_dq[c.dt][hd], dim3(nt, H), dim3(128), Kernels::bwd_dq_smem(D), st,
               {&f.q.p, &f.k.p, &f.v.p, &r.dout.p, &f.lse.p, &r.delta.p, &r.dq.p, &f.cu.p, &f.sel.p, &W, &f.tiles.p, &H,
                &Hkv, &C, &scale, &dense, &r.partial_dq.p});
    }
    if (ev) CHECK(cudaEventRecord(ev[c.fused_bwd ? 4 : 3], st));  // fused: ev[3] came right after the fused kernel
    if (!c.fused_bwd)
        launch(K.bwd_dkdv[c.dt][hd], dim3(nt, Hkv), dim3(128), Kernels::bwd_dkdv_smem(D), st,
           {&f.q.p, &f.k.p, &f.v.p, &r.dout.p, &f.lse.p, &r.delta.p, &r.dk.p, &r.dv.p, &f.cu.p, &f.chunk_base.p,
            &f.tiles.p, &r.bucket_row0.p, &r.rows.p, &H, &Hkv, &W, &C, &nfc, &scale, &dense});
    if (ev && !c.fused_bwd) CHECK(cudaEventRecord(ev[4], st));
}

// Float64 backward of docs/semantics.md following the GPU's selection; delta from the GPU's (16-bit) out.
struct BwdReference {
    std::vector<double> dq, dk, dv;
};

static BwdReference reference_backward(const Case& c, const Layout& L, const Reference& ref, const Outputs& fwd,
                                       const std::vector<uint16_t>& dout) {
    const int threads = std::max(1u, std::thread::hardware_concurrency());
    const size_t kv_size = static_cast<size_t>(L.T) * c.Hkv * c.D;
    std::vector<std::vector<double>> dk_part(threads, std::vector<double>()), dv_part(threads, std::vector<double>());
    BwdReference out;
    out.dq.assign(static_cast<size_t>(L.T) * c.H * c.D, 0.0);
    std::atomic<int> next_thread{0};
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    parallel_for(static_cast<long>(L.T) * c.H, [&](long lo, long hi) {
        const int me = next_thread++;
        std::vector<double>& dk = dk_part[me];
        std::vector<double>& dv = dv_part[me];
        dk.assign(kv_size, 0.0);
        dv.assign(kv_size, 0.0);
        for (long row = lo; row < hi; ++row) {
            const int t = static_cast<int>(row / c.H), h = static_cast<int>(row % c.H), hk = h / (c.H / c.Hkv);
            const int b = L.seq_of(t), p = t - L.cu[b], own = p / c.C;
            std::vector<int> keys;
            if (c.dense) {
                for (int key = 0; key <= p; ++key) keys.push_back(key);
            } else {
                for (int s = 0; s < L.W; ++s) {
                    const int j = fwd.sel[row * L.W + s];
                    if (j >= 0) for (int key = j * c.C; key < (j + 1) * c.C; ++key) keys.push_back(key);
                }
                for (int key = own * c.C; key <= p; ++key) keys.push_back(key);
            }
            const double* qr = &ref.q[row * c.D];
            std::vector<double> g(c.D);
            double delta = 0, mx = -INFINITY;
            for (int d = 0; d < c.D; ++d) {
                g[d] = to_float(dout[row * c.D + d], c.dt);
                delta += g[d] * to_float(fwd.out[row * c.D + d], c.dt);
            }
            std::vector<double> s(keys.size());
            for (size_t i = 0; i < keys.size(); ++i) {
                const double* kr = &ref.k[((static_cast<long>(L.cu[b]) + keys[i]) * c.Hkv + hk) * c.D];
                double dot = 0;
                for (int d = 0; d < c.D; ++d) dot += qr[d] * kr[d];
                s[i] = dot * scale;
                mx = std::max(mx, s[i]);
            }
            double den = 0;
            for (double x : s) den += std::exp(x - mx);
            const double lse = mx + std::log(den);
            double* dqr = &out.dq[row * c.D];
            for (size_t i = 0; i < keys.size(); ++i) {
                const long kv = ((static_cast<long>(L.cu[b]) + keys[i]) * c.Hkv + hk) * c.D;
                const double pr = std::exp(s[i] - lse);
                double dp = 0;
                for (int d = 0; d < c.D; ++d) dp += g[d] * ref.v[kv + d];
                const double ds = pr * (dp - delta);
                for (int d = 0; d < c.D; ++d) {
                    dqr[d] += scale * ds * ref.k[kv + d];
                    dk[kv + d] += scale * ds * qr[d];
                    dv[kv + d] += pr * g[d];
                }
            }
        }
    });
    out.dk.assign(kv_size, 0.0);
    out.dv.assign(kv_size, 0.0);
    for (int i = 0; i < threads; ++i)
        for (size_t j = 0; j < dk_part[i].size(); ++j) { out.dk[j] += dk_part[i][j]; out.dv[j] += dv_part[i][j]; }
    return out;
}

struct Grads {
    std::vector<uint16_t> dq, dk, dv;
    bool operator==(const Grads& o) const { return dq == o.dq && dk == o.dk && dv == o.dv; }
};

static Grads backward_once(const Kernels& K, const Case& c, const Layout& L, DeviceRun& f, BwdRun& r) {
    r.poison();
    run_backward(K, c, L, f, r, nullptr, nullptr);
    CHECK(cudaDeviceSynchronize());
    return {r.dq.download(), r.dk.download(), r.dv.download()};
}

static double rel_l2(const std::vector<uint16_t>& x, const std::vector<double>& ref, int dt, long* non_finite) {
    double e = 0, n = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = to_float(x[i], dt);
        if (!std::isfinite(g)) ++*non_finite;
        e += (g - ref[i]) * (g - ref[i]);
        n += ref[i] * ref[i];
    }
    return std::sqrt(e / n);
}

// The backward's routing against the host: every (head, global chunk) bucket holds the entries that selected it,
// ascending by entry index (ABI.md, backward step 7), bucket_row0 their prefix sums. Exact: the kernels that read
// the buckets accumulate in this order.
static bool routing_matches_host(const Case& c, const Layout& L, const std::vector<int>& sel, const BwdRun& r) {
    if (r.rows.n == 0) return true;
    const int buckets = c.H * L.nfc;
    std::vector<std::vector<int>> want(buckets);
    for (long e = 0; e < static_cast<long>(sel.size()); ++e) {
        if (sel[e] < 0) continue;
        const int t = static_cast<int>(e / (static_cast<long>(c.H) * L.W)), h = static_cast<int>((e / L.W) % c.H);
        want[h * L.nfc + L.chunk_base[L.seq_of(t)] + sel[e]].push_back(static_cast<int>(e));
    }
    const std::vector<int> row0 = r.bucket_row0.download(), rows = r.rows.download();
    int at = 0;
    for (int bkt = 0; bkt < buckets; ++bkt) {
        if (row0[bkt] != at) return false;
        for (int e : want[bkt])
            if (rows[at++] != e) return false;
    }
    return row0[buckets] == at;
}

static void check_bwd_case(const Kernels& K, const Case& c, uint64_t seed) {
    const Layout L(c);
    HostInputs in;
    in.q.resize(static_cast<size_t>(L.T) * c.H * c.D);
    in.k.resize(static_cast<size_t>(L.T) * c.Hkv * c.D);
    in.v.resize(in.k.size());
    std::vector<uint16_t> dout(in.q.size());
    fill_normal(in.q, seed * 5 + 1, c.dt);
    fill_normal(in.k, seed * 5 + 2, c.dt);
    fill_normal(in.v, seed * 5 + 3, c.dt);
    fill_normal(dout, seed * 5 + 4, c.dt);
    DeviceRun f;
    f.setup(c, L);
    f.q.upload(in.q); f.k.upload(in.k); f.v.upload(in.v);
    const Outputs fwd = run_forward(K, c, L, f);
    BwdRun r;
    r.setup(c, L);
    r.dout.upload(dout);
    const Grads g1 = backward_once(K, c, L, f, r), g2 = backward_once(K, c, L, f, r);
    const Reference ref(c, L, in);
    const BwdReference want = reference_backward(c, L, ref, fwd, dout);
    long non_finite = 0;
    const double e_dq = rel_l2(g1.dq, want.dq, c.dt, &non_finite), e_dk = rel_l2(g1.dk, want.dk, c.dt, &non_finite),
                 e_dv = rel_l2(g1.dv, want.dv, c.dt, &non_finite);
    const double tol = c.dt == FP16 ? 5e-3 : 2e-2;
    const bool deterministic = g1 == g2;
    const bool routed_right = routing_matches_host(c, L, fwd.sel, r);
    if (c.fused_bwd) {  // the separate kernels on the same forward: how far apart the two paths are
        Case separate = c;
        separate.fused_bwd = false;
        const Grads gs = backward_once(K, separate, L, f, r);
        std::printf("     BWD   fused vs separate kernels: dq %s dk %s dv %s\n", gs.dq == g1.dq ? "identical" : "differ",
                    gs.dk == g1.dk ? "identical" : "differ", gs.dv == g1.dv ? "identical" : "differ");
    }
    const bool pass = e_dq < tol && e_dk < tol && e_dv < tol && non_finite == 0 && deterministic && routed_right;
    failures += !pass;
    std::printf("%-4s BWD %-44s T=%6d W=%2d groups=%d dq=%.2e dk=%.2e dv=%.2e non_finite=%ld deterministic=%s "
                "routing=%s\n",
                pass ? "PASS" : "FAIL", c.name.c_str(), L.T, L.W, r.num_groups, e_dq, e_dk, e_dv, non_finite,
                deterministic ? "yes" : "NO", r.rows.n == 0 ? "-" : routed_right ? "exact" : "WRONG");
    if (L.B > 1) {  // packing: the longest sequence alone gives bit-identical gradients
        const int b = static_cast<int>(std::max_element(c.lengths.begin(), c.lengths.end()) - c.lengths.begin());
        Case solo = c;
        solo.lengths = {c.lengths[b]};
        const Layout LS(solo);
        auto slice = [&](const std::vector<uint16_t>& x, int heads) { return sequence_rows(x, L, b, heads, c.D); };
        DeviceRun fs;
        fs.setup(solo, LS);
        fs.q.upload(slice(in.q, c.H)); fs.k.upload(slice(in.k, c.Hkv)); fs.v.upload(slice(in.v, c.Hkv));
        run_forward(K, solo, LS, fs);
        BwdRun rs;
        rs.setup(solo, LS);
        rs.dout.upload(slice(dout, c.H));
        const Grads gs = backward_once(K, solo, LS, fs, rs);
        auto same = [&](const std::vector<uint16_t>& alone, const std::vector<uint16_t>& packed, int heads) {
            return std::memcmp(alone.data(), packed.data() + static_cast<long>(L.cu[b]) * heads * c.D, alone.size() * 2) == 0;
        };
        const bool ok = same(gs.dq, g1.dq, c.H) && same(gs.dk, g1.dk, c.Hkv) && same(gs.dv, g1.dv, c.Hkv);
        failures += !ok;
        std::printf("%-4s BWD   packing: sequence %d (L=%d) alone vs packed bit-identical: %s\n", ok ? "PASS" : "FAIL", b,
                    c.lengths[b], ok ? "yes" : "NO");
        rs.free_all();
        fs.free_all();
    }
    r.free_all();
    f.free_all();
}

static void time_bwd_case(const Kernels& K, const Case& c) {
    const Layout L(c);
    constexpr int kSets = 2, kWarm = 3, kIters = 15;
    DeviceRun f[kSets];
    BwdRun r[kSets];
    for (int s = 0; s < kSets; ++s) {
        f[s].setup(c, L);
        f[s].q.alloc(static_cast<size_t>(L.T) * c.H * c.D);
        f[s].k.alloc(static_cast<size_t>(L.T) * c.Hkv * c.D);
        f[s].v.alloc(f[s].k.n);
        r[s].setup(c, L);
        r[s].dout.alloc(f[s].q.n);
        fill_normal_device<<<1024, 256>>>(f[s].q.p, f[s].q.n, 11 + 7 * s, c.dt);
        fill_normal_device<<<1024, 256>>>(f[s].k.p, f[s].k.n, 12 + 7 * s, c.dt);
        fill_normal_device<<<1024, 256>>>(f[s].v.p, f[s].v.n, 13 + 7 * s, c.dt);
        fill_normal_device<<<1024, 256>>>(r[s].dout.p, r[s].dout.n, 14 + 7 * s, c.dt);
        CHECK(cudaGetLastError());
    }
    cudaEvent_t ev[7];
    for (auto& e : ev) CHECK(cudaEventCreate(&e));
    std::vector<float> ph[6];
    for (int it = 0; it < kWarm + kIters; ++it) {
        const int s = it % kSets;
        CHECK(cudaEventRecord(ev[5]));
        run_gate(K, c, L, f[s], nullptr);
        run_attn(K, c, L, f[s], nullptr);
        run_backward(K, c, L, f[s], r[s], nullptr, ev);
        CHECK(cudaEventSynchronize(ev[4]));
        float x;
        if (it < kWarm) continue;
        CHECK(cudaEventElapsedTime(&x, ev[5], ev[0])); ph[0].push_back(x);
        for (int p = 0; p < 4; ++p) { CHECK(cudaEventElapsedTime(&x, ev[p], ev[p + 1])); ph[p + 1].push_back(x); }
        CHECK(cudaEventElapsedTime(&x, ev[0], ev[4])); ph[5].push_back(x);
    }
    auto median = [](std::vector<float> x) { std::sort(x.begin(), x.end()); return x[x.size() / 2]; };
    const double pairs = attended_pairs(c, L, f[(kWarm + kIters - 1) % kSets].sel);
    const double fwd = median(ph[0]), bwd = median(ph[5]);
    std::printf(c.fused_bwd
                    ? "BWDTIME %-44s fwd %8.3f  bwd %8.3f (delta %.3f route %.3f fused %.3f dq %.3f) ms  fwd+bwd %8.3f ms  "
                      "bwd useful TFLOP/s %6.1f\n"
                    : "BWDTIME %-44s fwd %8.3f  bwd %8.3f (delta %.3f route %.3f dq %.3f dkdv %.3f) ms  fwd+bwd %8.3f ms  "
                      "bwd useful TFLOP/s %6.1f\n",
                c.name.c_str(), fwd, bwd, median(ph[1]), median(ph[2]), median(ph[3]), median(ph[4]), fwd + bwd,
                10.0 * c.D * pairs / (bwd * 1e9));
    std::fflush(stdout);
    for (auto& e : ev) CHECK(cudaEventDestroy(e));
    for (int s = 0; s < kSets; ++s) { f[s].free_all(); r[s].free_all(); }
}

// ------------------------------------------------------------------------------------------ main
int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <moba.fatbin> check [seed] | time [filter]\n", argv[0]);
        return 2;
    }
    Kernels K;
    K.load(argv[1]);
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs, sm_%d%d)\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
    const std::string mode = argv[2];
    if (mode == "check") {
        const uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10)
                                       : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
        const std::vector<Case> cases = {
            {"fp16 d128 H4/4 C64 topk3 packed odd", FP16, 128, 4, 4, 64, 3, false, false, {1000, 0, 1, 63, 64, 65, 4097}},
            {"bf16 d128 H32/8 C128 topk8 packed", BF16, 128, 32, 8, 128, 8, false, false, {3001, 1, 0, 257}},
            {"fp16 d64 H32/8 C64 topk16 78 chunks", FP16, 64, 32, 8, 64, 16, false, false, {5000, 129}},
            {"bf16 d64 H4/4 C512 topk2", BF16, 64, 4, 4, 512, 2, false, false, {8191, 513, 1}},
            {"fp16 d128 H4/4 C4096 topk3", FP16, 128, 4, 4, 4096, 3, false, false, {12289, 4095}},
            {"bf16 d128 H4/4 C64 topk1 (own chunk only)", BF16, 128, 4, 4, 64, 1, false, false, {1500, 77}},
            {"fp16 d128 H8/2 C64 topk20 (W>16 multi-pass)", FP16, 128, 8, 2, 64, 20, false, false, {4000, 300, 0}},
            {"bf16 d64 H4/4 C64 topk40 (W=39, 3 passes)", BF16, 64, 4, 4, 64, 40, false, false, {3333, 2}},
            {"fp16 d128 H16/16 C128 topk8 FlashMoBA-like", FP16, 128, 16, 16, 128, 8, false, false, {8192, 8191}},
            {"bf16 d128 H4/4 C128 topk8 1 seq 300 chunks", BF16, 128, 4, 4, 128, 8, false, false, {38401}},
            {"fp16 d128 H4/4 dense packed", FP16, 128, 4, 4, 64, 1, true, false, {3000, 1, 700, 0}},
            {"bf16 d64 H32/8 dense packed", BF16, 64, 32, 8, 64, 1, true, false, {2049, 0, 130}},
            {"bf16 d128 H4/4 C4096 topk8 L<C (= dense)", BF16, 128, 4, 4, 4096, 8, false, false, {3001}},
        };
        for (Case c : cases) {
            check_case(K, c, seed);
            if (K.hopper && !c.dense && c.topk > 1 && c.C % 128 == 0) {
                Case u = c;
                u.hopper = true;
                u.name = u.name + " [sm90a union]";
                check_case(K, u, seed);
            }
            if (!c.dense && c.topk > 1) {
                c.gathered = true;
                c.name = c.name + " [gathered]";
                check_case(K, c, seed);
            }
            if (K.hopper && (c.dense || c.gathered || c.topk == 1)) {
                c.hopper = true;
                c.name = c.name + " [sm90a]";
                check_case(K, c, seed);
            }
        }
        std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ALL PASSED", failures);
        return failures ? 1 : 0;
    }
    if (mode == "time") {
        const std::string filter = argc > 3 ? argv[3] : "";
        std::vector<Case> cases;
        for (int len : {8192, 32768, 65536, 131072})
            cases.push_back({"FlashMoBA 2x" + std::to_string(len / 1024) + "K H16 d128 C128 topk8 fp16", FP16, 128, 16, 16, 128, 8, false, true, {len, len}});
        cases.push_back({"1x32K H1 d128 C512 topk3 bf16", BF16, 128, 1, 1, 512, 3, false, true, {32768}});
        cases.push_back({"1x64K H32 d128 C4096 topk3 bf16", BF16, 128, 32, 32, 4096, 3, false, true, {65536}});
        cases.push_back({"dense 2x32K H16 d128 fp16", FP16, 128, 16, 16, 64, 1, true, false, {32768, 32768}});
        cases.push_back({"dense 2x32K H16 d128 bf16", BF16, 128, 16, 16, 64, 1, true, false, {32768, 32768}});
        cases.push_back({"dense 2x64K H16 d128 fp16", FP16, 128, 16, 16, 64, 1, true, false, {65536, 65536}});
        cases.push_back({"dense 1x64K H32 d128 bf16", BF16, 128, 32, 32, 64, 1, true, false, {65536}});
        cases.push_back({"dense 2x8K H16 d128 fp16", FP16, 128, 16, 16, 64, 1, true, false, {8192, 8192}});
        cases.push_back({"own chunk 1x64K H32 d128 C4096 bf16", BF16, 128, 32, 32, 4096, 1, false, false, {65536}});
        cases.push_back({"union kernel: FlashMoBA 2x8K", FP16, 128, 16, 16, 128, 8, false, false, {8192, 8192}});
        // Many short sequences (KernelBench's 4,096 x 256..2,048, scaled to 512 of them): lengths from a fixed LCG.
        std::vector<int> many;
        for (uint32_t x = 12345, i = 0; i < 512; ++i) { x = x * 1664525u + 1013904223u; many.push_back(256 + static_cast<int>((x >> 8) % 1793)); }
        cases.push_back({"512 seqs 256..2048 H16 d128 C128 topk4 fp16", FP16, 128, 16, 16, 128, 4, false, true, many});
        cases.push_back({"union kernel: 512 seqs 256..2048", FP16, 128, 16, 16, 128, 4, false, false, many});
        cases.push_back({"dense 512 seqs 256..2048 H16 d128 fp16", FP16, 128, 16, 16, 128, 1, true, false, many});
        // filter: substrings separated by '|'; a case runs when its name contains any of them.
        auto selected = [&](const std::string& name) {
            if (filter.empty()) return true;
            for (size_t from = 0; from <= filter.size();) {
                const size_t bar = std::min(filter.find('|', from), filter.size());
                if (name.find(filter.substr(from, bar - from)) != std::string::npos) return true;
                from = bar + 1;
            }
            return false;
        };
        for (Case c : cases) {
            if (!selected(c.name)) continue;
            time_case(K, c);
            if (K.hopper && (c.dense || c.gathered || c.topk == 1 || c.C % 128 == 0)) {
                c.hopper = true;
                c.name = "[sm90a] " + c.name;
                time_case(K, c);
            }
        }
        return 0;
    }
    if (mode == "bwd-check") {
        const uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10)
                                       : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
        const std::vector<Case> cases = {
            {"fp16 d128 H4/4 C64 topk3 packed odd", FP16, 128, 4, 4, 64, 3, false, true, {1000, 0, 1, 63, 64, 65, 4097}},
            {"bf16 d128 H32/8 C128 topk8 packed", BF16, 128, 32, 8, 128, 8, false, true, {3001, 1, 0, 257}},
            {"fp16 d64 H32/8 C64 topk16", FP16, 64, 32, 8, 64, 16, false, true, {5000, 129}},
            {"bf16 d64 H4/4 C512 topk2", BF16, 64, 4, 4, 512, 2, false, true, {8191, 513, 1}},
            {"fp16 d128 H4/1 C256 topk3", FP16, 128, 4, 1, 256, 3, false, true, {6000, 700}},
            {"bf16 d128 H4/4 C64 topk1 (own chunk only)", BF16, 128, 4, 4, 64, 1, false, true, {1500, 77}},
            {"fp16 d128 H8/2 C64 topk20 (W>16)", FP16, 128, 8, 2, 64, 20, false, true, {4000, 300, 0}},
            {"fp16 d128 H16/16 C128 topk8 FlashMoBA-like", FP16, 128, 16, 16, 128, 8, false, true, {4096, 4095}},
            {"fp16 d128 H8/2 C128 topk12 odd lengths", FP16, 128, 8, 2, 128, 12, false, true, {2000, 1, 127, 128, 129, 1500}},
            {"bf16 d128 H4/1 C128 topk3 (W=2)", BF16, 128, 4, 1, 128, 3, false, true, {5000, 300}},
            {"bf16 d128 H1/1 C512 topk3", BF16, 128, 1, 1, 512, 3, false, true, {8192}},
            {"fp16 d128 H4/4 dense packed", FP16, 128, 4, 4, 64, 1, true, false, {3000, 1, 700, 0}},
            {"bf16 d64 H32/8 dense packed", BF16, 64, 32, 8, 64, 1, true, false, {2049, 0, 130}},
            {"bf16 d128 H4/4 C4096 topk8 L<C (= dense)", BF16, 128, 4, 4, 4096, 8, false, true, {3001}},
        };
        for (Case c : cases) {
            check_bwd_case(K, c, seed);
            if (fused_bwd_applies(K, c)) {
                c.fused_bwd = true;
                c.name += " [fused]";
                check_bwd_case(K, c, seed);
            }
        }
        std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "ALL PASSED", failures);
        return failures ? 1 : 0;
    }
    if (mode == "bwd-time") {
        const std::string filter = argc > 3 ? argv[3] : "";
        std::vector<Case> cases;
        for (int len : {8192, 32768, 65536})
            cases.push_back({"FlashMoBA 2x" + std::to_string(len / 1024) + "K H16 d128 C128 topk8 fp16", FP16, 128, 16, 16, 128, 8, false, true, {len, len}});
        cases.push_back({"1x32K H1 d128 C512 topk3 bf16", BF16, 128, 1, 1, 512, 3, false, true, {32768}});
        cases.push_back({"1x64K H32 d128 C4096 topk3 bf16", BF16, 128, 32, 32, 4096, 3, false, true, {65536}});
        cases.push_back({"dense 2x32K H16 d128 fp16", FP16, 128, 16, 16, 64, 1, true, false, {32768, 32768}});
        cases.push_back({"dense 2x64K H16 d128 fp16", FP16, 128, 16, 16, 64, 1, true, false, {65536, 65536}});
        for (Case c : cases) {
            if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
            time_bwd_case(K, c);
            if (fused_bwd_applies(K, c)) {
                c.fused_bwd = true;
                c.name = "[fused] " + c.name;
                time_bwd_case(K, c);
            }
        }
        return 0;
    }
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
}
