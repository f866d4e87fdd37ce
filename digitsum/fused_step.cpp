// The training step of K one-layer LSTM or GRU DigitSumModels of one shape on the CPU (K >= 1: one
// model is the case K = 1): embedding, recurrence, head, cross-entropy and the whole backward pass in
// one call; and each model's gradient clipping and AdamW update, each with its own learning rate,
// weight decay and clipping norm, in one more (see digitsum/fused.py and digitsum/optim.py).
//
// Why: at batch 32 an eager step is ~60 small ATen ops and ~20 tiny GEMMs, and per-op overhead
// costs more than the arithmetic. Here the GEMMs are the only BLAS calls; the gates, the loss and
// every elementwise backward formula are plain loops the compiler vectorizes.
//
// Every thread works on every step. A batch's rows are independent through the recurrence, so the
// recurrence is split into tiles (model k, rows b0..b1 at every step) that run from the first step to
// the last without waiting for each other: K models and the rows of each share out the threads,
// instead of one model per thread (3 models on 2 threads took two rounds). Small GEMMs run faster on
// one thread than split by the BLAS over two (measured: [32 x 64] x [64 x 256] 13 us on one thread,
// 23 us on two), so each tile's GEMMs run single-threaded. The weight gradients, sums over all of a
// model's rows, then take one GEMM per model (its output rows split over the threads when there are
// fewer models than threads). A model's tiles depend only on K, B and the thread count, and what
// each computes does not depend on how the tiles are shared out.
//
// Layout: each model's rows are time-major, row n = t * B + b, so a tile's rows at one step are
// contiguous. Gate order as in torch.nn: LSTM i, f, g, o; GRU r, z, n.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <optional>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

// The BLAS that torch links (MKL on x86 Linux), called directly: an ATen op costs a few microseconds
// of dispatch per call, as much as a [16 x 64] x [64 x 256] product. Weak, so that a torch built with
// another BLAS still loads this kernel (and it falls back on at::mm_out).
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));
// MKL's threads for the calling thread alone: 1 in our parallel regions (each tile's products are too small
// to split; asked to, MKL spent more on its threads than on them: the head's products ran ~2x slower).
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));

