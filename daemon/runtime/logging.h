#pragma once

#include <memory>
#include <string>

#include <spdlog/logger.h>

#include "daemon/core/result.h"

namespace cdcd {

// Configures logging to stderr (stdout belongs to the stdout sink): `format` text or json, `level`
// one of spdlog's level names. Every logger made by make_logger() afterwards shares the setup.
Status configure_logging(const std::string& level, const std::string& format);

// A logger named after a component, e.g. "source.demo"; sharing the configured sink and level.
std::shared_ptr<spdlog::logger> make_logger(const std::string& name);

}  // namespace cdcd
