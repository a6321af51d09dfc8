# The Debian package (CPack DEB): the four binaries, the systemd template
# unit and the documentation, with its Depends computed by dpkg-shlibdeps
# from what the binaries link. README.md, "The Debian package", has the
# command; scripts/check-deb.sh checks what a .deb holds.
#
# A package for a host is built from a tree configured with
# -DCMAKE_INSTALL_PREFIX=/usr -DUFFDPAGER_INSTALLED_DEFAULTS=ON, so that the
# unit's ExecStart and snapctl's default pager and VMM name /usr/bin. Any
# other tree packages too (the packaging test does it in the test build),
# with its own prefix.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME uffdpager)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "uffdpager maintainers <uffdpager@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "userfaultfd page server for Firecracker microVM snapshot restores")
set(CPACK_PACKAGE_DESCRIPTION
    "uffd-pager serves the memory of microVMs restored from snapshots lazily, through one shared page cache, \
from the userfaultfds their VMMs hand it. Also pagerctl (its control API), snapctl (the snapshot lifecycle) \
and tinyvmm (a small KVM VMM speaking Firecracker's snapshot API), and the systemd unit uffd-pager@.service.")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The Debian revision; scripts/systemd-container-test.sh packages the same
# build again with UFFDPAGER_DEB_RELEASE=2 to test an upgrade.
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_CURRENT_LIST_DIR}/PackagingOverrides.cmake)
# Debug sections stay in the build tree; the package carries what runs.
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_CURRENT_LIST_DIR}/../packaging/debian/postinst
    ${CMAKE_CURRENT_LIST_DIR}/../packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
