#include "tests/support/daemon_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace cdcd::test {

std::chrono::milliseconds scaled(std::chrono::milliseconds timeout) {
  const char* text = std::getenv("CDCD_TEST_TIME_SCALE");
  double factor = text ? std::atof(text) : 1.0;
  if (!(factor >= 1.0)) factor = 1.0;
  return std::chrono::milliseconds(static_cast<std::int64_t>(timeout.count() * factor));
}

std::string write_config(const TempDir& dir, const std::string& yaml, const std::string& name) {
  std::string path = dir.file(name);
  write_file(path, yaml);
  return path;
}

void generate_changelog(const std::string& path, int count, int keys, int seed,
                        std::int64_t start_time_us) {
  std::string output;
  int code = run_command(
      {"/usr/bin/python3", source_dir() + "/bench/generate_changelog.py", "--count",
       std::to_string(count), "--keys", std::to_string(keys), "--seed", std::to_string(seed),
       "--start-time-us", std::to_string(start_time_us), "--output", path},
      &output);
  if (code != 0) throw std::runtime_error("generate_changelog.py failed: " + output);
}

namespace {

nlohmann::json row_or_null(const nlohmann::json& line, const char* field) {
  auto it = line.find(field);
  return it == line.end() ? nlohmann::json() : *it;
}

std::optional<NativeChange> parse_native(const std::string& text) {
  auto line = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!line.is_object()) return std::nullopt;
  for (const char* field : {"lsn", "timestamp", "entity", "operation"}) {
    if (!line.contains(field)) return std::nullopt;
  }
  if (!line["lsn"].is_number_unsigned() || !line["timestamp"].is_number_integer() ||
      !line["entity"].is_string() || !line["operation"].is_string()) {
    return std::nullopt;
  }
  NativeChange change;
  change.lsn = line["lsn"].get<std::uint64_t>();
  auto seq = row_or_null(line, "seq");
  change.seq = seq.is_number_unsigned() ? seq.get<std::uint32_t>() : 0;
  change.timestamp_us = line["timestamp"].get<std::int64_t>();
  change.entity = line["entity"].get<std::string>();
  auto key = row_or_null(line, "key");
  change.key = (key.is_null() ? nlohmann::json::object() : key).dump();
  change.operation = line["operation"].get<std::string>();
  change.old_row = row_or_null(line, "old");
  change.new_row = row_or_null(line, "new");
  return change;
}

}  // namespace

bool NativeChange::same_change(const NativeChange& other) const {
  return lsn == other.lsn && seq == other.seq && timestamp_us == other.timestamp_us &&
         entity == other.entity && key == other.key && operation == other.operation &&
         old_row == other.old_row && new_row == other.new_row;
}

std::string NativeChange::describe() const {
  return "lsn " + std::to_string(lsn) + " seq " + std::to_string(seq) + " " + entity + " " + key +
         " " + operation;
}

std::string commit_marker_line(std::uint64_t lsn) {
  return R"({"lsn":)" + std::to_string(lsn) + R"(,"commit":true})" + "\n";
}

const NativeChange& last_change_of_middle_transaction(const std::vector<NativeChange>& changes) {
  std::size_t index = changes.size() / 2 - 1;
  while (changes[index + 1].lsn == changes[index].lsn) ++index;
  return changes[index];
}

NativeFile read_native_file(const std::string& path) {
  NativeFile file;
  std::string data = read_file(path);
  std::size_t pos = 0;
  std::size_t number = 0;
  while (pos < data.size()) {
    std::size_t newline = data.find('\n', pos);
    const bool complete = newline != std::string::npos;
    std::size_t end = complete ? newline + 1 : data.size();
    std::string text = data.substr(pos, (complete ? newline : data.size()) - pos);
    ++number;
    if (!complete) file.ends_with_newline = false;
    if (auto change = parse_native(text)) {
      change->offset = pos;
      change->end = end;
      file.changes.push_back(std::move(*change));
    } else if (text.find_first_not_of(" \t\r") != std::string::npos) {
      file.unparsed.push_back(std::to_string(number) + ": " + text.substr(0, 300));
    }
    pos = end;
  }
  return file;
}

std::uint64_t file_size(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return 0;
  return static_cast<std::uint64_t>(info.st_size);
}

std::optional<CheckpointFile> read_checkpoint_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  auto doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("lsn") || !doc["lsn"].is_number_unsigned()) {
    return std::nullopt;
  }
  CheckpointFile checkpoint;
  checkpoint.lsn = doc["lsn"].get<std::uint64_t>();
  checkpoint.offset = doc.value("offset", std::uint64_t{0});
  checkpoint.commit_time_us = doc.value("commit_time_us", std::int64_t{0});
  return checkpoint;
}

bool wait_for_checkpoint(const std::string& path, std::uint64_t lsn,
                         std::chrono::milliseconds timeout) {
  return wait_until(
      [&] {
        auto checkpoint = read_checkpoint_file(path);
        return checkpoint && checkpoint->lsn >= lsn;
      },
      timeout);
}

CommandResult run_cdcd(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  TempDir dir;
  std::vector<std::string> argv{cdcd_binary()};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child(argv, dir.path());
  CommandResult result;
  result.exit_code = child.wait(timeout);
  if (!result.exit_code) {
    child.signal(SIGKILL);
    child.wait(std::chrono::seconds(10));
  }
  result.out = child.stdout_text();
  result.err = child.stderr_text();
  return result;
}

