// A minimal Node-API host, used by scripts/prebuild.mjs to prove that a musl prebuild really loads and runs on musl.
//
// Why this exists: no Node.js build for musl can be had here (the npm registry has no musl Node; Bun's musl build
// needs a musl libstdc++.so.6 that Debian does not ship; Alpine's mirrors are out of reach). The questions a musl
// prebuild must answer are still real ones, and this program answers them without Node:
//   - does musl's dynamic linker (ld-musl-*.so.1, from Debian's `musl` package) accept the ELF file and resolve every
//     libc symbol it imports? (musl binds every symbol at load time: one missing symbol and dlopen fails);
//   - do its static constructors (the statically linked libc++) run;
//   - does its Node-API entry point (napi_register_module_v1) register the exports Node would see;
//   - do the exported functions run and make their system calls through musl (gettid, prctl, getrlimit, SIGRTMIN)?
// Node-API is a stable C ABI (https://nodejs.org/api/n-api.html), so an addon cannot tell this host from Node for
// the calls it makes. This host implements the subset of Node-API that io-flusher's addon and node-addon-api use;
// any other napi_* function the addon imports is given a weak stub by scripts/prebuild/load-check.mjs at build time
// (returning napi_generic_failure), so a new import never makes the load itself fail here.
//
// Usage: napi-host ADDON.node   -> one JSON object on stdout; exit 0 when the addon loaded and registered.
// Built for the target by `zig cc -target <arch>-linux-musl` and run natively (x64) or under qemu-aarch64 (arm64).
#define NAPI_VERSION 8
#include <node_api.h>

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// ---- values ------------------------------------------------------------------------------------------------------
typedef enum { K_UNDEFINED, K_NULL, K_BOOLEAN, K_NUMBER, K_STRING, K_OBJECT, K_FUNCTION, K_BIGINT, K_ARRAY,
               K_TYPEDARRAY, K_ARRAYBUFFER, K_EXTERNAL } kind_t;

typedef struct prop { char* name; struct napi_value__* value; struct prop* next; } prop_t;

struct napi_value__ {
  kind_t kind;
  double number;
  int boolean;
  uint64_t bigint;
  char* string;
  prop_t* props;                  // objects, functions, errors (and arrays' extra properties)
  napi_callback cb;               // functions
  void* cb_data;
  struct napi_value__** elements; // arrays
  uint32_t length;
  void* data;                     // array buffers and typed arrays: the bytes; externals: the pointer
  size_t byte_length;
  napi_typedarray_type ta_type;
  struct napi_value__* buffer;    // typed arrays: their array buffer
  size_t byte_offset;
};
typedef struct napi_value__ value_t;

struct napi_ref__ { value_t* value; uint32_t count; };
struct napi_callback_info__ { size_t argc; value_t** argv; value_t* this_arg; void* data; };

typedef struct finalizer { napi_finalize cb; void* data; void* hint; struct finalizer* next; } finalizer_t;

struct napi_env__ {
  value_t* pending_exception;
  napi_extended_error_info last_error;
  finalizer_t* finalizers;
};

static struct napi_env__ g_env;
static value_t g_undefined = {.kind = K_UNDEFINED}, g_null = {.kind = K_NULL};
static value_t g_true = {.kind = K_BOOLEAN, .boolean = 1}, g_false = {.kind = K_BOOLEAN, .boolean = 0};
static value_t g_global = {.kind = K_OBJECT};

static value_t* new_value(kind_t kind) {
  value_t* v = calloc(1, sizeof *v);
  if (!v) abort();
  v->kind = kind;
  return v;
}

