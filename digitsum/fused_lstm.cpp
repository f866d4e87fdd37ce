// One training step of a one-layer LSTM DigitSumModel on the CPU: embedding, recurrence, head,
// cross-entropy and the whole backward pass in one call (see digitsum/fused.py).
//
// Why: at batch 32 an eager step is ~60 small ATen ops and ~20 tiny GEMMs, and per-op overhead
// costs more than the arithmetic. Here the GEMMs are the only ATen calls; the gates, the loss and
// every elementwise backward formula are plain loops the compiler vectorizes.
//
// Layout: time-major rows, row n = t * B + b. Gate order i, f, g, o as in torch.nn.LSTM.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <array>
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

// c_t, tanh(c_t) and h_t of one row from its gate activations (i, f, g, o: H each).
void cell_forward(const float* __restrict a, const float* __restrict c_prev, float* __restrict c,
                  float* __restrict tc, float* __restrict h, int64_t H) {
  for (int64_t k = 0; k < H; ++k) {
    c[k] = a[H + k] * c_prev[k] + a[k] * a[2 * H + k];
    tc[k] = tanh_(c[k]);
    h[k] = a[3 * H + k] * tc[k];
  }
}

// One row's gate activations ad (i, f, g, o) become the gradients of their pre-activations, in
// place; dc carries d loss / d c from step t to step t - 1.
void cell_backward(float* __restrict ad, const float* __restrict tc, const float* __restrict c_prev,
                   const float* __restrict dh_in, const float* __restrict dh_next, float* __restrict dc, int64_t H) {
  float* __restrict d = ad;
  for (int64_t k = 0; k < H; ++k) {
    const float i = ad[k], f = ad[H + k], g = ad[2 * H + k], o = ad[3 * H + k];
    const float dh = dh_next[k] + dh_in[k];
    const float dck = dc[k] + dh * o * (1.0f - tc[k] * tc[k]);
    d[k] = dck * g * i * (1.0f - i);
    d[H + k] = dck * c_prev[k] * f * (1.0f - f);
    d[2 * H + k] = dck * i * (1.0f - g * g);
    d[3 * H + k] = dh * tc[k] * o * (1.0f - o);
    dc[k] = dck * f;
  }
}

float* ptr(const at::Tensor& t) { return t.data_ptr<float>(); }

// Scratch tensors kept between calls, one per slot: a step allocates nothing large, so its
// memory stays mapped and cached (fresh buffers cost page faults on every step).
at::Tensor scratch(int slot, at::IntArrayRef sizes) {
  thread_local std::array<at::Tensor, 8> kept;
  at::Tensor& t = kept.at(slot);
  if (!t.defined()) t = at::empty({0}, at::kFloat);
  t.resize_(sizes);
  return t;
}

void check_grad(const at::Tensor& grad, const at::Tensor& like, const char* name) {
  TORCH_CHECK(grad.sizes() == like.sizes() && grad.is_contiguous() && grad.scalar_type() == at::kFloat,
              "lstm_train_step: grad for ", name, " must be a contiguous float tensor shaped like it");
}

