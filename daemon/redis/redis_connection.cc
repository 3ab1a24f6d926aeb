#include "daemon/redis/redis_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace cdcd::redis {

namespace {

using Clock = std::chrono::steady_clock;

// How often a blocked wait looks at the abort flag.
constexpr std::chrono::milliseconds kAbortSlice{100};

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    unsigned value = 0;
    if (i + 2 >= text.size()) return std::nullopt;
    auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
    if (ec != std::errc() || end != text.data() + i + 3) return std::nullopt;
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown TLS error" : text;
}

}  // namespace

std::string ConnectionSettings::describe() const {
  return std::string(tls ? "rediss://" : "redis://") + host + ":" + std::to_string(port);
}

Result<ConnectionSettings> parse_url(std::string_view url) {
  ConnectionSettings settings;
  std::string_view rest;
  if (url.starts_with("redis://")) {
    rest = url.substr(8);
  } else if (url.starts_with("rediss://")) {
    rest = url.substr(9);
    settings.tls = true;
  } else {
    return fail("expected a URL redis://[user:password@]host[:port][/db] (or rediss:// for TLS)");
  }
  if (auto query = rest.find('?'); query != std::string_view::npos) {
    return fail("the URL takes no query parameters; set options beside it");
  }
  std::string_view path;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    path = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    std::string_view user = userinfo, password;
    bool has_password = false;
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      user = userinfo.substr(0, colon);
      password = userinfo.substr(colon + 1);
      has_password = true;
    }
    auto decoded_user = percent_decode(user);
    auto decoded_password = percent_decode(password);
    if (!decoded_user || !decoded_password) {
      return fail("the URL's user or password has a malformed %-escape");
    }
    settings.user = *decoded_user;
    if (has_password) settings.password = *decoded_password;
    if (!settings.user.empty() && !has_password) {
      return fail("the URL names a user without a password (redis://user:password@host)");
    }
  }
  std::string_view host = rest;
  std::string_view port;
  if (rest.starts_with('[')) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return fail("the URL's IPv6 host lacks its ']'");
    host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') return fail("expected ':port' after the URL's IPv6 host");
      port = rest.substr(close + 2);
    }
  } else if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return fail("the URL has no host");
  settings.host = std::string(host);
  if (!port.empty()) {
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), settings.port);
    if (ec != std::errc() || end != port.data() + port.size() || settings.port < 1 ||
        settings.port > 65535) {
      return fail("the URL's port is not a number between 1 and 65535");
    }
  }
  if (!path.empty()) {
    auto [end, ec] = std::from_chars(path.data(), path.data() + path.size(), settings.database);
    if (ec != std::errc() || end != path.data() + path.size() || settings.database < 0) {
      return fail("the URL's path must be a database number (/0, /1, ...)");
    }
  }
  return settings;
}

void ReplyDeleter::operator()(redisReply* reply) const { freeReplyObject(reply); }

bool is_error(const redisReply& reply) { return reply.type == REDIS_REPLY_ERROR; }

std::string reply_text(const redisReply& reply) {
  if (reply.type == REDIS_REPLY_STRING || reply.type == REDIS_REPLY_STATUS ||
      reply.type == REDIS_REPLY_ERROR) {
    return std::string(reply.str, reply.len);
  }
  return "";
}

std::string error_code(std::string_view message) {
  auto space = message.find(' ');
  return std::string(message.substr(0, space));
}

ReplyErrorKind classify_error(std::string_view message) {
  const std::string code = error_code(message);
  if (code == "LOADING" || code == "BUSY" || code == "TRYAGAIN" || code == "OOM" ||
      code == "MASTERDOWN" || code == "READONLY" || code == "CLUSTERDOWN") {
    return ReplyErrorKind::kRetryable;
  }
  if (code == "NOSCRIPT") return ReplyErrorKind::kNoScript;
  if (code == "MOVED") return ReplyErrorKind::kMoved;
  if (code == "ASK") return ReplyErrorKind::kAsk;
  return ReplyErrorKind::kPermanent;
}

Connection::Connection(ConnectionSettings settings, const std::atomic<bool>* abort)
    : settings_(std::move(settings)), abort_(abort), reader_(redisReaderCreate()) {}

Connection::~Connection() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
  if (fd_ >= 0) ::close(fd_);
  if (reader_ != nullptr) redisReaderFree(reader_);
}

Result<std::unique_ptr<Connection>> Connection::open(const ConnectionSettings& settings,
                                                     const std::atomic<bool>* abort) {
  std::unique_ptr<Connection> connection(new Connection(settings, abort));
  if (connection->reader_ == nullptr) return fail("out of memory for a Redis reply reader");
  if (auto connected = connection->connect_socket(); !connected) {
    return tl::unexpected(connected.error());
  }
  if (settings.tls) {
    if (auto secured = connection->handshake_tls(); !secured) {
      return tl::unexpected(secured.error());
    }
  }
  if (auto authenticated = connection->authenticate(); !authenticated) {
    return tl::unexpected(authenticated.error());
  }
  return connection;
}

