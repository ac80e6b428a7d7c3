# moondream_engine: the engine core the server links (Engine, scheduler, image cache,
# test model). Included by engine/CMakeLists.txt after the sub-libraries.
add_library(moondream_engine STATIC
  api.cc run_context.cc image_cache.cc scheduler.cc test_model.cc engine.cc)
target_include_directories(moondream_engine PUBLIC ${CMAKE_SOURCE_DIR})
target_link_libraries(moondream_engine
  PUBLIC absl::status absl::statusor Threads::Threads
  PRIVATE moondream_log moondream_image moondream_weights absl::strings ${TORCH_LIBRARIES})

# The Moondream2 loader (engine/model/moondream.{h,cc}, by `text`) is linked once it exists;
# until then Engine::Create answers UNIMPLEMENTED for --model moondream2.
if(TARGET moondream_model AND EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/model/moondream.cc")
  target_link_libraries(moondream_engine PRIVATE moondream_model)
  target_compile_definitions(moondream_engine PRIVATE MOONDREAM_HAVE_MOONDREAM2=1)
endif()
