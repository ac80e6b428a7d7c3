// Helpers shared by the benchmarks under bench/: wall/CPU timing with median and min, load
// average; the read-bandwidth probe (the decode roofline) is bench/common/bandwidth.h.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "bench/common/bandwidth.h"

namespace moondream::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Process CPU seconds, all threads (spinning included).
double CpuSeconds();

struct Timing {
  double med = 0, min = 0;  // wall seconds per call
  double cpu = 0;           // median process CPU seconds per call
};

// Median and minimum seconds per call of fn(i) over `reps` calls after one warm-up call
// fn(0); i counts calls. On a shared machine the minimum is the least-disturbed call.
template <typename Fn>
Timing TimeIt(Fn fn, int reps) {
  fn(0);
  std::vector<double> t, cpu;
  for (int i = 1; i <= reps; ++i) {
    const auto a = Clock::now();
    const double c = CpuSeconds();
    fn(i);
    t.push_back(Seconds(a, Clock::now()));
    cpu.push_back(CpuSeconds() - c);
  }
  std::sort(t.begin(), t.end());
  std::sort(cpu.begin(), cpu.end());
  return {t[t.size() / 2], t[0], cpu[cpu.size() / 2]};
}

// /proc/loadavg without the trailing newline ("" if unreadable). The machine is shared:
// record how busy it was.
std::string LoadAvg();

}  // namespace moondream::bench
