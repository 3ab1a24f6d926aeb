#include "checkpoint/file/file_checkpoint_store.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "daemon/config/node.h"
#include "daemon/plugin/registry.h"
#include "tests/support/checkpoint_store_conformance.h"
#include "tests/support/test_util.h"

namespace cdcd {
namespace {

namespace fs = std::filesystem;

// A checkpoint whose fields all derive from its lsn, so that a load can tell a whole record the
// writer produced from a mix of two.
Checkpoint derived_checkpoint(std::uint64_t lsn) {
  Checkpoint checkpoint;
  checkpoint.lsn = lsn;
  checkpoint.offset = lsn * 7;
  checkpoint.commit_time_us = static_cast<std::int64_t>(lsn) * 1000 + 1;
  return checkpoint;
}

bool is_derived(const Checkpoint& checkpoint) {
  return checkpoint.offset == checkpoint.lsn * 7 &&
         checkpoint.commit_time_us == static_cast<std::int64_t>(checkpoint.lsn) * 1000 + 1;
}

std::vector<std::string> temp_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.find(".tmp.") != std::string::npos) names.push_back(name);
  }
  return names;
}

class FileCheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(store_.start().has_value()); }

  test::TempDir temp_;
  std::string dir_ = temp_.file("checkpoints");
  // Owned apart so that a test can close it (releasing the directory's lock) before a restart.
  std::unique_ptr<FileCheckpointStore> open_store_ =
      std::make_unique<FileCheckpointStore>(dir_, nullptr);
  FileCheckpointStore& store_ = *open_store_;
};

// The shared checkpoint store suite, on a fresh directory per test.
class FileStoreHarness : public test::CheckpointStoreHarness {
 public:
  std::unique_ptr<CheckpointStore> make_store() override {
    return std::make_unique<FileCheckpointStore>(dir_, nullptr);
  }
  // A crash between writing the temp file and renaming it over the checkpoint.
  bool leave_an_interrupted_save(const std::string& consumer, const Checkpoint&) override {
    test::write_file(dir_ + "/." + consumer + ".json.tmp.Xy12ab", "{\"consumer\": \"" + consumer);
    return true;
  }

 private:
  test::TempDir temp_;
  std::string dir_ = temp_.file("checkpoints");
};

const bool kConformanceRegistered = [] {
  test::register_checkpoint_store_conformance("FileCheckpointStoreConformance",
                                              [] { return std::make_unique<FileStoreHarness>(); });
  return true;
}();

TEST_F(FileCheckpointStoreTest, SaveThenLoadRoundTripsAndStampsTheSaveTime) {
  Checkpoint saved;
  saved.lsn = (std::uint64_t{1} << 63) + 5;  // beyond int64 and double precision
  saved.offset = 123456789012345ULL;
  saved.commit_time_us = 1763719200123456;
  const auto before = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  ASSERT_TRUE(store_.save("orders", saved).has_value());

  auto loaded = store_.load("orders");
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->lsn, saved.lsn);
  EXPECT_EQ((*loaded)->offset, saved.offset);
  EXPECT_EQ((*loaded)->commit_time_us, saved.commit_time_us);
  EXPECT_GE((*loaded)->saved_at_us, before);
  EXPECT_LT((*loaded)->saved_at_us, before + 60'000'000);

  EXPECT_EQ(store_.path_of("orders"), dir_ + "/orders.json");
  auto doc = nlohmann::json::parse(test::read_file(dir_ + "/orders.json"));
  EXPECT_EQ(doc["consumer"], "orders");
  EXPECT_EQ(doc["lsn"].get<std::uint64_t>(), saved.lsn);
  EXPECT_EQ(doc["offset"], saved.offset);
  EXPECT_EQ(doc["commit_time_us"], saved.commit_time_us);
  EXPECT_EQ(doc["version"], 1);
  EXPECT_TRUE(doc.contains("saved_at_us"));
  EXPECT_TRUE(temp_files(dir_).empty());

  saved.lsn = 9;
  ASSERT_TRUE(store_.save("orders", saved).has_value());
  EXPECT_EQ((*store_.load("orders"))->lsn, 9u);
}

