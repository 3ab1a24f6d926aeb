#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace cdcd {

// Tells systemd about the daemon's life (Type=notify units) through libsystemd's sd_notify(3): the
// NOTIFY_SOCKET datagram protocol is systemd's to define, and the library follows it (abstract
// sockets, credentials, WATCHDOG_PID). Without NOTIFY_SOCKET every call does nothing. Called from
// the daemon's main thread only.
class ServiceNotifier {
 public:
  ServiceNotifier();

  // The watchdog interval systemd expects pings within (WATCHDOG_USEC), when one is set for us.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }

  void ready();
  void reloading();
  void stopping();
  // STATUS=`line` ("STATE: details"), sent when it differs from the last one sent: at once when
  // STATE changed, else at most once a second.
  void status(const std::string& line);
  // WATCHDOG=1 when half the interval passed since the last ping (sd_watchdog_enabled(3)'s
  // advice); the caller calls this only while the pipeline is healthy, so a wedged pipeline stops
  // the pings and systemd restarts the service.
  void watchdog_ping();

 private:
  std::optional<std::chrono::microseconds> watchdog_;
  std::chrono::steady_clock::time_point last_ping_{};
  std::string last_status_;
  std::chrono::steady_clock::time_point last_status_at_{};
};

}  // namespace cdcd
