#include "sources/jsonl/jsonl_source.h"

#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "tests/support/test_util.h"

namespace cdcd {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Collects events; accepts at most `limit` of them (backpressure).
class CollectingEmitter : public Emitter {
 public:
  void emit(SourceEvent&& event) override {
    EXPECT_TRUE(wants_more()) << "emit() after wants_more() turned false";
    events.push_back(std::move(event));
  }
  bool wants_more() const override { return events.size() < limit; }

  std::vector<SourceEvent> events;
  std::size_t limit = std::numeric_limits<std::size_t>::max();
};

std::string change_line(std::uint64_t lsn, std::uint32_t seq = 0,
                        const std::string& entity = "public.t") {
  return fmt::format(
      R"({{"lsn": {}, "seq": {}, "timestamp": 1763719200000000, "entity": "{}", )"
      R"("key": {{"id": {}}}, "operation": "insert", "new": {{"id": {}, "v": "x"}}}})",
      lsn, seq, entity, lsn * 10 + seq, lsn * 10 + seq);
}

// "C3.0" for a change, "T3" for a transaction end, "B@path:LINE" for a bad record.
std::string summary(const std::vector<SourceEvent>& events) {
  std::string text;
  for (const auto& event : events) {
    if (!text.empty()) text += ' ';
    if (const auto* change = std::get_if<Change>(&event)) {
      text += fmt::format("C{}.{}", change->lsn, change->seq);
    } else if (const auto* end = std::get_if<TransactionEnd>(&event)) {
      text += fmt::format("T{}", end->lsn);
    } else {
      const auto& bad = std::get<BadRecord>(event);
      text += "B@" + bad.location.substr(bad.location.rfind('/') + 1);
    }
  }
  return text;
}

std::uint64_t inode_of(const std::string& path) {
  struct stat info {};
  EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
  return info.st_ino;
}

template <typename T>
std::vector<T> events_of(const std::vector<SourceEvent>& events) {
  std::vector<T> selected;
  for (const auto& event : events) {
    if (const auto* typed = std::get_if<T>(&event)) selected.push_back(*typed);
  }
  return selected;
}

// Metrics that the unit tests can read back.
struct TestMetrics {
  prometheus::Registry registry;
  prometheus::Gauge& read_lsn =
      prometheus::BuildGauge().Name("read_lsn").Register(registry).Add({});
  prometheus::Gauge& head_lsn =
      prometheus::BuildGauge().Name("head_lsn").Register(registry).Add({});
  prometheus::Counter& lsn_gaps =
      prometheus::BuildCounter().Name("lsn_gaps").Register(registry).Add({});

  SourceMetrics source_metrics() { return SourceMetrics{&read_lsn, &head_lsn, &lsn_gaps}; }
};

class JsonlSourceTest : public testing::Test {
 protected:
  std::unique_ptr<JsonlSource> make(bool follow, std::uint64_t max_line_bytes = 16 << 20,
                                    bool with_metrics = false) {
    JsonlSourceOptions options;
    options.path = path_;
    options.follow = follow;
    options.poll_interval = milliseconds(5);
    options.max_line_bytes = max_line_bytes;
    options.rotated = rotated_;
    SourceContext context;
    context.name = "test";
    context.log = std::make_shared<spdlog::logger>(
        "jsonl-test", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_));
    if (with_metrics) context.metrics = metrics_.source_metrics();
    return std::make_unique<JsonlSource>(std::move(options), std::move(context));
  }

  // Polls a non-follow source to its end.
  void drain(JsonlSource& source, CollectingEmitter& out) {
    for (int i = 0; i < 1000; ++i) {
      auto outcome = source.poll(out, Clock::now() + milliseconds(100));
      ASSERT_TRUE(outcome) << outcome.error().message;
      if (*outcome == PollOutcome::kEnd) return;
    }
    FAIL() << "the source never ended";
  }

  // Polls a follow source until `done` holds (bounded).
  bool poll_until(JsonlSource& source, CollectingEmitter& out, const std::function<bool()>& done,
                  milliseconds timeout = milliseconds(10000)) {
    auto give_up = Clock::now() + timeout;
    while (Clock::now() < give_up) {
      auto outcome = source.poll(out, Clock::now() + milliseconds(20));
      EXPECT_TRUE(outcome) << outcome.error().message;
      if (!outcome) return false;
      if (done()) return true;
    }
    return false;
  }

  bool poll_until_summary(JsonlSource& source, CollectingEmitter& out, const std::string& wanted) {
    bool reached = poll_until(source, out, [&] { return summary(out.events) == wanted; });
    EXPECT_EQ(summary(out.events), wanted);
    return reached;
  }

  std::vector<SourceEvent> replay(const std::string& content, StartPosition from = {},
                                  std::uint64_t max_line_bytes = 16 << 20) {
    test::write_file(path_, content);
    auto source = make(false, max_line_bytes);
    auto started = source->start(from);
    EXPECT_TRUE(started) << started.error().message;
    CollectingEmitter out;
    drain(*source, out);
    return std::move(out.events);
  }

  test::TempDir dir_;
  std::string path_ = dir_.file("changes.jsonl");
  std::string rotated_;  // empty: the default
  std::ostringstream log_;
  TestMetrics metrics_;
};

