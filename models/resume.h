// The resume file of a run directory (resume.safetensors): model parameters and buffers,
// optimizer state and where training stood, written atomically so the last good one is always
// readable. `tdrop train --resume DIR` continues from it with bit-identical results.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "layers/module.h"
#include "layers/optimizer.h"

namespace tdrop {

struct ResumePoint {
  int epoch = 1;          // the epoch in progress (1-based)
  long batch = 0;         // next batch of that epoch
  long step = 0;          // global step counter
  double loss_sum = 0;    // running sums of the epoch in progress
  int64_t correct = 0, seen = 0;
  double seconds = 0;     // training time of the epoch in progress so far
  std::string metrics_jsonl;  // metrics of the finished epochs
};

std::string resume_path(const std::string& run_dir);
// Throws unless run_dir holds a resume file (checked before a resumed run loads its data).
void require_resume_file(const std::string& run_dir);
void save_resume(const std::string& run_dir, const Module& model, const Optimizer& opt,
                 const ResumePoint& at);
// Loads into an already built model and optimizer of the run's configuration.
ResumePoint load_resume(const std::string& run_dir, Module& model, Optimizer& opt);

}  // namespace tdrop
