// One training step of a one-layer LSTM or GRU DigitSumModel on the CPU: embedding, recurrence,
// head, cross-entropy, the whole backward pass and gradient clipping in one call; and AdamW's
// update in one more (see digitsum/fused.py).
//
// Why: at batch 32 an eager step is ~60 small ATen ops and ~20 tiny GEMMs, and per-op overhead
// costs more than the arithmetic. Here the GEMMs are the only ATen calls; the gates, the loss and
// every elementwise backward formula are plain loops the compiler vectorizes.
//
// Layout: time-major rows, row n = t * B + b. Gate order as in torch.nn: LSTM i, f, g, o; GRU r, z, n.
//
// K models of one config (train.n_seeds, digitsum/seeds.py) take one call too: *_train_steps runs
// each model's step on its slice k of weights stacked [K, ...], the K models spread over the
// intra-op threads (each model's GEMMs then run single-threaded, which at these sizes they nearly
// are anyway), so one model's computation is exactly what its own run computes with one thread.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

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

float* ptr(const at::Tensor& t) { return t.data_ptr<float>(); }

// Scratch tensors kept between calls, one per slot: a step allocates nothing large, so its
// memory stays mapped and cached (fresh buffers cost page faults on every step).
at::Tensor scratch(int slot, at::IntArrayRef sizes) {
  thread_local std::array<at::Tensor, 10> kept;
  at::Tensor& t = kept.at(slot);
  if (!t.defined()) t = at::empty({0}, at::kFloat);
  t.resize_(sizes);
  return t;
}

void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& like, const char* name) {
  TORCH_CHECK(grad.sizes() == like.sizes() && grad.is_contiguous() && grad.scalar_type() == at::kFloat,
              op, ": grad for ", name, " must be a contiguous float tensor shaped like it");
}

// Mean cross-entropy over the scored positions (as F.cross_entropy with ignore_index); logits
// become d loss / d logits in place.
double cross_entropy_(const char* op, const at::Tensor& logits, const int64_t* tgt) {
  const int64_t N = logits.size(0), O = logits.size(1);
  float* z = ptr(logits);
  double loss_sum = 0.0;
  int64_t scored = 0;
  for (int64_t n = 0; n < N; ++n) {
    float* zn = z + n * O;
    if (tgt[n] == kIgnore) {
      std::fill(zn, zn + O, 0.0f);
      continue;
    }
    TORCH_CHECK(tgt[n] >= 0 && tgt[n] < O, op, ": target ", tgt[n], " out of range");
    float top = zn[0];
    for (int64_t j = 1; j < O; ++j) top = zn[j] > top ? zn[j] : top;
    const float picked = zn[tgt[n]];
    float total = 0.0f;
    for (int64_t j = 0; j < O; ++j) total += (zn[j] = std::exp(zn[j] - top));
    loss_sum += std::log(total) + top - picked;
    for (int64_t j = 0; j < O; ++j) zn[j] /= total;
    zn[tgt[n]] -= 1.0f;
    ++scored;
  }
  logits.div_(static_cast<double>(scored));
  return loss_sum / static_cast<double>(scored);
}

// As torch.nn.utils.clip_grad_norm_(grads, max_norm).
void clip_(std::vector<at::Tensor>& grads, double max_norm) {
  double squares = 0.0;
  for (const at::Tensor& g : grads) {
    const float* p = ptr(g);
    for (int64_t k = 0, size = g.numel(); k < size; ++k) squares += static_cast<double>(p[k]) * p[k];
  }
  const float scale = static_cast<float>(max_norm / (std::sqrt(squares) + 1e-6));
  if (scale < 1.0f) {
    for (const at::Tensor& g : grads) {
      float* p = ptr(g);
      for (int64_t k = 0, size = g.numel(); k < size; ++k) p[k] *= scale;
    }
  }
}

// The parameters of one step, as the ops take them.
struct Params {
  const std::optional<at::Tensor>& embedding;
  const at::Tensor &w_ih, &w_hh, &b_ih, &b_hh, &head_w, &head_b;
};

