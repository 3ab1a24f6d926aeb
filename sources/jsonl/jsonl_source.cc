#include "sources/jsonl/jsonl_source.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/format/format.h"
#include "daemon/format/native_parse.h"

namespace cdcd {
namespace {

using Clock = std::chrono::steady_clock;

// How much of the file's end is read to find the lsn of its last line (head_lsn).
constexpr std::size_t kTailBytes = 64 * 1024;
constexpr std::uint64_t kMinLineBytes = 1024;
constexpr std::uint64_t kMaxLineBytes = std::uint64_t{1} << 30;
constexpr std::size_t kStepsPerClockCheck = 64;

bool is_blank(std::string_view text) {
  return text.find_first_not_of(" \t\r") == std::string_view::npos;
}

// Reads [offset, offset + length) of `fd` into `out`.
bool read_range(int fd, std::uint64_t offset, std::size_t length, std::string& out) {
  out.resize(length);
  std::size_t done = 0;
  while (done < length) {
    ssize_t count =
        ::pread(fd, out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) return false;
    done += static_cast<std::size_t>(count);
  }
  return true;
}

// The lsn of a line holding a valid change.
std::optional<std::uint64_t> line_lsn(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto change = parse_native_line(line);
  if (!change) return std::nullopt;
  return change->lsn;
}

}  // namespace

JsonlSource::JsonlSource(JsonlSourceOptions options, SourceContext context)
    : options_(std::move(options)), context_(std::move(context)), lines_(options_.max_line_bytes) {}

JsonlSource::~JsonlSource() { close_file(); }

spdlog::logger& JsonlSource::log() const {
  return context_.log ? *context_.log : *spdlog::default_logger();
}

Status JsonlSource::open_file() {
  int fd = ::open(options_.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    // With follow, a log that does not exist yet is waited for.
    if (errno == ENOENT && options_.follow) return ok();
    return fail("cannot open " + options_.path + ": " + std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    return fail(options_.path + " is not a regular file");
  }
  fd_ = fd;
  device_ = info.st_dev;
  inode_ = info.st_ino;
  file_size_ = static_cast<std::uint64_t>(info.st_size);
  connected_ = true;
  return ok();
}

void JsonlSource::close_file() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  connected_ = false;
}

Status JsonlSource::start(const StartPosition& from) {
  from_ = from;
  auto opened = open_file();
  if (!opened) return opened;
  if (fd_ < 0) {
    log().info("waiting for {} to appear", options_.path);
    return ok();
  }
  position_at_start();
  return ok();
}

void JsonlSource::position_at_start() {
  positioned_ = true;
  const Checkpoint& resume = from_.resume;
  if (from_.has_resume && resume.offset > 0) {
    if (offset_matches(resume.offset, resume.lsn)) {
      read_from(resume.offset);
      have_lsn_ = true;
      last_lsn_ = resume.lsn;
      last_closed_ = true;
      reached_first_ = true;
      log().info("resuming {} at byte {}, after lsn {}", options_.path, resume.offset, resume.lsn);
      return;
    }
    log().warn("checkpoint offset no longer matches {}; scanning from the start", options_.path);
  }
  reached_first_ = from_.first_lsn == 0;
  read_from(0);
}

void JsonlSource::read_from(std::uint64_t offset) {
  lines_.reset(fd_, offset);
  read_start_ = offset;
  lines_read_ = 0;
  if (offset == 0) {
    lines_before_start_ = 0;
  } else {
    lines_before_start_.reset();
  }
  head_lsn_ = read_lsn_;
  refresh_head();
}

// A checkpoint's offset is trusted only if it still ends the line of the checkpointed lsn: the
// file may have been replaced or rewritten since.
bool JsonlSource::offset_matches(std::uint64_t offset, std::uint64_t lsn) {
  if (offset > file_size_.load()) return false;
  std::size_t window = static_cast<std::size_t>(std::min<std::uint64_t>(offset, kTailBytes));
  std::string bytes;
  while (true) {
    if (!read_range(fd_, offset - window, window, bytes) || bytes.back() != '\n') return false;
    std::string_view content(bytes.data(), bytes.size() - 1);
    auto previous = content.rfind('\n');
    if (previous != std::string_view::npos) return line_lsn(content.substr(previous + 1)) == lsn;
    if (window == offset) return line_lsn(content) == lsn;
    if (window > options_.max_line_bytes + 1) return false;
    window = static_cast<std::size_t>(std::min<std::uint64_t>(offset, window * 4));
  }
}

Result<PollOutcome> JsonlSource::poll(Emitter& out, Deadline deadline) {
  out_ = &out;
  for (std::size_t steps = 0;; ++steps) {
    if (!flush_pending()) return PollOutcome::kMore;
    if (ended_) return PollOutcome::kEnd;
    if (!out.wants_more()) return PollOutcome::kMore;
    // Reading the clock per line would cost more than splitting the line.
    if (steps % kStepsPerClockCheck == 0) {
      auto now = Clock::now();
      if (now >= deadline) return PollOutcome::kMore;
      if (fd_ >= 0 && now - last_stat_ >= options_.poll_interval) refresh_file_size(now);
    }
    auto stepped = step();
    if (!stepped) return tl::unexpected(stepped.error());
    if (*stepped == Step::kIdle) {
      auto wait = std::min<Clock::duration>(options_.poll_interval, deadline - Clock::now());
      if (wait > Clock::duration::zero()) std::this_thread::sleep_for(wait);
      steps = kStepsPerClockCheck - 1;  // after a wait, look at the clock before the next step
    }
  }
}

Result<JsonlSource::Step> JsonlSource::step() {
  if (fd_ < 0) {
    auto opened = open_file();
    if (!opened) return fail_retryable(opened.error().message);
    if (fd_ < 0) return Step::kIdle;
    log().info("{} appeared", options_.path);
    if (positioned_) {
      read_from(0);
    } else {
      position_at_start();
    }
    return Step::kProgress;
  }
  auto line = lines_.next();
  if (!line) return tl::unexpected(line.error());
  if (*line) {
    handle_line(**line);
    return Step::kProgress;
  }
  return at_end_of_data();
}

Result<JsonlSource::Step> JsonlSource::at_end_of_data() {
  if (!options_.follow) {
    if (auto last = lines_.take_unterminated()) handle_line(*last);
    close_transaction();
    ended_ = true;
    return Step::kProgress;
  }
  // Writers append whole transactions: the end of the data, after a complete line, ends one.
  if (!lines_.has_partial()) close_transaction();
  return follow_file_changes();
}

Result<JsonlSource::Step> JsonlSource::follow_file_changes() {
  // The path is looked at before the file's size, so that a file replaced after a last append is
  // read to its end before the switch.
  struct stat at_path {};
  bool path_exists = ::stat(options_.path.c_str(), &at_path) == 0;
  struct stat current {};
  if (::fstat(fd_, &current) != 0) {
    return fail_retryable("cannot stat " + options_.path + ": " + std::strerror(errno));
  }
  auto size = static_cast<std::uint64_t>(current.st_size);
  file_size_ = size;
  if (size < lines_.read_offset()) {
    log().error("{} was truncated; reading it again from the start", options_.path);
    return switch_file();
  }
  if (size > lines_.read_offset()) return Step::kProgress;
  if (path_exists && (at_path.st_dev != device_ || at_path.st_ino != inode_)) {
    // The old file is complete: its last line counts even without a '\n'.
    if (auto last = lines_.take_unterminated()) handle_line(*last);
    log().info("{} was replaced; reading the new file from the start", options_.path);
    return switch_file();
  }
  return Step::kIdle;
}

Result<JsonlSource::Step> JsonlSource::switch_file() {
  close_transaction();
  close_file();
  auto opened = open_file();
  if (!opened) return fail_retryable(opened.error().message);
  if (fd_ >= 0) read_from(0);
  return Step::kProgress;
}

void JsonlSource::handle_line(const RawLine& line) {
  ++lines_read_;
  if (line.oversized) {
    report_bad(line.text,
               fmt::format("line longer than max_line_bytes ({} bytes)", options_.max_line_bytes),
               line.end_offset);
    return;
  }
  std::string_view text = line.text;
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  if (is_blank(text)) return;
  // Parsed straight into the event that is emitted: a Change is moved once less on its way.
  // The splitter keeps kNativeLinePadding readable bytes after every line it returns.
  SourceEvent event(std::in_place_type<Change>);
  if (auto parsed = parse_native_line_padded(text, std::get<Change>(event)); !parsed) {
    report_bad(text, std::move(parsed.error().message), line.end_offset);
    return;
  }
  handle_change(std::move(event), text, line.end_offset);
}

void JsonlSource::handle_change(SourceEvent&& event, std::string_view raw,
                                std::uint64_t end_offset) {
  Change& change = std::get<Change>(event);
  if (have_lsn_ && (change.lsn < last_lsn_ || (change.lsn == last_lsn_ && last_closed_))) {
    report_bad(raw,
               fmt::format("lsn {} is not greater than {}, the lsn of the previous transaction",
                           change.lsn, last_lsn_),
               end_offset);
    return;
  }
  const bool wanted = change.lsn >= from_.first_lsn;
  if (!have_lsn_ || change.lsn != last_lsn_) {
    close_transaction();
    if (wanted && have_lsn_ && change.lsn > last_lsn_ + 1 && context_.metrics.lsn_gaps) {
      context_.metrics.lsn_gaps->Increment();
    }
    have_lsn_ = true;
    last_lsn_ = change.lsn;
    last_closed_ = false;
  }
  if (!wanted) return;
  reached_first_ = true;
  change.offset = end_offset;
  txn_open_ = true;
  txn_end_offset_ = end_offset;
  txn_timestamp_us_ = change.timestamp_us;
  if (change.lsn != read_lsn_) {
    read_lsn_ = change.lsn;
    if (context_.metrics.read_lsn) context_.metrics.read_lsn->Set(static_cast<double>(read_lsn_));
    if (head_lsn_ < read_lsn_) set_head_lsn(read_lsn_);
  }
  push(std::move(event));
}

void JsonlSource::report_bad(std::string_view raw, std::string reason, std::uint64_t end_offset) {
  // What precedes the wanted range was already handled by an earlier run.
  if (!reached_first_) return;
  BadRecord bad;
  bad.raw.assign(raw);
  bad.reason = std::move(reason);
  bad.location = location();
  bad.last_lsn = have_lsn_ ? last_lsn_ : 0;
  bad.offset = end_offset;
  push(std::move(bad));
}

// "path:LINE". After a resume at an offset the lines before it are counted only now, when a
// report needs them: a healthy resume never reads what precedes its offset.
std::string JsonlSource::location() {
  if (!lines_before_start_) {
    std::uint64_t count = 0;
    std::string block;
    for (std::uint64_t at = 0; at < read_start_;) {
      auto length = static_cast<std::size_t>(std::min<std::uint64_t>(read_start_ - at, 1 << 20));
      if (!read_range(fd_, at, length, block)) break;
      count += static_cast<std::uint64_t>(std::count(block.begin(), block.end(), '\n'));
      at += length;
    }
    lines_before_start_ = count;
  }
  return fmt::format("{}:{}", options_.path, *lines_before_start_ + lines_read_);
}

void JsonlSource::close_transaction() {
  if (txn_open_) {
    push(TransactionEnd{last_lsn_, txn_end_offset_, txn_timestamp_us_});
    txn_open_ = false;
  }
  last_closed_ = true;
}

void JsonlSource::push(SourceEvent&& event) {
  if (pending_head_ == pending_.size() && out_->wants_more()) {
    out_->emit(std::move(event));
    return;
  }
  pending_.push_back(std::move(event));
}

bool JsonlSource::flush_pending() {
  while (pending_head_ < pending_.size()) {
    if (!out_->wants_more()) return false;
    out_->emit(std::move(pending_[pending_head_++]));
  }
  pending_.clear();
  pending_head_ = 0;
  return true;
}

void JsonlSource::refresh_file_size(Clock::time_point now) {
  last_stat_ = now;
  struct stat info {};
  if (::fstat(fd_, &info) != 0) return;
  file_size_ = static_cast<std::uint64_t>(info.st_size);
  if (file_size_.load() > head_checked_size_) refresh_head();
}

// head_lsn is the lsn of the file's last complete line, found by parsing backwards from its end.
void JsonlSource::refresh_head() {
  const std::uint64_t size = file_size_.load();
  head_checked_size_ = size;
  std::size_t window = static_cast<std::size_t>(std::min<std::uint64_t>(size, kTailBytes));
  std::string bytes;
  if (window > 0 && read_range(fd_, size - window, window, bytes)) {
    std::string_view tail(bytes);
    if (window < size) {
      // Starts inside a line: drop that fragment.
      auto first = tail.find('\n');
      tail.remove_prefix(first == std::string_view::npos ? tail.size() : first + 1);
    }
    if (options_.follow) {
      // An unterminated last line may still be being written.
      auto last = tail.rfind('\n');
      tail = last == std::string_view::npos ? std::string_view() : tail.substr(0, last + 1);
    }
    while (!tail.empty()) {
      if (tail.back() == '\n') tail.remove_suffix(1);
      auto previous = tail.rfind('\n');
      auto start = previous == std::string_view::npos ? 0 : previous + 1;
      if (auto lsn = line_lsn(tail.substr(start))) {
        if (*lsn > head_lsn_) head_lsn_ = *lsn;
        break;
      }
      tail = tail.substr(0, start);
    }
  }
  set_head_lsn(std::max(head_lsn_, read_lsn_));
}

void JsonlSource::set_head_lsn(std::uint64_t lsn) {
  head_lsn_ = lsn;
  if (context_.metrics.head_lsn) context_.metrics.head_lsn->Set(static_cast<double>(lsn));
}

void JsonlSource::stop() { close_file(); }

std::uint64_t JsonlSource::bytes_behind(std::uint64_t /*lsn*/, std::uint64_t offset) const {
  const std::uint64_t size = file_size_.load();
  return size > offset ? size - offset : 0;
}

std::unique_ptr<Source> make_jsonl_source(config::Node& options, const SourceContext& context) {
  const auto problems_before = options.diagnostics().items().size();
  JsonlSourceOptions parsed;
  if (auto path = options.string("path", /*required=*/true)) {
    if (path->empty()) options.error_at("path", "must not be empty");
    parsed.path = *path;
  }
  if (auto follow = options.boolean("follow")) parsed.follow = *follow;
  if (auto interval = options.duration("poll_interval")) {
    if (interval->count() <= 0) options.error_at("poll_interval", "must be greater than 0");
    parsed.poll_interval = *interval;
  }
  if (auto max_line_bytes = options.size("max_line_bytes")) {
    if (*max_line_bytes < kMinLineBytes || *max_line_bytes > kMaxLineBytes) {
      options.error_at("max_line_bytes", "must be between 1KiB and 1GiB");
    }
    parsed.max_line_bytes = *max_line_bytes;
  }
  options.check_unknown_keys();
  if (options.diagnostics().items().size() != problems_before) return nullptr;
  return std::make_unique<JsonlSource>(std::move(parsed), context);
}

void register_source_jsonl(PluginRegistry& registry) {
  registry.add_source("jsonl", make_jsonl_source);
}

}  // namespace cdcd
