#include "daemon/runtime/logging.h"

#include <chrono>
#include <mutex>

#include <fmt/chrono.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace cdcd {

namespace {

// One JSON object per line, so log shippers need no parsing rules.
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(msg.time.time_since_epoch());
    nlohmann::json line{
        {"time", fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:06d}Z",
                             fmt::gmtime(std::chrono::system_clock::to_time_t(msg.time)),
                             micros.count() % 1000000)},
        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size())},
        {"logger", std::string(msg.logger_name.data(), msg.logger_name.size())},
        {"message", std::string(msg.payload.data(), msg.payload.size())}};
    auto text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::mutex setup_mutex;
spdlog::sink_ptr shared_sink;
spdlog::level::level_enum shared_level = spdlog::level::info;

spdlog::sink_ptr sink_locked() {
  if (!shared_sink) shared_sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  return shared_sink;
}

}  // namespace

Status configure_logging(const std::string& level, const std::string& format) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return fail("unknown log level " + level);
  std::lock_guard lock(setup_mutex);
  auto sink = sink_locked();
  if (format == "json") {
    sink->set_formatter(std::make_unique<JsonFormatter>());
  } else if (format == "text") {
    sink->set_formatter(std::make_unique<spdlog::pattern_formatter>(
        "%Y-%m-%dT%H:%M:%S.%fZ %l [%n] %v", spdlog::pattern_time_type::utc));
  } else {
    return fail("unknown log format " + format);
  }
  shared_level = parsed;
  spdlog::apply_all(
      [&](const std::shared_ptr<spdlog::logger>& logger) { logger->set_level(parsed); });
  return ok();
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name) {
  std::lock_guard lock(setup_mutex);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, sink_locked());
  logger->set_level(shared_level);
  logger->flush_on(spdlog::level::info);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace cdcd
