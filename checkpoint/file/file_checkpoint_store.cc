#include "checkpoint/file/file_checkpoint_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

namespace cdcd {

namespace {

namespace fs = std::filesystem;

constexpr int kFormatVersion = 1;
// Temp files are "." + target name + this + random suffix: hidden, and never a "*.json".
constexpr char kTempInfix[] = ".json.tmp.";
// Hidden like the temp files, so that no consumer name can collide with it.
constexpr char kLockFile[] = ".lock";

std::string errno_text() { return std::strerror(errno); }

// Consumer names become file names: keep them to a portable set so that no name can escape the
// directory ("../x", "a/b"), hide itself (".x") or collide with a temp file.
Status check_consumer_name(const std::string& consumer) {
  const bool safe_chars = !consumer.empty() && consumer.size() <= 200 && consumer.front() != '.' &&
                          consumer.find_first_not_of(
                              "abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789._-") == std::string::npos;
  if (safe_chars) return ok();
  return fail("consumer name \"" + consumer +
              "\" cannot name a checkpoint file: use 1 to 200 letters, digits, '.', '_' or '-', "
              "not starting with '.'");
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_retryable(errno_text());
    done += static_cast<std::size_t>(n);
  }
  return ok();
}

Result<std::string> read_all(int fd) {
  std::string data;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(errno_text());
    if (n == 0) return data;
    data.append(buffer, static_cast<std::size_t>(n));
  }
}

// The checkpoint in `text`, or why it is not one.
Result<Checkpoint> parse_checkpoint(const std::string& text, const std::string& consumer) {
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return fail("not valid JSON");
  if (!doc.is_object()) return fail("not a JSON object");
  const auto version = doc.find("version");
  if (version == doc.end() || *version != kFormatVersion) {
    return fail("unsupported \"version\" (expected " + std::to_string(kFormatVersion) + ")");
  }
  const auto owner = doc.find("consumer");
  if (owner == doc.end() || *owner != consumer) {
    return fail("\"consumer\" is not \"" + consumer + "\"");
  }
  for (const char* field : {"lsn", "offset"}) {
    const auto it = doc.find(field);
    if (it == doc.end() || !it->is_number_unsigned()) {
      return fail(std::string("\"") + field + "\" is missing or not an unsigned integer");
    }
  }
  for (const char* field : {"commit_time_us", "saved_at_us"}) {
    const auto it = doc.find(field);
    if (it == doc.end() || !it->is_number_integer()) {
      return fail(std::string("\"") + field + "\" is missing or not an integer");
    }
  }
  Checkpoint checkpoint;
  checkpoint.lsn = doc["lsn"].get<std::uint64_t>();
  checkpoint.offset = doc["offset"].get<std::uint64_t>();
  checkpoint.commit_time_us = doc["commit_time_us"].get<std::int64_t>();
  checkpoint.saved_at_us = doc["saved_at_us"].get<std::int64_t>();
  // Checkpoints written before segments were recorded have none: 0 means "unknown".
  if (const auto segment = doc.find("segment"); segment != doc.end()) {
    if (!segment->is_number_unsigned()) return fail("\"segment\" is not an unsigned integer");
    checkpoint.segment = segment->get<std::uint64_t>();
  }
  return checkpoint;
}

bool is_temp_file(const std::string& name) {
  return !name.empty() && name.front() == '.' && name.find(kTempInfix) != std::string::npos;
}

}  // namespace

FileCheckpointStore::FileCheckpointStore(std::string dir, std::shared_ptr<spdlog::logger> log)
    : dir_(std::move(dir)), log_(std::move(log)) {}

FileCheckpointStore::~FileCheckpointStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Status FileCheckpointStore::lock_dir() {
  if (lock_fd_ >= 0) return ok();
  const std::string path = (fs::path(dir_) / kLockFile).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fail("checkpoint lock file " + path + ": cannot open it: " + errno_text());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const bool held = errno == EWOULDBLOCK;
    const std::string reason = errno_text();
    auto holder = held ? read_all(fd) : Result<std::string>(std::string());
    ::close(fd);
    if (!held) return fail("checkpoint lock file " + path + ": cannot lock it: " + reason);
    std::string pid = holder ? *holder : std::string();
    while (!pid.empty() && std::isspace(static_cast<unsigned char>(pid.back()))) pid.pop_back();
    return fail("checkpoint directory " + dir_ + " is in use by process " +
                (pid.empty() ? std::string("(pid unknown)") : pid) +
                " (a running cdcd daemon or `cdcd checkpoint` command holds " + path +
                "); two processes must not write the same checkpoints: stop it first");
  }
  // The pid only tells whoever is refused who holds the lock; the flock itself is the lock.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    if (log_) log_->warn("checkpoint lock file {}: cannot record the pid: {}", path, errno_text());
  }
  lock_fd_ = fd;
  return ok();
}

std::string FileCheckpointStore::path_of(const std::string& consumer) const {
  return (fs::path(dir_) / (consumer + ".json")).string();
}