static napi_status set_status(napi_env env, napi_status status) {
  static const char* const messages[] = {NULL, "Invalid argument", "An object was expected", "A string was expected",
      "A string or symbol was expected", "A function was expected", "A number was expected", "A boolean was expected",
      "An array was expected", "Unknown failure", "An exception is pending", "The async work item was cancelled",
      "napi_escape_handle already called on scope", "Invalid handle scope usage", "Invalid callback scope usage",
      "Thread-safe function queue is full", "Thread-safe function handle is closing", "A bigint was expected"};
  if (env) {
    env->last_error.error_code = status;
    env->last_error.error_message =
        (size_t)status < sizeof messages / sizeof *messages ? messages[status] : "Unknown failure";
  }
  return status;
}
#define OK() set_status(env, napi_ok)
#define CHECK_ARG(p) do { if (!(p)) return set_status(env, napi_invalid_arg); } while (0)

static prop_t** find_prop(value_t* object, const char* name) {
  prop_t** p = &object->props;
  while (*p && strcmp((*p)->name, name) != 0) p = &(*p)->next;
  return p;
}
static int is_objectish(const value_t* v) {
  return v->kind == K_OBJECT || v->kind == K_FUNCTION || v->kind == K_ARRAY || v->kind == K_TYPEDARRAY ||
         v->kind == K_ARRAYBUFFER;
}
static void set_prop(value_t* object, const char* name, value_t* value) {
  prop_t** p = find_prop(object, name);
  if (*p) { (*p)->value = value; return; }
  prop_t* n = calloc(1, sizeof *n);
  if (!n) abort();
  n->name = strdup(name);
  n->value = value;
  *p = n;
}
static value_t* new_string(const char* s, size_t length) {
  value_t* v = new_value(K_STRING);
  if (length == NAPI_AUTO_LENGTH) length = strlen(s);
  v->string = malloc(length + 1);
  if (!v->string) abort();
  memcpy(v->string, s, length);
  v->string[length] = '\0';
  v->length = (uint32_t)length;
  return v;
}

// ---- basic values --------------------------------------------------------------------------------------------------
napi_status napi_get_undefined(napi_env env, napi_value* result) { CHECK_ARG(result); *result = &g_undefined; return OK(); }
napi_status napi_get_null(napi_env env, napi_value* result) { CHECK_ARG(result); *result = &g_null; return OK(); }
napi_status napi_get_global(napi_env env, napi_value* result) { CHECK_ARG(result); *result = &g_global; return OK(); }
napi_status napi_get_boolean(napi_env env, bool value, napi_value* result) {
  CHECK_ARG(result); *result = value ? &g_true : &g_false; return OK();
}
napi_status napi_create_object(napi_env env, napi_value* result) { CHECK_ARG(result); *result = new_value(K_OBJECT); return OK(); }
napi_status napi_create_array(napi_env env, napi_value* result) { CHECK_ARG(result); *result = new_value(K_ARRAY); return OK(); }
napi_status napi_create_array_with_length(napi_env env, size_t length, napi_value* result) {
  CHECK_ARG(result);
  value_t* v = new_value(K_ARRAY);
  v->length = (uint32_t)length;
  v->elements = calloc(length ? length : 1, sizeof *v->elements);
  for (size_t i = 0; i < length; i++) v->elements[i] = &g_undefined;
  *result = v;
  return OK();
}
static napi_status make_number(napi_env env, double d, napi_value* result) {
  CHECK_ARG(result); value_t* v = new_value(K_NUMBER); v->number = d; *result = v; return OK();
}
napi_status napi_create_double(napi_env env, double value, napi_value* result) { return make_number(env, value, result); }
napi_status napi_create_int32(napi_env env, int32_t value, napi_value* result) { return make_number(env, value, result); }
napi_status napi_create_uint32(napi_env env, uint32_t value, napi_value* result) { return make_number(env, value, result); }
napi_status napi_create_int64(napi_env env, int64_t value, napi_value* result) { return make_number(env, (double)value, result); }
napi_status napi_create_bigint_uint64(napi_env env, uint64_t value, napi_value* result) {
  CHECK_ARG(result); value_t* v = new_value(K_BIGINT); v->bigint = value; *result = v; return OK();
}
napi_status napi_create_bigint_int64(napi_env env, int64_t value, napi_value* result) {
  return napi_create_bigint_uint64(env, (uint64_t)value, result);
}
napi_status napi_create_string_utf8(napi_env env, const char* str, size_t length, napi_value* result) {
  CHECK_ARG(result); CHECK_ARG(str || length == 0);
  *result = new_string(str ? str : "", str ? length : 0);
  return OK();
}
napi_status napi_create_string_latin1(napi_env env, const char* str, size_t length, napi_value* result) {
  return napi_create_string_utf8(env, str, length, result);
}
napi_status napi_create_external(napi_env env, void* data, napi_finalize finalize_cb, void* finalize_hint,
                                 napi_value* result) {
  (void)finalize_cb; (void)finalize_hint;
  CHECK_ARG(result); value_t* v = new_value(K_EXTERNAL); v->data = data; *result = v; return OK();
}
napi_status napi_get_value_external(napi_env env, napi_value value, void** result) {
  CHECK_ARG(value && result);
  if (value->kind != K_EXTERNAL) return set_status(env, napi_invalid_arg);
  *result = value->data; return OK();
}

