# CMake toolchain for arm64 (aarch64) Linux with Debian's cross compiler
# (g++-aarch64-linux-gnu). Used by the kernel-layer cross build (tests/kernels/arm64,
# binaries run under qemu-aarch64) and by scripts/cross-arm64 (the whole server against
# Debian's :arm64 multiarch packages).
#
#   cmake -S tests/kernels/standalone -B build-arm64 -G Ninja \
#     -DCMAKE_TOOLCHAIN_FILE=tests/kernels/arm64/toolchain.cmake
#
# Libraries, headers and CMake packages are searched only under the target roots
# (/usr/aarch64-linux-gnu: the cross glibc/libstdc++/libgomp; / with the multiarch
# subdirectory aarch64-linux-gnu for :arm64 packages), never in the host's x86_64 paths.
# Programs (protoc, grpc_cpp_plugin) come from the host.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(MOONDREAM_CROSS_TRIPLE aarch64-linux-gnu)
find_program(CMAKE_C_COMPILER ${MOONDREAM_CROSS_TRIPLE}-gcc REQUIRED)
find_program(CMAKE_CXX_COMPILER ${MOONDREAM_CROSS_TRIPLE}-g++ REQUIRED)

# /usr/aarch64-linux-gnu: the cross toolchain's own target files (glibc, libstdc++,
# libgomp). /: Debian's multiarch :arm64 packages (/usr/lib/aarch64-linux-gnu, /usr/include,
# /usr/lib/aarch64-linux-gnu/cmake), found through CMAKE_LIBRARY_ARCHITECTURE.
# MOONDREAM_ARM64_SYSROOT (-D or environment: a folder of unpacked arm64 .debs, as
# scripts/cross-arm64 makes) replaces /: packages are found there, pkg-config reads its .pc
# files, and the linker resolves shared libraries' dependencies there (-rpath-link).
if(NOT MOONDREAM_ARM64_SYSROOT AND DEFINED ENV{MOONDREAM_ARM64_SYSROOT})
  set(MOONDREAM_ARM64_SYSROOT "$ENV{MOONDREAM_ARM64_SYSROOT}")
endif()
if(MOONDREAM_ARM64_SYSROOT)
  set(MOONDREAM_ARM64_SYSROOT "${MOONDREAM_ARM64_SYSROOT}" CACHE PATH "unpacked arm64 .debs")
  set(ENV{MOONDREAM_ARM64_SYSROOT} "${MOONDREAM_ARM64_SYSROOT}")  # for try_compile
  set(CMAKE_FIND_ROOT_PATH "${MOONDREAM_ARM64_SYSROOT}" /usr/${MOONDREAM_CROSS_TRIPLE})
  set(arm64_pc "${MOONDREAM_ARM64_SYSROOT}/usr/lib/${MOONDREAM_CROSS_TRIPLE}/pkgconfig")
  set(ENV{PKG_CONFIG_LIBDIR} "${arm64_pc}:${MOONDREAM_ARM64_SYSROOT}/usr/share/pkgconfig")
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "${MOONDREAM_ARM64_SYSROOT}")
  set(arm64_link "")
  # usr/lib: a few of LibTorch's and GDAL's dependencies (gloo, armadillo, ogdi) are not
  # in the multiarch dir.
  foreach(dir lib/${MOONDREAM_CROSS_TRIPLE} usr/lib/${MOONDREAM_CROSS_TRIPLE}
              usr/lib/${MOONDREAM_CROSS_TRIPLE}/openblas-pthread usr/lib)
    string(APPEND arm64_link " -Wl,-rpath-link,${MOONDREAM_ARM64_SYSROOT}/${dir}")
  endforeach()
  set(CMAKE_EXE_LINKER_FLAGS_INIT "${arm64_link}")
  set(CMAKE_SHARED_LINKER_FLAGS_INIT "${arm64_link}")
  set(arm64_ld_prefix "${MOONDREAM_ARM64_SYSROOT}")
  # The multiarch header dir (e.g. openssl/opensslconf.h), which a native compiler searches
  # by default and the cross compiler does not know in the sysroot.
  set(CMAKE_CXX_FLAGS_INIT "-isystem ${MOONDREAM_ARM64_SYSROOT}/usr/include/${MOONDREAM_CROSS_TRIPLE}")
  set(CMAKE_C_FLAGS_INIT "${CMAKE_CXX_FLAGS_INIT}")
else()
  set(CMAKE_FIND_ROOT_PATH /usr/${MOONDREAM_CROSS_TRIPLE} /)
  set(ENV{PKG_CONFIG_LIBDIR}
      "/usr/lib/${MOONDREAM_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig")
  set(arm64_ld_prefix /usr/${MOONDREAM_CROSS_TRIPLE})
endif()
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Don't look in the host's package registry or x86_64 system paths.
set(CMAKE_FIND_USE_PACKAGE_REGISTRY OFF)
set(CMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY OFF)
set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu
    /usr/lib/x86_64-linux-gnu/cmake)

# OpenMP: find_package(OpenMP) works with the cross g++ (-fopenmp, OpenMP 4.5) but records
# libgomp.so by full path, which a -static link (the standalone kernel tests) rejects. Name
# the libraries instead (-lgomp, -lpthread): the linker then takes libgomp.a for a static
# binary and libgomp.so for a dynamic one (the server, one runtime shared with LibTorch).
set(OpenMP_gomp_LIBRARY gomp CACHE STRING "libgomp, by name: .a for -static, else .so")
set(OpenMP_pthread_LIBRARY pthread CACHE STRING "libpthread, by name")

# Binaries run under qemu-user: ctest and try_run go through the emulator, with the
# target's loader and libraries for dynamically linked programs (as QEMU_LD_PREFIX does).
find_program(MOONDREAM_QEMU_AARCH64 qemu-aarch64)
if(MOONDREAM_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${MOONDREAM_QEMU_AARCH64} -L ${arm64_ld_prefix})
endif()
