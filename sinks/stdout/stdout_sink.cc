// `type: stdout`: writes each change as one line on standard output (logs go to stderr).
#include <errno.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "daemon/format/batch_lines.h"
#include "daemon/plugin/registry.h"

namespace cdcd {

namespace {

class StdoutSink : public Sink {
 public:
  StdoutSink(Format format, SinkContext context) : format_(format), context_(std::move(context)) {}

  Status start() override { return ok(); }

  void write(BatchPtr batch, AckFn ack) override {
    std::string lines;
    encode_batch_lines(format_, *batch, lines);
    std::lock_guard lock(mutex_);
    if (auto written = write_all(lines); !written) {
      context_.metrics.errors->Increment();
      failed_ = true;
      ack(DeliveryReport{written.error(), {}});
      return;
    }
    ack(DeliveryReport{});
  }

  Status flush(Deadline) override { return ok(); }
  void stop() override {}
  bool healthy() const override { return !failed_; }

 private:
  // A closed or broken stdout does not come back: fail rather than retry.
  static Status write_all(const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(STDOUT_FILENO, data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return fail(std::string("writing to standard output: ") + std::strerror(errno));
      }
      done += static_cast<std::size_t>(n);
    }
    return ok();
  }

  const Format format_;
  SinkContext context_;
  std::mutex mutex_;
  std::atomic<bool> failed_{false};
};

}  // namespace

void register_sink_stdout(PluginRegistry& registry) {
  registry.add_sink("stdout", [](config::Node& options, const SinkContext& context) {
    auto errors = options.diagnostics().items().size();
    auto format = options.one_of("format", {"native", "debezium", "mongodb"});
    options.check_unknown_keys();
    if (options.diagnostics().items().size() != errors) return std::unique_ptr<Sink>();
    return std::unique_ptr<Sink>(std::make_unique<StdoutSink>(
        parse_format(format.value_or("native")).value_or(Format::kNative), context));
  });
}

}  // namespace cdcd