namespace {

constexpr int64_t kIgnore = -100;  // digitsum.data.IGNORE

// exp on a clamped argument (Cody-Waite reduction and Cephes' polynomial, ~2 ulp), written
// without calls or branches so that the loops below vectorize. The clamp keeps results normal
// floats; NaN still propagates.
inline float exp_clamped(float x) {
  x = x < -87.0f ? -87.0f : (x > 80.0f ? 80.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_clamped(-x)); }
inline float tanh_(float x) { return 2.0f * sigmoid(2.0f * x) - 1.0f; }  // torch.tanh is ~5x slower here

// The row functions stay out of line: inlined into the time loops, GCC stopped vectorizing some of them.
#define ROW __attribute__((noinline))

// LSTM: gate pre-activations (i, f, g, o) become activations.
ROW void lstm_gates(float* __restrict a, int64_t H) {
  for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid(a[j]);
  for (int64_t j = 2 * H; j < 3 * H; ++j) a[j] = tanh_(a[j]);
  for (int64_t j = 3 * H; j < 4 * H; ++j) a[j] = sigmoid(a[j]);
}

// LSTM: c_t, tanh(c_t) and h_t of one row from its gate activations (i, f, g, o: H each).
ROW void cell_forward(const float* __restrict a, const float* __restrict c_prev, float* __restrict c,
                      float* __restrict tc, float* __restrict h, int64_t H) {
  for (int64_t k = 0; k < H; ++k) {
    c[k] = a[H + k] * c_prev[k] + a[k] * a[2 * H + k];
    tc[k] = tanh_(c[k]);
    h[k] = a[3 * H + k] * tc[k];
  }
}

// LSTM: one row's gate activations ad (i, f, g, o) become the gradients of their pre-activations, in
// place; dc carries d loss / d c from step t to step t - 1.
ROW void cell_backward(float* __restrict ad, const float* __restrict tc, const float* __restrict c_prev,
                       const float* __restrict dh_in, const float* __restrict dh_next, float* __restrict dc, int64_t H) {
  for (int64_t k = 0; k < H; ++k) {
    const float i = ad[k], f = ad[H + k], g = ad[2 * H + k], o = ad[3 * H + k];
    const float dh = dh_next[k] + dh_in[k];
    const float dck = dc[k] + dh * o * (1.0f - tc[k] * tc[k]);
    ad[k] = dck * g * i * (1.0f - i);
    ad[H + k] = dck * c_prev[k] * f * (1.0f - f);
    ad[2 * H + k] = dck * i * (1.0f - g * g);
    ad[3 * H + k] = dh * tc[k] * o * (1.0f - o);
    dc[k] = dck * f;
  }
}

// GRU: gi (r, z, n input parts) becomes r, z, n; h_t from them and gh = h_{t-1} W_hh^T + b_hh.
ROW void gru_forward(float* __restrict a, const float* __restrict gh, const float* __restrict h_prev,
                     float* __restrict h, int64_t H) {
  for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid(a[j] + gh[j]);
  for (int64_t k = 0; k < H; ++k) {
    const float n = tanh_(a[2 * H + k] + a[k] * gh[2 * H + k]);
    a[2 * H + k] = n;
    h[k] = (1.0f - a[H + k]) * n + a[H + k] * h_prev[k];
  }
}

// GRU, one row: a (r, z, n) becomes d loss / d gi and gh becomes d loss / d gh, in place; carry gets
// the part of d loss / d h_{t-1} that does not go through W_hh.
ROW void gru_backward(float* __restrict a, float* __restrict gh, const float* __restrict h_prev,
                      const float* __restrict dh_in, const float* __restrict dh_next, float* __restrict carry,
                      int64_t H) {
  for (int64_t k = 0; k < H; ++k) {
    const float r = a[k], z = a[H + k], n = a[2 * H + k], ghn = gh[2 * H + k];
    const float dh = dh_next[k] + dh_in[k];
    const float dn = dh * (1.0f - z) * (1.0f - n * n);
    const float dr = dn * ghn * r * (1.0f - r);
    const float dz = dh * (h_prev[k] - n) * z * (1.0f - z);
    carry[k] = dh * z;
    a[k] = dr;
    a[H + k] = dz;
    a[2 * H + k] = dn;
    gh[k] = dr;
    gh[H + k] = dz;
    gh[2 * H + k] = dn * r;
  }
}

// Cross-entropy of one scored row: its logits z (without the head's bias) become d loss / d logits times
// scale, in place; returns the row's loss.
ROW double softmax_row(float* __restrict z, const float* __restrict bias, int64_t target, int64_t O, float scale) {
  float top = -INFINITY;
  for (int64_t j = 0; j < O; ++j) {
    z[j] += bias[j];
    top = z[j] > top ? z[j] : top;
  }
  const float picked = z[target];
  float total = 0.0f;
  for (int64_t j = 0; j < O; ++j) {
    z[j] = exp_clamped(z[j] - top);
    total += z[j];
  }
  const float norm = scale / total;
  for (int64_t j = 0; j < O; ++j) z[j] *= norm;
  z[target] -= scale;
  return std::log(static_cast<double>(total)) + top - picked;
}

// ---------------------------------------------------------------------------------------------
// One GEMM on raw row-major matrices: C (m x n) = op(A) op(B) (+ C when accumulate), op(X) = X or its
// transpose; lda, ldb, ldc are the row strides. On the calling thread alone.

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) {
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    }
    return;
  }
  if (sgemm_ != nullptr && at::hasMKL()) {  // column-major: C^T = op(B)^T op(A)^T
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
    const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    sgemm_(&ta, &tb, &M, &N, &K, &one, b, &LDA, a, &LDB, &beta, c, &LDC);
    return;
  }
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor A = trans_a ? at::from_blob(const_cast<float*>(a), {k, m}, {lda, 1}, options).t()
                               : at::from_blob(const_cast<float*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor B = trans_b ? at::from_blob(const_cast<float*>(b), {n, k}, {ldb, 1}, options).t()
                               : at::from_blob(const_cast<float*>(b), {k, n}, {ldb, 1}, options);
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, options);
  if (accumulate) {
    C.addmm_(A, B);
  } else {
    at::mm_out(C, A, B);
  }
}

// ---------------------------------------------------------------------------------------------
// The step's arguments, checked, as raw pointers per model; its scratch; and the work split.

// One model's slice of a stacked [K, ...] tensor.
struct Stacked {
  float* base = nullptr;
  int64_t each = 0;  // elements per model
  float* at(int64_t k) const { return base + k * each; }
};

Stacked stacked(const at::Tensor& t) { return {t.data_ptr<float>(), t.numel() / t.size(0)}; }

enum Param { kEmb, kWih, kWhh, kBih, kBhh, kHeadW, kHeadB, kParams };

struct Tile {  // rows b0 .. b1 of model k at every step
  int64_t k, b0, b1;
};

struct Step {
  const char* op;
  int64_t K, T, B, N, H, G, O, V, E;  // E: input features (the embedding's width, or V for one-hot input)
  bool embedded;
  const int64_t* tok;  // [K, T, B]: time-major copies of the [K, B, T] arguments
  const int64_t* tgt;
  std::array<Stacked, kParams> w, g;  // weights and grads (kEmb unset without an embedding)
  std::vector<Tile> tiles;            // the recurrence's work
  std::vector<Tile> jobs;             // the weight gradients' work: model k, w_hh grad rows b0 .. b1
  std::vector<int64_t> scored;        // per model: positions with a target
  std::vector<double> loss;           // per tile
  std::vector<float> zeros;           // h_{-1} and c_{-1}: real rows keep the loops branch-free
  std::vector<at::Tensor> keep;       // contiguous copies of the inputs, alive for the call
};