TEST_F(FileCheckpointStoreTest, MissingCheckpointIsNullopt) {
  auto loaded = store_.load("nobody");
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_FALSE(loaded->has_value());
}

TEST_F(FileCheckpointStoreTest, DamagedFileIsAnErrorNamingTheFile) {
  const std::string path = dir_ + "/orders.json";
  const std::vector<std::string> damaged = {
      "",
      "{\"consumer\": \"orders\", \"lsn\": 12",
      "[1, 2]",
      R"({"consumer":"orders","lsn":-1,"offset":0,"commit_time_us":0,"saved_at_us":0,"version":1})",
      R"({"consumer":"orders","lsn":"12","offset":0,"commit_time_us":0,"saved_at_us":0,"version":1})",
      R"({"consumer":"orders","offset":0,"commit_time_us":0,"saved_at_us":0,"version":1})",
      R"({"consumer":"orders","lsn":1,"offset":0,"commit_time_us":0.5,"saved_at_us":0,"version":1})",
      R"({"consumer":"orders","lsn":1,"offset":0,"commit_time_us":0,"saved_at_us":0,"version":2})",
      R"({"consumer":"other","lsn":1,"offset":0,"commit_time_us":0,"saved_at_us":0,"version":1})",
      std::string("\0\0\0\0", 4),
  };
  for (const std::string& content : damaged) {
    test::write_file(path, content);
    auto loaded = store_.load("orders");
    ASSERT_FALSE(loaded.has_value()) << "accepted: " << content;
    EXPECT_NE(loaded.error().message.find(path), std::string::npos) << loaded.error().message;
  }
  // The well-formed version of the same record loads.
  test::write_file(
      path,
      R"({"consumer":"orders","lsn":1,"offset":2,"commit_time_us":3,"saved_at_us":4,"version":1})");
  auto loaded = store_.load("orders");
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ((*loaded)->offset, 2u);
}

TEST_F(FileCheckpointStoreTest, LeftoverTempFilesAreIgnoredByLoadAndRemovedAtStart) {
  ASSERT_TRUE(store_.save("orders", derived_checkpoint(41)).has_value());
  test::write_file(dir_ + "/.orders.json.tmp.a1b2c3", "{\"consumer\": \"ord");
  test::write_file(dir_ + "/.ghost.json.tmp.zzzzzz", "");
  test::write_file(dir_ + "/notes.txt", "not ours");

  auto loaded = store_.load("orders");
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message;
  EXPECT_EQ((*loaded)->lsn, 41u);
  EXPECT_FALSE(store_.load("ghost")->has_value());

  open_store_.reset();  // the previous daemon is gone: its lock with it
  FileCheckpointStore restarted(dir_, nullptr);
  ASSERT_TRUE(restarted.start().has_value());
  EXPECT_TRUE(temp_files(dir_).empty());
  EXPECT_TRUE(fs::exists(dir_ + "/notes.txt"));
  EXPECT_EQ((*restarted.load("orders"))->lsn, 41u);
}

TEST_F(FileCheckpointStoreTest, UnsafeConsumerNamesAreRejected) {
  for (const std::string& name :
       std::vector<std::string>{"", "a/b", "../escape", ".hidden", "..", "with space", "tab\t",
                                std::string("nul\0x", 5), std::string(201, 'x')}) {
    auto saved = store_.save(name, derived_checkpoint(1));
    ASSERT_FALSE(saved.has_value()) << name;
    EXPECT_NE(saved.error().message.find("cannot name a checkpoint file"), std::string::npos);
    EXPECT_FALSE(store_.load(name).has_value()) << name;
    EXPECT_FALSE(store_.remove(name).has_value()) << name;
  }
  EXPECT_FALSE(fs::exists(temp_.file("escape.json")));
  // Nothing but the store's own lock file.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{".lock"});
  for (const std::string& name :
       std::vector<std::string>{"orders", "Orders-2", "a.b_c", std::string(200, 'x')}) {
    EXPECT_TRUE(store_.save(name, derived_checkpoint(1)).has_value()) << name;
  }
}

