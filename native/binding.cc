// Node-API glue only: converts arguments, calls the syscall-shaped C functions of prctl_io_flusher.h,
// thread_broadcast.h, task_stats.h, process_exec.h and memory_lock.h, and returns their numbers (a result, or -errno).
// The TypeScript layer (lib/native-binding.ts mirrors these exports) validates arguments before calling; the checks
// here only turn a wrong argument into a TypeError (ERR_INVALID_ARG_TYPE) naming it. No defaults or policy.
#include <napi.h>

#include <errno.h>

#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "prctl_io_flusher.h"
#include "memory_lock.h"
#include "process_exec.h"
#include "task_stats.h"
#include "thread_broadcast.h"

namespace {

// Only lib/ calls these, after validating, but a wrong call must still be a JS TypeError, never an abort
// (node-addon-api's As<T>() on a wrong type aborts the process) or a write past a buffer. The one way they throw.
Napi::Value ThrowType(const Napi::CallbackInfo& info, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(info.Env(), message);
  error.Set("code", Napi::String::New(info.Env(), "ERR_INVALID_ARG_TYPE"));
  error.ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

Napi::Value ThrowType(const Napi::CallbackInfo& info, size_t index, const char* wanted) {
  return ThrowType(info, "argument " + std::to_string(index) + " must be " + wanted);
}

// An integral JS number that fits an int.
bool IntAt(const Napi::CallbackInfo& info, size_t index, int* out) {
  if (info.Length() <= index || !info[index].IsNumber()) return false;
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!(value >= INT_MIN && value <= INT_MAX) || value != static_cast<double>(static_cast<int>(value))) return false;
  *out = static_cast<int>(value);
  return true;
}

// A JS number (integral, |n| < 2^63) or BigInt -> unsigned long, bit pattern preserved (negative numbers wrap, as in C).
bool ULongAt(const Napi::CallbackInfo& info, size_t index, unsigned long* out) {
  if (info.Length() <= index) return false;
  if (info[index].IsBigInt()) {
    bool lossless = false;
    *out = static_cast<unsigned long>(info[index].As<Napi::BigInt>().Uint64Value(&lossless));
    return true;
  }
  if (!info[index].IsNumber()) return false;
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!(value > -9.2e18 && value < 9.2e18) || value != static_cast<double>(static_cast<long long>(value))) return false;
  *out = static_cast<unsigned long>(static_cast<long long>(value));
  return true;
}

bool BigIntAt(const Napi::CallbackInfo& info, size_t index, uint64_t* out) {
  if (info.Length() <= index || !info[index].IsBigInt()) return false;
  bool lossless = false;
  *out = info[index].As<Napi::BigInt>().Uint64Value(&lossless);
  return lossless;
}

// Return values are made with Node-API directly, never through node-addon-api's wrappers: when a Worker is terminated
// while inside a call (a broadcast can wait up to its timeout), making the value fails, and a wrapper would then try to
// throw, which fails too and aborts the whole process. Returning nothing instead is what Node expects there.
Napi::Value Num(const Napi::CallbackInfo& info, long value) {
  napi_value out = nullptr;
  if (napi_create_double(info.Env(), static_cast<double>(value), &out) != napi_ok) out = nullptr;
  return Napi::Value(info.Env(), out);
}

Napi::Value PrctlRaw(const Napi::CallbackInfo& info) {
  int option;
  unsigned long args[4];
  if (!IntAt(info, 0, &option)) return ThrowType(info, 0, "an int");
  for (size_t i = 0; i < 4; i++) {
    if (!ULongAt(info, i + 1, &args[i])) return ThrowType(info, i + 1, "an integer or a bigint");
  }
  return Num(info, iof_prctl_raw(option, args[0], args[1], args[2], args[3]));
}

Napi::Value SetIoFlusher(const Napi::CallbackInfo& info) {
  unsigned long value;
  if (!ULongAt(info, 0, &value)) return ThrowType(info, 0, "an integer or a bigint");
  return Num(info, iof_set_io_flusher(value));
}