void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& like, const char* name) {
  TORCH_CHECK(grad.sizes() == like.sizes() && grad.is_contiguous() && grad.scalar_type() == at::kFloat, op,
              ": grad for ", name, " must be a contiguous float tensor shaped like it");
}

// Split n into `parts` near-equal ranges: the i-th is [begin(i), begin(i + 1)).
int64_t split_at(int64_t n, int64_t parts, int64_t i) { return n * i / parts; }

// Tiles: each model's B rows in m ranges, where m makes K * m a multiple of the threads (so that no
// thread waits for a last round), with at least 8 rows a tile.
std::vector<Tile> make_tiles(int64_t K, int64_t B, int64_t threads) {
  int64_t m = threads / std::gcd(K, threads);
  m = std::max<int64_t>(1, std::min(m, B / 8));
  std::vector<Tile> tiles;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t i = 0; i < m; ++i) tiles.push_back({k, split_at(B, m, i), split_at(B, m, i + 1)});
  }
  return tiles;
}

// The weight gradients' jobs: one per model, or each model's gradient rows split over the threads.
std::vector<Tile> make_jobs(int64_t K, int64_t G, int64_t threads) {
  const int64_t m = std::max<int64_t>(1, threads / std::gcd(K, threads));
  std::vector<Tile> jobs;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t i = 0; i < m; ++i) jobs.push_back({k, split_at(G, m, i), split_at(G, m, i + 1)});
  }
  return jobs;
}

// The prologue both cells share: check the arguments (gates: 4 for an LSTM, 3 for a GRU), take their
// sizes and pointers, and split the work.
Step check_step(const char* op, int64_t gates, const at::Tensor& tokens, const at::Tensor& targets,
                const std::optional<at::Tensor>& embedding, const std::array<const at::Tensor*, 6>& weights,
                at::TensorList grads) {
  TORCH_CHECK(tokens.dim() == 3 && tokens.sizes() == targets.sizes(), op,
              ": tokens and targets must both be [K, B, T]");
  TORCH_CHECK(tokens.scalar_type() == at::kLong && targets.scalar_type() == at::kLong, op,
              ": tokens and targets must be int64");
  Step s;
  s.op = op;
  s.embedded = embedding.has_value();
  s.K = tokens.size(0), s.B = tokens.size(1), s.T = tokens.size(2), s.N = s.T * s.B;
  const at::Tensor& w_hh = *weights[kWhh - 1];
  TORCH_CHECK(w_hh.dim() == 3 && w_hh.scalar_type() == at::kFloat, op, ": float32 weights stacked [K, ...] only");
  s.H = w_hh.size(2), s.G = w_hh.size(1), s.O = weights[kHeadW - 1]->size(1);
  TORCH_CHECK(s.G == gates * s.H, op, ": w_hh has the wrong shape for this cell");
  TORCH_CHECK(static_cast<int64_t>(grads.size()) == (s.embedded ? 7 : 6), op, ": one grad per parameter");
  static const char* names[kParams] = {"embedding", "w_ih", "w_hh", "b_ih", "b_hh", "head_w", "head_b"};
  for (int p = s.embedded ? kEmb : kWih; p < kParams; ++p) {
    const at::Tensor& weight = p == kEmb ? *embedding : *weights[p - 1];
    TORCH_CHECK(weight.size(0) == s.K && weight.is_contiguous() && weight.scalar_type() == at::kFloat, op,
                ": every weight must be a contiguous float tensor [K, ...]");
    const at::Tensor& grad = grads[p - (s.embedded ? 0 : 1)];
    check_grad(op, grad, weight, names[p]);
    s.w[p] = stacked(weight);
    s.g[p] = stacked(grad);
  }
  s.E = weights[kWih - 1]->size(2);
  s.V = s.embedded ? embedding->size(1) : s.E;
  s.keep = {tokens.transpose(1, 2).contiguous(), targets.transpose(1, 2).contiguous()};  // time-major, as below
  s.tok = s.keep[0].data_ptr<int64_t>();
  s.tgt = s.keep[1].data_ptr<int64_t>();
  for (int64_t n = 0; n < s.K * s.N; ++n) {
    TORCH_CHECK(s.tok[n] >= 0 && s.tok[n] < s.V, op, ": token id ", s.tok[n], " out of range");
    TORCH_CHECK(s.tgt[n] == kIgnore || (s.tgt[n] >= 0 && s.tgt[n] < s.O), op, ": target ", s.tgt[n], " out of range");
  }
  s.scored.assign(s.K, 0);
  for (int64_t k = 0; k < s.K; ++k) {
    for (int64_t n = 0; n < s.N; ++n) s.scored[k] += s.tgt[k * s.N + n] != kIgnore;
  }
  const int64_t threads = at::get_num_threads();
  s.tiles = make_tiles(s.K, s.B, threads);
  s.jobs = make_jobs(s.K, s.G, threads);
  s.loss.assign(s.tiles.size(), 0.0);
  s.zeros.assign(s.H, 0.0f);
  return s;
}

