#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/core/result.h"

struct redisReply;
struct redisReader;
struct ssl_ctx_st;
struct ssl_st;

namespace cdcd::redis {

struct TlsSettings {
  std::string ca_file;    // empty: the system's default CA store
  std::string cert_file;  // client certificate, with key_file (mutual TLS)
  std::string key_file;
  bool verify = true;  // check the server's certificate and its name (or IP address)
};

// Where and how to connect, from a URL redis://[user[:password]@]host[:port][/db] (rediss:// for
// TLS). The password is kept out of every text this module produces.
struct ConnectionSettings {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user;  // empty: AUTH with the password only (the default user)
  std::optional<std::string> password;
  int database = 0;
  bool tls = false;
  TlsSettings tls_settings;
  std::chrono::milliseconds connect_timeout{5000};
  // The longest wait for a server to take a request or answer it before the connection is taken
  // as lost (and the request retried on a new one).
  std::chrono::milliseconds io_timeout{10000};

  // "host:port" (with the scheme), never the credentials: for logs and errors.
  std::string describe() const;
};

// Parses a redis:// or rediss:// URL. The error names what is wrong without quoting the URL (it
// may hold a password).
Result<ConnectionSettings> parse_url(std::string_view url);

struct ReplyDeleter {
  void operator()(redisReply* reply) const;
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// How a command's error reply is to be handled, from its first word.
enum class ReplyErrorKind {
  kRetryable,  // LOADING, BUSY, TRYAGAIN, OOM, MASTERDOWN, READONLY (failover in progress)
  kNoScript,   // NOSCRIPT: load the script and retry
  kMoved,      // MOVED slot host:port (cluster)
  kAsk,        // ASK slot host:port (cluster)
  kPermanent,  // WRONGTYPE, ERR and anything else: retrying will not help
};
ReplyErrorKind classify_error(std::string_view message);
// The error's first word ("WRONGTYPE", "OOM", "ERR", ...), a metric label.
std::string error_code(std::string_view message);

using Command = std::vector<std::string>;

// What a sink sends its commands through: one server (Connection) or a Redis Cluster
// (ClusterConnection, daemon/redis/cluster_connection.h). Used by one thread at a time. Commands
// are pipelined: append() buffers them, read_reply() sends what is buffered and returns the
// replies in the order the commands were appended. An error reply is a reply; an Error (I/O,
// protocol, timeout, abort) means the replies still owed are lost: the client is then unusable and
// the caller opens a new one and resends what was not answered.
class Client {
 public:
  virtual ~Client() = default;
  virtual void append(const Command& command) = 0;
  // Appends commands already in RESP, each an array of bulk strings (as a pipeline built ahead of
  // the connection holds them), as if each had been append()ed.
  virtual void append_formatted(std::string_view commands) = 0;
  virtual Result<Reply> read_reply() = 0;
  // append() then read_reply(), for one command.
  Result<Reply> call(const Command& command) {
    append(command);
    return read_reply();
  }
  // SCRIPT LOAD on every server that may run the script (each cluster master, and any that joins
  // later); returns its SHA-1 for EVALSHA. Only while no reply is owed.
  virtual Result<std::string> load_script(const std::string& script) = 0;
};

// One connection to a Redis server, plain TCP or TLS, used by one thread at a time. Commands are
// pipelined: append() formats them into an output buffer, read_reply() sends what is buffered and
// returns the replies in order. Every wait is bounded by io_timeout and ends early (with a
// retryable error) once `*abort` becomes true, so that a sink's stop() never waits on a server.
//
// Why not hiredis' own redisContext: Debian's hiredis 0.14 has no TLS. Its RESP formatter
// (redisFormatCommandArgv) and reply parser (redisReader) are what this class uses; only the byte
// transport is its own, a socket or an OpenSSL session over it, so that plain and TLS connections
// share one code path.
class Connection final : public Client {
 public:
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects, completes the TLS handshake, sends AUTH (when a password is set) and SELECT.
  // Connection failures are retryable; a refused AUTH is not.
  static Result<std::unique_ptr<Connection>> open(const ConnectionSettings& settings,
                                                  const std::atomic<bool>* abort = nullptr);

  void append(const Command& command) override;
  // Appends commands already in RESP (e.g. from append_command()), sent by the next read_reply().
  void append_formatted(std::string_view commands) override { output_.append(commands); }
  // Sends what append() buffered and reads the next reply (an error reply is a reply, not an
  // Error: only I/O and protocol failures are).
  Result<Reply> read_reply() override;
  Result<std::string> load_script(const std::string& script) override;
  // Sends what append() buffered without waiting for a reply (a cluster client starts every
  // node's pipeline before it waits on one of them).
  Status send_buffered();
  std::size_t buffered_bytes() const { return output_.size() - output_sent_; }
  const ConnectionSettings& settings() const { return settings_; }

 private:
  Connection(ConnectionSettings settings, const std::atomic<bool>* abort);
  Status connect_socket();
  Status handshake_tls();
  Status authenticate();
  Status receive_some();
  // Waits until the socket is readable (or writable); false on timeout or abort.
  Status wait_for(bool writable, const char* doing);
  Error io_error(const std::string& what) const;

  ConnectionSettings settings_;
  const std::atomic<bool>* abort_;
  int fd_ = -1;
  ssl_ctx_st* ssl_ctx_ = nullptr;
  ssl_st* ssl_ = nullptr;
  redisReader* reader_ = nullptr;
  std::string output_;
  std::size_t output_sent_ = 0;
};

// Appends `args` to `out` as one RESP command, for callers that build their pipeline ahead of a
// connection.
void append_command(std::string& out, std::span<const std::string_view> args);

// Reply helpers.
bool is_error(const redisReply& reply);
std::string reply_text(const redisReply& reply);  // string, status or error text; "" otherwise

}  // namespace cdcd::redis
