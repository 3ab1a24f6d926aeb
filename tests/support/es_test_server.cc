#include "tests/support/es_test_server.h"

#include <csignal>
#include <stdexcept>

#include <curl/curl.h>

namespace cdcd::test {

namespace {

std::size_t collect(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

}  // namespace

EsTestServer::EsTestServer(const std::string& work_dir, Options options) {
  std::string port_file = work_dir + "/es_test_server.port";
  std::vector<std::string> argv = {
      "/usr/bin/python3", source_dir() + "/tests/support/es_test_server.py",
      "--port-file",      port_file,
      "--distribution",   options.distribution};
  argv.insert(argv.end(), options.auth_args.begin(), options.auth_args.end());
  if (!options.keep_log) argv.push_back("--no-log");
  owned_ = std::make_unique<ChildProcess>(argv, work_dir);
  process_ = owned_.get();
  if (!wait_until([&] { return !read_file(port_file).empty() || !process_->running(); },
                  std::chrono::seconds(15)) ||
      !process_->running()) {
    throw std::runtime_error("es_test_server.py did not start: " + process_->stderr_text());
  }
  port_ = std::stoi(read_file(port_file));
}

EsTestServer::~EsTestServer() {
  if (process_ != nullptr && process_->running()) {
    process_->signal(SIGTERM);
    process_->wait(std::chrono::seconds(10));
  }
}

std::pair<long, std::string> EsTestServer::request(const std::string& method,
                                                   const std::string& path,
                                                   const std::string& body) {
  CURL* curl = curl_easy_init();
  std::string url = this->url() + path;
  std::string response;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
  CURLcode code = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (code != CURLE_OK) {
    throw std::runtime_error("request to es_test_server failed: " +
                             std::string(curl_easy_strerror(code)));
  }
  return {status, response};
}

void EsTestServer::faults(const nlohmann::json& faults) {
  auto [status, body] = request("POST", "/_control/faults", faults.dump());
  if (status != 200) throw std::runtime_error("faults refused: " + body);
}

nlohmann::json EsTestServer::state() {
  auto [status, body] = request("GET", "/_control/state");
  if (status != 200) throw std::runtime_error("state refused: " + body);
  return nlohmann::json::parse(body);
}

nlohmann::json EsTestServer::documents(const std::string& index) {
  auto all = state();
  nlohmann::json docs = nlohmann::json::object();
  if (!all["indices"].contains(index)) return docs;
  for (auto& [id, doc] : all["indices"][index]["docs"].items()) docs[id] = doc["_source"];
  return docs;
}

}  // namespace cdcd::test