TEST_F(JsonlSourceTest, GroupsTransactionsAndEndsAtEndOfFile) {
  std::string content = change_line(1, 0) + "\n" + change_line(1, 1) + "\n" + change_line(2) +
                        "\n" + change_line(5) + "\n";
  auto events = replay(content);
  EXPECT_EQ(summary(events), "C1.0 C1.1 T1 C2.0 T2 C5.0 T5");

  auto changes = events_of<Change>(events);
  auto ends = events_of<TransactionEnd>(events);
  ASSERT_EQ(changes.size(), 4u);
  ASSERT_EQ(ends.size(), 3u);
  std::uint64_t first_end = change_line(1, 0).size() + 1;
  EXPECT_EQ(changes[0].offset, first_end);
  EXPECT_EQ(changes[1].offset, first_end + change_line(1, 1).size() + 1);
  EXPECT_EQ(ends[0].offset, changes[1].offset);
  EXPECT_EQ(ends[0].timestamp_us, 1763719200000000);
  EXPECT_EQ(ends[2].offset, content.size());
  EXPECT_EQ(changes[0].key, R"({"id":10})");
  EXPECT_EQ(changes[0].new_row, R"({"id":10,"v":"x"})");
}

TEST_F(JsonlSourceTest, ReportsReadAndHeadLsnAndCountsGaps) {
  test::write_file(path_, change_line(1) + "\n" + change_line(2) + "\n" + change_line(5) + "\n" +
                              change_line(9) + "\n");
  auto source = make(false, 16 << 20, /*with_metrics=*/true);
  ASSERT_TRUE(source->start({}));
  EXPECT_EQ(metrics_.head_lsn.Value(), 9);
  CollectingEmitter out;
  drain(*source, out);
  EXPECT_EQ(metrics_.read_lsn.Value(), 9);
  EXPECT_EQ(metrics_.lsn_gaps.Value(), 2);  // 2 -> 5 and 5 -> 9
  EXPECT_EQ(source->bytes_behind(9, 10), test::read_file(path_).size() - 10);
  EXPECT_EQ(source->bytes_behind(9, 1 << 30), 0u);
  EXPECT_TRUE(source->connected());
  source->stop();
  EXPECT_FALSE(source->connected());
}

// A consumer that is full does not stop the source from seeing the log grow: head_lsn is what the
// backlog is measured against while nothing is read.
TEST_F(JsonlSourceTest, HeadLsnFollowsTheLogWhileTheConsumersAreFull) {
  test::write_file(path_, change_line(1) + "\n");
  auto source = make(true, 16 << 20, /*with_metrics=*/true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  ASSERT_TRUE(poll_until(*source, out, [&] { return out.events.size() == 1; }));
  out.limit = out.events.size();
  std::string backlog;
  for (std::uint64_t lsn = 2; lsn <= 20; ++lsn) backlog += change_line(lsn) + "\n";
  test::append_file(path_, backlog);
  EXPECT_TRUE(poll_until(
      *source, out, [&] { return metrics_.head_lsn.Value() == 20; }, milliseconds(2000)))
      << "head_lsn " << metrics_.head_lsn.Value();
  EXPECT_EQ(summary(out.events), "C1.0");
}

TEST_F(JsonlSourceTest, LastLineWithoutNewlineIsCompleteWithoutFollow) {
  std::string content = change_line(1) + "\n" + change_line(2);
  auto events = replay(content);
  EXPECT_EQ(summary(events), "C1.0 T1 C2.0 T2");
  EXPECT_EQ(events_of<TransactionEnd>(events).back().offset, content.size());
}

TEST_F(JsonlSourceTest, HandlesCrlfAndSkipsBlankLines) {
  std::string content = change_line(1) + "\r\n\r\n   \n" + change_line(2) + "\r\n\t\r\n";
  auto events = replay(content);
  EXPECT_EQ(summary(events), "C1.0 T1 C2.0 T2");
  auto changes = events_of<Change>(events);
  EXPECT_EQ(changes[0].offset, change_line(1).size() + 2);
  EXPECT_EQ(changes[1].offset, content.size() - 3);
}

TEST_F(JsonlSourceTest, KeepsUnicodeAndEscapes) {
  std::string line =
      R"({"lsn": 1, "timestamp": 1, "entity": "public.caf\u00e9", "source": "日本", )"
      R"("operation": "update", "key": {"name": "caf\u00e9"}, "new": {"name": "café 🎉", "q": "a\"b"}})";
  auto events = replay(line + "\n");
  auto changes = events_of<Change>(events);
  ASSERT_EQ(changes.size(), 1u) << summary(events);
  EXPECT_EQ(changes[0].entity, "public.café");
  EXPECT_EQ(changes[0].source, "日本");
  EXPECT_EQ(changes[0].key, R"({"name":"caf\u00e9"})");
  EXPECT_EQ(changes[0].new_row, R"({"name":"café 🎉","q":"a\"b"})");
}

TEST_F(JsonlSourceTest, ParsesAHugeLine) {
  std::string blob(3 << 20, 'z');
  std::string huge = R"({"lsn": 2, "timestamp": 1, "entity": "t", "operation": "insert", )"
                     R"("new": {"blob": ")" +
                     blob + "\"}}";
  auto events = replay(change_line(1) + "\n" + huge + "\n" + change_line(3) + "\n");
  EXPECT_EQ(summary(events), "C1.0 T1 C2.0 T2 C3.0 T3");
  EXPECT_EQ(events_of<Change>(events)[1].new_row.size(), blob.size() + 11);
}