Napi::Value GetIoFlusher(const Napi::CallbackInfo& info) { return Num(info, iof_get_io_flusher()); }
Napi::Value Gettid(const Napi::CallbackInfo& info) { return Num(info, iof_gettid()); }
// capEffective(): the effective capability set as a BigInt, or -errno.
Napi::Value CapEffective(const Napi::CallbackInfo& info) {
  uint64_t effective = 0;
  long rc = iof_cap_effective(&effective);
  if (rc < 0) return Num(info, rc);
  napi_value out = nullptr;
  if (napi_create_bigint_uint64(info.Env(), effective, &out) != napi_ok) out = nullptr;  // see Num
  return Napi::Value(info.Env(), out);
}

// fn(int) and fn(int, int) exports, argument-checked.
template <long (*Fn)(int)>
Napi::Value IntFn(const Napi::CallbackInfo& info) {
  int a;
  if (!IntAt(info, 0, &a)) return ThrowType(info, 0, "an int");
  return Num(info, Fn(a));
}
template <typename B, long (*Fn)(int, B)>
Napi::Value IntIntFn(const Napi::CallbackInfo& info) {
  int a, b;
  if (!IntAt(info, 0, &a)) return ThrowType(info, 0, "an int");
  if (!IntAt(info, 1, &b)) return ThrowType(info, 1, "an int");
  return Num(info, Fn(a, static_cast<B>(b)));
}

// An Int32Array of at most `max` elements (at least `min`): its elements and length, or false.
bool Int32ArrayAt(const Napi::CallbackInfo& info, size_t index, size_t min, size_t max, int32_t** data, size_t* length) {
  if (info.Length() <= index || !info[index].IsTypedArray()) return false;
  Napi::TypedArray array = info[index].As<Napi::TypedArray>();
  if (array.TypedArrayType() != napi_int32_array || array.ElementLength() < min || array.ElementLength() > max) return false;
  *data = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset());
  *length = array.ElementLength();
  return true;
}

// broadcastRun(signo, value (0 or 1), timeoutMs, maxPasses): see iof_broadcast_run. An Int32Array [passes,
// handlerRestored, then tid, outcome, a, b for each thread], or -errno.
Napi::Value BroadcastRun(const Napi::CallbackInfo& info) {
  int signo, value, timeout_ms, max_passes;
  if (!IntAt(info, 0, &signo)) return ThrowType(info, 0, "an int");
  if (!IntAt(info, 1, &value)) return ThrowType(info, 1, "an int");
  if (!IntAt(info, 2, &timeout_ms)) return ThrowType(info, 2, "an int");
  if (!IntAt(info, 3, &max_passes)) return ThrowType(info, 3, "an int");
  if (value < 0) return Num(info, -EINVAL);
  std::vector<iof_thread_answer> answers;
  iof_broadcast_summary summary;
  long count = iof_broadcast_run(signo, static_cast<unsigned long>(value), timeout_ms, max_passes, &answers, &summary);
  if (count < 0) return Num(info, count);
  static_assert(sizeof(iof_thread_answer) == 4 * sizeof(int32_t), "four int32 fields a record");
  const size_t length = 2 + 4 * answers.size();
  void* data = nullptr;
  napi_value buffer = nullptr, out = nullptr;
  if (napi_create_arraybuffer(info.Env(), length * sizeof(int32_t), &data, &buffer) != napi_ok ||
      napi_create_typedarray(info.Env(), napi_int32_array, length, buffer, 0, &out) != napi_ok) {
    return Napi::Value(info.Env(), nullptr);  // see Num
  }
  int32_t* words = static_cast<int32_t*>(data);
  words[0] = summary.passes;
  words[1] = summary.handler_restored;
  if (!answers.empty()) memcpy(words + 2, answers.data(), answers.size() * sizeof(iof_thread_answer));
  return Napi::Value(info.Env(), out);
}

