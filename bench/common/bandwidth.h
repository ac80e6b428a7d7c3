// The machine's read bandwidth: the decode roofline of every benchmark under bench/
// (bench_stages, bench_quant, bench_kernels). LibTorch-free (OpenMP only).
//
// The probe is an upper bound by construction: every OpenMP thread (omp_get_max_threads(),
// the pool ATen's at::set_num_threads sizes) sums its contiguous share of one buffer far
// larger than the last-level cache (max(1 GiB, 8x the LLC)), each pass reading the whole
// buffer once; the best of several passes is reported. A roofline fraction above 100% means
// the probe under-read the machine (a noisy pass, a smaller thread count): such figures are
// flagged, never reported as a pass.
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
};

// Last-level cache bytes: sysconf(_SC_LEVEL3_CACHE_SIZE), else the largest
// /sys/devices/system/cpu/cpu0/cache/index*/size; 0 if neither says.
uint64_t LastLevelCacheBytes();

// Reads a buffer of max(min_bytes, 1 GiB, 8 x LLC) bytes `passes` times with all OpenMP
// threads (after one untimed first-touch pass that writes it, spread over the same threads).
// Allocates that buffer for the duration of the call.
BandwidthProbe ProbeReadBandwidth(int passes = 8, uint64_t min_bytes = 0);

// "83.0 GB/s (best of 8 full passes over 3840 MiB = 8.0x the 480 MiB LLC, 2 threads)".
std::string Describe(const BandwidthProbe& probe);

// "" for a roofline fraction <= 1, else " ABOVE PROBE: roofline invalid".
std::string AboveProbeFlag(double fraction);

}  // namespace moondream::bench