TEST_F(JsonlSourceTest, LineOverMaxLineBytesIsSkippedAsBadRecord) {
  // One oversized line that fits the read buffer, one far larger than it (skipped without being
  // buffered), one at the end of the file without a newline.
  std::string medium = R"({"lsn": 2, "pad": ")" + std::string(3000, 'm') + "\"}";
  std::string large = R"({"lsn": 3, "pad": ")" + std::string(5 << 20, 'l') + "\"}";
  std::string last = std::string(3000, 'e');
  std::string content =
      change_line(1) + "\n" + medium + "\n" + large + "\n" + change_line(4) + "\n" + last;
  auto events = replay(content, {}, 2048);
  EXPECT_EQ(summary(events),
            "C1.0 B@changes.jsonl:2 B@changes.jsonl:3 T1 C4.0 B@changes.jsonl:5 T4");
  auto bad = events_of<BadRecord>(events);
  ASSERT_EQ(bad.size(), 3u);
  for (const auto& record : bad) {
    EXPECT_EQ(record.reason, "line longer than max_line_bytes (2048 bytes)");
    EXPECT_LE(record.raw.size(), 1024u);
  }
  EXPECT_EQ(bad[0].raw, medium.substr(0, 1024));
  EXPECT_EQ(bad[1].raw, large.substr(0, 1024));
  EXPECT_EQ(bad[0].offset, change_line(1).size() + 1 + medium.size() + 1);
  EXPECT_EQ(bad[1].offset, bad[0].offset + large.size() + 1);
  EXPECT_EQ(bad[1].last_lsn, 1u);
  EXPECT_EQ(bad[2].offset, content.size());
}

TEST_F(JsonlSourceTest, MalformedLineIsBadRecordWithFileAndLine) {
  std::string broken = R"({"lsn": 2, "timestamp": oops})";
  std::string content = change_line(1) + "\n\n" + broken + "\n" + change_line(3) + "\n";
  auto events = replay(content);
  EXPECT_EQ(summary(events), "C1.0 B@changes.jsonl:3 T1 C3.0 T3");
  auto bad = events_of<BadRecord>(events);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].location, path_ + ":3");
  EXPECT_EQ(bad[0].raw, broken);
  EXPECT_EQ(bad[0].reason.rfind("invalid JSON: ", 0), 0u) << bad[0].reason;
  EXPECT_EQ(bad[0].last_lsn, 1u);
  EXPECT_EQ(bad[0].offset, change_line(1).size() + 2 + broken.size() + 1);

  events = replay(change_line(1) + "\n" + R"({"lsn": 2, "timestamp": 1, "entity": "t"})" + "\n");
  bad = events_of<BadRecord>(events);
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].reason, R"(missing "operation")");
}

TEST_F(JsonlSourceTest, NonIncreasingLsnIsBadRecord) {
  std::string content = change_line(5) + "\n" + change_line(7) + "\n" + change_line(6) + "\n" +
                        change_line(7, 1) + "\n" + change_line(8) + "\n" + change_line(7, 2) +
                        "\n" + change_line(9) + "\n";
  auto events = replay(content);
  // The bad line does not end transaction 7: the next lsn-7 change still belongs to it.
  EXPECT_EQ(summary(events),
            "C5.0 T5 C7.0 B@changes.jsonl:3 C7.1 T7 C8.0 B@changes.jsonl:6 T8 C9.0 T9");
  auto bad = events_of<BadRecord>(events);
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_EQ(bad[0].reason, "lsn 6 is not greater than 7, the lsn of the previous transaction");
  EXPECT_EQ(bad[0].last_lsn, 7u);
  EXPECT_EQ(bad[0].raw, change_line(6));
  EXPECT_EQ(bad[1].reason, "lsn 7 is not greater than 8, the lsn of the previous transaction");
}

TEST_F(JsonlSourceTest, TimestampsMayBeRfc3339) {
  auto events = replay(
      R"({"lsn": 4, "timestamp": "2025-11-21T10:00:00.5+01:00", "entity": "t", "operation": "delete", "old": {"id": 1}})"
      "\n");
  ASSERT_EQ(summary(events), "C4.0 T4");
  EXPECT_EQ(std::get<Change>(events[0]).timestamp_us, 1763715600500000);
  EXPECT_EQ(std::get<TransactionEnd>(events[1]).timestamp_us, 1763715600500000);
}

TEST_F(JsonlSourceTest, MissingFileWithoutFollowIsAPermanentError) {
  auto source = make(false);
  auto started = source->start({});
  ASSERT_FALSE(started);
  EXPECT_FALSE(started.error().retryable);
  EXPECT_NE(started.error().message.find(path_), std::string::npos) << started.error().message;
  EXPECT_FALSE(source->connected());
}

TEST_F(JsonlSourceTest, FollowWaitsForTheFileToAppear) {
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  EXPECT_FALSE(source->connected());
  CollectingEmitter out;
  ASSERT_TRUE(source->poll(out, Clock::now() + milliseconds(30)));
  EXPECT_TRUE(out.events.empty());
  test::write_file(path_, change_line(1) + "\n");
  poll_until_summary(*source, out, "C1.0");
  EXPECT_TRUE(source->connected());
}

TEST_F(JsonlSourceTest, FollowWaitsForAPartialLine) {
  std::string second = change_line(1, 1);
  test::write_file(path_, change_line(1) + "\n" + second.substr(0, 30));
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0");
  // The partial line may belong to transaction 1: it must stay open.
  ASSERT_TRUE(source->poll(out, Clock::now() + milliseconds(50)));
  EXPECT_EQ(summary(out.events), "C1.0");

  test::append_file(path_, second.substr(30) + "\n" + change_line(2).substr(0, 10));
  poll_until_summary(*source, out, "C1.0 C1.1");
  test::append_file(path_, change_line(2).substr(10) + "\n");
  poll_until_summary(*source, out, "C1.0 C1.1 T1 C2.0");
}

