#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks drive as real peers.
# Runs apt-get only when root and only for what is missing, so it is cheap to
# call before every test run and harmless for a non-root developer.
set -euo pipefail
need=()
command -v sipp      >/dev/null 2>&1 || need+=(sip-tester)
command -v baresip   >/dev/null 2>&1 || need+=(baresip)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox       >/dev/null 2>&1 || need+=(sox)
command -v kamailio  >/dev/null 2>&1 || need+=(kamailio)
command -v dot       >/dev/null 2>&1 || need+=(graphviz)
ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1' || need+=(libsndfile1)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "install-system-deps: not root; please install: ${need[*]}" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