// Scratch tensors kept between calls, one per slot: a step allocates nothing large, so its
// memory stays mapped and cached (fresh buffers cost page faults on every step).
float* scratch(int slot, int64_t size) {
  thread_local std::array<at::Tensor, 12> kept;
  at::Tensor& t = kept.at(slot);
  if (!t.defined()) t = at::empty({0}, at::kFloat);
  t.resize_({size});
  return t.data_ptr<float>();
}

// A pass over [0, n): body(i) for each i.
template <typename F>
struct Pass {
  int64_t n;
  const F& body;
};

template <typename F>
void run_pass(const Pass<F>& pass) {
#pragma omp for schedule(static)
  for (int64_t i = 0; i < pass.n; ++i) pass.body(i);
}

// Runs each pass in turn in one parallel region (a barrier after each), its i shared out over torch's
// threads in contiguous runs, every thread with the caller's thread-local state (grad mode off, for
// the BLAS fallback's ATen calls) and floating-point mode. Always a region of all the threads, even for
// n = 1, so that the BLAS runs single-threaded on each; without OpenMP (no -fopenmp), serially.
template <typename... F>
void passes(const Pass<F>&... each_pass) {
  const at::ThreadLocalState caller;
  const int threads = static_cast<int>(at::get_num_threads());
#if defined(__SSE__)
  const unsigned int csr = _mm_getcsr();  // flush-to-zero and denormals-are-zero (torch.set_flush_denormal)
#endif
#pragma omp parallel num_threads(threads)
  {
    const at::ThreadLocalStateGuard same(caller);
#if defined(__SSE__)
    const unsigned int own_csr = _mm_getcsr();
    _mm_setcsr(csr);  // the caller's: a worker thread's own keeps denormals, ~3x slower arithmetic on them
#endif
    const int before = MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : 0;
    (run_pass(each_pass), ...);
    if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(before);
#if defined(__SSE__)
    _mm_setcsr(own_csr);
#endif
  }
}

// One pass (`passes`).
template <typename F>
void each(int64_t n, const F& body) {
  passes(Pass<F>{n, body});
}

// ---------------------------------------------------------------------------------------------
// The stages both cells share.

// Input projection as a table per model, one row per token id: embedding @ w_ih^T + bias (w_ih^T +
// bias for one-hot input), so that the forward pass copies rows instead of multiplying by w_ih. An
// LSTM's b_hh adds to the same pre-activations as b_ih, so its table takes both; a GRU's does not.
void input_tables(const Step& s, float* table, bool with_b_hh) {
  each(s.K, [&](int64_t k) {
    float* tk = table + k * s.V * s.G;
    const float* w_ih = s.w[kWih].at(k);
    if (s.embedded) {
      gemm(false, true, s.V, s.G, s.E, s.w[kEmb].at(k), s.E, w_ih, s.E, false, tk, s.G);
    } else {
      for (int64_t v = 0; v < s.V; ++v) {
        for (int64_t j = 0; j < s.G; ++j) tk[v * s.G + j] = w_ih[j * s.E + v];
      }
    }
    const float* b_ih = s.w[kBih].at(k);
    const float* b_hh = s.w[kBhh].at(k);
    for (int64_t v = 0; v < s.V; ++v) {
      float* row = tk + v * s.G;
      for (int64_t j = 0; j < s.G; ++j) row[j] += with_b_hh ? b_ih[j] + b_hh[j] : b_ih[j];
    }
  });
}

// The tile's rows at step t start as their tokens' table rows: the input-side pre-activations.
void gather_inputs(const Step& s, const Tile& tile, const float* table, float* act, int64_t t) {
  const int64_t* tok = s.tok + tile.k * s.N + t * s.B;
  const float* tk = table + tile.k * s.V * s.G;
  float* ak = act + (tile.k * s.N + t * s.B) * s.G;
  for (int64_t b = tile.b0; b < tile.b1; ++b) std::memcpy(ak + b * s.G, tk + tok[b] * s.G, s.G * sizeof(float));
}

