{
  # Same sources and target name as CMakeLists.txt. node-gyp builds build/Release/io_flusher.node, which the loader
  # (lib/native-binding.ts, via node-gyp-build) finds by itself; the cmake-js build (npm run build:cmake) lands in
  # build-cmake/Release/io_flusher.node and is loaded by naming it in IO_FLUSHER_BINDING (npm run test:cmake).
  "targets": [
    {
      "target_name": "io_flusher",
      "sources": ["native/binding.cc", "native/prctl_io_flusher.cc", "native/thread_broadcast.cc", "native/task_stats.cc", "native/process_exec.cc", "native/memory_lock.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      # Only the module's registration is exported (native/exports.map): the C++ library template instances compiled
      # into the addon stay its own (exported, they would be bound to Node's copies at load).
      "cflags": ["-fstack-protector-strong", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-fstack-protector-strong", "-Wall", "-Wextra", "-fvisibility=hidden", "-fvisibility-inlines-hidden"],
      # -z nodelete: the addon stays mapped when a Worker that loaded it exits (Node unloads a Worker's addons), since
      # its signal handler can be left installed for a late thread and must never point at unmapped code.
      "ldflags": ["-Wl,--version-script=<(module_root_dir)/native/exports.map", "-Wl,-z,nodelete"]
    }
  ]
}
