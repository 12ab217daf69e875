// Node-API glue only: converts arguments, calls the C functions in prctl_io_flusher.cc, returns their numbers.
// The TypeScript layer (lib/native-binding.ts mirrors these exports) validates arguments before calling, so the
// conversions here are plain. No messages, defaults or policy.
#include <napi.h>

#include <errno.h>

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

// ---- Scoped memory locking (lib/memory.ts). Unlike the glue above, these check their argument types and throw a
// TypeError on a wrong one: an address or a Buffer taken on trust could lock or unmap memory the caller does not own.
Napi::Value ThrowType(const Napi::CallbackInfo& info, const char* message) {
  Napi::TypeError::New(info.Env(), message).ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

bool IsLength(const Napi::Value& value) {
  if (!value.IsNumber()) return false;
  double d = value.As<Napi::Number>().DoubleValue();
  return d >= 0 && d <= 9007199254740991.0 && d == static_cast<double>(static_cast<uint64_t>(d));
}

// mlock2(address: bigint, length: number, flags: number): 0 or -errno.
Napi::Value Mlock2(const Napi::CallbackInfo& info) {
  if (info.Length() < 3 || !info[0].IsBigInt() || !IsLength(info[1]) || !info[2].IsNumber()) {
    return ThrowType(info, "mlock2(address: bigint, length: non-negative integer, flags: number)");
  }
  bool lossless = false;
  uint64_t address = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) return ThrowType(info, "mlock2: address must fit in 64 bits");
  return Num(info, iof_mlock2(static_cast<uintptr_t>(address), static_cast<size_t>(info[1].As<Napi::Number>().Int64Value()),
                              info[2].As<Napi::Number>().Uint32Value()));
}

// munlock(address: bigint, length: number): 0 or -errno.
Napi::Value Munlock(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsBigInt() || !IsLength(info[1])) {
    return ThrowType(info, "munlock(address: bigint, length: non-negative integer)");
  }
  bool lossless = false;
  uint64_t address = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) return ThrowType(info, "munlock: address must fit in 64 bits");
  return Num(info, iof_munlock(static_cast<uintptr_t>(address), static_cast<size_t>(info[1].As<Napi::Number>().Int64Value())));
}

size_t PageRound(size_t length) {
  size_t page = static_cast<size_t>(iof_page_size());
  return (length + page - 1) / page * page;
}

// mapAnonymousBuffer(length: number): a Buffer over its own anonymous mapping (munmapped when the Buffer is
// collected, or when its Node environment, e.g. a Worker, is torn down), or -errno from mmap.
Napi::Value MapAnonymousBuffer(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !IsLength(info[0]) || info[0].As<Napi::Number>().Int64Value() == 0) {
    return ThrowType(info, "mapAnonymousBuffer(length: positive integer)");
  }
  // 2^31 - 1: a Buffer length every supported Node major accepts (Node 20 refuses more than 2^32).
  if (info[0].As<Napi::Number>().Int64Value() > 2147483647) {
    Napi::RangeError::New(info.Env(), "mapAnonymousBuffer: length must be at most 2147483647").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  size_t length = static_cast<size_t>(info[0].As<Napi::Number>().Int64Value());
  size_t* mapped = new size_t(PageRound(length));
  void* address = nullptr;
  long rc = iof_map_anonymous(*mapped, &address);
  if (rc < 0) {
    delete mapped;
    return Num(info, rc);
  }
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(
      info.Env(), static_cast<uint8_t*>(address), length,
      [](Napi::Env, uint8_t* data, size_t* size) {
        iof_munmap(data, *size);  // unlocks too; nothing to report to from a finalizer
        delete size;
      },
      mapped);
  // If Node refused the Buffer, whether it already ran the finalizer differs between versions (Node 20 does): leave
  // the mapping rather than risk unmapping it twice. The length cap above makes this unreachable in practice.
  if (info.Env().IsExceptionPending()) return info.Env().Undefined();
  return buffer;
}

// The page-aligned start and page-rounded length of a Buffer's memory, or false (TypeError pending / not aligned).
bool BufferPages(const Napi::CallbackInfo& info, uintptr_t* start, size_t* length) {
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    ThrowType(info, "the first argument must be a Buffer from mapAnonymousBuffer()");
    return false;
  }
  Napi::Buffer<uint8_t> buffer = info[0].As<Napi::Buffer<uint8_t>>();
  *start = reinterpret_cast<uintptr_t>(buffer.Data());
  *length = PageRound(buffer.Length());
  return *start % static_cast<uintptr_t>(iof_page_size()) == 0;
}

// mlockBuffer(buffer, flags): mlock2 over the pages of a page-aligned Buffer: 0 or -errno (-EINVAL if not aligned).
Napi::Value MlockBuffer(const Napi::CallbackInfo& info) {
  uintptr_t start = 0;
  size_t length = 0;
  bool aligned = BufferPages(info, &start, &length);
  if (info.Env().IsExceptionPending()) return info.Env().Undefined();
  if (info.Length() < 2 || !info[1].IsNumber()) return ThrowType(info, "mlockBuffer(buffer, flags: number)");
  if (!aligned) return Num(info, -EINVAL);
  return Num(info, iof_mlock2(start, length, info[1].As<Napi::Number>().Uint32Value()));
}

// munlockBuffer(buffer): munlock over the pages of a page-aligned Buffer: 0 or -errno (-EINVAL if not aligned).
Napi::Value MunlockBuffer(const Napi::CallbackInfo& info) {
  uintptr_t start = 0;
  size_t length = 0;
  bool aligned = BufferPages(info, &start, &length);
  if (info.Env().IsExceptionPending()) return info.Env().Undefined();
  if (!aligned) return Num(info, -EINVAL);
  return Num(info, iof_munlock(start, length));
}

Napi::Value PageSize(const Napi::CallbackInfo& info) { return Num(info, iof_page_size()); }
// ---- end of scoped memory locking

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
  // Scoped memory locking.
  exports.Set("mlock2", Napi::Function::New(env, Mlock2, "mlock2"));
  exports.Set("munlock", Napi::Function::New(env, Munlock, "munlock"));
  exports.Set("mapAnonymousBuffer", Napi::Function::New(env, MapAnonymousBuffer, "mapAnonymousBuffer"));
  exports.Set("mlockBuffer", Napi::Function::New(env, MlockBuffer, "mlockBuffer"));
  exports.Set("munlockBuffer", Napi::Function::New(env, MunlockBuffer, "munlockBuffer"));
  exports.Set("pageSize", Napi::Function::New(env, PageSize, "pageSize"));
  return exports;
}

}  // namespace

NODE_API_MODULE(io_flusher, Init)
