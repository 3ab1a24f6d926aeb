# Install step for the systemd unit and the example configuration (run by `cmake --install` and by
# cpack; CDCD_SOURCE_DIR, CDCD_BINARY_DIR and CDCD_BINDIR are set by the top-level CMakeLists.txt).
# The configuration goes to /etc/cdcd for the /usr prefix (the Debian package) and to PREFIX/etc/cdcd
# otherwise; the installed unit names the paths actually used. An existing configuration is kept.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(cdcd_etc /etc/cdcd)
else()
  set(cdcd_etc ${CMAKE_INSTALL_PREFIX}/etc/cdcd)
endif()
file(READ ${CDCD_SOURCE_DIR}/configs/systemd/cdcd.service unit)
string(REPLACE "/usr/bin/cdcd" "${CMAKE_INSTALL_PREFIX}/${CDCD_BINDIR}/cdcd" unit "${unit}")
string(REPLACE "/etc/cdcd/" "${cdcd_etc}/" unit "${unit}")
file(WRITE ${CDCD_BINARY_DIR}/systemd/cdcd.service "${unit}")
file(INSTALL ${CDCD_BINARY_DIR}/systemd/cdcd.service DESTINATION ${CMAKE_INSTALL_PREFIX}/lib/systemd/system)
if(NOT EXISTS "$ENV{DESTDIR}${cdcd_etc}/cdcd.yaml")
  file(INSTALL ${CDCD_SOURCE_DIR}/configs/systemd/cdcd.yaml DESTINATION ${cdcd_etc})
endif()
if(NOT EXISTS "$ENV{DESTDIR}${cdcd_etc}/cdcd.env")
  file(INSTALL ${CDCD_SOURCE_DIR}/configs/systemd/cdcd.env DESTINATION ${cdcd_etc}
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE)
endif()
