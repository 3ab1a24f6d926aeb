#include "daemon/runtime/service_notifier.h"

#include <systemd/sd-daemon.h>

#include <cstdint>

namespace cdcd {

ServiceNotifier::ServiceNotifier() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) watchdog_ = std::chrono::microseconds(usec);
}

void ServiceNotifier::ready() { sd_notify(0, "READY=1"); }

void ServiceNotifier::reloading() {
  // MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) tell this reload from an older one.
  sd_notifyf(
      0, "RELOADING=1\nMONOTONIC_USEC=%llu",
      static_cast<unsigned long long>(std::chrono::duration_cast<std::chrono::microseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count()));
}

void ServiceNotifier::stopping() { sd_notify(0, "STOPPING=1"); }

void ServiceNotifier::status(const std::string& line) {
  // A status is for people (systemctl status): lag figures change every tick, and once a second
  // is enough; a change of state (ready, not ready, stopping) goes out at once.
  const auto now = std::chrono::steady_clock::now();
  const auto state = line.substr(0, line.find(':'));
  if (line == last_status_ || (state == last_status_.substr(0, last_status_.find(':')) &&
                               now - last_status_at_ < std::chrono::seconds(1))) {
    return;
  }
  last_status_ = line;
  last_status_at_ = now;
  sd_notify(0, ("STATUS=" + line).c_str());
}

void ServiceNotifier::watchdog_ping() {
  if (!watchdog_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < *watchdog_ / 2) return;
  last_ping_ = now;
  sd_notify(0, "WATCHDOG=1");
}

}  // namespace cdcd