Error Connection::io_error(const std::string& what) const {
  return Error{"Redis " + settings_.describe() + ": " + what, true};
}

Status Connection::connect_socket() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(settings_.port);
  if (int rc = ::getaddrinfo(settings_.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return tl::unexpected(io_error(std::string("cannot resolve host: ") + gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, freeaddrinfo);
  std::string last_error = "no address";
  for (addrinfo* address = found; address != nullptr; address = address->ai_next) {
    int fd = ::socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                      address->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    fd_ = fd;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (::connect(fd, address->ai_addr, address->ai_addrlen) == 0) return ok();
    if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int ready = ::poll(&p, 1, static_cast<int>(settings_.connect_timeout.count()));
      int error = 0;
      socklen_t length = sizeof error;
      if (ready == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 &&
          error == 0) {
        return ok();
      }
      last_error = ready == 0 ? "connect timed out" : std::strerror(error != 0 ? error : errno);
    } else {
      last_error = std::strerror(errno);
    }
    ::close(fd);
    fd_ = -1;
  }
  return tl::unexpected(io_error("cannot connect: " + last_error));
}

Status Connection::handshake_tls() {
  const TlsSettings& tls = settings_.tls_settings;
  ssl_ctx_ = SSL_CTX_new(TLS_client_method());
  if (ssl_ctx_ == nullptr) return fail("TLS: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ssl_ctx_, TLS1_2_VERSION);
  // A bad CA, certificate or key file is a configuration error: not retryable.
  if (!tls.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ssl_ctx_, tls.ca_file.c_str(), nullptr) != 1) {
      return fail("TLS: cannot load ca_file " + tls.ca_file + ": " + openssl_errors());
    }
  } else if (SSL_CTX_set_default_verify_paths(ssl_ctx_) != 1) {
    return fail("TLS: cannot load the system CA store: " + openssl_errors());
  }
  if (!tls.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx_, tls.cert_file.c_str()) != 1) {
      return fail("TLS: cannot load cert_file " + tls.cert_file + ": " + openssl_errors());
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx_, tls.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return fail("TLS: cannot load key_file " + tls.key_file + ": " + openssl_errors());
    }
  }
  SSL_CTX_set_verify(ssl_ctx_, tls.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  ssl_ = SSL_new(ssl_ctx_);
  if (ssl_ == nullptr) return fail("TLS: " + openssl_errors());
  in6_addr scratch;
  const bool is_ip = ::inet_pton(AF_INET, settings_.host.c_str(), &scratch) == 1 ||
                     ::inet_pton(AF_INET6, settings_.host.c_str(), &scratch) == 1;
  if (tls.verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    int set = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, settings_.host.c_str())
                    : X509_VERIFY_PARAM_set1_host(param, settings_.host.c_str(), 0);
    if (set != 1) return fail("TLS: cannot set the name to verify: " + openssl_errors());
  }
  if (!is_ip) SSL_set_tlsext_host_name(ssl_, settings_.host.c_str());
  SSL_set_fd(ssl_, fd_);
  const auto deadline = Clock::now() + settings_.connect_timeout;
  while (true) {
    ERR_clear_error();
    int rc = SSL_connect(ssl_);
    if (rc == 1) return ok();
    int error = SSL_get_error(ssl_, rc);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      long verified = SSL_get_verify_result(ssl_);
      std::string detail =
          verified != X509_V_OK ? X509_verify_cert_error_string(verified) : openssl_errors();
      // A certificate the client refuses will be refused again: permanent.
      return tl::unexpected(
          Error{"Redis " + settings_.describe() + ": TLS handshake failed: " + detail,
                verified == X509_V_OK});
    }
    if (Clock::now() > deadline) return tl::unexpected(io_error("TLS handshake timed out"));
    if (auto ready = wait_for(error == SSL_ERROR_WANT_WRITE, "completing the TLS handshake");
        !ready) {
      return ready;
    }
  }
}

Status Connection::authenticate() {
  if (settings_.password) {
    Command auth = settings_.user.empty() ? Command{"AUTH", *settings_.password}
                                          : Command{"AUTH", settings_.user, *settings_.password};
    auto reply = call(auth);
    if (!reply) return tl::unexpected(reply.error());
    if (is_error(**reply)) {
      // The server's text never quotes the password; it is passed on as it is.
      return fail("Redis " + settings_.describe() + ": AUTH refused: " + reply_text(**reply));
    }
  }
  if (settings_.database != 0) {
    auto reply = call({"SELECT", std::to_string(settings_.database)});
    if (!reply) return tl::unexpected(reply.error());
    if (is_error(**reply)) {
      return fail("Redis " + settings_.describe() + ": SELECT " +
                  std::to_string(settings_.database) + " refused: " + reply_text(**reply));
    }
  }
  return ok();
}

