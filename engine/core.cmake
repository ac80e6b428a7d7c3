# moondream_engine: the engine core the server links (Engine, scheduler, image cache,
# test model). Included by engine/CMakeLists.txt after the sub-libraries.
add_library(moondream_engine STATIC image_cache.cc scheduler.cc test_model.cc engine.cc)
target_include_directories(moondream_engine PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(moondream_engine
  PUBLIC moondream_engine_api absl::status absl::statusor Threads::Threads
  PRIVATE moondream_model moondream_kernels moondream_log moondream_image moondream_weights absl::strings
          ${TORCH_LIBRARIES})