TEST_F(FileCheckpointStoreTest, RemoveForgetsTheCheckpoint) {
  ASSERT_TRUE(store_.save("orders", derived_checkpoint(5)).has_value());
  ASSERT_TRUE(store_.remove("orders").has_value());
  EXPECT_FALSE(store_.load("orders")->has_value());
  EXPECT_TRUE(store_.remove("orders").has_value());  // already gone: nothing to do
}

TEST(FileCheckpointStore, StartCreatesTheDirectoryWithItsParents) {
  test::TempDir temp;
  FileCheckpointStore store(temp.file("a/b/c"), nullptr);
  ASSERT_TRUE(store.start().has_value());
  EXPECT_TRUE(fs::is_directory(temp.file("a/b/c")));
  EXPECT_TRUE(store.save("x", derived_checkpoint(3)).has_value());

  test::write_file(temp.file("file"), "");
  FileCheckpointStore blocked(temp.file("file/sub"), nullptr);
  auto started = blocked.start();
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find(temp.file("file/sub")), std::string::npos);
}

TEST_F(FileCheckpointStoreTest, ConcurrentSavesNeverExposeATornFile) {
  std::atomic<bool> done{false};
  std::atomic<int> bad_loads{0};
  std::thread reader([&] {
    while (!done) {
      for (const char* consumer : {"shared", "c0", "c1"}) {
        auto loaded = store_.load(consumer);
        if (!loaded || (loaded->has_value() && !is_derived(**loaded))) ++bad_loads;
      }
    }
  });
  std::vector<std::thread> writers;
  std::atomic<int> failed_saves{0};
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      const std::string own = "c" + std::to_string(w % 2);
      for (std::uint64_t lsn = 1; lsn <= 100; ++lsn) {
        if (!store_.save("shared", derived_checkpoint(lsn)) ||
            !store_.save(own, derived_checkpoint(lsn))) {
          ++failed_saves;
        }
      }
    });
  }
  for (auto& writer : writers) writer.join();
  done = true;
  reader.join();
  EXPECT_EQ(failed_saves, 0);
  EXPECT_EQ(bad_loads, 0);
  EXPECT_EQ((*store_.load("shared"))->lsn, 100u);
  EXPECT_TRUE(temp_files(dir_).empty());
}