// Written here rather than with hiredis' redisFormatCommandArgv: that one mallocs every command
// and sprintf()s every length line, which a profile of the Redis sink (1M changes, 2 keys each)
// showed at ~8% of the writer thread; the RESP framing of an array of bulk strings is just
// "*N\r\n" then "$LEN\r\nARG\r\n" per argument.
void append_command(std::string& out, std::span<const std::string_view> args) {
  std::size_t size = 16;
  for (const auto& arg : args) size += arg.size() + 16;
  out.reserve(out.size() + size);
  auto append_header = [&out](char type, std::size_t number) {
    char digits[24];
    auto end = std::to_chars(digits, digits + sizeof digits, number).ptr;
    out += type;
    out.append(digits, end);
    out += "\r\n";
  };
  append_header('*', args.size());
  for (const auto& arg : args) {
    append_header('$', arg.size());
    out += arg;
    out += "\r\n";
  }
}

void Connection::append(const Command& command) {
  const std::vector<std::string_view> args(command.begin(), command.end());
  append_command(output_, args);
}

Status Connection::wait_for(bool writable, const char* doing) {
  const auto deadline = Clock::now() + settings_.io_timeout;
  while (true) {
    if (abort_ != nullptr && abort_->load()) {
      return tl::unexpected(io_error(std::string("stopped while ") + doing));
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return tl::unexpected(io_error(std::string("timed out ") + doing));
    }
    pollfd p{fd_, static_cast<short>(writable ? POLLOUT : POLLIN), 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min(left, kAbortSlice).count()));
    if (ready > 0) return ok();
    if (ready < 0 && errno != EINTR) {
      return tl::unexpected(io_error(std::string("poll: ") + std::strerror(errno)));
    }
  }
}

Status Connection::send_buffered() {
  while (output_sent_ < output_.size()) {
    const char* data = output_.data() + output_sent_;
    const std::size_t size = output_.size() - output_sent_;
    bool want_write = true;
    long written = -1;
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int rc = SSL_write(ssl_, data, static_cast<int>(std::min<std::size_t>(size, 1 << 30)));
      if (rc > 0) {
        written = rc;
      } else {
        int error = SSL_get_error(ssl_, rc);
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
          return tl::unexpected(io_error("TLS write failed: " + openssl_errors()));
        }
        want_write = error == SSL_ERROR_WANT_WRITE;
      }
    } else {
      written = ::send(fd_, data, size, MSG_NOSIGNAL);
      if (written < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return tl::unexpected(io_error(std::string("write failed: ") + std::strerror(errno)));
      }
    }
    if (written > 0) {
      output_sent_ += static_cast<std::size_t>(written);
      continue;
    }
    if (auto ready = wait_for(want_write, "sending commands"); !ready) return ready;
  }
  output_.clear();
  output_sent_ = 0;
  return ok();
}

Status Connection::receive_some() {
  char buffer[64 * 1024];
  while (true) {
    bool want_write = false;
    long received = -1;
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int rc = SSL_read(ssl_, buffer, sizeof buffer);
      if (rc > 0) {
        received = rc;
      } else {
        int error = SSL_get_error(ssl_, rc);
        if (error == SSL_ERROR_ZERO_RETURN) {
          return tl::unexpected(io_error("the server closed the connection"));
        }
        if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
          return tl::unexpected(io_error("TLS read failed: " + openssl_errors()));
        }
        want_write = error == SSL_ERROR_WANT_WRITE;
      }
    } else {
      received = ::recv(fd_, buffer, sizeof buffer, 0);
      if (received == 0) return tl::unexpected(io_error("the server closed the connection"));
      if (received < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return tl::unexpected(io_error(std::string("read failed: ") + std::strerror(errno)));
      }
    }
    if (received > 0) {
      if (redisReaderFeed(reader_, buffer, static_cast<std::size_t>(received)) != REDIS_OK) {
        return tl::unexpected(io_error(std::string("protocol error: ") + reader_->errstr));
      }
      return ok();
    }
    if (auto ready = wait_for(want_write, "waiting for a reply"); !ready) return ready;
  }
}

Result<Reply> Connection::read_reply() {
  if (auto sent = send_buffered(); !sent) return tl::unexpected(sent.error());
  while (true) {
    void* parsed = nullptr;
    if (redisReaderGetReply(reader_, &parsed) != REDIS_OK) {
      return tl::unexpected(io_error(std::string("protocol error: ") + reader_->errstr));
    }
    if (parsed != nullptr) return Reply(static_cast<redisReply*>(parsed));
    if (auto received = receive_some(); !received) return tl::unexpected(received.error());
  }
}

Result<std::string> Connection::load_script(const std::string& script) {
  auto reply = call({"SCRIPT", "LOAD", script});
  if (!reply) return tl::unexpected(reply.error());
  if (is_error(**reply) || (*reply)->type != REDIS_REPLY_STRING) {
    auto message = reply_text(**reply);
    return tl::unexpected(
        Error{"Redis " + settings_.describe() + ": SCRIPT LOAD failed: " + message,
              classify_error(message) == ReplyErrorKind::kRetryable});
  }
  return reply_text(**reply);
}

}  // namespace cdcd::redis