napi_status napi_typeof(napi_env env, napi_value value, napi_valuetype* result) {
  CHECK_ARG(value && result);
  switch (value->kind) {
    case K_UNDEFINED: *result = napi_undefined; break;
    case K_NULL: *result = napi_null; break;
    case K_BOOLEAN: *result = napi_boolean; break;
    case K_NUMBER: *result = napi_number; break;
    case K_STRING: *result = napi_string; break;
    case K_FUNCTION: *result = napi_function; break;
    case K_BIGINT: *result = napi_bigint; break;
    case K_EXTERNAL: *result = napi_external; break;
    default: *result = napi_object; break;
  }
  return OK();
}

// Conversions follow Node's documented rules: int32/uint32 wrap like ToInt32, int64 saturates, NaN/Infinity give 0.
napi_status napi_get_value_double(napi_env env, napi_value value, double* result) {
  CHECK_ARG(value && result);
  if (value->kind != K_NUMBER) return set_status(env, napi_number_expected);
  *result = value->number; return OK();
}
static int64_t to_int64_saturating(double d) {
  if (!isfinite(d)) return 0;
  if (d >= 9223372036854775807.0) return INT64_MAX;
  if (d <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)d;
}
static uint32_t to_uint32_wrapping(double d) {
  if (!isfinite(d)) return 0;
  double m = fmod(trunc(d), 4294967296.0);
  if (m < 0) m += 4294967296.0;
  return (uint32_t)m;
}
napi_status napi_get_value_int32(napi_env env, napi_value value, int32_t* result) {
  CHECK_ARG(value && result);
  if (value->kind != K_NUMBER) return set_status(env, napi_number_expected);
  *result = (int32_t)to_uint32_wrapping(value->number); return OK();
}
napi_status napi_get_value_uint32(napi_env env, napi_value value, uint32_t* result) {
  CHECK_ARG(value && result);
  if (value->kind != K_NUMBER) return set_status(env, napi_number_expected);
  *result = to_uint32_wrapping(value->number); return OK();
}
napi_status napi_get_value_int64(napi_env env, napi_value value, int64_t* result) {
  CHECK_ARG(value && result);
  if (value->kind != K_NUMBER) return set_status(env, napi_number_expected);
  *result = to_int64_saturating(value->number); return OK();
}
napi_status napi_get_value_bool(napi_env env, napi_value value, bool* result) {
  CHECK_ARG(value && result);
  if (value->kind != K_BOOLEAN) return set_status(env, napi_boolean_expected);
  *result = value->boolean; return OK();
}
napi_status napi_get_value_bigint_uint64(napi_env env, napi_value value, uint64_t* result, bool* lossless) {
  CHECK_ARG(value && result && lossless);
  if (value->kind != K_BIGINT) return set_status(env, napi_bigint_expected);
  *result = value->bigint; *lossless = true; return OK();
}
napi_status napi_get_value_bigint_int64(napi_env env, napi_value value, int64_t* result, bool* lossless) {
  CHECK_ARG(value && result && lossless);
  if (value->kind != K_BIGINT) return set_status(env, napi_bigint_expected);
  *result = (int64_t)value->bigint; *lossless = true; return OK();
}
napi_status napi_get_value_string_utf8(napi_env env, napi_value value, char* buf, size_t bufsize, size_t* result) {
  CHECK_ARG(value);
  if (value->kind != K_STRING) return set_status(env, napi_string_expected);
  if (!buf) { CHECK_ARG(result); *result = value->length; return OK(); }
  size_t n = 0;
  if (bufsize > 0) {
    n = value->length < bufsize - 1 ? value->length : bufsize - 1;
    memcpy(buf, value->string, n);
    buf[n] = '\0';
  }
  if (result) *result = n;
  return OK();
}

