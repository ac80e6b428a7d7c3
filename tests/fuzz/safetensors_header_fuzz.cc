// libFuzzer target: a safetensors file (engine/weights SafetensorsFile::Open: the 8-byte
// header length, the JSON header, dtypes, shapes, data_offsets, overlaps). A model file is
// untrusted input: a corrupt one must give a clear error, never a crash. The input is the
// whole file, written to a memfd that Open maps through /proc/self/fd. A file that opens
// must describe tensors inside the data section, sorted, without overlap, each of
// numel x dtype-size bytes, every one found by name; their first and last bytes are read.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "engine/weights/safetensors.h"

namespace {

int g_fd = -1;
std::string g_path;

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "safetensors_header_fuzz: invariant violated: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_fd = memfd_create("safetensors_fuzz", MFD_CLOEXEC);
  if (g_fd < 0) {
    std::perror("safetensors_header_fuzz: memfd_create");
    std::exit(2);
  }
  g_path = "/proc/self/fd/" + std::to_string(g_fd);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (ftruncate(g_fd, 0) != 0) std::abort();
  for (size_t done = 0; done < size;) {
    const ssize_t n = pwrite(g_fd, data + done, size - done, off_t(done));
    if (n <= 0) std::abort();
    done += size_t(n);
  }
  absl::StatusOr<std::unique_ptr<moondream::SafetensorsFile>> file =
      moondream::SafetensorsFile::Open(g_path);
  if (!file.ok()) {
    Check(file.status().code() == absl::StatusCode::kInvalidArgument,
          "a corrupt file is not INVALID_ARGUMENT");
    Check(!file.status().message().empty(), "an error without a message");
    return 0;
  }
  const moondream::SafetensorsFile& f = **file;
  Check(f.file_size() == size, "file_size() != the file's size");
  const uint64_t header_len = [&] {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | data[i];
    return v;
  }();
  Check(header_len <= size - 8, "a header longer than the file was accepted");
  const uint64_t data_bytes = size - 8 - header_len;
  uint64_t total = 0;
  const uint8_t* previous_end = nullptr;
  volatile uint8_t sink = 0;
  for (const moondream::TensorView& t : f.tensors()) {
    Check(t.numel() >= 0, "negative numel");
    Check(uint64_t(t.numel()) * moondream::DTypeSize(t.dtype) == t.nbytes,
          "numel x dtype size != nbytes");
    Check(previous_end == nullptr || t.data >= previous_end, "tensors overlap or are unsorted");
    previous_end = t.data + t.nbytes;
    total += t.nbytes;
    Check(f.Find(t.name) == &t, "Find(name) does not return the tensor");
    if (t.nbytes > 0) sink = sink + t.data[0] + t.data[t.nbytes - 1];  // inside the mapping
  }
  Check(total <= data_bytes, "the tensors hold more bytes than the data section");
  (void)sink;
  return 0;
}