enum Param { kWih, kWhh, kBih, kBhh, kHeadW, kHeadB };  // the grads after the embedding's

// One step's checked inputs and the sizes every stage uses.
struct Step {
  const char* op;
  at::Tensor tokens, targets;  // contiguous [T, B]
  const int64_t* tok;
  const int64_t* tgt;
  int64_t T, B, N, H, G, O;
  bool embedded;
  std::vector<at::Tensor> grads;  // handles on the caller's tensors
  std::vector<float> zeros;       // h_{-1} and c_{-1}: real rows keep the loops branch-free
  at::Tensor& grad(Param k) { return grads[(embedded ? 1 : 0) + k]; }
};

// The prologue both cells share: check the arguments (gates: 4 for an LSTM, 3 for a GRU) and
// take their sizes.
Step check_step(const char* op, int64_t gates, const at::Tensor& tokens, const at::Tensor& targets, const Params& p,
                at::TensorList grads) {
  TORCH_CHECK(tokens.dim() == 2 && tokens.sizes() == targets.sizes(), op, ": tokens and targets must both be [T, B]");
  TORCH_CHECK(tokens.scalar_type() == at::kLong && targets.scalar_type() == at::kLong, op,
              ": tokens and targets must be int64");
  TORCH_CHECK(p.w_hh.scalar_type() == at::kFloat, op, ": float32 parameters only");
  Step s;
  s.op = op;
  s.embedded = p.embedding.has_value();
  s.grads.assign(grads.begin(), grads.end());
  TORCH_CHECK(static_cast<int64_t>(s.grads.size()) == (s.embedded ? 7 : 6), op, ": one grad per parameter");
  s.tokens = tokens.contiguous();
  s.targets = targets.contiguous();
  s.tok = s.tokens.data_ptr<int64_t>();
  s.tgt = s.targets.data_ptr<int64_t>();
  s.T = s.tokens.size(0), s.B = s.tokens.size(1), s.N = s.T * s.B;
  s.H = p.w_hh.size(1), s.G = p.w_hh.size(0), s.O = p.head_w.size(0);
  TORCH_CHECK(s.G == gates * s.H, op, ": w_hh has the wrong shape for this cell");
  if (s.embedded) check_grad(op, s.grads[0], *p.embedding, "embedding");
  check_grad(op, s.grad(kWih), p.w_ih, "w_ih");
  check_grad(op, s.grad(kWhh), p.w_hh, "w_hh");
  check_grad(op, s.grad(kBih), p.b_ih, "b_ih");
  check_grad(op, s.grad(kBhh), p.b_hh, "b_hh");
  check_grad(op, s.grad(kHeadW), p.head_w, "head_w");
  check_grad(op, s.grad(kHeadB), p.head_b, "head_b");
  s.zeros.assign(s.H, 0.0f);
  return s;
}

// Input projection as a table, one row per token id: embedding @ w_ih^T + bias (w_ih^T + bias
// for one-hot input), so that the forward pass copies rows instead of multiplying by w_ih.
at::Tensor input_table(const Step& s, const Params& p, const at::Tensor& bias) {
  const at::Tensor table = s.embedded ? at::addmm(bias, *p.embedding, p.w_ih.t()) : (p.w_ih.t() + bias).contiguous();
  const int64_t V = table.size(0);
  for (int64_t n = 0; n < s.N; ++n) {
    TORCH_CHECK(s.tok[n] >= 0 && s.tok[n] < V, s.op, ": token id ", s.tok[n], " out of range");
  }
  return table;
}

// The rows of step t start as their tokens' table rows: the input-side pre-activations.
void gather_inputs(const Step& s, const float* table_p, float* act_p, int64_t t) {
  const int64_t B = s.B, G = s.G;
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(act_p + (t * B + b) * G, table_p + s.tok[t * B + b] * G, G * sizeof(float));
  }
}