// Head and loss of the tile's rows (every step), and d loss / d h_t from the head: d_logits gets the
// logits, which become d loss / d logits (the model's mean over its scored positions).
void head_and_loss(Step& s, int64_t index, const float* out, float* d_logits, float* d_out) {
  const Tile& tile = s.tiles[index];
  const int64_t k = tile.k, rows = tile.b1 - tile.b0, O = s.O, H = s.H;
  const float* head_w = s.w[kHeadW].at(k);
  const float* head_b = s.w[kHeadB].at(k);
  const double scale = 1.0 / static_cast<double>(std::max<int64_t>(s.scored[k], 1));
  double loss = 0.0;
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t first = k * s.N + t * s.B + tile.b0;  // the tile's first row at step t
    float* z = d_logits + first * O;
    gemm(false, true, rows, O, H, out + first * H, H, head_w, H, false, z, O);
    for (int64_t r = 0; r < rows; ++r) {
      float* zn = z + r * O;
      const int64_t target = s.tgt[first + r];
      if (target == kIgnore) {
        std::fill(zn, zn + O, 0.0f);
        continue;
      }
      loss += softmax_row(zn, head_b, target, O, static_cast<float>(scale));
    }
    gemm(false, false, rows, H, O, z, O, head_w, H, false, d_out + first * H, H);
  }
  s.loss[index] = loss * scale;
}

// The weight gradients of one job (a model, and a range of w_hh's gradient rows): the recurrent-side
// gradients d_rec of steps 1 .. T-1 times h_0 .. h_{T-2} (step 0 saw h_{-1} = 0); the job that starts
// at row 0 also takes the head's grads and the table's (b_ih's, w_ih's and the embedding's).
void weight_grads(const Step& s, const Tile& job, const float* d_rec, const float* act, const float* out,
                  const float* d_logits, float* d_table) {
  const int64_t k = job.k, N = s.N, B = s.B, H = s.H, G = s.G, O = s.O;
  const float* rec = d_rec + k * N * G;
  const float* hk = out + k * N * H;
  gemm(true, false, job.b1 - job.b0, H, N - B, rec + B * G + job.b0, G, hk, H, false, s.g[kWhh].at(k) + job.b0 * H, H);
  if (job.b0 != 0) return;
  const float* dz = d_logits + k * N * O;
  gemm(true, false, O, H, N, dz, O, hk, H, false, s.g[kHeadW].at(k), H);
  float* head_b = s.g[kHeadB].at(k);
  std::fill(head_b, head_b + O, 0.0f);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < O; ++j) head_b[j] += dz[n * O + j];
  }
  // back through the table: scatter the input-side gradients onto their tokens' rows
  float* dt = d_table + k * s.V * G;
  std::fill(dt, dt + s.V * G, 0.0f);
  const float* ak = act + k * N * G;
  const int64_t* tok = s.tok + k * N;
  for (int64_t n = 0; n < N; ++n) {
    float* __restrict row = dt + tok[n] * G;
    const float* __restrict d = ak + n * G;
    for (int64_t j = 0; j < G; ++j) row[j] += d[j];
  }
  float* b_ih = s.g[kBih].at(k);
  std::fill(b_ih, b_ih + G, 0.0f);
  for (int64_t v = 0; v < s.V; ++v) {
    for (int64_t j = 0; j < G; ++j) b_ih[j] += dt[v * G + j];
  }
  if (s.embedded) {
    gemm(true, false, G, s.E, s.V, dt, G, s.w[kEmb].at(k), s.E, false, s.g[kWih].at(k), s.E);
    gemm(false, false, s.V, s.E, G, dt, G, s.w[kWih].at(k), s.E, false, s.g[kEmb].at(k), s.E);
  } else {
    float* w_ih = s.g[kWih].at(k);
    for (int64_t j = 0; j < G; ++j) {
      for (int64_t v = 0; v < s.V; ++v) w_ih[j * s.E + v] = dt[v * G + j];
    }
  }
}

at::Tensor losses_of(const Step& s) {
  std::vector<double> total(s.K, 0.0);
  for (size_t i = 0; i < s.tiles.size(); ++i) total[s.tiles[i].k] += s.loss[i];  // in tile order
  at::Tensor losses = at::empty({s.K}, at::kFloat);
  float* each_loss = losses.data_ptr<float>();
  for (int64_t k = 0; k < s.K; ++k) each_loss[k] = static_cast<float>(total[k]);
  return losses;
}

// The scratch both cells use (each cell adds its own state: slots 3, 4 and 8).
struct Buffers {
  float *table, *act, *out, *d_logits, *d_out, *d_h, *d_table;
  explicit Buffers(const Step& s)
      : table(scratch(0, s.K * s.V * s.G)),
        act(scratch(1, s.K * s.N * s.G)),
        out(scratch(2, s.K * s.N * s.H)),
        d_logits(scratch(5, s.K * s.N * s.O)),
        d_out(scratch(6, s.K * s.N * s.H)),
        d_h(scratch(7, s.K * s.B * s.H)),
        d_table(scratch(9, s.K * s.V * s.G)) {}
};

