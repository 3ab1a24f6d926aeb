#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace cdcd::test {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int free_port();

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
bool wait_until(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content);
void append_file(const std::string& path, const std::string& content);
std::vector<std::string> read_lines(const std::string& path);

// Path of the built cdcd binary, of a test tool (tests/support/tools), and of the repository.
std::string cdcd_binary();
std::string tool_binary(const std::string& name);
std::string source_dir();

// A child process with stdout and stderr captured to files. Killed (SIGKILL) on destruction if
// still running.
class ChildProcess {
 public:
  // `env` adds to (or overrides) the current environment.
  ChildProcess(std::vector<std::string> argv, const std::string& output_dir,
               std::map<std::string, std::string> env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int signo);
  // Waits for exit; returns the exit code (128+signal if killed), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  std::string stdout_text() const;
  std::string stderr_text() const;
  const std::string& stdout_path() const { return stdout_path_; }
  const std::string& stderr_path() const { return stderr_path_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string stdout_path_;
  std::string stderr_path_;
};

// Runs a command to completion; returns its exit code and puts its stdout in `output`.
int run_command(const std::vector<std::string>& argv, std::string* output = nullptr,
                std::chrono::milliseconds timeout = std::chrono::seconds(120));

// A minimal HTTP GET to 127.0.0.1:port; returns the status code and body, or nullopt when the
// connection fails.
struct HttpResponse {
  int status = 0;
  std::string headers;  // the status line and the header lines, each ending in "\r\n"
  std::string body;
};
std::optional<HttpResponse> http_get(int port, const std::string& path);

}  // namespace cdcd::test