// ---- objects, arrays, typed arrays ---------------------------------------------------------------------------------
static const char* key_name(napi_value key) { return key && key->kind == K_STRING ? key->string : NULL; }

napi_status napi_set_named_property(napi_env env, napi_value object, const char* utf8name, napi_value value) {
  CHECK_ARG(object && utf8name && value);
  if (!is_objectish(object)) return set_status(env, napi_object_expected);
  set_prop(object, utf8name, value); return OK();
}
napi_status napi_get_named_property(napi_env env, napi_value object, const char* utf8name, napi_value* result) {
  CHECK_ARG(object && utf8name && result);
  if (!is_objectish(object)) return set_status(env, napi_object_expected);
  prop_t** p = find_prop(object, utf8name);
  *result = *p ? (*p)->value : &g_undefined; return OK();
}
napi_status napi_has_named_property(napi_env env, napi_value object, const char* utf8name, bool* result) {
  CHECK_ARG(object && utf8name && result);
  if (!is_objectish(object)) return set_status(env, napi_object_expected);
  *result = *find_prop(object, utf8name) != NULL; return OK();
}
napi_status napi_set_property(napi_env env, napi_value object, napi_value key, napi_value value) {
  CHECK_ARG(key_name(key)); return napi_set_named_property(env, object, key_name(key), value);
}
napi_status napi_get_property(napi_env env, napi_value object, napi_value key, napi_value* result) {
  if (object && object->kind == K_ARRAY && key && key->kind == K_NUMBER) {
    CHECK_ARG(result);
    uint32_t i = (uint32_t)key->number;
    *result = i < object->length ? object->elements[i] : &g_undefined; return OK();
  }
  CHECK_ARG(key_name(key)); return napi_get_named_property(env, object, key_name(key), result);
}
napi_status napi_has_property(napi_env env, napi_value object, napi_value key, bool* result) {
  CHECK_ARG(key_name(key)); return napi_has_named_property(env, object, key_name(key), result);
}
napi_status napi_is_array(napi_env env, napi_value value, bool* result) {
  CHECK_ARG(value && result); *result = value->kind == K_ARRAY; return OK();
}
napi_status napi_get_array_length(napi_env env, napi_value value, uint32_t* result) {
  CHECK_ARG(value && result);
  if (value->kind != K_ARRAY) return set_status(env, napi_array_expected);
  *result = value->length; return OK();
}
napi_status napi_get_element(napi_env env, napi_value object, uint32_t index, napi_value* result) {
  CHECK_ARG(object && result);
  if (object->kind != K_ARRAY) return set_status(env, napi_object_expected);
  *result = index < object->length ? object->elements[index] : &g_undefined; return OK();
}
napi_status napi_set_element(napi_env env, napi_value object, uint32_t index, napi_value value) {
  CHECK_ARG(object && value);
  if (object->kind != K_ARRAY) return set_status(env, napi_object_expected);
  if (index >= object->length) {
    object->elements = realloc(object->elements, (index + 1) * sizeof *object->elements);
    if (!object->elements) abort();
    for (uint32_t i = object->length; i < index; i++) object->elements[i] = &g_undefined;
    object->length = index + 1;
  }
  object->elements[index] = value; return OK();
}
napi_status napi_is_typedarray(napi_env env, napi_value value, bool* result) {
  CHECK_ARG(value && result); *result = value->kind == K_TYPEDARRAY; return OK();
}
napi_status napi_is_arraybuffer(napi_env env, napi_value value, bool* result) {
  CHECK_ARG(value && result); *result = value->kind == K_ARRAYBUFFER; return OK();
}
napi_status napi_get_typedarray_info(napi_env env, napi_value typedarray, napi_typedarray_type* type, size_t* length,
                                     void** data, napi_value* arraybuffer, size_t* byte_offset) {
  CHECK_ARG(typedarray);
  if (typedarray->kind != K_TYPEDARRAY) return set_status(env, napi_invalid_arg);
  if (type) *type = typedarray->ta_type;
  if (length) *length = typedarray->length;
  if (data) *data = (uint8_t*)typedarray->buffer->data + typedarray->byte_offset;
  if (arraybuffer) *arraybuffer = typedarray->buffer;
  if (byte_offset) *byte_offset = typedarray->byte_offset;
  return OK();
}
napi_status napi_get_arraybuffer_info(napi_env env, napi_value arraybuffer, void** data, size_t* byte_length) {
  CHECK_ARG(arraybuffer);
  if (arraybuffer->kind != K_ARRAYBUFFER) return set_status(env, napi_invalid_arg);
  if (data) *data = arraybuffer->data;
  if (byte_length) *byte_length = arraybuffer->byte_length;
  return OK();
}

