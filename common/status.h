// Status: the error type of the whole project. A code and a message; the
// code decides the HTTP status a user sees (kMalformed -> 400, kInvalid ->
// 422, kUnavailable -> 503, ...). Functions that can fail return Status or StatusOr<T> and never
// throw across a module boundary.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace intgrads {

enum class StatusCode {
  kOk = 0,
  kInvalid,        // the caller's input is wrong (HTTP 400/422)
  kNotFound,       // an unknown route, model or class (HTTP 404/422)
  kTooLarge,       // over a configured limit (HTTP 413)
  kUnavailable,    // no worker could take it in time (HTTP 503)
  kDataLoss,       // a corrupt or truncated file
  kUnimplemented,  // a format feature we refuse to read
  kInternal,       // our bug (HTTP 500)
  kNotAcceptable,  // no answer in a format the client accepts (HTTP 406)
  kMalformed,      // the request's bytes are not in the format it claims, such as a body that is not JSON (HTTP 400)
};

// The codes by name, as the worker channel carries them ("ok", "invalid",
// "too_large", ...); an unknown name has none.
inline const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalid: return "invalid";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kTooLarge: return "too_large";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kDataLoss: return "data_loss";
    case StatusCode::kUnimplemented: return "unimplemented";
    case StatusCode::kInternal: return "internal";
    case StatusCode::kNotAcceptable: return "not_acceptable";
    case StatusCode::kMalformed: return "malformed";
  }
  return "internal";
}
inline std::optional<StatusCode> StatusCodeFromName(std::string_view name) {
  for (StatusCode code : {StatusCode::kOk, StatusCode::kInvalid, StatusCode::kNotFound, StatusCode::kTooLarge,
                          StatusCode::kUnavailable, StatusCode::kDataLoss, StatusCode::kUnimplemented,
                          StatusCode::kInternal, StatusCode::kNotAcceptable, StatusCode::kMalformed}) {
    if (name == StatusCodeName(code)) return code;
  }
  return std::nullopt;
}

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidError(std::string m) { return {StatusCode::kInvalid, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status TooLargeError(std::string m) { return {StatusCode::kTooLarge, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DataLossError(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status UnimplementedError(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status NotAcceptableError(std::string m) { return {StatusCode::kNotAcceptable, std::move(m)}; }
inline Status MalformedError(std::string m) { return {StatusCode::kMalformed, std::move(m)}; }

// A value or the Status that explains why there is none.
template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  StatusOr(Status status) : status_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace intgrads

#define INTGRADS_CONCAT_INNER(a, b) a##b
#define INTGRADS_CONCAT(a, b) INTGRADS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)            \
  do {                                   \
    ::intgrads::Status status_ = (expr); \
    if (!status_.ok()) return status_;   \
  } while (0)

// `lhs` may be a declaration ("auto x"), so it cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)

#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(INTGRADS_CONCAT(status_or_, __LINE__), lhs, expr)