// readTaskStats(tids: Int32Array (1..IOF_STAT_BATCH)): the stat texts, each followed by a NUL, as one latin1 string
// (the bytes as they are, like lib/procfs.ts reads them), or -errno.
Napi::Value ReadTaskStats(const Napi::CallbackInfo& info) {
  int32_t* tids;
  size_t count;
  if (!Int32ArrayAt(info, 0, 1, IOF_STAT_BATCH, &tids, &count)) return ThrowType(info, 0, "an Int32Array of 1 to 8192 thread ids");
  std::vector<char> text(count * (IOF_STAT_MAX + 1));
  long length = iof_read_task_stats(tids, static_cast<int>(count), text.data(), text.size());
  if (length < 0) return Num(info, length);
  napi_value result;
  if (napi_create_string_latin1(info.Env(), text.data(), static_cast<size_t>(length), &result) != napi_ok) return Num(info, -ENOMEM);
  return Napi::Value(info.Env(), result);
}
Napi::Value BroadcastSettle(const Napi::CallbackInfo& info) { return Num(info, iof_broadcast_settle()); }
Napi::Value Sigrtmin(const Napi::CallbackInfo& info) { return Num(info, iof_sigrtmin()); }
Napi::Value Sigrtmax(const Napi::CallbackInfo& info) { return Num(info, iof_sigrtmax()); }

// JS array of strings -> owned strings plus the NULL-terminated char* array execve wants. `ok` is false when the
// value is not an array of strings.
struct CStringArray {
  std::vector<std::string> owned;
  std::vector<char*> pointers;
  bool ok = false;
  explicit CStringArray(const Napi::Value& value) {
    if (!value.IsArray()) return;
    Napi::Array array = value.As<Napi::Array>();
    owned.reserve(array.Length());
    for (uint32_t i = 0; i < array.Length(); i++) {
      Napi::Value item = array.Get(i);
      if (!item.IsString()) return;
      owned.push_back(item.As<Napi::String>().Utf8Value());
    }
    for (std::string& s : owned) pointers.push_back(&s[0]);
    pointers.push_back(nullptr);
    ok = true;
  }
};

Napi::Value Execve(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) return ThrowType(info, 0, "a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  CStringArray argv(info.Length() > 1 ? info[1] : info.Env().Undefined());
  if (!argv.ok) return ThrowType(info, 1, "an array of strings");
  CStringArray envp(info.Length() > 2 ? info[2] : info.Env().Undefined());
  if (!envp.ok) return ThrowType(info, 2, "an array of strings");
  return Num(info, iof_execve_between_broadcasts(path.c_str(), argv.pointers.data(), envp.pointers.data()));
}

Napi::Value Munlockall(const Napi::CallbackInfo& info) { return Num(info, iof_munlockall()); }

// getrlimit(resource, out): fills a BigUint64Array of at least 2 elements with soft and hard.
Napi::Value Getrlimit(const Napi::CallbackInfo& info) {
  int resource;
  if (!IntAt(info, 0, &resource)) return ThrowType(info, 0, "an int");
  if (info.Length() < 2 || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      info[1].As<Napi::TypedArray>().ElementLength() < 2) {
    return ThrowType(info, 1, "a BigUint64Array of at least 2 elements");
  }
  Napi::TypedArray out = info[1].As<Napi::TypedArray>();
  uint64_t* limits = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(out.ArrayBuffer().Data()) + out.ByteOffset());
  return Num(info, iof_getrlimit(resource, limits));
}

Napi::Value Setrlimit(const Napi::CallbackInfo& info) {
  int resource;
  uint64_t soft, hard;
  if (!IntAt(info, 0, &resource)) return ThrowType(info, 0, "an int");
  if (!BigIntAt(info, 1, &soft)) return ThrowType(info, 1, "a bigint from 0 to 2^64-1");
  if (!BigIntAt(info, 2, &hard)) return ThrowType(info, 2, "a bigint from 0 to 2^64-1");
  return Num(info, iof_setrlimit(resource, soft, hard));
}

