#include "sources/jsonl/jsonl_source.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

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
// Lines looked at to find the first lsn of a rotated file: more bad lines than this at its start
// and the file is taken for something else (a compressed copy, say).
constexpr int kFirstLinesLooked = 64;

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

// `{"lsn": N, "commit": true}`, exactly: a writer's explicit end of transaction N. Anything more
// is not a marker, so that a broken change carrying "commit" is reported rather than dropped.
std::optional<std::uint64_t> commit_marker_lsn(std::string_view line) {
  if (line.find("\"commit\"") == std::string_view::npos) return std::nullopt;
  auto json = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || json.size() != 2) return std::nullopt;
  auto lsn = json.find("lsn");
  auto commit = json.find("commit");
  if (lsn == json.end() || !lsn->is_number_unsigned() || commit == json.end() || *commit != true) {
    return std::nullopt;
  }
  return lsn->get<std::uint64_t>();
}

// The lsn of a line holding a valid change or a commit marker.
std::optional<std::uint64_t> line_lsn(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (auto change = parse_native_line(line)) return change->lsn;
  return commit_marker_lsn(line);
}

// A checkpoint's offset is trusted only if it still ends the line of the checkpointed lsn: the
// file may have been replaced or rewritten since, and inodes are reused.
bool offset_matches(int fd, std::uint64_t size, std::uint64_t offset, std::uint64_t lsn,
                    std::uint64_t max_line_bytes) {
  if (offset > size) return false;
  std::size_t window = static_cast<std::size_t>(std::min<std::uint64_t>(offset, kTailBytes));
  std::string bytes;
  while (true) {
    if (!read_range(fd, offset - window, window, bytes) || bytes.back() != '\n') return false;
    std::string_view content(bytes.data(), bytes.size() - 1);
    auto previous = content.rfind('\n');
    if (previous != std::string_view::npos) return line_lsn(content.substr(previous + 1)) == lsn;
    if (window == offset) return line_lsn(content) == lsn;
    if (window > max_line_bytes + 1) return false;
    window = static_cast<std::size_t>(std::min<std::uint64_t>(offset, window * 4));
  }
}

// The lsn of the first change (or commit marker) of a file.
std::optional<std::uint64_t> first_lsn_of(int fd, std::uint64_t max_line_bytes) {
  LineSplitter lines(max_line_bytes);
  lines.reset(fd, 0);
  for (int looked = 0; looked < kFirstLinesLooked;) {
    auto line = lines.next();
    if (!line) return std::nullopt;
    std::optional<RawLine> raw = *line ? **line : lines.take_unterminated();
    if (!raw) return std::nullopt;
    if (is_blank(raw->text)) continue;
    if (auto lsn = raw->oversized ? std::nullopt : line_lsn(raw->text)) return lsn;
    ++looked;
  }
  return std::nullopt;
}

bool starts_like_json(int fd) {
  std::string head;
  if (!read_range(fd, 0, 64, head)) return false;
  auto first = head.find_first_not_of(" \t\r\n");
  return first != std::string::npos && head[first] == '{';
}

// `path` with the characters glob(3) would interpret escaped.
std::string glob_escaped(const std::string& path) {
  std::string escaped;
  for (char c : path) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') escaped += '\\';
    escaped += c;
  }
  return escaped;
}

std::vector<std::string> glob_matches(const std::string& pattern) {
  glob_t found{};
  std::vector<std::string> names;
  if (::glob(pattern.c_str(), 0, nullptr, &found) == 0) {
    names.assign(found.gl_pathv, found.gl_pathv + found.gl_pathc);
  }
  ::globfree(&found);
  return names;
}

}  // namespace

struct JsonlSource::LogFile {
  int fd = -1;
  std::string name;
  dev_t device = 0;
  ino_t inode = 0;
  std::uint64_t size = 0;
  std::optional<std::uint64_t> first_lsn;  // filled in for rotated files

  LogFile() = default;
  LogFile(LogFile&& other) noexcept { *this = std::move(other); }
  LogFile& operator=(LogFile&& other) noexcept {
    std::swap(fd, other.fd);
    name = std::move(other.name);
    device = other.device;
    inode = other.inode;
    size = other.size;
    first_lsn = other.first_lsn;
    return *this;
  }
  ~LogFile() {
    if (fd >= 0) ::close(fd);
  }

