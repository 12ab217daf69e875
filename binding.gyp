{
  # Same sources and target name as CMakeLists.txt: both builds produce build/Release/io_flusher.node,
  # so one loader (lib/native-binding.ts, via node-gyp-build) serves both.
  "targets": [
    {
      "target_name": "io_flusher",
      "sources": ["native/binding.cc", "native/prctl_io_flusher.cc", "native/thread_broadcast.cc", "native/process_exec.cc", "native/memory_lock.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags": ["-fstack-protector-strong", "-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fstack-protector-strong", "-Wall", "-Wextra"]
    }
  ]
}
