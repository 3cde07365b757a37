

####
# Functions
####

# Shared filesystems can show a file late: look for it up to 60 times, 2 s apart.
waitFileExist() {
  target="$1"
  attempt=1
  while [ "${attempt}" -le 60 ]; do
    if [ -e "${target}" ]; then
      printf '%s\n' "$(date -Is --utc) ${target} is present (attempt ${attempt})"
      return 0
    fi
    printf '%s\n' "$(date -Is --utc) ${target} not there yet (attempt ${attempt}/60)"
    attempt=$((attempt + 1))
    sleep 2
  done
}

# runInitCtn NAME CMD...: run to completion; a failure ends the whole job with its code.
runInitCtn() {
  ctn="$1"
  shift
  printf '%s\n' "$(date -Is --utc) starting init container ${ctn}"
  time ( "$@" ) &> "${workingPath}/init-${ctn}.out"
  exitCode="$?"
  printf '%s\n' "${exitCode}" > "${workingPath}/init-${ctn}.status"
  waitFileExist "${workingPath}/init-${ctn}.status"
  if [ "${exitCode}" != 0 ]; then
    printf '%s\n' "$(date -Is --utc) init container ${ctn} exited with ${exitCode}" >&2
    exit "${exitCode}"
  fi
}

# runCtn NAME CMD...: start in the background (bash: the time keyword and the subshell).
runCtn() {
  ctn="$1"
  shift
  time ( "$@" ) >> "${workingPath}/run-${ctn}.out" 2>&1 &
  pid="$!"
  printf '%s\n' "$(date -Is --utc) container ${ctn} runs as pid ${pid}"
  pidCtns="${pidCtns} ${pid}:${ctn}"
}

# Container names are DNS labels, so ':' separates pid and name safely.
waitCtns() {
  for entry in ${pidCtns}; do
    pid="${entry%%:*}"
    ctn="${entry#*:}"
    wait "${pid}"
    exitCode="$?"
    printf '%s\n' "${exitCode}" > "${workingPath}/run-${ctn}.status"
    printf '%s\n' "$(date -Is --utc) container ${ctn} (pid ${pid}) exited with ${exitCode}"
    waitFileExist "${workingPath}/run-${ctn}.status"
  done
  for statusFile in "${workingPath}"/*.status; do
    [ -e "${statusFile}" ] || continue
    exitCode="$(cat "${statusFile}")"
    if [ "${highestExitCode}" -lt "${exitCode}" ] 2>/dev/null; then
      highestExitCode="${exitCode}"
    fi
  done
}

endScript() {
  printf '%s\n' "$(date -Is --utc) all containers ended, highest exit code ${highestExitCode}"
  exit "${highestExitCode}"
}

####
# Main
####

highestExitCode=0

	