// Captured llama.cpp log lines, so that failures carry llama.cpp's own reason.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace llj {

// Collects llama.cpp/ggml warnings and errors logged on the current thread while alive,
// so that an operation that fails can say why in its exception.
class LogCapture {
  public:
    LogCapture();
    ~LogCapture();
    LogCapture(const LogCapture &) = delete;
    LogCapture & operator=(const LogCapture &) = delete;
    // The captured lines, joined: errors first (the reason), then at most a few warnings;
    // empty when there were none.
    std::string text() const;
    void append(const std::string & line, bool continuation, bool error = false);
  private:
    std::vector<std::string> lines_;
    std::vector<bool> is_error_;
    LogCapture * prev_;
};

// Installs the log callback (quiet unless LLJ_GGUF_VERBOSE is set). Called once at init.
void install_log_callback();

// Error that carries llama.cpp's logged reason when there is one.
std::runtime_error error_with_log(const std::string & what, const LogCapture & log);

}  // namespace llj
