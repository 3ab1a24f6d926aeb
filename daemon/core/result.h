#pragma once

#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace cdcd {

// Errors cross every plugin interface as values; exceptions never leave a library boundary.
struct Error {
  std::string message;
  // A retryable error may succeed if the same operation is tried again later (network, broker
  // down); a permanent one will not (bad credentials, record too large, schema mismatch).
  bool retryable = false;
};

template <typename T>
using Result = tl::expected<T, Error>;

using Status = tl::expected<void, Error>;

inline tl::unexpected<Error> fail(std::string message) {
  return tl::unexpected<Error>(Error{std::move(message), false});
}

inline tl::unexpected<Error> fail_retryable(std::string message) {
  return tl::unexpected<Error>(Error{std::move(message), true});
}

inline Status ok() { return {}; }

}  // namespace cdcd
