// Read-only safetensors reader over mmap (no copy of tensor data).
//
// File layout: u64 little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {str: str}}, then the data section (offsets relative to its start).
// Only F16, BF16 and F32 are accepted (the Moondream2 releases use F16 or BF16).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

namespace moondream {

enum class DType { kF16, kBF16, kF32 };

const char* DTypeName(DType dtype);  // "F16", "BF16", "F32" (safetensors spelling)
size_t DTypeSize(DType dtype);       // bytes per element
std::string ShapeString(const std::vector<int64_t>& shape);  // "[1152, 588]"

struct TensorView {
  std::string name;
  DType dtype = DType::kF16;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping; valid while the file lives
  size_t nbytes = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header: size, header length (<= 100 MiB), JSON,
  // dtypes, shape x itemsize == byte range, offsets inside the file, no overlaps.
  // Every error names the file and the offending tensor / field.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const TensorView* Find(std::string_view name) const;  // nullptr when absent
  const std::vector<TensorView>& tensors() const { return tensors_; }  // data-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }

  // madvise(MADV_DONTNEED) on the whole pages inside the tensor's byte range, so RSS
  // drops once the tensor has been converted. The data stay readable (re-faulted from disk).
  void Release(const TensorView& t) const;
  // madvise(MADV_WILLNEED): starts reading the tensor's pages in large requests.
  void Prefetch(const TensorView& t) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader(std::string_view header, uint64_t data_start);

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file tensor by tensor (streaming; used by the synthetic-checkpoint
// tool and by tests). The header is written first, so every tensor must be declared up front.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  // Writes the header for `entries` (in this order) and `metadata`.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<Entry> entries,
      const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();
  // Appends the data of the next declared tensor; `nbytes` must equal its byte size.
  absl::Status Write(const void* data, size_t nbytes);
  // Checks every tensor was written and closes the file.
  absl::Status Finish();

 private:
  SafetensorsWriter() = default;
  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  std::FILE* file_ = nullptr;
};

}  // namespace moondream
