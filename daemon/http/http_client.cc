#include "daemon/http/http_client.h"

#include <algorithm>
#include <cstring>

#include <curl/curl.h>
#include <zlib.h>

namespace cdcd::http {

namespace {

// libcurl's global state is set up once per process, before any handle exists.
void ensure_curl_initialized() {
  static const bool initialized = [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return true;
  }();
  (void)initialized;
}

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

std::string trim_slash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// A URL's user-info ("user:password@") is a secret too.
std::optional<std::string> url_password(const std::string& url) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return std::nullopt;
  auto host_start = scheme + 3;
  auto at = url.find('@', host_start);
  auto slash = url.find('/', host_start);
  if (at == std::string::npos || (slash != std::string::npos && slash < at)) return std::nullopt;
  auto colon = url.find(':', host_start);
  if (colon == std::string::npos || colon > at) return std::nullopt;
  return url.substr(colon + 1, at - colon - 1);
}

}  // namespace

Status gzip_compress(std::string_view data, std::string& out, int level) {
  z_stream stream{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return fail("zlib: deflateInit2 failed");
  }
  auto start = out.size();
  out.resize(start + deflateBound(&stream, static_cast<uLong>(data.size())) + 32);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data() + start);
  stream.avail_out = static_cast<uInt>(out.size() - start);
  int result = deflate(&stream, Z_FINISH);
  deflateEnd(&stream);
  if (result != Z_STREAM_END) {
    out.resize(start);
    return fail("zlib: deflate failed");
  }
  out.resize(start + stream.total_out);
  return ok();
}

// One curl multi handle and the easy handles it drives; each easy handle keeps its connection
// alive between requests, so a session reused by the next perform() does not reconnect.
struct Client::Session {
  CURLM* multi = nullptr;
  std::vector<CURL*> easy;

  Session() : multi(curl_multi_init()) {}
  ~Session() {
    for (CURL* handle : easy) curl_easy_cleanup(handle);
    if (multi != nullptr) curl_multi_cleanup(multi);
  }
  CURL* handle(std::size_t index) {
    while (easy.size() <= index) easy.push_back(curl_easy_init());
    return easy[index];
  }
};

namespace {

ClientOptions without_trailing_slashes(ClientOptions options) {
  for (auto& url : options.urls) url = trim_slash(url);
  return options;
}

}  // namespace

Client::Client(ClientOptions options) : options_(without_trailing_slashes(std::move(options))) {
  ensure_curl_initialized();
  if (!options_.auth.secret.empty()) secrets_.push_back(options_.auth.secret);
  for (const auto& url : options_.urls) {
    if (auto password = url_password(url); password && !password->empty()) {
      secrets_.push_back(*password);
    }
  }
}

Client::~Client() = default;

void Client::abort() { aborted_ = true; }

std::string Client::redact(std::string text) const {
  for (const auto& secret : secrets_) {
    for (auto at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
      text.replace(at, secret.size(), "***");
    }
  }
  return text;
}

std::unique_ptr<Client::Session> Client::take_session() {
  {
    std::lock_guard lock(pool_mutex_);
    if (!pool_.empty()) {
      auto session = std::move(pool_.back());
      pool_.pop_back();
      return session;
    }
  }
  return std::make_unique<Session>();
}

void Client::give_back(std::unique_ptr<Session> session) {
  std::lock_guard lock(pool_mutex_);
  pool_.push_back(std::move(session));
}

namespace {

struct Transfer {
  const Request* request = nullptr;
  Response* response = nullptr;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string wire_body;  // the body as sent (compressed or not)
  std::size_t first_url = 0;
  std::size_t attempts = 0;  // URLs tried
  char error[CURL_ERROR_SIZE] = {};
  std::chrono::steady_clock::time_point started;

