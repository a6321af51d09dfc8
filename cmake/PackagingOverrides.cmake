# Read by cpack after CPackConfig.cmake: settings a packaging run may change
# without reconfiguring (an upgrade test packages the same build as a later
# Debian revision).
if(DEFINED ENV{UFFDPAGER_DEB_RELEASE})
  set(CPACK_DEBIAN_PACKAGE_RELEASE $ENV{UFFDPAGER_DEB_RELEASE})
endif()
