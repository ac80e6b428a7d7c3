// Helpers shared by the image tests: files, SHA-256, fixture JSON.
#pragma once

#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/sha.h>

namespace moondream::testing {

inline std::string FixturesDir() { return MOONDREAM_FIXTURES_DIR; }
inline std::string TestDataDir() { return std::string(MOONDREAM_SOURCE_DIR) + "/tests/image/data"; }

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline nlohmann::json ReadJson(const std::string& path) {
  return nlohmann::json::parse(ReadFile(path));
}

inline std::string Sha256Hex(const void* data, size_t size) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(static_cast<const unsigned char*>(data), size, digest);
  std::ostringstream out;
  for (unsigned char byte : digest) out << std::hex << std::setw(2) << std::setfill('0') << int(byte);
  return out.str();
}

}  // namespace moondream::testing