// ---- Scoped memory locking (lib/code-lock.ts, lib/locked-buffers.ts). Their TypeErrors name the call's whole signature: an address or a
// Buffer taken on trust could lock or unmap memory the caller does not own.
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

const char kBufferWanted[] = "the first argument must be a Buffer from mapAnonymousBuffer()";

// `call(start, length)` over the page-rounded memory of the Buffer in info[0] (checked by the caller): its result,
// or -EINVAL when the Buffer's memory is not page-aligned.
template <typename Call>
Napi::Value OverBufferPages(const Napi::CallbackInfo& info, Call call) {
  Napi::Buffer<uint8_t> buffer = info[0].As<Napi::Buffer<uint8_t>>();
  uintptr_t start = reinterpret_cast<uintptr_t>(buffer.Data());
  if (start % static_cast<uintptr_t>(iof_page_size()) != 0) return Num(info, -EINVAL);
  return Num(info, call(start, PageRound(buffer.Length())));
}

// mlockBuffer(buffer, flags): mlock2 over the pages of a page-aligned Buffer: 0 or -errno (-EINVAL if not aligned).
Napi::Value MlockBuffer(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBuffer()) return ThrowType(info, kBufferWanted);
  if (info.Length() < 2 || !info[1].IsNumber()) return ThrowType(info, "mlockBuffer(buffer, flags: number)");
  unsigned int flags = info[1].As<Napi::Number>().Uint32Value();
  return OverBufferPages(info, [flags](uintptr_t start, size_t length) { return iof_mlock2(start, length, flags); });
}

// munlockBuffer(buffer): munlock over the pages of a page-aligned Buffer: 0 or -errno (-EINVAL if not aligned).
Napi::Value MunlockBuffer(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBuffer()) return ThrowType(info, kBufferWanted);
  return OverBufferPages(info, iof_munlock);
}

Napi::Value PageSize(const Napi::CallbackInfo& info) { return Num(info, iof_page_size()); }
// ---- end of scoped memory locking

// Every export: a name and the glue above that serves it.
using Callback = Napi::Value (*)(const Napi::CallbackInfo&);
struct Export {
  const char* name;
  Callback fn;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static const Export kExports[] = {
    {"prctlRaw", PrctlRaw},
    {"setIoFlusher", SetIoFlusher},
    {"getIoFlusher", GetIoFlusher},
    {"gettid", Gettid},
    {"capEffective", CapEffective},
    {"signalDisposition", IntFn<iof_signal_disposition>},
    {"broadcastRun", BroadcastRun},
    {"broadcastSettle", BroadcastSettle},
    {"readTaskStats", ReadTaskStats},
    {"sigrtmin", Sigrtmin},
    {"sigrtmax", Sigrtmax},
    {"execve", Execve},
    {"getFdFlags", IntFn<iof_get_fd_flags>},
    {"setFdFlags", IntIntFn<long, iof_set_fd_flags>},
    {"mlockall", IntFn<iof_mlockall>},
    {"munlockall", Munlockall},
    {"getrlimit", Getrlimit},
    {"setrlimit", Setrlimit},
    {"getFdCloexec", IntFn<iof_get_fd_cloexec>},
    {"setFdCloexec", IntIntFn<long, iof_set_fd_cloexec>},
    // Scoped memory locking.
    {"mlock2", Mlock2},
    {"munlock", Munlock},
    {"mapAnonymousBuffer", MapAnonymousBuffer},
    {"mlockBuffer", MlockBuffer},
    {"munlockBuffer", MunlockBuffer},
    {"pageSize", PageSize},
  };
  for (const Export& e : kExports) exports.Set(e.name, Napi::Function::New(env, e.fn, e.name));
  return exports;
}

}  // namespace

NODE_API_MODULE(io_flusher, Init)