// ---- functions -----------------------------------------------------------------------------------------------------
napi_status napi_create_function(napi_env env, const char* utf8name, size_t length, napi_callback cb, void* data,
                                 napi_value* result) {
  CHECK_ARG(cb && result);
  value_t* f = new_value(K_FUNCTION);
  f->cb = cb;
  f->cb_data = data;
  if (utf8name) set_prop(f, "name", new_string(utf8name, length));
  *result = f; return OK();
}
napi_status napi_get_cb_info(napi_env env, napi_callback_info cbinfo, size_t* argc, napi_value* argv,
                             napi_value* this_arg, void** data) {
  CHECK_ARG(cbinfo);
  if (argv) {
    CHECK_ARG(argc);
    for (size_t i = 0; i < *argc; i++) argv[i] = i < cbinfo->argc ? cbinfo->argv[i] : &g_undefined;
  }
  if (argc) *argc = cbinfo->argc;
  if (this_arg) *this_arg = cbinfo->this_arg;
  if (data) *data = cbinfo->data;
  return OK();
}
napi_status napi_get_new_target(napi_env env, napi_callback_info cbinfo, napi_value* result) {
  CHECK_ARG(cbinfo && result); *result = NULL; return OK();
}
napi_status napi_call_function(napi_env env, napi_value recv, napi_value func, size_t argc, const napi_value* argv,
                               napi_value* result) {
  CHECK_ARG(func);
  if (func->kind != K_FUNCTION) return set_status(env, napi_function_expected);
  struct napi_callback_info__ info = {argc, (value_t**)argv, recv ? recv : &g_undefined, func->cb_data};
  napi_value r = func->cb(env, &info);
  if (result) *result = r ? r : &g_undefined;
  return set_status(env, env->pending_exception ? napi_pending_exception : napi_ok);
}
napi_status napi_define_properties(napi_env env, napi_value object, size_t property_count,
                                   const napi_property_descriptor* properties) {
  CHECK_ARG(object && (property_count == 0 || properties));
  for (size_t i = 0; i < property_count; i++) {
    const napi_property_descriptor* d = &properties[i];
    const char* name = d->utf8name ? d->utf8name : key_name(d->name);
    CHECK_ARG(name);
    napi_value v = d->value;
    if (d->method) napi_create_function(env, name, NAPI_AUTO_LENGTH, d->method, d->data, &v);
    set_prop(object, name, v ? v : &g_undefined);  // getters and setters are not needed by this host's checks
  }
  return OK();
}