// Head and loss: d_logits gets the logits, which cross_entropy_ turns into d loss / d logits.
double head_and_loss(const Step& s, const Params& p, const at::Tensor& out, at::Tensor& d_logits) {
  at::addmm_out(d_logits, p.head_b, out, p.head_w.t());
  return cross_entropy_(s.op, d_logits, s.tgt);
}

// Back through the head: its grads, and d loss / d h_t from the head for every row.
at::Tensor head_backward(Step& s, const Params& p, const at::Tensor& d_logits, const at::Tensor& out) {
  at::mm_out(s.grad(kHeadW), d_logits.t(), out);
  at::sum_out(s.grad(kHeadB), d_logits, 0);
  at::Tensor d_out = scratch(5, {s.N, s.H});
  at::mm_out(d_out, d_logits, p.head_w);
  return d_out;
}

// W_hh's grad from the recurrent-side gradients d_rec of steps 1 .. T-1 and h_0 .. h_{T-2}; step 0
// saw h_{-1} = 0.
void w_hh_grad(Step& s, const at::Tensor& d_rec, const at::Tensor& out) {
  if (s.T > 1) {
    at::mm_out(s.grad(kWhh), d_rec.narrow(0, s.B, s.N - s.B).t(), out.narrow(0, 0, s.N - s.B));
  } else {
    s.grad(kWhh).zero_();
  }
}

// Back through the table: scatter the input-side gradients act onto the token rows. b_ih's grad
// is their sum.
at::Tensor table_backward(Step& s, const at::Tensor& table, const at::Tensor& act) {
  const int64_t N = s.N, G = s.G;
  const int64_t* const tok = s.tok;
  at::Tensor d_table = scratch(7, {table.size(0), G}).zero_();
  float* const d_table_p = ptr(d_table);
  const float* const act_p = ptr(act);
  for (int64_t n = 0; n < N; ++n) {
    float* __restrict row = d_table_p + tok[n] * G;
    const float* __restrict d = act_p + n * G;
    for (int64_t j = 0; j < G; ++j) row[j] += d[j];
  }
  at::sum_out(s.grad(kBih), d_table, 0);
  return d_table;
}

// w_ih's grad and, with an embedding, the embedding's, from the table's.
void embedding_backward(Step& s, const Params& p, const at::Tensor& d_table) {
  if (s.embedded) {
    at::mm_out(s.grad(kWih), d_table.t(), *p.embedding);
    at::mm_out(s.grads[0], d_table, p.w_ih);
  } else {
    s.grad(kWih).copy_(d_table.t());
  }
}

// ---------------------------------------------------------------------------------------------
// LSTM

struct LstmForward {
  at::Tensor act;    // gate activations; later d loss / d (gate pre-activations)
  at::Tensor out;    // h_t
  at::Tensor cell;   // c_t
  at::Tensor tcell;  // tanh(c_t)
};

// Forward recurrence: the table rows plus h_{t-1} W_hh^T become gate activations, then c_t and h_t.
LstmForward lstm_forward(const Step& s, const Params& p, const at::Tensor& table) {
  const int64_t T = s.T, B = s.B, N = s.N, H = s.H, G = s.G;
  LstmForward f{scratch(0, {N, G}), scratch(1, {N, H}), scratch(2, {N, H}), scratch(3, {N, H})};
  const at::Tensor w_hh_t = p.w_hh.t();
  float* const act_p = ptr(f.act);
  float* const out_p = ptr(f.out);
  float* const cell_p = ptr(f.cell);
  float* const tcell_p = ptr(f.tcell);
  const float* const table_p = ptr(table);
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor a_t = f.act.narrow(0, t * B, B);
    gather_inputs(s, table_p, act_p, t);
    if (t > 0) at::addmm_out(a_t, a_t, f.out.narrow(0, (t - 1) * B, B), w_hh_t);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = t * B + b;
      float* a = act_p + n * G;
      lstm_gates(a, H);
      const float* c_prev = t > 0 ? cell_p + (n - B) * H : s.zeros.data();
      cell_forward(a, c_prev, cell_p + n * H, tcell_p + n * H, out_p + n * H, H);
    }
  }
  return f;
}