DaemonProcess::DaemonProcess(std::string config_path, std::string log_dir)
    : config_path_(std::move(config_path)), log_dir_(std::move(log_dir)) {}

void DaemonProcess::start() {
  if (child_ && child_->running()) throw std::logic_error("the daemon is already running");
  child_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{cdcd_binary(), "run", "--config", config_path_}, log_dir_);
}

void DaemonProcess::start_with_stdout(const std::string& path) {
  if (child_ && child_->running()) throw std::logic_error("the daemon is already running");
  // `exec` keeps the shell's pid: signals reach cdcd itself.
  child_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{"/bin/sh", "-c", "exec \"$0\" run --config \"$1\" > \"$2\"",
                               cdcd_binary(), config_path_, path},
      log_dir_);
}

SilentTcpServer::SilentTcpServer() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd_, 64) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    throw std::runtime_error("SilentTcpServer: cannot listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
}

SilentTcpServer::~SilentTcpServer() { ::close(fd_); }

bool SilentTcpServer::has_waiting_client() const {
  pollfd waiting{fd_, POLLIN, 0};
  return ::poll(&waiting, 1, 0) == 1;
}

UnreadFifo::UnreadFifo(std::string path) : path_(std::move(path)) {
  if (::mkfifo(path_.c_str(), 0644) != 0) throw std::runtime_error("mkfifo " + path_);
  fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error("open " + path_);
}

UnreadFifo::~UnreadFifo() { ::close(fd_); }

int UnreadFifo::buffered_bytes() const {
  int bytes = 0;
  ::ioctl(fd_, FIONREAD, &bytes);
  return bytes;
}

bool DaemonProcess::running() { return child_ && child_->running(); }

pid_t DaemonProcess::pid() const { return child_ ? child_->pid() : -1; }

void DaemonProcess::kill() {
  if (!child_) return;
  child_->signal(SIGKILL);
  child_->wait(std::chrono::seconds(30));
}

std::optional<int> DaemonProcess::stop(std::chrono::milliseconds timeout) {
  if (!child_) return std::nullopt;
  child_->signal(SIGTERM);
  auto code = child_->wait(timeout);
  if (!code) kill();
  return code;
}

std::optional<int> DaemonProcess::wait(std::chrono::milliseconds timeout) {
  if (!child_) return std::nullopt;
  return child_->wait(timeout);
}

std::string DaemonProcess::stderr_text() const { return child_ ? child_->stderr_text() : ""; }

namespace {

// Parses `{a="x",b="y"}` starting at text[pos] == '{'; leaves pos after the '}'.
bool parse_labels(const std::string& text, std::size_t& pos,
                  std::map<std::string, std::string>& labels) {
  ++pos;
  while (pos < text.size() && text[pos] != '}') {
    std::size_t equals = text.find('=', pos);
    if (equals == std::string::npos || equals + 1 >= text.size() || text[equals + 1] != '"') {
      return false;
    }
    std::string name = text.substr(pos, equals - pos);
    std::string value;
    pos = equals + 2;
    while (pos < text.size() && text[pos] != '"') {
      if (text[pos] == '\\' && pos + 1 < text.size()) {
        ++pos;
        value += text[pos] == 'n' ? '\n' : text[pos];
      } else {
        value += text[pos];
      }
      ++pos;
    }
    if (pos >= text.size()) return false;
    labels[name] = value;
    ++pos;
    if (pos < text.size() && text[pos] == ',') ++pos;
  }
  if (pos >= text.size()) return false;
  ++pos;
  return true;
}

}  // namespace

std::vector<MetricSample> parse_metrics(const std::string& exposition) {
  std::vector<MetricSample> samples;
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    MetricSample sample;
    std::size_t pos = line.find_first_of("{ ");
    if (pos == std::string::npos) continue;
    sample.name = line.substr(0, pos);
    if (line[pos] == '{' && !parse_labels(line, pos, sample.labels)) continue;
    while (pos < line.size() && line[pos] == ' ') ++pos;
    std::string value = line.substr(pos, line.find(' ', pos) - pos);
    if (value == "+Inf") {
      sample.value = INFINITY;
    } else if (value == "-Inf") {
      sample.value = -INFINITY;
    } else if (value == "NaN") {
      sample.value = NAN;
    } else {
      char* end = nullptr;
      sample.value = std::strtod(value.c_str(), &end);
      if (end == value.c_str()) continue;
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

namespace {

bool labels_match(const MetricSample& sample, const std::map<std::string, std::string>& labels) {
  for (const auto& [name, value] : labels) {
    auto it = sample.labels.find(name);
    if (it == sample.labels.end() || it->second != value) return false;
  }
  return true;
}

}  // namespace

std::optional<double> metric_value(const std::vector<MetricSample>& samples,
                                   const std::string& name,
                                   const std::map<std::string, std::string>& labels) {
  for (const auto& sample : samples) {
    if (sample.name == name && labels_match(sample, labels)) return sample.value;
  }
  return std::nullopt;
}

double metric_sum(const std::vector<MetricSample>& samples, const std::string& name,
                  const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (const auto& sample : samples) {
    if (sample.name == name && labels_match(sample, labels)) sum += sample.value;
  }
  return sum;
}

std::vector<MetricSample> scrape(int port) {
  auto response = http_get(port, "/metrics");
  if (!response || response->status != 200) return {};
  return parse_metrics(response->body);
}

}  // namespace cdcd::test