// ---- errors and exceptions -----------------------------------------------------------------------------------------
static napi_status make_error(napi_env env, const char* type, napi_value code, napi_value msg, napi_value* result) {
  CHECK_ARG(msg && result);
  if (msg->kind != K_STRING) return set_status(env, napi_string_expected);
  value_t* e = new_value(K_OBJECT);
  set_prop(e, "name", new_string(type, NAPI_AUTO_LENGTH));
  set_prop(e, "message", msg);
  if (code) set_prop(e, "code", code);
  *result = e; return OK();
}
napi_status napi_create_error(napi_env env, napi_value code, napi_value msg, napi_value* result) {
  return make_error(env, "Error", code, msg, result);
}
napi_status napi_create_type_error(napi_env env, napi_value code, napi_value msg, napi_value* result) {
  return make_error(env, "TypeError", code, msg, result);
}
napi_status napi_create_range_error(napi_env env, napi_value code, napi_value msg, napi_value* result) {
  return make_error(env, "RangeError", code, msg, result);
}
napi_status napi_throw(napi_env env, napi_value error) {
  CHECK_ARG(error); env->pending_exception = error; return OK();
}
static napi_status throw_new(napi_env env, const char* type, const char* code, const char* msg) {
  napi_value e;
  make_error(env, type, code ? new_string(code, NAPI_AUTO_LENGTH) : NULL, new_string(msg ? msg : "", NAPI_AUTO_LENGTH), &e);
  return napi_throw(env, e);
}
napi_status napi_throw_error(napi_env env, const char* code, const char* msg) { return throw_new(env, "Error", code, msg); }
napi_status napi_throw_type_error(napi_env env, const char* code, const char* msg) { return throw_new(env, "TypeError", code, msg); }
napi_status napi_throw_range_error(napi_env env, const char* code, const char* msg) { return throw_new(env, "RangeError", code, msg); }
napi_status napi_is_error(napi_env env, napi_value value, bool* result) {
  CHECK_ARG(value && result);
  *result = value->kind == K_OBJECT && *find_prop(value, "message") != NULL; return OK();
}
napi_status napi_is_exception_pending(napi_env env, bool* result) {
  CHECK_ARG(result); *result = env->pending_exception != NULL; return OK();
}
napi_status napi_get_and_clear_last_exception(napi_env env, napi_value* result) {
  CHECK_ARG(result);
  *result = env->pending_exception ? env->pending_exception : &g_undefined;
  env->pending_exception = NULL; return OK();
}
napi_status napi_get_last_error_info(napi_env env, const napi_extended_error_info** result) {
  if (!env || !result) return napi_invalid_arg;
  *result = &env->last_error; return napi_ok;  // must not reset the error it reports
}
void napi_fatal_error(const char* location, size_t location_len, const char* message, size_t message_len) {
  if (location_len == NAPI_AUTO_LENGTH) location_len = location ? strlen(location) : 0;
  if (message_len == NAPI_AUTO_LENGTH) message_len = message ? strlen(message) : 0;
  fprintf(stderr, "napi-host: FATAL ERROR: %.*s %.*s\n", (int)location_len, location ? location : "",
          (int)message_len, message ? message : "");
  fflush(NULL);
  abort();
}