// A writer may append a transaction in several writes: the end of the data does not end it, the
// next greater lsn does.
TEST_F(JsonlSourceTest, FollowEndsATransactionOnlyWhenAGreaterLsnArrives) {
  test::write_file(path_, change_line(1) + "\n");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0");
  // The end of the data holds the transaction end back (a poll at the end, not a wait for it).
  ASSERT_TRUE(source->poll(out, Clock::now() + milliseconds(30)));
  EXPECT_EQ(summary(out.events), "C1.0");
  test::append_file(path_, change_line(1, 1) + "\n");
  poll_until_summary(*source, out, "C1.0 C1.1");
  test::append_file(path_, change_line(1, 2) + "\n" + change_line(2));
  poll_until_summary(*source, out, "C1.0 C1.1 C1.2");
  test::append_file(path_, "\n" + change_line(3) + "\n");
  poll_until_summary(*source, out, "C1.0 C1.1 C1.2 T1 C2.0 T2 C3.0");
  auto ends = events_of<TransactionEnd>(out.events);
  EXPECT_EQ(ends[0].offset, std::get<Change>(out.events[2]).offset);
  // A lower lsn is still a bad record.
  test::append_file(path_, change_line(2, 1) + "\n");
  poll_until_summary(*source, out, "C1.0 C1.1 C1.2 T1 C2.0 T2 C3.0 B@changes.jsonl:6");
  EXPECT_EQ(std::get<BadRecord>(out.events.back()).reason,
            "lsn 2 is not greater than 3, the lsn of the previous transaction");
}

TEST_F(JsonlSourceTest, CommitMarkerEndsATransactionAtOnce) {
  const std::string marker = R"({"lsn": 1, "commit": true})";
  test::write_file(path_, change_line(1) + "\n" + change_line(1, 1) + "\n" + marker + "\n");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0 C1.1 T1");
  // The checkpoint lies after the marker, so that a restart does not read it again.
  EXPECT_EQ(std::get<TransactionEnd>(out.events[2]).offset, test::read_file(path_).size());
  // The transaction is over: its lsn may not come again. A marker of a transaction without
  // changes moves the lsn on; a repeated marker is harmless.
  test::append_file(path_, change_line(1, 2) + "\n" + R"({"commit":true,"lsn":2})" + "\n" +
                               R"({"lsn":2,"commit":true})" + "\n" + change_line(3) + "\n" +
                               R"({"lsn":3,"commit":true})" + "\n");
  poll_until_summary(*source, out, "C1.0 C1.1 T1 B@changes.jsonl:4 C3.0 T3");
  EXPECT_EQ(std::get<BadRecord>(out.events[3]).reason,
            "lsn 1 is not greater than 1, the lsn of the previous transaction");
  // Only the exact form is a marker: anything more is a bad change, never silently dropped.
  test::append_file(path_, R"({"lsn":4,"commit":true,"entity":"t"})" + std::string("\n") +
                               R"({"lsn":4,"commit":false})" + "\n" + R"({"lsn":2,"commit":true})" +
                               "\n");
  poll_until_summary(*source, out,
                     "C1.0 C1.1 T1 B@changes.jsonl:4 C3.0 T3 B@changes.jsonl:9 B@changes.jsonl:10 "
                     "B@changes.jsonl:11");
  EXPECT_EQ(std::get<BadRecord>(out.events.back()).reason, "commit marker for lsn 2 after lsn 3");
}

TEST_F(JsonlSourceTest, ResumesAfterACommitMarker) {
  std::string content =
      change_line(1) + "\n" + R"({"lsn": 1, "commit": true})" + "\n" + change_line(2) + "\n";
  auto first_run = replay(content);
  ASSERT_EQ(summary(first_run), "C1.0 T1 C2.0 T2");
  StartPosition from;
  from.first_lsn = 2;
  from.has_resume = true;
  from.resume.lsn = 1;
  from.resume.offset = std::get<TransactionEnd>(first_run[1]).offset;
  from.resume.segment = std::get<TransactionEnd>(first_run[1]).segment;
  EXPECT_EQ(summary(replay(content, from)), "C2.0 T2");
  EXPECT_EQ(log_.str().find("no longer matches"), std::string::npos) << log_.str();
}

// A realistic writer: chunks of 600 lines that split transactions, each landing in pieces.
TEST_F(JsonlSourceTest, FollowsAWriterAppendingChunksInPieces) {
  constexpr int kChunks = 20;
  constexpr int kLinesPerChunk = 600;
  std::mt19937 random(20251121);
  std::string log;
  std::string expected;
  std::uint64_t lsn = 1;
  int lines = 0;
  while (lines < kChunks * kLinesPerChunk) {
    const int size = 1 + static_cast<int>(random() % 5);
    for (int seq = 0; seq < size; ++seq) {
      log += change_line(lsn, seq) + "\n";
      expected += fmt::format("C{}.{} ", lsn, seq);
      ++lines;
    }
    expected += fmt::format("T{} ", lsn);
    ++lsn;
  }
  log += fmt::format(R"({{"lsn":{},"commit":true}})", lsn - 1) + "\n";
  expected.pop_back();

  test::write_file(path_, "");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  std::thread writer([&] {
    std::mt19937 pieces(7);
    std::size_t at = 0;
    for (int chunk = 0; chunk < kChunks; ++chunk) {
      std::size_t end = at;
      for (int line = 0; line < kLinesPerChunk; ++line) end = log.find('\n', end) + 1;
      if (chunk + 1 == kChunks) end = log.size();
      // A chunk lands in three writes split anywhere, even inside a line.
      std::size_t first = at + pieces() % (end - at);
      std::size_t second = first + pieces() % (end - first);
      for (auto [from, to] : {std::pair{at, first}, {first, second}, {second, end}}) {
        test::append_file(path_, log.substr(from, to - from));
        std::this_thread::sleep_for(milliseconds(1));  // pacing: lets the reader catch up
      }
      at = end;
    }
  });
  CollectingEmitter out;
  bool complete = poll_until(
      *source, out,
      [&] {
        return !out.events.empty() && std::holds_alternative<TransactionEnd>(out.events.back()) &&
               std::get<TransactionEnd>(out.events.back()).lsn == lsn - 1;
      },
      milliseconds(60000));
  writer.join();
  EXPECT_TRUE(complete);
  EXPECT_TRUE(events_of<BadRecord>(out.events).empty())
      << std::get<BadRecord>(events_of<BadRecord>(out.events).empty()
                                 ? SourceEvent(BadRecord{})
                                 : SourceEvent(events_of<BadRecord>(out.events)[0]))
             .reason;
  EXPECT_TRUE(summary(out.events) == expected) << "events differ from the log";
}

