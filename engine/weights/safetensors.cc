#include "engine/weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace moondream {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors ", path, ": ", what));
}

bool ParseDType(const std::string& text, DType* dtype) {
  if (text == "F16") *dtype = DType::kF16;
  else if (text == "BF16") *dtype = DType::kBF16;
  else if (text == "F32") *dtype = DType::kF32;
  else return false;
  return true;
}

uint64_t ReadLE64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Element count of `shape`, false on a negative dim or overflow.
bool CheckedNumel(const std::vector<int64_t>& shape, uint64_t* numel) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) return false;
    n *= static_cast<uint64_t>(d);
  }
  *numel = n;
  return true;
}

// One header entry -> TensorView over the data section [data, data + data_size).
absl::StatusOr<TensorView> ParseEntry(const std::string& path, const std::string& name, const nlohmann::json& v,
                                      const uint8_t* data, uint64_t data_size) {
  auto bad = [&](const std::string& what) { return Invalid(path, absl::StrCat("tensor ", name, ": ", what)); };
  if (!v.is_object()) return bad("entry is not an object");
  auto dt = v.find("dtype");
  auto sh = v.find("shape");
  auto off = v.find("data_offsets");
  if (dt == v.end() || !dt->is_string()) return bad("missing or non-string field dtype");
  if (sh == v.end() || !sh->is_array()) return bad("missing or non-array field shape");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad("field data_offsets must be [begin, end] of non-negative integers");
  }
  TensorView t;
  t.name = name;
  if (!ParseDType(dt->get<std::string>(), &t.dtype)) {
    return bad(absl::StrCat("unsupported dtype ", dt->get<std::string>(), " (expected F16, BF16 or F32)"));
  }
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
    t.shape.push_back(d.get<int64_t>());
  }
  const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
  if (begin > end) return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] are reversed"));
  if (end > data_size) {
    return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] lie outside the data section (", data_size,
                            " bytes)"));
  }
  uint64_t numel = 0;
  if (!CheckedNumel(t.shape, &numel) || numel > std::numeric_limits<uint64_t>::max() / 4 ||
      numel * DTypeSize(t.dtype) != end - begin) {
    return bad(absl::StrCat("shape ", ShapeString(t.shape), " x ", DTypeName(t.dtype), " needs ",
                            numel * DTypeSize(t.dtype), " bytes but data_offsets [", begin, ", ", end, "] hold ",
                            end - begin));
  }
  t.data = data + begin;
  t.nbytes = end - begin;
  return t;
}

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF32: return "F32";
  }
  return "?";
}

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("safetensors ", path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Invalid(path, absl::StrCat("fstat failed: ", std::strerror(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Invalid(path, absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return Invalid(path, absl::StrCat("mmap failed: ", std::strerror(errno)));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->base_ = static_cast<const uint8_t*>(map);
  file->size_ = size;
  const uint64_t header_len = ReadLE64(file->base_);
  if (header_len > kMaxHeaderBytes) {
    return Invalid(path, absl::StrCat("header length ", header_len, " exceeds the 100 MiB limit"));
  }
  if (header_len > size - 8) {
    return Invalid(path, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                      size, " bytes)"));
  }
  std::string_view header(reinterpret_cast<const char*>(file->base_ + 8), header_len);
  absl::Status status = file->ParseHeader(header, 8 + header_len);
  if (!status.ok()) return status;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

absl::Status SafetensorsFile::ParseHeader(std::string_view header, uint64_t data_start) {
  nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Invalid(path_, "header is not valid JSON");
  if (!json.is_object()) return Invalid(path_, "header JSON is not an object");
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Invalid(path_, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return Invalid(path_, absl::StrCat("__metadata__.", m.key(), " is not a string"));
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    auto t = ParseEntry(path_, it.key(), it.value(), base_ + data_start, size_ - data_start);
    if (!t.ok()) return t.status();
    tensors_.push_back(std::move(*t));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorView& a, const TensorView& b) { return a.data < b.data; });
  for (size_t i = 0; i + 1 < tensors_.size(); ++i) {
    if (tensors_[i].data + tensors_[i].nbytes > tensors_[i + 1].data) {
      return Invalid(path_, absl::StrCat("tensor ", tensors_[i + 1].name, ": data overlaps tensor ",
                                         tensors_[i].name));
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  return absl::OkStatus();
}

const TensorView* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::Prefetch(const TensorView& t) const {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(t.data) + t.nbytes;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
}

void SafetensorsFile::Release(const TensorView& t) const {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace moondream