// Backward recurrence: act ends as d loss / d (gate pre-activations) for every row. Input and
// recurrent side add into the same pre-activations, so act is the gradient of both.
void lstm_backward(Step& s, const Params& p, const LstmForward& f, const at::Tensor& d_out) {
  const int64_t T = s.T, B = s.B, H = s.H, G = s.G;
  at::Tensor d_h = scratch(6, {B, H}).zero_();  // d loss / d h_t through W_hh, from step t + 1
  std::vector<float> d_c(B * H, 0.0f);
  float* const act_p = ptr(f.act);
  const float* const cell_p = ptr(f.cell);
  const float* const tcell_p = ptr(f.tcell);
  const float* const d_out_p = ptr(d_out);
  float* const d_h_p = ptr(d_h);
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = t * B + b;
      const float* c_prev = t > 0 ? cell_p + (n - B) * H : s.zeros.data();
      cell_backward(act_p + n * G, tcell_p + n * H, c_prev, d_out_p + n * H, d_h_p + b * H, d_c.data() + b * H, H);
    }
    if (t == 0) break;
    at::mm_out(d_h, f.act.narrow(0, t * B, B), p.w_hh);
  }
  w_hh_grad(s, f.act, f.out);
}

// grads (written in place, contiguous): embedding (when given), w_ih, w_hh, b_ih, b_hh, head_w,
// head_b: the order of DigitSumModel.parameters(). With max_grad_norm > 0 they are clipped as by
// torch.nn.utils.clip_grad_norm_. Returns the mean loss over scored positions.
at::Tensor lstm_train_step(const at::Tensor& tokens, const at::Tensor& targets, const std::optional<at::Tensor>& embedding,
                           const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                           const at::Tensor& head_w, const at::Tensor& head_b, at::TensorList grads, double max_grad_norm) {
  const Params p{embedding, w_ih, w_hh, b_ih, b_hh, head_w, head_b};
  Step s = check_step("lstm_train_step", 4, tokens, targets, p, grads);
  // An LSTM's b_hh adds to the same pre-activations as b_ih, so the table takes both.
  const at::Tensor table = input_table(s, p, b_ih + b_hh);
  const LstmForward f = lstm_forward(s, p, table);
  at::Tensor d_logits = scratch(4, {s.N, s.O});
  const double loss = head_and_loss(s, p, f.out, d_logits);
  const at::Tensor d_out = head_backward(s, p, d_logits, f.out);
  lstm_backward(s, p, f, d_out);
  const at::Tensor d_table = table_backward(s, table, f.act);
  s.grad(kBhh).copy_(s.grad(kBih));  // both biases sit in the table: the same grad
  embedding_backward(s, p, d_table);
  if (max_grad_norm > 0) clip_(s.grads, max_grad_norm);
  return at::scalar_tensor(loss, w_hh.options());
}

// ---------------------------------------------------------------------------------------------
// GRU

struct GruForward {
  at::Tensor act;  // r, z, n; later d loss / d gi (the input-side pre-activations)
  at::Tensor out;  // h_t
  at::Tensor gh;   // h_{t-1} W_hh^T + b_hh; later its gradient
};

// Forward recurrence: gh from h_{t-1} (b_hh alone at t = 0, where h_{-1} = 0), then r, z, n and h_t.
GruForward gru_forward_pass(const Step& s, const Params& p, const at::Tensor& table) {
  const int64_t T = s.T, B = s.B, N = s.N, H = s.H, G = s.G;
  GruForward f{scratch(0, {N, G}), scratch(1, {N, H}), scratch(8, {N, G})};
  const at::Tensor w_hh_t = p.w_hh.t();
  float* const act_p = ptr(f.act);
  float* const out_p = ptr(f.out);
  float* const gh_p = ptr(f.gh);
  const float* const table_p = ptr(table);
  for (int64_t t = 0; t < T; ++t) {
    gather_inputs(s, table_p, act_p, t);
    at::Tensor gh_t = f.gh.narrow(0, t * B, B);
    if (t > 0) {
      at::addmm_out(gh_t, p.b_hh, f.out.narrow(0, (t - 1) * B, B), w_hh_t);
    } else {
      gh_t.copy_(p.b_hh.expand({B, G}));
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = t * B + b;
      const float* h_prev = t > 0 ? out_p + (n - B) * H : s.zeros.data();
      gru_forward(act_p + n * G, gh_p + n * G, h_prev, out_p + n * H, H);
    }
  }
  return f;
}

