// The adapter of every method (docs/methods.md): per adapted projection (a site), E experts of
// rank r stacked into one low-rank update whose rank blocks are gated per token,
//   y += s · ((drop(x) Aᵀ) ⊙ Ĝ) Bᵀ,   G = gate(softmax(x Rᵀ)) or, for FlyLoRA, gate(drop(x) Aᵀ).
// Sites that read the same input (q/k/v; gate/up) form an input group whose A blocks and routers
// are rows of one matrix, so one GEMM computes them all (the fused kernel, forward_group and
// backward_group below). The gates themselves live in methods/<method>.cpp.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "../include/expertune.h"
#include "common.h"

namespace et {

// Input groups of a layer and the projections in each.
enum InputGroup { GROUP_QKV = 0, GROUP_O = 1, GROUP_GATE_UP = 2, GROUP_DOWN = 3, NUM_GROUPS = 4 };
int group_of_projection(int projection);
int first_projection_of_group(int group);

// A frozen sparse matrix with the same number of non-zeros in every row (FlyLoRA's A).
struct SparseRows {
  long rows = 0, cols = 0, per_row = 0;
  std::vector<int32_t> column;  // [rows, per_row], ascending within a row
  Buffer value;                 // [rows, per_row]
  void expand(float* dense, long ld) const;  // dense [rows, cols] (row stride ld) = this
  void compress(const float* dense, const std::string& name);  // the inverse; refuses other patterns
};

struct Site {
  long layer = 0, projection = 0, in = 0, out = 0;
  long experts = 1;      // E (FlyLoRA: r rank-1 experts)
  long rank = 1;         // r per expert (FlyLoRA: 1)
  long width = 0;        // E·r, the columns of H
  long h_col = 0;        // first column of this site's H in its group's [H | z] rows
  long z_col = 0;        // first column of its router logits (after every H of the group)
  long a_row = 0;        // first row of its A blocks in the group's stacked matrix
  long router_row = 0;   // first row of its router
  long top_k = 0;        // MoLA's k for this layer, FlyLoRA's k
  Tensor B;                              // [out, width]
  Tensor topk_bias;                      // FlyLoRA's d [r]
  std::unique_ptr<SparseRows> sparse_a;  // FlyLoRA's frozen A
  // Routing of the current pass, [rows, E]: probabilities, gates, selections, and dL/dp from
  // the auxiliary losses; per row the z-loss factor on p. Kept per site (small) rather than per
  // layer activation, so the auxiliary losses can read every site after the forward.
  Buffer prob, gate, lse, aux_dprob, aux_zfactor;
  std::vector<uint8_t> selected, broadcast;
  // Statistics since the last read, and FlyLoRA's per-micro-batch rank counts.
  double stat_tokens = 0, stat_entropy = 0, stat_broadcast = 0;
  std::vector<double> stat_load, stat_gate, rank_counts;
};

struct Group {
  long layer = 0, kind = 0, in = 0;
  std::vector<Site*> sites;
  long h_width = 0, z_width = 0;  // Σ E·r and Σ E over its sites
  Tensor down;                    // [h_width + z_width, in]: every A block, then every router
};

struct AdapterSettings {
  et_adapter_config c;
  std::vector<int32_t> num_experts, top_k;  // per layer (copied out of the caller's arrays)
  float scaling = 1.0f;
};

// Flags of one pass through the adapter.
struct AdapterPass {
  long rows = 0;
  bool training = false;        // dropout on, gates recorded for backward
  uint32_t dropout_seed = 0;
  bool collect = false;         // accumulate routing statistics (and FlyLoRA's rank counts)
  const uint8_t* token_mask = nullptr;
};

struct AuxResult {
  double balance = 0, z = 0, entropy = 0, lbc = 0, total = 0, balance_step = 0;
};

class Adapter {
 public:
  // in_out[p] = {in, out} of projection p.
  Adapter(const et_adapter_config& config, long layers, const std::array<std::array<long, 2>, ET_NUM_PROJ>& in_out);

  const AdapterSettings& settings() const { return s_; }
  int method() const { return s_.c.method; }
  bool has_router() const;
  bool trains_a() const { return s_.c.method != ET_METHOD_FLYLORA; }
  Group& group(long layer, int kind) { return groups_[layer * NUM_GROUPS + kind]; }
  std::vector<Site*> sites();  // in site order
  // Widest [H | z] row of any group of kind `kind`, for sizing activations.
  long max_group_width(int kind) const;

  // y (row stride ldy) gets each site's update in its columns y_col[projection]; hz [rows, width]
  // keeps [H | z] of the group for backward.
  void forward_group(Group& g, const float* x, long ldx, float* y, long ldy, const std::array<long, ET_NUM_PROJ>& y_col,
                     float* hz, const AdapterPass& pass);
  // Accumulates the group's gradients; adds dL/dx into dx (row stride lddx) unless it is null.
  void backward_group(Group& g, const float* x, long ldx, const float* hz, const float* dy, long lddy,
                      const std::array<long, ET_NUM_PROJ>& y_col, float* dx, long lddx, const AdapterPass& pass);

  // After a training forward over every layer: the auxiliary losses, their dL/dp per site
  // (consumed by backward_group), and their values.
  AuxResult auxiliary_losses(long batch, long seq, const uint8_t* token_mask, const int32_t* task_types,
                             float aux_scale);
  // After a training micro-batch's backward: FlyLoRA's bias update.
  void end_micro_batch();
  // After an optimizer step: the global-batch counts start again.
  void end_step();
  // Statistics as documented at et_routing_stats; reset when `reset`.
  std::vector<double> routing_stats(bool reset);

  static std::string module_name(long layer, long projection);

 private:
  void route(Site& site, const float* hz, long ldhz, const AdapterPass& pass);
  // N Σ f̄ P̄ over the pools from the step's buffers (docs/methods.md, global scope).
  double step_balance(bool by_probability) const;
  const float* a_operand(Group& g);
  // M = s·H⊙Ĝ of one site, [rows, E·r], in scratch.
  const float* gated(const Site& site, const float* h, long ldh, long rows);  // the stacked A rows (FlyLoRA: expanded from sparse)
  const float* dropped_input(const Group& g, const float* x, long ldx, long rows, uint32_t seed, long* ld_out);
  void group_dropout(const Group& g, const float* in, long ldin, float* out, long ldout, long rows, uint32_t seed,
                     bool accumulate);

  AdapterSettings s_;
  long layers_;
  std::vector<std::unique_ptr<Site>> sites_;  // [layer * 7 + projection], null when not adapted
  std::vector<Group> groups_;                 // [layer * NUM_GROUPS + kind]
  // Global-batch buffers per balance pool: selection counts (or gate sums), Σ m·p, Σ m.
  std::vector<std::vector<double>> step_counts_, step_prob_;
  std::vector<double> step_tokens_;
  Buffer dropped_, gated_, grad_hz_, grad_x_, dense_a_;
};

}  // namespace et
