// SafetensorsWriter (declared in safetensors.h): streaming writer for tools and tests.
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "engine/weights/safetensors.h"

namespace moondream {
namespace {

uint64_t ByteSize(const SafetensorsWriter::Entry& e) {
  uint64_t n = DTypeSize(e.dtype);
  for (int64_t d : e.shape) n *= static_cast<uint64_t>(d);
  return n;
}

// Header JSON, space-padded so the data section starts 8-byte aligned.
std::string BuildHeader(const std::vector<SafetensorsWriter::Entry>& entries,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    const uint64_t n = ByteSize(e);
    header[e.name] = {{"dtype", DTypeName(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<Entry> entries,
    const std::map<std::string, std::string>& metadata) {
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  w->file_ = std::fopen(path.c_str(), "wb");
  if (w->file_ == nullptr) {
    return absl::InternalError(absl::StrCat("safetensors ", path, ": cannot create: ", std::strerror(errno)));
  }
  const std::string header = BuildHeader(entries, metadata);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, w->file_) != 8 ||
      std::fwrite(header.data(), 1, header.size(), w->file_) != header.size()) {
    return absl::InternalError(absl::StrCat("safetensors ", path, ": header write failed"));
  }
  w->entries_ = std::move(entries);
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status SafetensorsWriter::Write(const void* data, size_t nbytes) {
  if (next_ >= entries_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("safetensors ", path_, ": more tensors written than declared"));
  }
  const Entry& e = entries_[next_];
  if (nbytes != ByteSize(e)) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors ", path_, ": tensor ", e.name, " needs ",
                                                   ByteSize(e), " bytes, got ", nbytes));
  }
  // An empty tensor may come with data == nullptr: fwrite's pointer must be valid even
  // for 0 bytes (C 7.1.4; UBSan's nonnull-attribute check), so nothing is written then.
  if (nbytes > 0 && std::fwrite(data, 1, nbytes, file_) != nbytes) {
    return absl::InternalError(absl::StrCat("safetensors ", path_, ": write of tensor ", e.name, " failed"));
  }
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (next_ != entries_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("safetensors ", path_, ": tensor ", entries_[next_].name,
                                                      " was declared but not written"));
  }
  const int rc = std::fclose(file_);
  file_ = nullptr;
  if (rc != 0) return absl::InternalError(absl::StrCat("safetensors ", path_, ": close failed"));
  return absl::OkStatus();
}

}  // namespace moondream