// A cdcd file sink removes a partial last line left by a crash before writing again: a follower
// has not consumed that line, so the shrink is not a truncation.
TEST_F(JsonlSourceTest, FollowTakesARemovedPartialLineForNoTruncation) {
  const std::string complete = change_line(1) + "\n" + change_line(2) + "\n";
  test::write_file(path_, complete + change_line(3).substr(0, 25));
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0 T1 C2.0");
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(complete.size())), 0);
  ASSERT_TRUE(source->poll(out, Clock::now() + milliseconds(50)));  // reaches the shrunk end
  test::append_file(path_, change_line(3) + "\n" + change_line(4) + "\n");
  poll_until_summary(*source, out, "C1.0 T1 C2.0 T2 C3.0 T3 C4.0");
  EXPECT_EQ(log_.str().find("truncated"), std::string::npos) << log_.str();

  // Shorter than what was consumed: a real truncation.
  ASSERT_EQ(::truncate(path_.c_str(), 10), 0);
  ASSERT_TRUE(source->poll(out, Clock::now() + milliseconds(50)));
  EXPECT_NE(log_.str().find(path_ + " was truncated"), std::string::npos) << log_.str();
}

TEST_F(JsonlSourceTest, FollowRereadsATruncatedFile) {
  test::write_file(path_, change_line(1) + "\n" + change_line(2) + "\n" + change_line(3) + "\n");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0 T1 C2.0 T2 C3.0");
  test::write_file(path_, change_line(10) + "\n");  // same file, truncated then rewritten
  poll_until_summary(*source, out, "C1.0 T1 C2.0 T2 C3.0 T3 C10.0");
  EXPECT_EQ(std::get<Change>(out.events[6]).offset, change_line(10).size() + 1);
  EXPECT_NE(log_.str().find(path_ + " was truncated"), std::string::npos) << log_.str();
}

TEST_F(JsonlSourceTest, FollowFinishesARotatedFileThenReadsTheNewOne) {
  test::write_file(path_, change_line(1) + "\n");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0");
  // The writer's last append to the old file, without a newline, then the rotation.
  test::append_file(path_, change_line(2));
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  test::write_file(path_, change_line(3) + "\n" + change_line(4) + "\n");
  poll_until_summary(*source, out, "C1.0 T1 C2.0 T2 C3.0 T3 C4.0");
  EXPECT_EQ(std::get<Change>(out.events[4]).offset, change_line(3).size() + 1);
  EXPECT_NE(log_.str().find(path_ + " was replaced"), std::string::npos) << log_.str();
  auto ends = events_of<TransactionEnd>(out.events);
  EXPECT_EQ(ends[1].segment, inode_of(path_ + ".1"));
  EXPECT_EQ(ends[2].segment, inode_of(path_));
}

// Two rotations between two looks at the file: the middle file is found by its lsns.
TEST_F(JsonlSourceTest, FollowReadsEveryFileOfSeveralRotations) {
  test::write_file(path_, change_line(1) + "\n");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  poll_until_summary(*source, out, "C1.0");
  test::append_file(path_, change_line(2) + "\n");
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  test::write_file(path_, change_line(3) + "\n");
  ASSERT_EQ(std::rename((path_ + ".1").c_str(), (path_ + ".2").c_str()), 0);
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  test::write_file(path_, change_line(4) + "\n" + change_line(5) + "\n");
  test::write_file(path_ + ".3.gz", std::string("\x1f\x8b\x08\n\x01\x02\n", 7));
  poll_until_summary(*source, out, "C1.0 T1 C2.0 T2 C3.0 T3 C4.0 T4 C5.0");
}

TEST_F(JsonlSourceTest, BackpressureStopsEmittingAtOnce) {
  std::string content;
  for (int lsn = 1; lsn <= 50; ++lsn) content += change_line(lsn) + "\n";
  test::write_file(path_, content);
  auto source = make(false);
  ASSERT_TRUE(source->start({}));

  CollectingEmitter out;
  out.limit = 3;  // C1 T1 C2: the TransactionEnd of 2 and C3 come from one line
  auto before = Clock::now();
  auto outcome = source->poll(out, Clock::now() + milliseconds(60000));
  ASSERT_TRUE(outcome);
  EXPECT_EQ(*outcome, PollOutcome::kMore);
  EXPECT_LT(Clock::now() - before, milliseconds(10000));  // well before the deadline
  EXPECT_EQ(summary(out.events), "C1.0 T1 C2.0");

  out.limit = 4;
  ASSERT_TRUE(source->poll(out, Clock::now() + milliseconds(5000)));
  EXPECT_EQ(summary(out.events), "C1.0 T1 C2.0 T2");

  out.limit = std::numeric_limits<std::size_t>::max();
  drain(*source, out);
  auto expected = replay(content);
  EXPECT_EQ(summary(out.events), summary(expected));
}

