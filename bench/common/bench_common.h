// Helpers shared by the benchmarks under bench/: wall/CPU timing with median and min, the
// machine's read bandwidth measured in the same run (the decode roofline), load average.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

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

// The machine's read bandwidth in GB/s (1e9 bytes/s) with the current at::get_num_threads():
// one parallel sum per 64 MiB slice of a 1 GiB buffer (cold: each slice is read once per
// pass; each thread streams a contiguous half), the best of 128 slices. The best, because a
// roofline is an upper bound; 64 MiB, because with 8 MiB slices the wake-up of a sleeping
// OpenMP worker (OMP_WAIT_POLICY=PASSIVE) was timed too and the probe read 38-48 GB/s on a
// machine that streams 76-82 GB/s. Allocates and touches 1 GiB for about a second.
double ReadBandwidth();

// /proc/loadavg without the trailing newline ("" if unreadable). The machine is shared:
// record how busy it was.
std::string LoadAvg();

}  // namespace moondream::bench