// ---- scopes, references, finalizers, versions -----------------------------------------------------------------------
static int g_scope_token;
napi_status napi_open_handle_scope(napi_env env, napi_handle_scope* result) {
  CHECK_ARG(result); *result = (napi_handle_scope)&g_scope_token; return OK();
}
napi_status napi_close_handle_scope(napi_env env, napi_handle_scope scope) { CHECK_ARG(scope); return OK(); }
napi_status napi_open_escapable_handle_scope(napi_env env, napi_escapable_handle_scope* result) {
  CHECK_ARG(result); *result = (napi_escapable_handle_scope)&g_scope_token; return OK();
}
napi_status napi_close_escapable_handle_scope(napi_env env, napi_escapable_handle_scope scope) { CHECK_ARG(scope); return OK(); }
napi_status napi_escape_handle(napi_env env, napi_escapable_handle_scope scope, napi_value escapee, napi_value* result) {
  CHECK_ARG(scope && escapee && result); *result = escapee; return OK();
}
napi_status napi_create_reference(napi_env env, napi_value value, uint32_t initial_refcount, napi_ref* result) {
  CHECK_ARG(value && result);
  napi_ref r = calloc(1, sizeof *r);
  if (!r) abort();
  r->value = value; r->count = initial_refcount; *result = r; return OK();
}
napi_status napi_delete_reference(napi_env env, napi_ref ref) { CHECK_ARG(ref); free(ref); return OK(); }
napi_status napi_reference_ref(napi_env env, napi_ref ref, uint32_t* result) {
  CHECK_ARG(ref); ref->count++; if (result) *result = ref->count; return OK();
}
napi_status napi_reference_unref(napi_env env, napi_ref ref, uint32_t* result) {
  CHECK_ARG(ref && ref->count > 0); ref->count--; if (result) *result = ref->count; return OK();
}
napi_status napi_get_reference_value(napi_env env, napi_ref ref, napi_value* result) {
  CHECK_ARG(ref && result); *result = ref->value; return OK();
}
// Finalizers run when the environment is torn down (end of main), as Node runs them at environment shutdown: this
// exercises the addon's operator delete (node-addon-api frees each function's CallbackData there).
napi_status napi_add_finalizer(napi_env env, napi_value js_object, void* finalize_data, napi_finalize finalize_cb,
                               void* finalize_hint, napi_ref* result) {
  CHECK_ARG(js_object && finalize_cb);
  finalizer_t* f = calloc(1, sizeof *f);
  if (!f) abort();
  f->cb = finalize_cb; f->data = finalize_data; f->hint = finalize_hint;
  f->next = env->finalizers; env->finalizers = f;
  if (result) napi_create_reference(env, js_object, 0, result);
  return OK();
}
napi_status napi_get_version(napi_env env, uint32_t* result) { CHECK_ARG(result); *result = NAPI_VERSION; return OK(); }

// The legacy registration path (a static constructor calling napi_module_register), in case an addon uses it.
static napi_addon_register_func g_legacy_register;
void napi_module_register(napi_module* mod) { if (mod) g_legacy_register = mod->nm_register_func; }

// ---- the checks ----------------------------------------------------------------------------------------------------
static value_t* call_export(value_t* exports, const char* name, size_t argc, value_t** argv) {
  prop_t** p = find_prop(exports, name);
  if (!*p || (*p)->value->kind != K_FUNCTION) return NULL;
  napi_value result = NULL;
  napi_status s = napi_call_function(&g_env, exports, (*p)->value, argc, (const napi_value*)argv, &result);
  if (s != napi_ok || !result) return NULL;
  return result;
}
static value_t* num(double d) { napi_value v; make_number(&g_env, d, &v); return v; }

static void json_string(const char* s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
    else putchar(*s);
  }
  putchar('"');
}
static void json_number_or_null(const value_t* v) {
  if (v && v->kind == K_NUMBER) printf("%.17g", v->number); else printf("null");
}