TEST_F(JsonlSourceTest, PollReturnsByItsDeadlineInFollowMode) {
  test::write_file(path_, change_line(1) + "\n");
  auto source = make(true);
  ASSERT_TRUE(source->start({}));
  CollectingEmitter out;
  auto before = Clock::now();
  auto outcome = source->poll(out, before + milliseconds(100));
  ASSERT_TRUE(outcome);
  EXPECT_EQ(*outcome, PollOutcome::kMore);
  auto elapsed = Clock::now() - before;
  EXPECT_GE(elapsed, milliseconds(100));
  EXPECT_LT(elapsed, milliseconds(5000));
  EXPECT_EQ(summary(out.events), "C1.0");
}

TEST_F(JsonlSourceTest, StartAtLsnSkipsEarlierChangesAndTheirBadRecords) {
  std::string content = change_line(1) + "\nbroken\n" + change_line(2) + "\n" + change_line(3) +
                        "\n" + change_line(3, 1) + "\nbroken too\n" + change_line(4) + "\n";
  StartPosition from;
  from.first_lsn = 3;
  auto events = replay(content, from);
  EXPECT_EQ(summary(events), "C3.0 C3.1 B@changes.jsonl:6 T3 C4.0 T4");
}

TEST_F(JsonlSourceTest, ResumesAtAVerifiedOffsetWithoutRescanning) {
  std::string content = change_line(1) + "\n" + change_line(2) + "\n" + change_line(2, 1) + "\n" +
                        change_line(3) + "\n";
  auto first_run = replay(content);
  auto ends = events_of<TransactionEnd>(first_run);
  ASSERT_EQ(ends.size(), 3u);
  const TransactionEnd checkpointed = ends[1];  // lsn 2

  // Rewrite what precedes the checkpoint: a rescan would deliver this line (lsn 7 >= first_lsn).
  std::string decoy = change_line(7, 0, "decoy");
  decoy.resize(change_line(1).size(), ' ');
  ASSERT_EQ(decoy.size(), change_line(1).size());
  std::string later = change_line(3) + "\nnot json\n" + change_line(4) + "\n";
  test::write_file(path_, decoy + "\n" + change_line(2) + "\n" + change_line(2, 1) + "\n" + later);

  StartPosition from;
  from.first_lsn = 3;
  from.has_resume = true;
  from.resume.lsn = 2;
  from.resume.offset = checkpointed.offset;
  auto source = make(false);
  ASSERT_TRUE(source->start(from));
  CollectingEmitter out;
  drain(*source, out);
  EXPECT_EQ(summary(out.events), "C3.0 B@changes.jsonl:5 T3 C4.0 T4");
  EXPECT_EQ(log_.str().find("no longer matches"), std::string::npos) << log_.str();
  auto changes = events_of<Change>(out.events);
  EXPECT_EQ(changes[0].offset, checkpointed.offset + change_line(3).size() + 1);
}

TEST_F(JsonlSourceTest, ResumeAfterTheLastTransactionAtEndOfFile) {
  std::string content = change_line(1) + "\n" + change_line(2) + "\n";
  StartPosition from;
  from.first_lsn = 3;
  from.has_resume = true;
  from.resume.lsn = 2;
  from.resume.offset = content.size();
  EXPECT_EQ(summary(replay(content, from)), "");
  EXPECT_EQ(log_.str().find("no longer matches"), std::string::npos) << log_.str();
}

TEST_F(JsonlSourceTest, FallsBackToAScanWhenTheOffsetNoLongerMatches) {
  std::string content = change_line(1) + "\nbroken\n" + change_line(2) + "\n" + change_line(3) +
                        "\n" + change_line(4) + "\n";
  StartPosition from;
  from.first_lsn = 3;
  from.has_resume = true;
  from.resume.lsn = 2;
  struct Case {
    std::uint64_t offset;
    const char* why;
  };
  const std::uint64_t end_of_lsn_1 = change_line(1).size() + 1;
  const Case cases[] = {
      {content.size() + 100, "beyond the end of the file"},
      {end_of_lsn_1 + 3, "not at the end of a line"},
      {end_of_lsn_1, "the line there has another lsn"},
      {end_of_lsn_1 + 7, "the line there is not a change"},
  };
  for (const auto& c : cases) {
    log_.str("");
    from.resume.offset = c.offset;
    EXPECT_EQ(summary(replay(content, from)), "C3.0 T3 C4.0 T4") << c.why;
    EXPECT_NE(log_.str().find("checkpoint offset no longer matches " + path_ +
                              "; scanning from the start"),
              std::string::npos)
        << c.why << ": " << log_.str();
  }
}

// Scanning for the start, a bad record may be skipped only when a good one below the start follows
// it: later ones may belong to the wanted range.
TEST_F(JsonlSourceTest, ScanReportsBadRecordsAfterTheLastChangeBelowTheStart) {
  std::string oversized = R"({"lsn": 4, "pad": ")" + std::string(3000, 'x') + "\"}";
  std::string content = change_line(1) + "\nbroken\n" + change_line(2) + "\nnot json\n" +
                        oversized + "\n" + change_line(5) + "\n";
  StartPosition from;
  from.first_lsn = 4;  // start: {lsn: 4}
  auto events = replay(content, from, 2048);
  EXPECT_EQ(summary(events), "B@changes.jsonl:4 B@changes.jsonl:5 C5.0 T5");
  // Placed at the start, so that the consumer starting there takes them.
  for (const auto& bad : events_of<BadRecord>(events)) EXPECT_EQ(bad.last_lsn, 3u);

  // The same at the end of the file, with no change after them.
  events = replay(change_line(1) + "\nbroken\n", from);
  EXPECT_EQ(summary(events), "B@changes.jsonl:2");

  // A checkpoint whose offset no longer matches: what follows its lsn is reported.
  from.first_lsn = 3;
  from.has_resume = true;
  from.resume.lsn = 2;
  from.resume.offset = 5;
  events =
      replay(change_line(1) + "\n" + change_line(2) + "\n{oops\n" + change_line(3) + "\n", from);
  ASSERT_EQ(summary(events), "B@changes.jsonl:3 C3.0 T3");
  EXPECT_EQ(events_of<BadRecord>(events)[0].last_lsn, 2u);
}