// Waits up to 30 s for one byte on `fd`; false on timeout or end of file.
bool read_signal(int fd) {
  pollfd ready{fd, POLLIN, 0};
  char byte = 0;
  return ::poll(&ready, 1, 30'000) == 1 && ::read(fd, &byte, 1) == 1;
}

// A writer process is killed with SIGKILL 200 times, at a random moment 0-2 ms after its first
// save returned (saves take milliseconds here: fsync twice, so most kills land inside the next
// one). Every load afterwards succeeds and returns a whole record the writer saved, at least the
// one it reported saved, never going backwards; leftovers from the kills are cleaned at start().
TEST_F(FileCheckpointStoreTest, SurvivesSigkillAtAnyMoment) {
  std::mt19937 random(std::random_device{}());
  std::uniform_int_distribution<int> delay_us(0, 2000);
  std::uint64_t last = 0;
  int kills_leaving_temp_files = 0;
  for (int iteration = 0; iteration < 200; ++iteration) {
    int saved_pipe[2];
    ASSERT_EQ(pipe2(saved_pipe, O_CLOEXEC), 0);
    const std::uint64_t first = last + 1;
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(saved_pipe[0]);
      FileCheckpointStore writer(dir_, nullptr);
      for (std::uint64_t lsn = first;; ++lsn) {
        if (!writer.save("killed", derived_checkpoint(lsn))) _exit(3);
        if (lsn == first && ::write(saved_pipe[1], "s", 1) != 1) _exit(4);
      }
    }
    ::close(saved_pipe[1]);
    const bool first_saved = read_signal(saved_pipe[0]);
    ::close(saved_pipe[0]);
    if (first_saved) std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(first_saved) << "the writer did not save; wait status " << status;
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "writer exited on its own with status " << status;
    if (!temp_files(dir_).empty()) ++kills_leaving_temp_files;

    FileCheckpointStore reader(dir_, nullptr);
    auto loaded = reader.load("killed");
    ASSERT_TRUE(loaded.has_value()) << "iteration " << iteration << ": " << loaded.error().message;
    ASSERT_TRUE(loaded->has_value()) << "iteration " << iteration << ": checkpoint lost";
    const Checkpoint& checkpoint = **loaded;
    ASSERT_TRUE(is_derived(checkpoint)) << "iteration " << iteration << ": mixed record";
    ASSERT_GE(checkpoint.lsn, first) << "iteration " << iteration << ": lost a completed save";
    last = checkpoint.lsn;
  }
  RecordProperty("final_lsn", static_cast<int>(last));
  RecordProperty("kills_leaving_temp_files", kills_leaving_temp_files);

  open_store_.reset();  // the previous daemon is gone: its lock with it
  FileCheckpointStore restarted(dir_, nullptr);
  ASSERT_TRUE(restarted.start().has_value());
  EXPECT_TRUE(temp_files(dir_).empty());
  EXPECT_EQ((*restarted.load("killed"))->lsn, last);
}

class FileCheckpointFactoryTest : public ::testing::Test {
 protected:
  std::unique_ptr<CheckpointStore> build(const std::string& yaml) {
    auto context = std::make_shared<config::ParseContext>();
    context->file = "cdcd.yaml";
    context->diagnostics = &diagnostics_;
    context->env = [](const std::string&) { return std::optional<std::string>(); };
    config::Node options(YAML::Load(yaml), "checkpoints", context);
    options.mark_known({"type"});
    PluginRegistry registry;
    register_checkpoint_file(registry);
    const CheckpointStoreFactory* factory = registry.checkpoint_store("file");
    EXPECT_NE(factory, nullptr);
    return (*factory)(options, CheckpointStoreContext{});
  }

  config::Diagnostics diagnostics_;
};

TEST_F(FileCheckpointFactoryTest, ReadsDirAndLeavesIntervalToTheRuntime) {
  test::TempDir temp;
  auto store = build("{type: file, dir: " + temp.file("cp") + ", interval: 1s}");
  ASSERT_NE(store, nullptr) << diagnostics_.to_string();
  EXPECT_TRUE(diagnostics_.empty());
  EXPECT_FALSE(fs::exists(temp.file("cp"))) << "the factory must not do I/O";
  ASSERT_TRUE(store->start().has_value());
  EXPECT_TRUE(fs::is_directory(temp.file("cp")));
}

TEST_F(FileCheckpointFactoryTest, ReportsMissingDirAndUnknownKeys) {
  EXPECT_EQ(build("{type: file, interval: 1s}"), nullptr);
  EXPECT_NE(diagnostics_.to_string().find("dir"), std::string::npos) << diagnostics_.to_string();

  config::Diagnostics fresh;
  diagnostics_ = fresh;
  EXPECT_EQ(build("type: file\ndir: /tmp/x\ndri: /tmp/y\n"), nullptr);
  const std::string text = diagnostics_.to_string();
  EXPECT_NE(text.find("cdcd.yaml:3:1"), std::string::npos) << text;
  EXPECT_NE(text.find("dri"), std::string::npos) << text;

  diagnostics_ = fresh;
  EXPECT_EQ(build("{type: file, dir: ''}"), nullptr);
  EXPECT_NE(diagnostics_.to_string().find("empty"), std::string::npos) << diagnostics_.to_string();
}

}  // namespace
}  // namespace cdcd