// ---------------------------------------------------------------------------------------------
// LSTM

// The tile's forward recurrence: table rows plus h_{t-1} W_hh^T become gate activations, then c_t and h_t.
void lstm_forward(const Step& s, const Tile& tile, const float* table, float* act, float* out, float* cell,
                  float* tcell) {
  const int64_t k = tile.k, B = s.B, H = s.H, G = s.G, rows = tile.b1 - tile.b0;
  const float* w_hh = s.w[kWhh].at(k);
  for (int64_t t = 0; t < s.T; ++t) {
    gather_inputs(s, tile, table, act, t);
    const int64_t first = k * s.N + t * B + tile.b0;
    if (t > 0) gemm(false, true, rows, G, H, out + (first - B) * H, H, w_hh, H, true, act + first * G, G);
    for (int64_t n = first; n < first + rows; ++n) {
      float* a = act + n * G;
      lstm_gates(a, H);
      const float* c_prev = t > 0 ? cell + (n - B) * H : s.zeros.data();
      cell_forward(a, c_prev, cell + n * H, tcell + n * H, out + n * H, H);
    }
  }
}

// The tile's backward recurrence: act ends as d loss / d (gate pre-activations) for every row. Input
// and recurrent side add into the same pre-activations, so act is the gradient of both.
void lstm_backward(const Step& s, const Tile& tile, float* act, const float* cell, const float* tcell,
                   const float* d_out, float* d_h, float* d_c) {
  const int64_t k = tile.k, B = s.B, H = s.H, G = s.G, rows = tile.b1 - tile.b0;
  const float* w_hh = s.w[kWhh].at(k);
  float* dh = d_h + (k * B + tile.b0) * H;  // d loss / d h_t through W_hh, from step t + 1
  float* dc = d_c + (k * B + tile.b0) * H;
  std::fill(dh, dh + rows * H, 0.0f);
  std::fill(dc, dc + rows * H, 0.0f);
  for (int64_t t = s.T - 1; t >= 0; --t) {
    const int64_t first = k * s.N + t * B + tile.b0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = first + r;
      const float* c_prev = t > 0 ? cell + (n - B) * H : s.zeros.data();
      cell_backward(act + n * G, tcell + n * H, c_prev, d_out + n * H, dh + r * H, dc + r * H, H);
    }
    if (t > 0) gemm(false, false, rows, H, G, act + first * G, G, w_hh, H, false, dh, H);
  }
}

// grads (written in place, contiguous, [K, ...] like the weights): embedding (when given), w_ih, w_hh,
// b_ih, b_hh, head_w, head_b: the order of StackedModel.parameters(). Returns each model's mean loss
// over its scored positions, [K].
at::Tensor lstm_train_step(const at::Tensor& tokens, const at::Tensor& targets, const std::optional<at::Tensor>& embedding,
                           const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                           const at::Tensor& head_w, const at::Tensor& head_b, at::TensorList grads) {
  Step s = check_step("lstm_train_step", 4, tokens, targets, embedding, {&w_ih, &w_hh, &b_ih, &b_hh, &head_w, &head_b},
                      grads);
  const Buffers x(s);
  float* cell = scratch(3, s.K * s.N * s.H);
  float* tcell = scratch(4, s.K * s.N * s.H);
  float* d_c = scratch(8, s.K * s.B * s.H);
  input_tables(s, x.table, true);
  const auto tiles = [&](int64_t i) {
    const Tile& tile = s.tiles[i];
    lstm_forward(s, tile, x.table, x.act, x.out, cell, tcell);
    head_and_loss(s, i, x.out, x.d_logits, x.d_out);
    lstm_backward(s, tile, x.act, cell, tcell, x.d_out, x.d_h, d_c);
  };
  const auto jobs = [&](int64_t i) {
    const Tile& job = s.jobs[i];
    weight_grads(s, job, x.act, x.act, x.out, x.d_logits, x.d_table);
    if (job.b0 == 0) std::copy_n(s.g[kBih].at(job.k), s.G, s.g[kBhh].at(job.k));  // both biases: one grad
  };
  passes(Pass<decltype(tiles)>{static_cast<int64_t>(s.tiles.size()), tiles},
         Pass<decltype(jobs)>{static_cast<int64_t>(s.jobs.size()), jobs});
  return losses_of(s);
}

// ---------------------------------------------------------------------------------------------
// GRU

