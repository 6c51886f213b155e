# cli/dns.cmake — included from cli/CMakeLists.txt.
# osh_dns: the DNS responder message layer (ldns) and the systemd-resolved
# registration (resolved's D-Bus API through libsystemd's sd-bus). osh_cli links it; tests/cli and fuzz/ use PkgConfig::LDNS too,
# hence GLOBAL.
if(NOT TARGET PkgConfig::LDNS)
  pkg_check_modules(LDNS REQUIRED IMPORTED_TARGET GLOBAL ldns)
endif()
add_library(osh_dns STATIC
  ${CMAKE_CURRENT_LIST_DIR}/dns_responder.cc
  ${CMAKE_CURRENT_LIST_DIR}/dns_responder.h
  ${CMAKE_CURRENT_LIST_DIR}/ldns_cxx.h
  ${CMAKE_CURRENT_LIST_DIR}/resolver_registration.cc
  ${CMAKE_CURRENT_LIST_DIR}/resolver_registration.h)
target_include_directories(osh_dns PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_options(osh_dns PRIVATE ${OSH_WARNINGS})
target_link_libraries(osh_dns PUBLIC spdlog::spdlog PRIVATE PkgConfig::LDNS PkgConfig::LIBSYSTEMD)  # sd-bus
