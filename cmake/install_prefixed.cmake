# install_prefixed.cmake - the part of the install decided by the prefix installed
# to (run by cmake_install.cmake; see install_layout.cmake): the units, generated
# from deploy/systemd/*.service.in, tmpfiles.d, and the example configs in /etc.
set(prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/+$" "" prefix "${prefix}")
if(prefix STREQUAL "/usr")
  set(ACCORD_SYSCONFDIR /etc)
  set(unitdir /lib/systemd/system)
else()
  set(ACCORD_SYSCONFDIR "${prefix}/etc")
  set(unitdir "${prefix}/lib/systemd/system")
endif()
foreach(v BINDIR SBINDIR DOCDIR)
  if(IS_ABSOLUTE "${ACCORD_REL_${v}}")
    set(ACCORD_${v} "${ACCORD_REL_${v}}")
  else()
    set(ACCORD_${v} "${prefix}/${ACCORD_REL_${v}}")
  endif()
endforeach()

set(stage "${ACCORD_STAGE_DIR}${prefix}")
foreach(unit accordd.service accord-agent@.service)
  configure_file("${ACCORD_SOURCE_DIR}/deploy/systemd/${unit}.in" "${stage}/${unit}" @ONLY)
endforeach()
configure_file("${ACCORD_SOURCE_DIR}/deploy/debian/accord.tmpfiles.in" "${stage}/accord.conf" @ONLY)

file(INSTALL DESTINATION "${unitdir}" TYPE FILE
     FILES "${stage}/accordd.service" "${stage}/accord-agent@.service")
file(INSTALL DESTINATION "${prefix}/lib/tmpfiles.d" TYPE FILE FILES "${stage}/accord.conf")
file(INSTALL DESTINATION "${ACCORD_SYSCONFDIR}/accord" TYPE FILE
     FILES "${ACCORD_SOURCE_DIR}/deploy/config/broker.yaml")
file(INSTALL DESTINATION "${ACCORD_SYSCONFDIR}/accord/agents" TYPE FILE
     RENAME example.yaml.sample FILES "${ACCORD_SOURCE_DIR}/deploy/config/agent.yaml")
file(INSTALL DESTINATION "${ACCORD_SYSCONFDIR}/accord/agents" TYPE FILE
     RENAME example.env.sample FILES "${ACCORD_SOURCE_DIR}/deploy/config/agent.env")