// The tile's forward recurrence: gh from h_{t-1} (b_hh alone at t = 0, where h_{-1} = 0), then r, z, n, h_t.
void gru_forward(const Step& s, const Tile& tile, const float* table, float* act, float* out, float* gh) {
  const int64_t k = tile.k, B = s.B, H = s.H, G = s.G, rows = tile.b1 - tile.b0;
  const float* w_hh = s.w[kWhh].at(k);
  const float* b_hh = s.w[kBhh].at(k);
  for (int64_t t = 0; t < s.T; ++t) {
    gather_inputs(s, tile, table, act, t);
    const int64_t first = k * s.N + t * B + tile.b0;
    for (int64_t n = first; n < first + rows; ++n) std::memcpy(gh + n * G, b_hh, G * sizeof(float));
    if (t > 0) gemm(false, true, rows, G, H, out + (first - B) * H, H, w_hh, H, true, gh + first * G, G);
    for (int64_t n = first; n < first + rows; ++n) {
      const float* h_prev = t > 0 ? out + (n - B) * H : s.zeros.data();
      gru_forward(act + n * G, gh + n * G, h_prev, out + n * H, H);
    }
  }
}

// The tile's backward recurrence: act ends as d loss / d gi and gh as d loss / d gh for every row.
void gru_backward(const Step& s, const Tile& tile, float* act, float* gh, const float* out, const float* d_out,
                  float* d_h, float* carry) {
  const int64_t k = tile.k, B = s.B, H = s.H, G = s.G, rows = tile.b1 - tile.b0;
  const float* w_hh = s.w[kWhh].at(k);
  float* dh = d_h + (k * B + tile.b0) * H;  // d loss / d h_t from step t + 1
  float* cy = carry + (k * B + tile.b0) * H;
  std::fill(dh, dh + rows * H, 0.0f);
  for (int64_t t = s.T - 1; t >= 0; --t) {
    const int64_t first = k * s.N + t * B + tile.b0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = first + r;
      const float* h_prev = t > 0 ? out + (n - B) * H : s.zeros.data();
      gru_backward(act + n * G, gh + n * G, h_prev, d_out + n * H, dh + r * H, cy + r * H, H);
    }
    if (t == 0) break;
    std::memcpy(dh, cy, rows * H * sizeof(float));
    gemm(false, false, rows, H, G, gh + first * G, G, w_hh, H, true, dh, H);
  }
}

// As lstm_train_step.
at::Tensor gru_train_step(const at::Tensor& tokens, const at::Tensor& targets, const std::optional<at::Tensor>& embedding,
                          const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                          const at::Tensor& head_w, const at::Tensor& head_b, at::TensorList grads) {
  Step s = check_step("gru_train_step", 3, tokens, targets, embedding, {&w_ih, &w_hh, &b_ih, &b_hh, &head_w, &head_b},
                      grads);
  const Buffers x(s);
  float* gh = scratch(3, s.K * s.N * s.G);
  float* carry = scratch(8, s.K * s.B * s.H);
  input_tables(s, x.table, false);
  const auto tiles = [&](int64_t i) {
    const Tile& tile = s.tiles[i];
    gru_forward(s, tile, x.table, x.act, x.out, gh);
    head_and_loss(s, i, x.out, x.d_logits, x.d_out);
    gru_backward(s, tile, x.act, gh, x.out, x.d_out, x.d_h, carry);
  };
  const auto jobs = [&](int64_t i) {
    const Tile& job = s.jobs[i];
    weight_grads(s, job, gh, x.act, x.out, x.d_logits, x.d_table);
    if (job.b0 != 0) return;
    float* b_hh = s.g[kBhh].at(job.k);  // b_hh sits inside r * (...): its grad is gh's column sum
    const float* ghk = gh + job.k * s.N * s.G;
    std::fill(b_hh, b_hh + s.G, 0.0f);
    for (int64_t n = 0; n < s.N; ++n) {
      for (int64_t j = 0; j < s.G; ++j) b_hh[j] += ghk[n * s.G + j];
    }
  };
  passes(Pass<decltype(tiles)>{static_cast<int64_t>(s.tiles.size()), tiles},
         Pass<decltype(jobs)>{static_cast<int64_t>(s.jobs.size()), jobs});
  return losses_of(s);
}

// ---------------------------------------------------------------------------------------------
// AdamW

struct AdamStep {
  float decay, b1, b2, step_size, inv_bc2, epsilon, scale;  // scale < 1: the clipping factor
};

// One model's run of n elements: clip (g *= scale), then AdamW's update, in place.
ROW void adam_update(float* __restrict p, float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                     const AdamStep a) {
  if (a.scale < 1.0f) {
    for (int64_t j = 0; j < n; ++j) g[j] *= a.scale;
  }
  for (int64_t j = 0; j < n; ++j) {
    p[j] *= a.decay;
    m[j] += (g[j] - m[j]) * (1.0f - a.b1);
    v[j] = v[j] * a.b2 + (1.0f - a.b2) * g[j] * g[j];
    p[j] -= a.step_size * m[j] / (std::sqrt(v[j]) * a.inv_bc2 + a.epsilon);
  }
}

