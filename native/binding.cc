// Node-API glue only: converts arguments, calls the C functions in prctl_io_flusher.cc, returns their numbers.
// The TypeScript layer (lib/native-binding.ts mirrors these exports) validates arguments before calling, so the
// conversions here are plain. No messages, defaults or policy.
#include <napi.h>

#include <string>
#include <vector>

#include "prctl_io_flusher.h"
#include "memory_lock.h"
#include "process_exec.h"
#include "thread_broadcast.h"

namespace {

// JS number or BigInt -> unsigned long, bit pattern preserved (negative numbers wrap, as in C).
unsigned long ToULong(const Napi::Value& value) {
  if (value.IsBigInt()) {
    bool lossless = false;
    return static_cast<unsigned long>(value.As<Napi::BigInt>().Uint64Value(&lossless));
  }
  return static_cast<unsigned long>(value.As<Napi::Number>().Int64Value());
}

Napi::Value PrctlRaw(const Napi::CallbackInfo& info) {
  long rc = iof_prctl_raw(info[0].As<Napi::Number>().Int32Value(), ToULong(info[1]), ToULong(info[2]),
                          ToULong(info[3]), ToULong(info[4]));
  return Napi::Number::New(info.Env(), static_cast<double>(rc));
}

Napi::Value SetIoFlusher(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(iof_set_io_flusher(ToULong(info[0]))));
}

Napi::Value GetIoFlusher(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(iof_get_io_flusher()));
}

Napi::Value Gettid(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(iof_gettid()));
}

Napi::Value Num(const Napi::CallbackInfo& info, long value) {
  return Napi::Number::New(info.Env(), static_cast<double>(value));
}

int IntArg(const Napi::CallbackInfo& info, size_t index) {
  return info[index].As<Napi::Number>().Int32Value();
}

Napi::Value SignalDisposition(const Napi::CallbackInfo& info) { return Num(info, iof_signal_disposition(IntArg(info, 0))); }
Napi::Value BroadcastInstall(const Napi::CallbackInfo& info) {
  return Num(info, iof_broadcast_install(IntArg(info, 0), ToULong(info[1])));
}
Napi::Value BroadcastRestore(const Napi::CallbackInfo& info) { return Num(info, iof_broadcast_restore(IntArg(info, 0))); }
Napi::Value Tgkill(const Napi::CallbackInfo& info) { return Num(info, iof_tgkill(IntArg(info, 0), IntArg(info, 1))); }
Napi::Value BroadcastResult(const Napi::CallbackInfo& info) { return Num(info, iof_broadcast_result(IntArg(info, 0))); }
Napi::Value Sigrtmin(const Napi::CallbackInfo& info) { return Num(info, iof_sigrtmin()); }
Napi::Value Sigrtmax(const Napi::CallbackInfo& info) { return Num(info, iof_sigrtmax()); }

// JS array of strings -> owned strings plus the NULL-terminated char* array execve wants.
struct CStringArray {
  std::vector<std::string> owned;
  std::vector<char*> pointers;
  explicit CStringArray(const Napi::Array& array) {
    owned.reserve(array.Length());
    for (uint32_t i = 0; i < array.Length(); i++) owned.push_back(array.Get(i).As<Napi::String>().Utf8Value());
    for (std::string& s : owned) pointers.push_back(&s[0]);
    pointers.push_back(nullptr);
  }
};

Napi::Value Execve(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  CStringArray argv(info[1].As<Napi::Array>());
  CStringArray envp(info[2].As<Napi::Array>());
  return Num(info, iof_execve(path.c_str(), argv.pointers.data(), envp.pointers.data()));
}
Napi::Value GetFdFlags(const Napi::CallbackInfo& info) { return Num(info, iof_get_fd_flags(IntArg(info, 0))); }
Napi::Value SetFdFlags(const Napi::CallbackInfo& info) { return Num(info, iof_set_fd_flags(IntArg(info, 0), IntArg(info, 1))); }
Napi::Value GetFdCloexec(const Napi::CallbackInfo& info) { return Num(info, iof_get_fd_cloexec(IntArg(info, 0))); }
Napi::Value SetFdCloexec(const Napi::CallbackInfo& info) { return Num(info, iof_set_fd_cloexec(IntArg(info, 0), IntArg(info, 1))); }

Napi::Value Mlockall(const Napi::CallbackInfo& info) { return Num(info, iof_mlockall(IntArg(info, 0))); }
Napi::Value Munlockall(const Napi::CallbackInfo& info) { return Num(info, iof_munlockall()); }

// getrlimit(resource, out): fills a BigUint64Array(2) with soft and hard.
Napi::Value Getrlimit(const Napi::CallbackInfo& info) {
  Napi::TypedArray out = info[1].As<Napi::TypedArray>();
  uint64_t* limits = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(out.ArrayBuffer().Data()) + out.ByteOffset());
  return Num(info, iof_getrlimit(IntArg(info, 0), limits));
}

Napi::Value Setrlimit(const Napi::CallbackInfo& info) {
  bool lossless = false;
  uint64_t soft = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  uint64_t hard = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  return Num(info, iof_setrlimit(IntArg(info, 0), soft, hard));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("prctlRaw", Napi::Function::New(env, PrctlRaw, "prctlRaw"));
  exports.Set("setIoFlusher", Napi::Function::New(env, SetIoFlusher, "setIoFlusher"));
  exports.Set("getIoFlusher", Napi::Function::New(env, GetIoFlusher, "getIoFlusher"));
  exports.Set("gettid", Napi::Function::New(env, Gettid, "gettid"));
  exports.Set("signalDisposition", Napi::Function::New(env, SignalDisposition, "signalDisposition"));
  exports.Set("broadcastInstall", Napi::Function::New(env, BroadcastInstall, "broadcastInstall"));
  exports.Set("broadcastRestore", Napi::Function::New(env, BroadcastRestore, "broadcastRestore"));
  exports.Set("tgkill", Napi::Function::New(env, Tgkill, "tgkill"));
  exports.Set("broadcastResult", Napi::Function::New(env, BroadcastResult, "broadcastResult"));
  exports.Set("sigrtmin", Napi::Function::New(env, Sigrtmin, "sigrtmin"));
  exports.Set("sigrtmax", Napi::Function::New(env, Sigrtmax, "sigrtmax"));
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
  exports.Set("getFdFlags", Napi::Function::New(env, GetFdFlags, "getFdFlags"));
  exports.Set("setFdFlags", Napi::Function::New(env, SetFdFlags, "setFdFlags"));
  exports.Set("mlockall", Napi::Function::New(env, Mlockall, "mlockall"));
  exports.Set("munlockall", Napi::Function::New(env, Munlockall, "munlockall"));
  exports.Set("getrlimit", Napi::Function::New(env, Getrlimit, "getrlimit"));
  exports.Set("setrlimit", Napi::Function::New(env, Setrlimit, "setrlimit"));
  exports.Set("getFdCloexec", Napi::Function::New(env, GetFdCloexec, "getFdCloexec"));
  exports.Set("setFdCloexec", Napi::Function::New(env, SetFdCloexec, "setFdCloexec"));
  return exports;
}

}  // namespace

NODE_API_MODULE(io_flusher, Init)
