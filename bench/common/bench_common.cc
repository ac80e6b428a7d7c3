#include "bench/common/bench_common.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace moondream::bench {

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::string LoadAvg() {
  std::string out;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char line[128] = {0};
    if (std::fgets(line, sizeof line, f)) out = line;
    std::fclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

}  // namespace moondream::bench