int main(int argc, char** argv) {
  if (argc != 2) { fprintf(stderr, "usage: napi-host ADDON.node\n"); return 2; }
  // RTLD_NOW: resolve every symbol now, as musl always does, so a missing libc symbol is reported here.
  void* handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    printf("{\"loaded\":false,\"error\":"); json_string(dlerror()); printf("}\n");
    return 1;
  }
  int32_t (*api_version)(void) = (int32_t (*)(void))dlsym(handle, "node_api_module_get_api_version_v1");
  napi_addon_register_func reg = (napi_addon_register_func)dlsym(handle, "napi_register_module_v1");
  if (!reg) reg = g_legacy_register;
  if (!reg) {
    printf("{\"loaded\":true,\"registered\":false,\"error\":\"no napi_register_module_v1 and no napi_module_register call\"}\n");
    return 1;
  }
  napi_env env = &g_env;
  napi_value exports = new_value(K_OBJECT);
  napi_value returned = reg(env, exports);
  if (returned && is_objectish(returned)) exports = returned;

  // What the addon says, next to what this (musl) process says itself, for the caller to compare.
  value_t* tid = call_export(exports, "gettid", 0, NULL);
  value_t* get_flusher = call_export(exports, "getIoFlusher", 0, NULL);
  value_t* raw_args[5] = {num(58 /* PR_GET_IO_FLUSHER */), num(0), num(0), num(0), num(0)};
  value_t* prctl_raw = call_export(exports, "prctlRaw", 5, raw_args);
  value_t* rtmin = call_export(exports, "sigrtmin", 0, NULL);
  value_t* rtmax = call_export(exports, "sigrtmax", 0, NULL);

  // getrlimit(RLIMIT_NOFILE, BigUint64Array(2)): exercises the typed-array path and a libc call with a struct.
  value_t* ab = new_value(K_ARRAYBUFFER);
  ab->byte_length = 16; ab->data = calloc(1, 16);
  value_t* ta = new_value(K_TYPEDARRAY);
  ta->ta_type = napi_biguint64_array; ta->length = 2; ta->buffer = ab;
  value_t* rl_args[2] = {num(RLIMIT_NOFILE), ta};
  value_t* rl = call_export(exports, "getrlimit", 2, rl_args);
  struct rlimit own;
  getrlimit(RLIMIT_NOFILE, &own);

  printf("{\"loaded\":true,\"registered\":true,\"apiVersion\":%d,\"exports\":[", api_version ? api_version() : -1);
  int first = 1;
  for (prop_t* p = exports->props; p; p = p->next) {
    if (!first) putchar(',');
    json_string(p->name); first = 0;
  }
  printf("],\"gettid\":"); json_number_or_null(tid);
  printf(",\"hostTid\":%ld", (long)syscall(SYS_gettid));
  printf(",\"getIoFlusher\":"); json_number_or_null(get_flusher);
  printf(",\"prctlGetIoFlusher\":"); json_number_or_null(prctl_raw);
  printf(",\"sigrtmin\":"); json_number_or_null(rtmin);
  printf(",\"sigrtmax\":"); json_number_or_null(rtmax);
  printf(",\"hostSigrtmin\":%d,\"hostSigrtmax\":%d", SIGRTMIN, SIGRTMAX);
  printf(",\"getrlimit\":"); json_number_or_null(rl);
  printf(",\"nofile\":[%llu,%llu]", (unsigned long long)((uint64_t*)ab->data)[0], (unsigned long long)((uint64_t*)ab->data)[1]);
  printf(",\"hostNofile\":[%llu,%llu]", (unsigned long long)own.rlim_cur, (unsigned long long)own.rlim_max);
  printf(",\"pendingException\":%s", g_env.pending_exception ? "true" : "false");

  // Environment teardown: run the finalizers, as Node does when an environment exits.
  int finalized = 0;
  for (finalizer_t* f = g_env.finalizers; f; f = f->next, finalized++) f->cb(env, f->data, f->hint);
  printf(",\"finalizersRun\":%d}\n", finalized);
  fflush(stdout);
  return 0;
}