Status FileCheckpointStore::start() {
  std::error_code error;
  fs::create_directories(dir_, error);
  if (error) {
    return fail("checkpoint directory " + dir_ + ": cannot create it: " + error.message());
  }
  if (auto locked = lock_dir(); !locked) return locked;
  // A crash between creating a temp file and renaming it leaves the temp file behind; the
  // checkpoint itself is intact, so the leftovers are just garbage.
  for (fs::directory_iterator it(dir_, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!is_temp_file(name)) continue;
    std::error_code remove_error;
    if (fs::remove(it->path(), remove_error)) {
      if (log_)
        log_->info("removed {}, left by an interrupted checkpoint save", it->path().string());
    }
  }
  if (error) return fail("checkpoint directory " + dir_ + ": cannot list it: " + error.message());
  return ok();
}

Result<std::optional<Checkpoint>> FileCheckpointStore::load(const std::string& consumer) {
  if (auto valid = check_consumer_name(consumer); !valid) return tl::unexpected(valid.error());
  const std::string path = path_of(consumer);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return std::optional<Checkpoint>();
  if (fd < 0) return fail("checkpoint file " + path + ": cannot open it: " + errno_text());
  auto text = read_all(fd);
  ::close(fd);
  if (!text) return fail("checkpoint file " + path + ": cannot read it: " + text.error().message);
  auto checkpoint = parse_checkpoint(*text, consumer);
  if (!checkpoint) {
    return fail("checkpoint file " + path + " is damaged: " + checkpoint.error().message +
                "; repair or delete it, or use `cdcd checkpoint set|reset`");
  }
  return std::optional<Checkpoint>(*checkpoint);
}

Status FileCheckpointStore::save(const std::string& consumer, const Checkpoint& checkpoint) {
  if (auto valid = check_consumer_name(consumer); !valid) return valid;
  const nlohmann::json doc = {
      {"consumer", consumer},        {"lsn", checkpoint.lsn},
      {"offset", checkpoint.offset}, {"commit_time_us", checkpoint.commit_time_us},
      {"saved_at_us", now_us()},     {"segment", checkpoint.segment},
      {"version", kFormatVersion}};
  const std::string target = path_of(consumer);
  // mkostemp picks a name no other save can be using, so concurrent saves never share a temp file.
  std::string temp = (fs::path(dir_) / ("." + consumer + kTempInfix + "XXXXXX")).string();
  const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    return fail_retryable("checkpoint directory " + dir_ +
                          ": cannot create a temp file: " + errno_text());
  }
  auto abandon = [&](const std::string& reason) {
    ::close(fd);
    ::unlink(temp.c_str());
    return fail_retryable("checkpoint file " + target + ": " + reason);
  };
  if (auto written = write_all(fd, doc.dump() + "\n"); !written) {
    return abandon("cannot write " + temp + ": " + written.error().message);
  }
  if (::fsync(fd) != 0) return abandon("cannot fsync " + temp + ": " + errno_text());
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    return abandon("cannot rename " + temp + ": " + errno_text());
  }
  ::close(fd);
  // The rename is durable only once the directory entry is.
  return sync_dir();
}

Status FileCheckpointStore::remove(const std::string& consumer) {
  if (auto valid = check_consumer_name(consumer); !valid) return valid;
  const std::string path = path_of(consumer);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return fail("checkpoint file " + path + ": cannot delete it: " + errno_text());
  }
  return sync_dir();
}

Status FileCheckpointStore::sync_dir() const {
  const int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail_retryable("checkpoint directory " + dir_ + ": " + errno_text());
  const bool synced = ::fsync(fd) == 0;
  const std::string reason = synced ? "" : errno_text();
  ::close(fd);
  if (!synced) return fail_retryable("checkpoint directory " + dir_ + ": fsync: " + reason);
  return ok();
}

namespace {

// file:///var/lib/cdcd/checkpoints: the directory, an absolute path (no host).
Result<YAML::Node> options_from_file_url(const std::string& url) {
  const std::string_view prefix = "file://";
  std::string dir = url.substr(prefix.size());
  if (dir.empty() || dir.front() != '/') {
    return fail("expected file:///ABSOLUTE/DIRECTORY (three slashes, no host), got \"" + url +
                "\"");
  }
  YAML::Node options;
  options["dir"] = dir;
  return options;
}

}  // namespace

void register_checkpoint_file(PluginRegistry& registry) {
  registry.add_checkpoint_store_scheme("file", "file", options_from_file_url);
  registry.add_checkpoint_store(
      "file",
      [](config::Node& options,
         const CheckpointStoreContext& context) -> std::unique_ptr<CheckpointStore> {
        const auto errors = options.diagnostics().items().size();
        auto dir = options.string("dir", /*required=*/true);
        options.mark_known({"interval"});  // the runtime's commit interval, not the store's
        options.check_unknown_keys();
        if (options.diagnostics().items().size() != errors) return nullptr;
        if (dir->empty()) {
          options.error_at("dir", "must not be empty");
          return nullptr;
        }
        return std::make_unique<FileCheckpointStore>(*dir, context.log);
      });
}

}  // namespace cdcd
