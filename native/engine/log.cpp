#include "engine/log.h"

#include "ggml.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>

namespace llj {

static thread_local LogCapture * t_capture = nullptr;
static thread_local ggml_log_level t_last_level = GGML_LOG_LEVEL_NONE;
static bool g_verbose = false;

LogCapture::LogCapture() : prev_(t_capture) { t_capture = this; }
LogCapture::~LogCapture() { t_capture = prev_; }

std::string LogCapture::text() const {
    // llama.cpp logs warnings about optional keys before the error that matters: lead with it
    std::string out;
    int warnings = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < lines_.size(); ++i) {
            if (is_error_[i] != (pass == 0)) continue;
            if (pass == 1 && ++warnings > 3) {
                out += "; …";
                return out;
            }
            if (!out.empty()) out += "; ";
            out += lines_[i];
        }
    }
    return out;
}

static void log_callback(ggml_log_level level, const char * text, void *) {
    if (level != GGML_LOG_LEVEL_CONT) t_last_level = level;
    if (g_verbose) fputs(text, stderr);
    if (t_capture == nullptr) return;
    if (t_last_level != GGML_LOG_LEVEL_ERROR && t_last_level != GGML_LOG_LEVEL_WARN) return;
    std::string line(text);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (line.empty()) return;
    t_capture->append(line, level == GGML_LOG_LEVEL_CONT, t_last_level == GGML_LOG_LEVEL_ERROR);
}

void LogCapture::append(const std::string & line, bool continuation, bool error) {
    if (continuation && !lines_.empty()) {
        lines_.back() += line;
    } else if (lines_.size() < 32) {
        lines_.push_back(line);
        is_error_.push_back(error);
    }
}

void install_log_callback() {
    const char * v = std::getenv("LLJ_GGUF_VERBOSE");
    g_verbose = v != nullptr && *v != '\0' && std::string(v) != "0";
    llama_log_set(log_callback, nullptr);
    ggml_log_set(log_callback, nullptr);
}

std::runtime_error error_with_log(const std::string & what, const LogCapture & log) {
    std::string t = log.text();
    return std::runtime_error(t.empty() ? what : what + " (llama.cpp: " + t + ")");
}

}  // namespace llj