// The sum of squares of n floats, in double, over 8 running sums (so that the loop vectorizes).
ROW double sum_of_squares(const float* __restrict g, int64_t n) {
  double sums[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) sums[l] += static_cast<double>(g[j + l]) * g[j + l];
  }
  for (; j < n; ++j) sums[0] += static_cast<double>(g[j]) * g[j];
  return ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]));
}

// torch.nn.utils.clip_grad_norm_ of each model's gradients on their own (max_grad_norm[k] > 0), then
// torch.optim.AdamW's update (no amsgrad), model k with lr[k] and weight_decay[k]: every tensor is
// [K, ...], updated in place (the grads left clipped); step counts from 1. Elements are shared out
// over the threads.
void adamw_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
            int64_t step, at::ArrayRef<double> lr, double beta1, double beta2, double eps,
            at::ArrayRef<double> weight_decay, at::ArrayRef<double> max_grad_norm) {
  const int64_t K = static_cast<int64_t>(lr.size());
  TORCH_CHECK(static_cast<int64_t>(weight_decay.size()) == K && static_cast<int64_t>(max_grad_norm.size()) == K,
              "adamw_: one lr, weight_decay and max_grad_norm per model");
  constexpr int64_t kChunk = 4096;
  struct Piece {
    size_t param;
    int64_t begin, end;
  };
  std::vector<Piece> pieces;
  for (size_t index = 0; index < params.size(); ++index) {
    const at::Tensor& p = params[index];
    TORCH_CHECK(p.dim() > 0 && p.size(0) == K, "adamw_: every tensor must be [K, ...], K the number of lrs");
    TORCH_CHECK(p.is_contiguous() && grads[index].is_contiguous() && exp_avgs[index].is_contiguous() &&
                    exp_avg_sqs[index].is_contiguous() && p.numel() == grads[index].numel() &&
                    p.scalar_type() == at::kFloat && grads[index].scalar_type() == at::kFloat,
                "adamw_: contiguous float tensors of matching sizes only");
    for (int64_t begin = 0; begin < p.numel(); begin += kChunk) {
      pieces.push_back({index, begin, std::min(p.numel(), begin + kChunk)});
    }
  }
  std::vector<float> scale(K, 1.0f);  // each model's clipping factor
  const auto clip = [&](int64_t k) {
    if (max_grad_norm[k] <= 0) return;
    double squares = 0.0;
    for (const at::Tensor& grad : grads) {
      const int64_t size = grad.numel() / K;
      squares += sum_of_squares(grad.data_ptr<float>() + k * size, size);
    }
    scale[k] = std::min(1.0f, static_cast<float>(max_grad_norm[k] / (std::sqrt(squares) + 1e-6)));
  };
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float inv_bc2 = static_cast<float>(1.0 / bias_correction2_sqrt), epsilon = static_cast<float>(eps);
  const auto update = [&](int64_t i) {
    const Piece& piece = pieces[i];
    float* p = params[piece.param].data_ptr<float>();
    float* g = grads[piece.param].data_ptr<float>();
    float* m = exp_avgs[piece.param].data_ptr<float>();
    float* v = exp_avg_sqs[piece.param].data_ptr<float>();
    const int64_t each_model = params[piece.param].numel() / K;
    for (int64_t begin = piece.begin; begin < piece.end;) {
      const int64_t k = begin / each_model, end = std::min(piece.end, (k + 1) * each_model);
      const AdamStep a{static_cast<float>(1.0 - lr[k] * weight_decay[k]), b1, b2,
                       static_cast<float>(lr[k] / bias_correction1), inv_bc2, epsilon, scale[k]};
      adam_update(p + begin, g + begin, m + begin, v + begin, end - begin, a);
      begin = end;
    }
  };
  passes(Pass<decltype(clip)>{K, clip}, Pass<decltype(update)>{static_cast<int64_t>(pieces.size()), update});
}

}  // namespace

TORCH_LIBRARY(digitsum, m) {
#define DIGITSUM_STEP_ARGS                                                                                \
  "(Tensor tokens, Tensor targets, Tensor? embedding, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh, " \
  "Tensor head_w, Tensor head_b, Tensor(a!)[] grads) -> Tensor"
  m.def("lstm_train_step" DIGITSUM_STEP_ARGS);
  m.def("gru_train_step" DIGITSUM_STEP_ARGS);
#undef DIGITSUM_STEP_ARGS
  m.def(
      "adamw_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, int step, "
      "float[] lr, float beta1, float beta2, float eps, float[] weight_decay, float[] max_grad_norm) -> ()");
}

TORCH_LIBRARY_IMPL(digitsum, CPU, m) {
  m.impl("lstm_train_step", &lstm_train_step);
  m.impl("gru_train_step", &gru_train_step);
  m.impl("adamw_", &adamw_);
}
