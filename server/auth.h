// The shared API key (--api-key): one check for both transports.
#pragma once

#include <string_view>

namespace moondream::server {

// True when `authorization` is "Bearer <token>" (scheme case-insensitive) and the token
// equals `api_key`. The comparison takes the same time wherever the first difference is.
bool BearerMatches(std::string_view authorization, std::string_view api_key);

}  // namespace moondream::server