// Backward recurrence: act ends as d loss / d gi and gh as d loss / d gh for every row.
void gru_backward_pass(Step& s, const Params& p, const GruForward& f, const at::Tensor& d_out) {
  const int64_t T = s.T, B = s.B, H = s.H, G = s.G;
  at::Tensor d_h = scratch(6, {B, H}).zero_();  // d loss / d h_t from step t + 1
  at::Tensor carry = scratch(9, {B, H});        // d loss / d h_{t-1} not through W_hh
  float* const act_p = ptr(f.act);
  float* const gh_p = ptr(f.gh);
  const float* const out_p = ptr(f.out);
  const float* const d_out_p = ptr(d_out);
  float* const d_h_p = ptr(d_h);
  float* const carry_p = ptr(carry);
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = t * B + b;
      const float* h_prev = t > 0 ? out_p + (n - B) * H : s.zeros.data();
      gru_backward(act_p + n * G, gh_p + n * G, h_prev, d_out_p + n * H, d_h_p + b * H, carry_p + b * H, H);
    }
    if (t == 0) break;
    at::addmm_out(d_h, carry, f.gh.narrow(0, t * B, B), p.w_hh);
  }
  w_hh_grad(s, f.gh, f.out);
}

// As lstm_train_step.
at::Tensor gru_train_step(const at::Tensor& tokens, const at::Tensor& targets, const std::optional<at::Tensor>& embedding,
                          const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                          const at::Tensor& head_w, const at::Tensor& head_b, at::TensorList grads, double max_grad_norm) {
  const Params p{embedding, w_ih, w_hh, b_ih, b_hh, head_w, head_b};
  Step s = check_step("gru_train_step", 3, tokens, targets, p, grads);
  // A GRU's b_hh sits inside r * (...), so it stays in the recurrent part (gh), not in the table.
  const at::Tensor table = input_table(s, p, b_ih);
  const GruForward f = gru_forward_pass(s, p, table);
  at::Tensor d_logits = scratch(4, {s.N, s.O});
  const double loss = head_and_loss(s, p, f.out, d_logits);
  const at::Tensor d_out = head_backward(s, p, d_logits, f.out);
  gru_backward_pass(s, p, f, d_out);
  const at::Tensor d_table = table_backward(s, table, f.act);
  at::sum_out(s.grad(kBhh), f.gh, 0);
  embedding_backward(s, p, d_table);
  if (max_grad_norm > 0) clip_(s.grads, max_grad_norm);
  return at::scalar_tensor(loss, w_hh.options());
}

// K models' steps in one call: every argument stacked on a leading K axis (tokens, targets
// [K, T, B]); model k's step is `step` (lstm_train_step or gru_train_step) on the slices k.
// Returns the K mean losses.
using StepFn = at::Tensor (*)(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, at::TensorList, double);

