// Process-wide logging set-up (spdlog to stderr, which journald captures).
#pragma once

#include <string>

namespace uffdpager {

void ConfigureLogging(const std::string& program, const std::string& level);

}  // namespace uffdpager
