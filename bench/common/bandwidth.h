// The machine's read bandwidth: the decode roofline of every benchmark under bench/
// (bench_stages, bench_quant, bench_kernels). LibTorch-free (OpenMP only).
//
// The probe is an upper bound by construction: every OpenMP thread (omp_get_max_threads(),
// the pool ATen's at::set_num_threads sizes) sums its contiguous share of one buffer far
// larger than the last-level cache (max(1 GiB, 8x the LLC)), each pass reading the whole
// buffer once, the passes taking four layouts in turn: one sequential stream per thread, and
// blocks of 4 rows (8 KiB, 64 KiB, 4 MiB) read side by side as a GEMV reads its weights
// (several nearby streams can draw far more than one); the best pass is reported. A roofline
// fraction above 100% means the probe under-read the machine (a noisy pass, a smaller thread
// count): such figures are flagged, never reported as a pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moondream::bench {

struct BandwidthProbe {
  double gbs = 0;               // best pass, 1e9 bytes/s
  uint64_t buffer_bytes = 0;    // bytes read per pass
  uint64_t llc_bytes = 0;       // last-level cache, 0 if unknown
  int passes = 0, threads = 0;
  std::vector<double> pass_gbs; // every pass, in order
  std::vector<std::string> pass_layouts;  // each pass's layout, "4 rows of 8 KiB side by side"
  std::string best_layout;      // the best pass's
};

// Last-level cache bytes: sysconf(_SC_LEVEL3_CACHE_SIZE), else the largest
// /sys/devices/system/cpu/cpu0/cache/index*/size; 0 if neither says.
uint64_t LastLevelCacheBytes();

// Reads a buffer of max(min_bytes, 1 GiB, 8 x LLC) bytes (rounded up to 16 MiB per thread)
// `passes` times with all OpenMP threads, the layouts in turn (after one untimed first-touch
// pass that writes it, spread over the same threads).
// Allocates that buffer for the duration of the call.
BandwidthProbe ProbeReadBandwidth(int passes = 8, uint64_t min_bytes = 0);

// "46.1 GB/s (4 rows of 64 KiB side by side; best of 8 full passes in 4 layouts over 2048 MiB
// = 8.0x the 256 MiB LLC, 2 threads)"; "... over 1024 MiB = LLC unknown, ..." without one.
std::string Describe(const BandwidthProbe& probe);

// "" for a roofline fraction <= 1, else " ABOVE PROBE: roofline invalid".
std::string AboveProbeFlag(double fraction);

}  // namespace moondream::bench