template <StepFn step>
at::Tensor train_steps(const at::Tensor& tokens, const at::Tensor& targets, const std::optional<at::Tensor>& embedding,
                       const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                       const at::Tensor& head_w, const at::Tensor& head_b, at::TensorList grads,
                       double max_grad_norm) {
  constexpr const char* op = "train_steps";
  TORCH_CHECK(tokens.dim() == 3 && tokens.sizes() == targets.sizes(), op, ": tokens and targets must both be [K, T, B]");
  const int64_t K = tokens.size(0);
  for (const at::Tensor& t : {w_ih, w_hh, b_ih, b_hh, head_w, head_b}) {
    TORCH_CHECK(t.size(0) == K && t.is_contiguous(), op, ": every weight must be contiguous [K, ...]");
  }
  for (const at::Tensor& g : grads) TORCH_CHECK(g.dim() > 0 && g.size(0) == K, op, ": every grad must be [K, ...]");
  at::Tensor losses = at::empty({K}, w_hh.options());
  float* out = ptr(losses);
  const at::ThreadLocalState caller;  // grad mode and the rest of the caller's thread-local state
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard same(caller);  // worker threads start with grad mode on
    for (int64_t k = begin; k < end; ++k) {
      std::vector<at::Tensor> mine;
      for (const at::Tensor& g : grads) mine.push_back(g.select(0, k));
      const std::optional<at::Tensor> table = embedding ? std::optional<at::Tensor>(embedding->select(0, k)) : std::nullopt;
      out[k] = step(tokens.select(0, k), targets.select(0, k), table, w_ih.select(0, k), w_hh.select(0, k),
                    b_ih.select(0, k), b_hh.select(0, k), head_w.select(0, k), head_b.select(0, k), mine,
                    max_grad_norm)
                   .item<float>();
    }
  });
  return losses;
}

// torch.optim.AdamW's update (no amsgrad), every tensor in place; step counts from 1.
void adamw_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
            int64_t step, double lr, double beta1, double beta2, double eps, double weight_decay) {
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  const float decay = static_cast<float>(1.0 - lr * weight_decay);
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float inv_bc2 = static_cast<float>(1.0 / bias_correction2_sqrt), epsilon = static_cast<float>(eps);
  for (size_t index = 0; index < params.size(); ++index) {
    TORCH_CHECK(params[index].is_contiguous() && grads[index].is_contiguous() && exp_avgs[index].is_contiguous() &&
                    exp_avg_sqs[index].is_contiguous() && params[index].numel() == grads[index].numel(),
                "adamw_: contiguous tensors of matching sizes only");
    float* __restrict p = ptr(params[index]);
    const float* __restrict g = ptr(grads[index]);
    float* __restrict m = ptr(exp_avgs[index]);
    float* __restrict v = ptr(exp_avg_sqs[index]);
    const int64_t n = params[index].numel();
    for (int64_t k = 0; k < n; ++k) {
      p[k] *= decay;
      m[k] += (g[k] - m[k]) * (1.0f - b1);
      v[k] = v[k] * b2 + (1.0f - b2) * g[k] * g[k];
      p[k] -= step_size * m[k] / (std::sqrt(v[k]) * inv_bc2 + epsilon);
    }
  }
}

}  // namespace

TORCH_LIBRARY(digitsum, m) {
#define DIGITSUM_STEP_ARGS                                                                                \
  "(Tensor tokens, Tensor targets, Tensor? embedding, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh, " \
  "Tensor head_w, Tensor head_b, Tensor(a!)[] grads, float max_grad_norm) -> Tensor"
  m.def("lstm_train_step" DIGITSUM_STEP_ARGS);
  m.def("gru_train_step" DIGITSUM_STEP_ARGS);
  m.def("lstm_train_steps" DIGITSUM_STEP_ARGS);
  m.def("gru_train_steps" DIGITSUM_STEP_ARGS);
#undef DIGITSUM_STEP_ARGS
  m.def(
      "adamw_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, int step, "
      "float lr, float beta1, float beta2, float eps, float weight_decay) -> ()");
}

TORCH_LIBRARY_IMPL(digitsum, CPU, m) {
  m.impl("lstm_train_step", &lstm_train_step);
  m.impl("gru_train_step", &gru_train_step);
  m.impl("lstm_train_steps", &train_steps<&lstm_train_step>);
  m.impl("gru_train_steps", &train_steps<&gru_train_step>);
  m.impl("adamw_", &adamw_);
}
