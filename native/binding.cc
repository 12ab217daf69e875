// Node-API glue only: converts arguments, calls the C functions in prctl_io_flusher.cc, returns their numbers.
// The TypeScript layer (lib/native-binding.ts mirrors these exports) validates arguments before calling, so the
// conversions here are plain. No messages, defaults or policy.
#include <napi.h>

#include "prctl_io_flusher.h"

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("prctlRaw", Napi::Function::New(env, PrctlRaw, "prctlRaw"));
  exports.Set("setIoFlusher", Napi::Function::New(env, SetIoFlusher, "setIoFlusher"));
  exports.Set("getIoFlusher", Napi::Function::New(env, GetIoFlusher, "getIoFlusher"));
  exports.Set("gettid", Napi::Function::New(env, Gettid, "gettid"));
  return exports;
}

}  // namespace

NODE_API_MODULE(io_flusher, Init)
