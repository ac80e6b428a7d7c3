#include "server/auth.h"

#include "absl/strings/match.h"

namespace moondream::server {

bool BearerMatches(std::string_view authorization, std::string_view api_key) {
  constexpr std::string_view kScheme = "Bearer ";
  if (api_key.empty() || authorization.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kScheme.size()),
                              absl::string_view(kScheme.data(), kScheme.size()))) {
    return false;
  }
  const std::string_view token = authorization.substr(kScheme.size());
  unsigned difference = token.size() != api_key.size() ? 1u : 0u;
  for (size_t i = 0; i < token.size(); ++i) {
    difference |= static_cast<unsigned char>(token[i]) ^
                  static_cast<unsigned char>(api_key[i % api_key.size()]);
  }
  return difference == 0;
}

}  // namespace moondream::server
