// Names the calling thread as `top -H`, `ps -L` and perf show it ("sg-webhook",
// "sg-webhook-w", "sg-large-review"), so an operator can tell where CPU goes. Linux keeps
// 15 characters.
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>

namespace sizeguard {

inline void name_this_thread(std::string_view name) {
  const std::string truncated(name.substr(0, 15));
  ::pthread_setname_np(::pthread_self(), truncated.c_str());
}

}  // namespace sizeguard
