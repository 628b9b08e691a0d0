# install_layout.cmake - what `cmake --install` and `cpack -G DEB` put where.
#
#   PREFIX/sbin/accordd, PREFIX/bin/{accord,accord-agent,accord-audit}
#   PREFIX/share/man/man{1,8}/*.gz            (help2man, when found or ACCORD_MAN=ON)
#   PREFIX/share/doc/accord/                  README.md, OPERATIONS.md, copyright,
#                                             changelog.Debian.gz, grafana/, examples/
#   PREFIX/lib/sysusers.d/accord.conf, PREFIX/lib/tmpfiles.d/accord.conf
#   SYSCONFDIR/accord/broker.yaml, SYSCONFDIR/accord/agents/example.{yaml,env}.sample
#   UNITDIR/accordd.service, UNITDIR/accord-agent@.service
#
# SYSCONFDIR and UNITDIR are decided at install time from the prefix installed to
# (cmake --install --prefix P, or CPack's /usr), and the units are generated then,
# so they always name the programs where they were put: prefix /usr gives /etc and
# /lib/systemd/system (Debian 12 keeps units there); any other prefix P gives P/etc
# and P/lib/systemd/system (systemd also reads /usr/local/lib/systemd/system).
# The migration .sql files are not installed: accord migrate applies the copies
# compiled into it.

set(ACCORD_DEBIAN_DIR ${PROJECT_SOURCE_DIR}/deploy/debian)

# The date of the newest changelog entry dates the man pages and the compressed
# changelog, so they are the same from one build to the next.
execute_process(COMMAND dpkg-parsechangelog -l ${ACCORD_DEBIAN_DIR}/changelog -S Timestamp
                OUTPUT_VARIABLE ACCORD_SOURCE_DATE_EPOCH OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0 OR ACCORD_SOURCE_DATE_EPOCH STREQUAL "")
  set(ACCORD_SOURCE_DATE_EPOCH 0)
endif()
# Man pages from each program's --help (help2man) and a hand-written section file.
if(ACCORD_MAN STREQUAL "AUTO")
  find_program(HELP2MAN help2man)
  if(NOT HELP2MAN)
    message(STATUS "accord: help2man not found, the man pages are not built (ACCORD_MAN=ON requires them)")
  endif()
elseif(ACCORD_MAN)
  find_program(HELP2MAN help2man REQUIRED)
endif()
if(HELP2MAN AND NOT ACCORD_MAN STREQUAL "OFF")
  set(man_pages)
  foreach(entry accordd:8 accord:1 accord-agent:1 accord-audit:1) # program:section
    string(REPLACE ":" ";" parts ${entry})
    list(GET parts 0 prog)
    list(GET parts 1 section)
    set(page ${CMAKE_CURRENT_BINARY_DIR}/man/${prog}.${section})
    add_custom_command(OUTPUT ${page}.gz
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/man
      COMMAND ${CMAKE_COMMAND} -E env SOURCE_DATE_EPOCH=${ACCORD_SOURCE_DATE_EPOCH}
              ${HELP2MAN} --no-info --section=${section}
              --include=${ACCORD_DEBIAN_DIR}/man/${prog}.h2m
              --output=${page} $<TARGET_FILE:${prog}>
      COMMAND gzip -n -9 -f ${page}
      DEPENDS ${prog} ${ACCORD_DEBIAN_DIR}/man/${prog}.h2m
      COMMENT "help2man ${prog}.${section}")
    list(APPEND man_pages ${page}.gz)
    install(FILES ${page}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endforeach()
  add_custom_target(accord_man ALL DEPENDS ${man_pages})
endif()

# The Debian changelog, compressed reproducibly (gzip -n: no name, no time).
add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/changelog.Debian.gz
  COMMAND gzip -n -9 -c ${ACCORD_DEBIAN_DIR}/changelog > ${CMAKE_CURRENT_BINARY_DIR}/changelog.Debian.gz
  DEPENDS ${ACCORD_DEBIAN_DIR}/changelog COMMENT "changelog.Debian.gz")
add_custom_target(accord_changelog ALL DEPENDS ${CMAKE_CURRENT_BINARY_DIR}/changelog.Debian.gz)

install(FILES README.md deploy/OPERATIONS.md ${ACCORD_DEBIAN_DIR}/copyright
              ${CMAKE_CURRENT_BINARY_DIR}/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES deploy/grafana/accord-dashboard.json DESTINATION ${CMAKE_INSTALL_DOCDIR}/grafana)
install(FILES deploy/examples/best-start-agreement.yaml
              deploy/examples/health-visiting-records.ndjson
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
install(FILES ${ACCORD_DEBIAN_DIR}/accord.sysusers DESTINATION lib/sysusers.d RENAME accord.conf)

# Decided at install time, when CMAKE_INSTALL_PREFIX is the prefix installed to.
install(CODE "
  set(ACCORD_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(ACCORD_STAGE_DIR \"${CMAKE_CURRENT_BINARY_DIR}/install-layout\")
  set(ACCORD_REL_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(ACCORD_REL_SBINDIR \"${CMAKE_INSTALL_SBINDIR}\")
  set(ACCORD_REL_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/install_prefixed.cmake\")
")

# cpack -G DEB from a Release tree: accord_VERSION_amd64.deb, prefix /usr.
set(CPACK_PACKAGE_NAME accord)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "accord maintainers <accord@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "broker for sharing young children's records under a data-sharing agreement")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"accord lets the agencies working with young children (midwifery, health
visiting, emergency departments, children's social care, early help,
children's centres, police) share records about a child under the
data-sharing agreement they signed. Every record is checked against the
agreement, each recipient receives only the fields it may see, and every
decision is written to an encrypted, hash-chained log in PostgreSQL.
.
This package has the broker (accordd), each agency's agent (accord-agent),
the auditor's tool (accord-audit), the admin tool (accord), their systemd
units and the operations guide.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_INSTALL_PREFIX /usr)
# Absolute destinations (/etc, /lib/systemd/system) go under the staging DESTDIR.
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser | systemd")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "postgresql (>= 14)")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${ACCORD_DEBIAN_DIR}/conffiles
    ${ACCORD_DEBIAN_DIR}/postinst ${ACCORD_DEBIAN_DIR}/prerm ${ACCORD_DEBIAN_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