// grads (written in place, contiguous): embedding (when given), w_ih, w_hh, b_ih, b_hh, head_w,
// head_b: the order of DigitSumModel.parameters(). With max_grad_norm > 0 they are clipped as by
// torch.nn.utils.clip_grad_norm_. Returns the mean loss over scored positions.
at::Tensor lstm_train_step(const at::Tensor& tokens_in, const at::Tensor& targets_in,
                           const std::optional<at::Tensor>& embedding, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                           const at::Tensor& head_w, const at::Tensor& head_b, at::TensorList grad_list,
                           double max_grad_norm) {
  TORCH_CHECK(tokens_in.dim() == 2 && tokens_in.sizes() == targets_in.sizes(),
              "lstm_train_step: tokens and targets must both be [T, B]");
  TORCH_CHECK(w_hh.scalar_type() == at::kFloat, "lstm_train_step: float32 parameters only");
  const bool embedded = embedding.has_value();
  std::vector<at::Tensor> grads(grad_list.begin(), grad_list.end());  // handles on the caller's tensors
  TORCH_CHECK(static_cast<int64_t>(grads.size()) == (embedded ? 7 : 6), "lstm_train_step: one grad per parameter");
  const at::Tensor tokens = tokens_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t T = tokens.size(0), B = tokens.size(1), N = T * B;
  const int64_t H = w_hh.size(1), G = 4 * H, O = head_w.size(0);
  const int e = embedded ? 1 : 0;  // index of w_ih's grad
  if (embedded) check_grad(grads[0], *embedding, "embedding");
  check_grad(grads[e], w_ih, "w_ih");
  check_grad(grads[e + 1], w_hh, "w_hh");
  check_grad(grads[e + 2], b_ih, "b_ih");
  check_grad(grads[e + 3], b_hh, "b_hh");
  check_grad(grads[e + 4], head_w, "head_w");
  check_grad(grads[e + 5], head_b, "head_b");

  // Input projection as a table, one row per token id: embedding @ w_ih^T + both biases.
  const at::Tensor bias = b_ih + b_hh;
  const at::Tensor table = embedded ? at::addmm(bias, *embedding, w_ih.t()) : (w_ih.t() + bias).contiguous();
  const int64_t V = table.size(0);
  const int64_t* tok = tokens.data_ptr<int64_t>();
  const int64_t* tgt = targets.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(tok[n] >= 0 && tok[n] < V, "lstm_train_step: token id ", tok[n], " out of range");
  }

  const auto opts = w_hh.options();
  at::Tensor act = scratch(0, {N, G});    // gate activations i, f, g, o; later their gradients
  at::Tensor out = scratch(1, {N, H});    // h_t
  at::Tensor cell = scratch(2, {N, H});   // c_t
  at::Tensor tcell = scratch(3, {N, H});  // tanh(c_t)
  const at::Tensor w_hh_t = w_hh.t();
  float* const act_p = ptr(act);
  float* const out_p = ptr(out);
  float* const cell_p = ptr(cell);
  float* const tcell_p = ptr(tcell);
  const float* const table_p = ptr(table);
  const std::vector<float> zeros(H, 0.0f);  // c_{-1}: a real row keeps the loops branch-free

  // Forward recurrence.
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor a_t = act.narrow(0, t * B, B);
    for (int64_t b = 0; b < B; ++b) {
      std::memcpy(act_p + (t * B + b) * G, table_p + tok[t * B + b] * G, G * sizeof(float));
    }
    if (t > 0) at::addmm_out(a_t, a_t, out.narrow(0, (t - 1) * B, B), w_hh_t);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = t * B + b;
      float* __restrict a = act_p + n * G;
      for (int64_t j = 0; j < 2 * H; ++j) a[j] = sigmoid(a[j]);
      for (int64_t j = 2 * H; j < 3 * H; ++j) a[j] = tanh_(a[j]);
      for (int64_t j = 3 * H; j < G; ++j) a[j] = sigmoid(a[j]);
      const float* c_prev = t > 0 ? cell_p + (n - B) * H : zeros.data();
      cell_forward(a, c_prev, cell_p + n * H, tcell_p + n * H, out_p + n * H, H);
    }
  }

  // Head and cross-entropy over the scored positions (mean, as F.cross_entropy with ignore_index).
  at::Tensor logits = scratch(4, {N, O});  // becomes d loss / d logits
  at::addmm_out(logits, head_b, out, head_w.t());
  float* z = ptr(logits);
  double loss_sum = 0.0;
  int64_t scored = 0;
  for (int64_t n = 0; n < N; ++n) {
    float* zn = z + n * O;
    if (tgt[n] == kIgnore) {
      std::fill(zn, zn + O, 0.0f);
      continue;
    }
    TORCH_CHECK(tgt[n] >= 0 && tgt[n] < O, "lstm_train_step: target ", tgt[n], " out of range");
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
  const at::Tensor& d_logits = logits;
  at::mm_out(grads[e + 4], d_logits.t(), out);
  at::sum_out(grads[e + 5], d_logits, 0);
  at::Tensor d_out = scratch(5, {N, H});
  at::mm_out(d_out, d_logits, head_w);

  // Backward recurrence; d_gates ends as d loss / d (gate pre-activations).
  const at::Tensor& d_gates = act;
  at::Tensor d_h = scratch(6, {B, H}).zero_();
  std::vector<float> d_c(B * H, 0.0f);
  const float* const d_out_p = ptr(d_out);
  float* const d_h_p = ptr(d_h);
  float* const d_gates_p = ptr(d_gates);
  for (int64_t t = T - 1; t >= 0; --t) {
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = t * B + b;
      const float* c_prev = t > 0 ? cell_p + (n - B) * H : zeros.data();
      cell_backward(act_p + n * G, tcell_p + n * H, c_prev, d_out_p + n * H, d_h_p + b * H, d_c.data() + b * H, H);
    }
    if (t > 0) at::mm_out(d_h, d_gates.narrow(0, t * B, B), w_hh);
  }
  if (T > 1) {
    at::mm_out(grads[e + 1], d_gates.narrow(0, B, N - B).t(), out.narrow(0, 0, N - B));
  } else {
    grads[e + 1].zero_();
  }

  // Back through the table: scatter the gate gradients onto the token rows.
  at::Tensor d_table = scratch(7, {V, G}).zero_();
  float* const d_table_p = ptr(d_table);
  for (int64_t n = 0; n < N; ++n) {
    float* __restrict row = d_table_p + tok[n] * G;
    const float* __restrict d = d_gates_p + n * G;
    for (int64_t j = 0; j < G; ++j) row[j] += d[j];
  }
  at::sum_out(grads[e + 2], d_table, 0);
  grads[e + 3].copy_(grads[e + 2]);
  if (embedded) {
    at::mm_out(grads[e], d_table.t(), *embedding);
    at::mm_out(grads[0], d_table, w_ih);
  } else {
    grads[e].copy_(d_table.t());
  }
  if (max_grad_norm > 0) {
    double squares = 0.0;
    for (const at::Tensor& g : grads) {
      const float* p = ptr(g);
      for (int64_t k = 0, size = g.numel(); k < size; ++k) squares += static_cast<double>(p[k]) * p[k];
    }
    const float scale = static_cast<float>(max_grad_norm / (std::sqrt(squares) + 1e-6));
    if (scale < 1.0f) {
      for (const at::Tensor& g : grads) {
        float* p = ptr(g);
        for (int64_t k = 0, size = g.numel(); k < size; ++k) p[k] *= scale;
      }
    }
  }
  return at::scalar_tensor(loss_sum / static_cast<double>(scored), opts);
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
  m.def(
      "lstm_train_step(Tensor tokens, Tensor targets, Tensor? embedding, Tensor w_ih, Tensor w_hh, Tensor b_ih, "
      "Tensor b_hh, Tensor head_w, Tensor head_b, Tensor(a!)[] grads, float max_grad_norm) -> Tensor");
  m.def(
      "adamw_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, int step, "
      "float lr, float beta1, float beta2, float eps, float weight_decay) -> ()");
}

TORCH_LIBRARY_IMPL(digitsum, CPU, m) {
  m.impl("lstm_train_step", &lstm_train_step);
  m.impl("adamw_", &adamw_);
}
