# One module = one folder under src/ = one static library occam_<name>.
# Sources are globbed so that adding a file to a module needs no CMake edit.
function(occam_module name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${name}/*.cpp)
  if(NOT sources)
    return()
  endif()
  add_library(occam_${name} STATIC ${sources})
  target_include_directories(occam_${name}
    PUBLIC ${PROJECT_SOURCE_DIR}/include
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(occam_${name} PUBLIC ${ARG_DEPS})
endfunction()

# One GoogleTest program per test folder, linked against the given libraries.
function(occam_test_folder folder)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${folder}/*_test.cpp)
  if(NOT sources)
    return()
  endif()
  set(target ${folder}_tests)
  add_executable(${target} ${sources})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${target} PRIVATE ${ARG_DEPS} GTest::gtest_main)
  # One variable only: gtest_discover_tests flattens a list value, so a second one would be lost.
  # The others come from the test presets (CMakePresets.json).
  gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60
    PROPERTIES ENVIRONMENT "OCCAM_TEST_DATA=${CMAKE_BINARY_DIR}/testdata")
endfunction()
