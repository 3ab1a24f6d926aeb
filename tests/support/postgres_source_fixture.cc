#include "tests/support/postgres_source_fixture.h"

#include <thread>

#include <spdlog/sinks/null_sink.h>

namespace cdcd::test {

using Clock = std::chrono::steady_clock;

std::vector<Change> RecordingEmitter::changes() const {
  std::vector<Change> out;
  for (const auto& event : events) {
    if (const auto* change = std::get_if<Change>(&event)) out.push_back(*change);
  }
  return out;
}

std::vector<TransactionEnd> RecordingEmitter::ends() const {
  std::vector<TransactionEnd> out;
  for (const auto& event : events) {
    if (const auto* end = std::get_if<TransactionEnd>(&event)) out.push_back(*end);
  }
  return out;
}

std::vector<Change> RecordingEmitter::changes_of(const std::string& entity) const {
  std::vector<Change> out;
  for (const auto& event : events) {
    const auto* change = std::get_if<Change>(&event);
    if (change && change->entity == entity) out.push_back(*change);
  }
  return out;
}

PostgresServer* PostgresSourceFixture::server_ = nullptr;

void PostgresSourceFixture::start_server(std::vector<std::string> settings) {
  server_ = new PostgresServer(PostgresServerOptions{"logical", std::move(settings)});
}

void PostgresSourceFixture::stop_server() {
  delete server_;
  server_ = nullptr;
}

void PostgresSourceFixture::SetUp() {
  db_ = server_->create_database();
  logger_ =
      std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::null_sink_mt>());
}

void PostgresSourceFixture::TearDown() {
  sources_.clear();
  server_->drop_database(db_);
}

postgres::PostgresSourceOptions PostgresSourceFixture::options(std::string slot) {
  postgres::PostgresSourceOptions options;
  options.dsn = server_->dsn(db_);
  options.slot = slot.empty() ? "slot_" + db_ : std::move(slot);
  options.publication = "pub";
  options.status_interval = std::chrono::milliseconds(100);
  options.heartbeat = std::chrono::milliseconds(0);
  options.slot_busy_grace = std::chrono::milliseconds(1000);
  return options;
}

postgres::PostgresSource& PostgresSourceFixture::make_source(
    postgres::PostgresSourceOptions options, std::shared_ptr<prometheus::Registry> registry,
    SourceMetrics metrics) {
  SourceContext context{"pg", logger_, std::move(registry), metrics};
  sources_.push_back(std::make_unique<postgres::PostgresSource>(std::move(options), context));
  return *sources_.back();
}

postgres::PostgresSource& PostgresSourceFixture::start_source(
    postgres::PostgresSourceOptions options, std::uint64_t first_lsn) {
  postgres::PostgresSource& source = make_source(std::move(options));
  StartPosition from;
  from.first_lsn = first_lsn;
  auto started = source.start(from);
  EXPECT_TRUE(started.has_value()) << (started ? "" : started.error().message);
  return source;
}

bool PostgresSourceFixture::poll_until(Source& source, RecordingEmitter& out,
                                       const std::function<bool()>& done,
                                       std::chrono::milliseconds timeout) {
  auto give_up = Clock::now() + timeout;
  while (Clock::now() < give_up) {
    auto polled = source.poll(out, Clock::now() + std::chrono::milliseconds(50));
    if (!polled && !polled.error().retryable) {
      ADD_FAILURE() << "permanent error: " << polled.error().message;
      return false;
    }
    if (!polled) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (done()) return true;
  }
  ADD_FAILURE() << "timed out polling the source";
  return false;
}

bool PostgresSourceFixture::read_transactions(Source& source, RecordingEmitter& out,
                                              std::size_t transactions) {
  auto give_up = Clock::now() + std::chrono::seconds(30);
  while (out.ends().size() < transactions) {
    if (Clock::now() > give_up) {
      ADD_FAILURE() << "timed out after " << out.ends().size() << " transactions";
      return false;
    }
    auto polled = source.poll(out, Clock::now() + std::chrono::milliseconds(50));
    if (!polled) {
      ADD_FAILURE() << polled.error().message;
      return false;
    }
  }
  return true;
}

}  // namespace cdcd::test
