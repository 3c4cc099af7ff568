// The gates of each mixture method (docs/methods.md "Gates"), one row of E experts at a time (plain
// LoRA has no gate: adapter.cpp runs it as E = 1, G = 1). The
// adapter (adapter.cpp) runs them over rows in parallel and owns everything they share.
#pragma once

#include <cstdint>

namespace et {

// Top-k of `score` (ties toward the lower index) into sel[E] (1 = chosen).
void top_k_mask(const float* score, long E, long k, uint8_t* sel);

// MoLA: renormalised top-k of p.
void mola_gates(const float* p, long E, long k, float* gate, uint8_t* sel);
// dp += d(gate)/dp · dgate, through the kept probabilities and their sum.
void mola_gates_backward(const float* p, const float* gate, const uint8_t* sel, const float* dgate, long E, float* dp);

// LoRAMoE: dense gates, g = p.
void loramoe_gates(const float* p, long E, float* gate, uint8_t* sel);
// The localized balancing constraint of one site over [batch, seq] rows of p [rows, E]: returns
// CV² of I ⊙ Q and adds scale · dL/dp into dp.
double loramoe_balance_constraint(const float* p, long E, long batch, long seq, const uint8_t* mask,
                                  const int32_t* task_types, float delta, double scale, float* dp);

// DynMoLE: normalised Tsallis entropy of p + eps (q = 1: Shannon), and its gradient (scale·dŜ/dp added).
double tsallis_normalized(const float* p, long E, float q, float eps);
void tsallis_normalized_backward(const float* p, long E, float q, float eps, double scale, float* dp);
// Hybrid routing; returns whether the row is broadcast to every expert.
bool dynmole_gates(const float* p, long E, float q, float eps, float threshold, float top_p, long keep_top_k,
                   float* gate, uint8_t* sel);

// FlyLoRA: 0/1 gates of the top-k ranks of a + d (or |a + d|).
void flylora_gates(const float* a, const float* bias, long r, long k, bool by_magnitude, float* gate, uint8_t* sel);
struct SparseRows;
// The frozen sparse A of one site (docs/methods.md "FlyLoRA").
void flylora_init_a(SparseRows& a, uint32_t seed, uint32_t site, long r, long k, long in);

}  // namespace et