  ~Transfer() {
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

bool fails_over(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::vector<Response> Client::perform(const std::vector<Request>& requests) {
  std::vector<Response> responses(requests.size());
  if (requests.empty()) return responses;
  if (options_.urls.empty()) {
    for (auto& response : responses) response.transport_error = "no URL configured";
    return responses;
  }
  auto session = take_session();
  std::vector<Transfer> transfers(requests.size());

  auto configure = [&](Transfer& transfer) {
    const std::string& base =
        options_.urls[(transfer.first_url + transfer.attempts) % options_.urls.size()];
    transfer.response->url = base;
    transfer.response->body.clear();
    CURL* easy = transfer.easy;
    curl_easy_reset(easy);
    std::string url = base + transfer.request->path;
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer.error);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer.response->body);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options_.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.request_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    // Responses may come compressed; libcurl decodes whatever it supports.
    curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, options_.tls.verify ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, options_.tls.verify ? 2L : 0L);
    if (!options_.tls.ca_file.empty()) {
      curl_easy_setopt(easy, CURLOPT_CAINFO, options_.tls.ca_file.c_str());
    }
    if (options_.auth.kind == Auth::Kind::kBasic) {
      curl_easy_setopt(easy, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
      curl_easy_setopt(easy, CURLOPT_USERNAME, options_.auth.username.c_str());
      curl_easy_setopt(easy, CURLOPT_PASSWORD, options_.auth.secret.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer.headers);
    const std::string& method = transfer.request->method;
    if (method == "GET") {
      curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else if (method == "HEAD") {
      curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else {
      if (method != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, method.c_str());
      curl_easy_setopt(easy, CURLOPT_POST, 1L);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer.wire_body.data());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(transfer.wire_body.size()));
    }
    curl_easy_setopt(easy, CURLOPT_PRIVATE, &transfer);
    transfer.error[0] = '\0';
    transfer.started = std::chrono::steady_clock::now();
    curl_multi_add_handle(session->multi, easy);
  };

  for (std::size_t i = 0; i < requests.size(); ++i) {
    Transfer& transfer = transfers[i];
    transfer.request = &requests[i];
    transfer.response = &responses[i];
    transfer.easy = session->handle(i);
    transfer.first_url = next_url_.fetch_add(1, std::memory_order_relaxed);
    const Request& request = requests[i];
    responses[i].body_bytes = request.body.size();
    std::string content_type = "Content-Type: " + request.content_type;
    transfer.headers = curl_slist_append(transfer.headers, content_type.c_str());
    // No "Expect: 100-continue" round trip before large bodies.
    transfer.headers = curl_slist_append(transfer.headers, "Expect:");
    if (options_.auth.kind == Auth::Kind::kApiKey) {
      transfer.headers = curl_slist_append(
          transfer.headers, ("Authorization: ApiKey " + options_.auth.secret).c_str());
    } else if (options_.auth.kind == Auth::Kind::kBearer) {
      transfer.headers = curl_slist_append(
          transfer.headers, ("Authorization: Bearer " + options_.auth.secret).c_str());
    }
    if (options_.gzip && !request.body.empty()) {
      if (gzip_compress(request.body, transfer.wire_body)) {
        transfer.headers = curl_slist_append(transfer.headers, "Content-Encoding: gzip");
      } else {
        transfer.wire_body = request.body;
      }
    } else {
      transfer.wire_body = request.body;
    }
    responses[i].wire_bytes = transfer.wire_body.size();
    configure(transfer);
  }

  std::size_t running = requests.size();
  while (running > 0) {
    if (aborted_) {
      for (auto& transfer : transfers) {
        if (transfer.response->status == 0 && !transfer.response->transport_error) {
          transfer.response->transport_error = "aborted";
        }
        curl_multi_remove_handle(session->multi, transfer.easy);
      }
      // An aborted transfer may leave a half-written request on its connection: start afresh.
      give_back(std::make_unique<Session>());
      return responses;
    }
    int still_running = 0;
    curl_multi_perform(session->multi, &still_running);
    int queued = 0;
    while (CURLMsg* message = curl_multi_info_read(session->multi, &queued)) {
      if (message->msg != CURLMSG_DONE) continue;
      Transfer* transfer = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE,
                        reinterpret_cast<char**>(&transfer));
      CURLcode code = message->data.result;
      curl_multi_remove_handle(session->multi, transfer->easy);
      transfer->response->elapsed = std::chrono::steady_clock::now() - transfer->started;
      ++transfer->attempts;
      if (code == CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(transfer->easy, CURLINFO_RESPONSE_CODE, &status);
        transfer->response->status = static_cast<int>(status);
        transfer->response->transport_error.reset();
        --running;
        continue;
      }
      std::string text = transfer->error[0] != '\0' ? transfer->error : curl_easy_strerror(code);
      transfer->response->transport_error =
          redact(transfer->response->url + transfer->request->path + ": " + text);
      if (fails_over(code) && transfer->attempts < options_.urls.size()) {
        configure(*transfer);
      } else {
        --running;
      }
    }
    if (running == 0) break;
    // Short polls: abort() is noticed within one of them without a wakeup channel.
    curl_multi_poll(session->multi, nullptr, 0, 50, nullptr);
  }
  give_back(std::move(session));
  return responses;
}

}  // namespace cdcd::http
