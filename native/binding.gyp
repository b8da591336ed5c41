{
  "targets": [
    {
      "target_name": "alt_native",
      "sources": [
        "addon.cc",
        "attach.cc",
        "errors.cc",
        "loader.cc",
        "poller.cc",
        "<!@(ls -1 signature/*.cc)"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++20", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-O2"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