TEST_F(JsonlSourceTest, BadRecordAfterAResumeNamesItsAbsoluteLine) {
  std::string content =
      change_line(1) + "\n\n" + change_line(2) + "\n" + "{\n" + change_line(3) + "\n";
  StartPosition from;
  from.first_lsn = 2;
  from.has_resume = true;
  from.resume.lsn = 1;
  from.resume.offset = change_line(1).size() + 1;
  auto events = replay(content, from);
  EXPECT_EQ(summary(events), "C2.0 B@changes.jsonl:4 T2 C3.0 T3");
}

std::string lines_for(std::uint64_t first, std::uint64_t last) {
  std::string text;
  for (auto lsn = first; lsn <= last; ++lsn) text += change_line(lsn) + "\n";
  return text;
}

std::string changes_and_ends(std::uint64_t first, std::uint64_t last) {
  std::string text;
  for (auto lsn = first; lsn <= last; ++lsn) text += fmt::format(" C{}.0 T{}", lsn, lsn);
  return text.substr(1);
}

// The checkpoint of transaction `lsn` in the first run over `content`.
StartPosition checkpoint_at(const std::vector<SourceEvent>& first_run, std::uint64_t lsn) {
  StartPosition from;
  for (const auto& end : events_of<TransactionEnd>(first_run)) {
    if (end.lsn != lsn) continue;
    from.first_lsn = lsn + 1;
    from.has_resume = true;
    from.resume.lsn = lsn;
    from.resume.offset = end.offset;
    from.resume.segment = end.segment;
  }
  EXPECT_TRUE(from.has_resume);
  return from;
}

TEST_F(JsonlSourceTest, TransactionEndsNameTheirFile) {
  auto events = replay(lines_for(1, 2));
  for (const auto& end : events_of<TransactionEnd>(events)) EXPECT_EQ(end.segment, inode_of(path_));
}

// Rotated while stopped, with changes after the checkpoint still in the old file.
TEST_F(JsonlSourceTest, RestartFinishesTheRotatedFileFirst) {
  const StartPosition from = checkpoint_at(replay(lines_for(1, 6)), 3);
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
  test::write_file(path_, lines_for(7, 8));
  for (bool follow : {false, true}) {
    SCOPED_TRACE(follow ? "follow" : "replay");
    auto source = make(follow);
    ASSERT_TRUE(source->start(from));
    CollectingEmitter out;
    if (follow) {
      poll_until_summary(*source, out, changes_and_ends(4, 7) + " C8.0");
    } else {
      drain(*source, out);
      EXPECT_EQ(summary(out.events), changes_and_ends(4, 8));
    }
    auto ends = events_of<TransactionEnd>(out.events);
    EXPECT_EQ(ends[2].segment, inode_of(path_ + ".1"));
    EXPECT_EQ(ends[3].segment, inode_of(path_));
    EXPECT_NE(log_.str().find(path_ + ".1"), std::string::npos) << log_.str();
  }
}

// Rotated three times while stopped: the files after the checkpoint are read in lsn order; older
// ones and files that are no change logs are left alone.
TEST_F(JsonlSourceTest, RestartReadsEveryRotatedFileAfterTheCheckpointInLsnOrder) {
  test::write_file(path_ + ".3", lines_for(1, 2));
  const StartPosition from = checkpoint_at(replay(lines_for(3, 5)), 4);
  ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".2").c_str()), 0);
  test::write_file(path_ + ".1", lines_for(6, 7));
  test::write_file(path_ + ".0.gz", std::string("\x1f\x8b\x08\0\n\x02", 6));
  test::write_file(path_, lines_for(8, 9));
  auto source = make(false);
  ASSERT_TRUE(source->start(from));
  CollectingEmitter out;
  drain(*source, out);
  EXPECT_EQ(summary(out.events), changes_and_ends(5, 9));
}

// logrotate's copytruncate: the checkpointed file was copied, then emptied and written again.
TEST_F(JsonlSourceTest, RestartAfterCopytruncateResumesInTheCopy) {
  const StartPosition from = checkpoint_at(replay(lines_for(1, 6)), 3);
  test::write_file(path_ + ".1", test::read_file(path_));
  test::write_file(path_, lines_for(7, 8));
  auto source = make(false);
  ASSERT_TRUE(source->start(from));
  CollectingEmitter out;
  drain(*source, out);
  EXPECT_EQ(summary(out.events), changes_and_ends(4, 8));
}