  // A regular file opened for reading; an error names it, and is retryable only when the file
  // does not exist (it may appear).
  static Result<LogFile> open(const std::string& name) {
    LogFile file;
    file.name = name;
    file.fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
    if (file.fd < 0) {
      int error = errno;
      return tl::unexpected(
          Error{"cannot open " + name + ": " + std::strerror(error), error == ENOENT});
    }
    struct stat info {};
    if (::fstat(file.fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      return fail(name + " is not a regular file");
    }
    file.device = info.st_dev;
    file.inode = info.st_ino;
    file.size = static_cast<std::uint64_t>(info.st_size);
    return file;
  }
};

JsonlSource::JsonlSource(JsonlSourceOptions options, SourceContext context)
    : options_(std::move(options)), context_(std::move(context)), lines_(options_.max_line_bytes) {
  if (options_.rotated.empty()) options_.rotated = glob_escaped(options_.path) + ".*";
}

JsonlSource::~JsonlSource() { close_file(); }

spdlog::logger& JsonlSource::log() const {
  return context_.log ? *context_.log : *spdlog::default_logger();
}

Status JsonlSource::open_file() {
  auto file = LogFile::open(options_.path);
  if (!file) {
    // With follow, a log that does not exist yet is waited for.
    if (file.error().retryable && options_.follow) return ok();
    return fail(file.error().message);
  }
  adopt(std::move(*file));
  return ok();
}

void JsonlSource::adopt(LogFile&& file) {
  close_file();
  std::swap(fd_, file.fd);
  file_name_ = file.name;
  device_ = file.device;
  inode_ = file.inode;
  file_size_ = file.size;
  connected_ = true;
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
  position_at_start();
  if (fd_ < 0) log().info("waiting for {} to appear", options_.path);
  return ok();
}

// Without a usable checkpoint offset, the file is read from its start. With one, the source seeks
// to it: in the path's file, or, after a rotation, in the rotated file holding it; when neither
// holds it, it scans from the oldest file that may hold what follows the checkpoint.
void JsonlSource::position_at_start() {
  const Checkpoint& resume = from_.resume;
  if (!from_.has_resume || resume.offset == 0) {
    if (fd_ < 0) return;
    positioned_ = true;
    reached_first_ = from_.first_lsn == 0;
    read_from(0);
    return;
  }
  const bool path_is_segment = resume.segment == 0 || resume.segment == inode_;
  const auto path_matches = [&] {
    return fd_ >= 0 && offset_matches(fd_, file_size_.load(), resume.offset, resume.lsn,
                                      options_.max_line_bytes);
  };
  if ((path_is_segment && path_matches()) || resume_in_a_rotated_file() || path_matches()) {
    // Found: the path's file, the rotated one, or a copy under the path (same line, same offset).
    if (!positioned_) read_from(resume.offset);
    log().info("resuming {} at byte {}, after lsn {}", file_name_, resume.offset, resume.lsn);
  } else {
    // The path may not exist yet: the checkpointed file may still appear there.
    if (fd_ >= 0) scan_from_the_oldest_file_needed();
    return;
  }
  positioned_ = true;
  have_lsn_ = true;
  last_lsn_ = resume.lsn;
  last_closed_ = true;
  reached_first_ = true;
}

// Finds the checkpointed file among the rotated ones: by its identity, or a copy of it
// (logrotate's copytruncate) holding the checkpointed line at the same offset.
bool JsonlSource::resume_in_a_rotated_file() {
  const Checkpoint& resume = from_.resume;
  auto files = rotated_files(0);
  auto holds_checkpoint = [&](const LogFile& file) {
    return offset_matches(file.fd, file.size, resume.offset, resume.lsn, options_.max_line_bytes);
  };
  auto found = std::find_if(files.begin(), files.end(), [&](const LogFile& file) {
    return resume.segment != 0 && file.inode == resume.segment && holds_checkpoint(file);
  });
  if (found == files.end()) found = std::find_if(files.begin(), files.end(), holds_checkpoint);
  if (found == files.end()) return false;
  adopt(std::move(*found));
  read_from(resume.offset);
  positioned_ = true;
  log().info("{} was rotated since the checkpoint: finishing {} first", options_.path, file_name_);
  return true;
}

// The checkpointed position is gone (the file was rewritten, or rotated where `rotated` does not
// look): read from the start of the newest file that begins at or before the first wanted lsn,
// or else of the oldest one after it, and stop if the first change there lies beyond the
// checkpoint.
void JsonlSource::scan_from_the_oldest_file_needed() {
  const std::uint64_t first_wanted = from_.first_lsn;
  auto path_first = first_lsn_of(fd_, options_.max_line_bytes);
  auto files = rotated_files(0);
  LogFile* base = nullptr;
  if (!path_first || *path_first > first_wanted) {
    LogFile* newest_at_or_before = nullptr;
    LogFile* oldest_after = nullptr;
    for (auto& file : files) {
      const std::uint64_t first = *file.first_lsn;
      if (first <= first_wanted) {
        if (!newest_at_or_before || first > *newest_at_or_before->first_lsn) {
          newest_at_or_before = &file;
        }
      } else if (!oldest_after || first < *oldest_after->first_lsn) {
        oldest_after = &file;
      }
    }
    base = newest_at_or_before ? newest_at_or_before : oldest_after;
    // The path's file is the newest: a rotated file beginning after it is something else.
    if (base && path_first && *path_first <= *base->first_lsn) base = nullptr;
  }
  if (from_.resume.segment != 0 && from_.resume.segment != inode_) {
    log().warn(
        "the checkpointed file (inode {}) is no longer {}, and no file matching \"{}\" holds "
        "lsn {} at byte {}",
        from_.resume.segment, options_.path, options_.rotated, from_.resume.lsn,
        from_.resume.offset);
  }
  if (base) adopt(std::move(*base));
  log().warn("checkpoint offset no longer matches {}; scanning from the start", file_name_);
  positioned_ = true;
  must_continue_checkpoint_ = true;
  reached_first_ = false;
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

// The files matching `rotated`, open, with their first lsn; never the file being read nor
// `also_excluded`.
std::vector<JsonlSource::LogFile> JsonlSource::rotated_files(ino_t also_excluded) {
  std::vector<LogFile> files;
  for (const auto& name : glob_matches(options_.rotated)) {
    auto file = LogFile::open(name);
    if (!file) continue;
    if ((fd_ >= 0 && file->inode == inode_) || file->inode == also_excluded) continue;
    if (std::any_of(files.begin(), files.end(),
                    [&](const LogFile& seen) { return seen.inode == file->inode; })) {
      continue;
    }
    file->first_lsn = first_lsn_of(file->fd, options_.max_line_bytes);
    if (!file->first_lsn) {
      if (starts_like_json(file->fd)) {
        log().warn("{} matches \"{}\" but no change was found at its start; it is not read", name,
                   options_.rotated);
      }
      continue;
    }
    files.push_back(std::move(*file));
  }
  return files;
}

// After the file being read is complete: the rotated file that continues it, the one whose first
// lsn comes next. Finding it by lsn rather than by name survives several rotations in a row.
std::optional<JsonlSource::LogFile> JsonlSource::next_rotated_file() {
  if (!have_lsn_) return std::nullopt;
  struct stat at_path {};
  const ino_t path_inode = ::stat(options_.path.c_str(), &at_path) == 0 ? at_path.st_ino : 0;
  std::optional<LogFile> next;
  for (auto& file : rotated_files(path_inode)) {
    const std::uint64_t first = *file.first_lsn;
    const bool continues = first > last_lsn_ || (first == last_lsn_ && !last_closed_);
    if (continues && (!next || first < *next->first_lsn)) next = std::move(file);
  }
  return next;
}

Result<PollOutcome> JsonlSource::poll(Emitter& out, Deadline deadline) {
  out_ = &out;
  for (std::size_t steps = 0;; ++steps) {
    if (!flush_pending()) return held_back();
    if (ended_) return PollOutcome::kEnd;
    if (!out.wants_more()) return held_back();
    // Reading the clock per line would cost more than splitting the line.
    if (steps % kStepsPerClockCheck == 0) {
      auto now = Clock::now();
      if (now >= deadline) return PollOutcome::kMore;
      refresh_file_size_when_due(now);
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
  if (failure_) return tl::unexpected(*failure_);
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
    if (failure_) return tl::unexpected(*failure_);
    return Step::kProgress;
  }
  return at_end_of_data();
}

Result<JsonlSource::Step> JsonlSource::at_end_of_data() {
  if (options_.follow) return follow_file_changes();
  struct stat at_path {};
  const bool path_is_read =
      ::stat(options_.path.c_str(), &at_path) == 0 && at_path.st_ino == inode_;
  // A rotated file: the files after it follow.
  if (!path_is_read) return switch_to_next_file();
  if (auto last = lines_.take_unterminated()) handle_line(*last);
  if (failure_) return tl::unexpected(*failure_);
  close_transaction();
  if (must_continue_checkpoint_) {
    return fail(fmt::format(
        "changes after lsn {} may be missing: the checkpointed file (inode {}) is neither {} nor "
        "a file matching \"{}\", and no change follows in {}",
        from_.resume.lsn, from_.resume.segment, options_.path, options_.rotated, file_name_));
  }
  reach_first();  // the bad records held while skipping have no change below the start after them
  ended_ = true;
  return Step::kProgress;
}

Result<JsonlSource::Step> JsonlSource::follow_file_changes() {
  // The path is looked at before the file's size, so that a file replaced after a last append is
  // read to its end before the switch.
  struct stat at_path {};
  bool path_exists = ::stat(options_.path.c_str(), &at_path) == 0;
  struct stat current {};
  if (::fstat(fd_, &current) != 0) {
    return fail_retryable("cannot stat " + file_name_ + ": " + std::strerror(errno));
  }
  auto size = static_cast<std::uint64_t>(current.st_size);
  file_size_ = size;
  if (size < lines_.consumed_offset()) return reread_truncated_file();
  if (size < lines_.read_offset()) {
    // Only the unterminated last line went away (a cdcd file sink removes the partial line a crash
    // left): what was consumed is intact.
    log().info("{}: its unfinished last line was removed; reading on from byte {}", file_name_,
               lines_.consumed_offset());
    lines_.reset(fd_, lines_.consumed_offset());
    return Step::kProgress;
  }
  if (size > lines_.read_offset()) return Step::kProgress;
  if (path_exists && (at_path.st_dev != device_ || at_path.st_ino != inode_)) {
    return switch_to_next_file();
  }
  return Step::kIdle;
}

Result<JsonlSource::Step> JsonlSource::reread_truncated_file() {
  log().error("{} was truncated; reading it again from the start", file_name_);
  close_file();
  auto opened = open_file();
  if (!opened) return fail_retryable(opened.error().message);
  if (fd_ >= 0) read_from(0);
  return Step::kProgress;
}

// The file being read is complete (it was rotated): its last line counts even without a '\n'.
// A transaction open at its end may go on in the next file.
Result<JsonlSource::Step> JsonlSource::switch_to_next_file() {
  if (auto last = lines_.take_unterminated()) handle_line(*last);
  if (failure_) return tl::unexpected(*failure_);
  const std::string finished = file_name_;
  if (auto next = next_rotated_file()) {
    adopt(std::move(*next));
    read_from(0);
    log().info("{} was replaced; finished {}, reading {} next", options_.path, finished,
               file_name_);
    return Step::kProgress;
  }
  close_file();
  auto opened = open_file();
  if (!opened) return fail_retryable(opened.error().message);
  if (fd_ >= 0) read_from(0);
  log().info("{} was replaced; finished {}, reading the new file from the start", options_.path,
             finished);
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
    if (auto marker = commit_marker_lsn(text)) {
      handle_commit_marker(*marker, text, line.end_offset);
    } else {
      report_bad(text, std::move(parsed.error().message), line.end_offset);
    }
    return;
  }
  handle_change(std::move(event), text, line.end_offset);
}

void JsonlSource::handle_change(SourceEvent&& event, std::string_view raw,
                                std::uint64_t end_offset) {
  Change& change = std::get<Change>(event);
  if (must_continue_checkpoint_ && !continues_the_checkpoint(change.lsn)) return;
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
  if (!wanted) {
    before_first();
    return;
  }
  reach_first();
  change.offset = end_offset;
  txn_open_ = true;
  txn_end_offset_ = end_offset;
  txn_segment_ = inode_;
  txn_timestamp_us_ = change.timestamp_us;
  if (change.lsn != read_lsn_) {
    read_lsn_ = change.lsn;
    if (context_.metrics.read_lsn) context_.metrics.read_lsn->Set(static_cast<double>(read_lsn_));
    if (head_lsn_ < read_lsn_) set_head_lsn(read_lsn_);
  }
  push(std::move(event));
}

// Ends transaction `lsn` now; the checkpoint lies after the marker, so that a resume skips it.
void JsonlSource::handle_commit_marker(std::uint64_t lsn, std::string_view raw,
                                       std::uint64_t end_offset) {
  if (must_continue_checkpoint_ && !continues_the_checkpoint(lsn)) return;
  if (have_lsn_ && lsn < last_lsn_) {
    report_bad(raw, fmt::format("commit marker for lsn {} after lsn {}", lsn, last_lsn_),
               end_offset);
    return;
  }
  if (have_lsn_ && lsn == last_lsn_) {
    if (txn_open_) {
      txn_end_offset_ = end_offset;
      txn_segment_ = inode_;
    }
  } else {
    // A transaction without changes.
    close_transaction();
    have_lsn_ = true;
    last_lsn_ = lsn;
  }
  close_transaction();
  if (lsn < from_.first_lsn) {
    before_first();
  } else {
    reach_first();
  }
}

// The checkpointed position was not found: a first lsn beyond the checkpoint's next one proves
// changes missing, and nothing past them is delivered.
bool JsonlSource::continues_the_checkpoint(std::uint64_t lsn) {
  must_continue_checkpoint_ = false;
  const std::uint64_t first_wanted = from_.first_lsn;
  if (lsn <= first_wanted) return true;
  failure_ = Error{
      fmt::format("changes from lsn {} to {} are missing: the checkpoint (lsn {}, byte {} of the "
                  "file with inode {}) is neither in {} nor in a file matching \"{}\", and the "
                  "first change found, in {}, has lsn {}. Put the rotated file back where "
                  "`rotated` finds it and restart, or accept the loss with `cdcd checkpoint set "
                  "--consumer NAME --lsn {}`",
                  first_wanted, lsn - 1, from_.resume.lsn, from_.resume.offset,
                  from_.resume.segment, options_.path, options_.rotated, file_name_, lsn, lsn - 1),
      false};
  return false;
}

// Skipping what precedes the start, a good record below it: the bad records before it were
// handled by an earlier run.
void JsonlSource::before_first() { held_bad_.clear(); }

// The wanted range begins: the bad records held since the last record below it belong to it.
// They are placed at the start, so that a consumer starting there takes them.
void JsonlSource::reach_first() {
  if (reached_first_) return;
  reached_first_ = true;
  const std::uint64_t start = from_.first_lsn == 0 ? 0 : from_.first_lsn - 1;
  for (auto& bad : held_bad_) {
    bad.last_lsn = std::max(bad.last_lsn, start);
    push(std::move(bad));
  }
  held_bad_.clear();
}

void JsonlSource::report_bad(std::string_view raw, std::string reason, std::uint64_t end_offset) {
  BadRecord bad;
  bad.raw.assign(raw);
  bad.reason = std::move(reason);
  bad.location = location();
  bad.last_lsn = have_lsn_ ? last_lsn_ : 0;
  bad.offset = end_offset;
  if (!reached_first_) {
    held_bad_.push_back(std::move(bad));
    return;
  }
  push(std::move(bad));
}

// "FILE:LINE". After a resume at an offset the lines before it are counted only now, when a
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
  return fmt::format("{}:{}", file_name_, *lines_before_start_ + lines_read_);
}

void JsonlSource::close_transaction() {
  if (txn_open_) {
    push(TransactionEnd{last_lsn_, txn_end_offset_, txn_timestamp_us_, txn_segment_});
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

// The consumers are full: nothing is read, but the log may still grow, and head_lsn is what the
// backlog (lag in bytes) is measured against.
PollOutcome JsonlSource::held_back() {
  refresh_file_size_when_due(Clock::now());
  return PollOutcome::kMore;
}

void JsonlSource::refresh_file_size_when_due(Clock::time_point now) {
  if (fd_ >= 0 && now - last_stat_ >= options_.poll_interval) refresh_file_size(now);
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
  if (auto rotated = options.string("rotated")) {
    if (rotated->empty()) options.error_at("rotated", "must not be empty");
    parsed.rotated = *rotated;
  }
  options.check_unknown_keys();
  if (options.diagnostics().items().size() != problems_before) return nullptr;
  return std::make_unique<JsonlSource>(std::move(parsed), context);
}

void register_source_jsonl(PluginRegistry& registry) {
  registry.add_source("jsonl", make_jsonl_source);
}

}  // namespace cdcd
