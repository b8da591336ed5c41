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
      # libbpf, libelf and zlib stay shared: Debian's libbpf.a and libelf.a are not built with
      # -fPIC and cannot go into a shared object. The image ships the three libraries next to
      # the addon; RUNPATH $ORIGIN finds them there (glibc honours a lone $ORIGIN even for the
      # image's file-capability node), and --no-as-needed makes the addon name libelf and zlib
      # itself so libbpf's own NEEDED entries match them by soname (RUNPATH is not transitive).
      # In a checkout $ORIGIN holds none of them and the system's copies are used.
      "ldflags": ["-Wl,-rpath,'$$ORIGIN'", "-Wl,--enable-new-dtags", "-Wl,--no-as-needed"],
      "libraries": ["-lbpf", "-lelf", "-lz"]
    }
  ]
}