// The rotated file is gone: nothing is delivered past the gap, and the error names it.
TEST_F(JsonlSourceTest, RestartWithoutTheRotatedFileStopsNamingTheMissingRange) {
  const StartPosition from = checkpoint_at(replay(lines_for(1, 6)), 3);
  ASSERT_EQ(std::rename(path_.c_str(), dir_.file("archived.jsonl").c_str()), 0);
  test::write_file(path_, lines_for(7, 8));
  for (bool follow : {false, true}) {
    SCOPED_TRACE(follow ? "follow" : "replay");
    auto source = make(follow);
    CollectingEmitter out;
    auto started = source->start(from);
    Result<PollOutcome> outcome = PollOutcome::kMore;
    for (int i = 0; i < 100 && started && outcome && *outcome == PollOutcome::kMore; ++i) {
      outcome = source->poll(out, Clock::now() + milliseconds(20));
    }
    const auto& error = started ? outcome.error() : started.error();
    ASSERT_FALSE(started && outcome) << summary(out.events);
    EXPECT_FALSE(error.retryable);
    EXPECT_NE(error.message.find("lsn 4 to 6"), std::string::npos) << error.message;
    EXPECT_NE(error.message.find(path_ + ".*"), std::string::npos) << error.message;
    EXPECT_EQ(summary(out.events), "");
  }
}

// A file found under the checkpointed inode but without the checkpointed lsn at the offset is not
// the checkpointed file (inodes are reused).
TEST_F(JsonlSourceTest, RestartDoesNotTakeAReusedInodeForTheRotatedFile) {
  StartPosition from = checkpoint_at(replay(lines_for(1, 6)), 3);
  test::write_file(path_ + ".1", lines_for(20, 26));
  from.resume.segment = inode_of(path_ + ".1");
  test::write_file(path_, lines_for(30, 31));
  auto source = make(false);
  ASSERT_TRUE(source->start(from));
  CollectingEmitter out;
  auto outcome = source->poll(out, Clock::now() + milliseconds(1000));
  ASSERT_FALSE(outcome) << summary(out.events);
  EXPECT_NE(outcome.error().message.find("lsn 4 to 19"), std::string::npos)
      << outcome.error().message;
}

TEST_F(JsonlSourceTest, RotatedOptionNamesWhereRotatedFilesAre) {
  const StartPosition from = checkpoint_at(replay(lines_for(1, 6)), 3);
  ASSERT_EQ(::mkdir(dir_.file("old").c_str(), 0755), 0);
  ASSERT_EQ(std::rename(path_.c_str(), dir_.file("old/changes-1.jsonl").c_str()), 0);
  test::write_file(path_, lines_for(7, 8));
  rotated_ = dir_.file("old/changes-*.jsonl");
  auto source = make(false);
  ASSERT_TRUE(source->start(from));
  CollectingEmitter out;
  drain(*source, out);
  EXPECT_EQ(summary(out.events), changes_and_ends(4, 8));
}

TEST(LineSplitter, ReturnsToOneBlockAfterALongLine) {
  test::TempDir dir;
  std::string path = dir.file("lines");
  std::string small = std::string(100, 's');
  std::string content = std::string(3 << 20, 'L') + "\n";
  for (int i = 0; i < 30000; ++i) content += small + "\n";
  test::write_file(path, content);
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  LineSplitter lines(16 << 20);
  lines.reset(fd, 0);
  const std::size_t block = lines.buffer_capacity();
  std::size_t count = 0;
  std::size_t peak = 0;
  while (true) {
    auto line = lines.next();
    ASSERT_TRUE(line);
    if (!*line) break;
    peak = std::max(peak, lines.buffer_capacity());
    EXPECT_EQ((*line)->text.size(), count == 0 ? std::size_t{3 << 20} : small.size());
    ++count;
  }
  ::close(fd);
  EXPECT_EQ(count, 30001u);
  EXPECT_GE(peak, std::size_t{3 << 20});
  EXPECT_EQ(lines.buffer_capacity(), block);
  EXPECT_EQ(lines.read_offset(), content.size());
}

// The factory through the config API, as the daemon calls it.
class JsonlFactoryTest : public testing::Test {
 protected:
  std::unique_ptr<Source> build(const std::string& yaml) {
    auto context = std::make_shared<config::ParseContext>(config::ParseContext{
        "test.yaml", &diagnostics_, [](const std::string&) { return std::nullopt; }});
    config::Node options(YAML::Load(yaml), "sources.demo", context);
    options.mark_known({"type"});
    PluginRegistry registry;
    register_source_jsonl(registry);
    const SourceFactory* factory = registry.source("jsonl");
    EXPECT_NE(factory, nullptr);
    return (*factory)(options, SourceContext{});
  }

  config::Diagnostics diagnostics_;
};

TEST_F(JsonlFactoryTest, AcceptsEveryOption) {
  auto source = build(
      "{type: jsonl, path: x.jsonl, follow: true, poll_interval: 250ms, max_line_bytes: 1MiB, "
      "rotated: \"old/x-*.jsonl\"}");
  EXPECT_NE(source, nullptr) << diagnostics_.to_string();
  EXPECT_TRUE(diagnostics_.empty()) << diagnostics_.to_string();
  EXPECT_FALSE(source->connected());  // no I/O before start()
}

TEST_F(JsonlFactoryTest, ReportsEveryProblem) {
  auto source = build(
      "{type: jsonl, follow: maybe, poll_interval: 0s, max_line_bytes: 10, pathh: x, "
      "rotated: \"\"}");
  EXPECT_EQ(source, nullptr);
  std::string errors = diagnostics_.to_string();
  EXPECT_NE(errors.find("path"), std::string::npos) << errors;
  EXPECT_NE(errors.find("follow"), std::string::npos) << errors;
  EXPECT_NE(errors.find("poll_interval: must be greater than 0"), std::string::npos) << errors;
  EXPECT_NE(errors.find("max_line_bytes: must be between 1KiB and 1GiB"), std::string::npos)
      << errors;
  EXPECT_NE(errors.find("pathh"), std::string::npos) << errors;
  EXPECT_NE(errors.find("rotated: must not be empty"), std::string::npos) << errors;
  EXPECT_GE(diagnostics_.items().size(), 6u) << errors;
}

}  // namespace
}  // namespace cdcd
