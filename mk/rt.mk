# Request Tracker 5 from Debian's packages, for the support-channel tests (tests/rt.py and
# tests/integration/test_rt_portal.py). Included from the Makefile; `make test` needs `rt`.
#
# The tests run their own rt-server (their own SQLite database, config and caches in a
# temporary folder, on 127.0.0.1), so nothing of the package's own setup is used: its database
# under /var/lib/dbconfig-common stays untouched. RT's outgoing mail goes to the tests' SMTP
# server, never through the machine's MTA; the MTA that apt pulls in (request-tracker5 depends
# on one) is set to local delivery only and left stopped.

RT_SERVER := /usr/share/request-tracker5/libexec/rt-server
RT_PACKAGES := request-tracker5 rt5-db-sqlite rt5-standalone rt5-clients
RT_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
RT_APT := $(RT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(RT_PACKAGES)

.PHONY: rt

rt: $(RT_SERVER)

$(RT_SERVER):
	@command -v apt-get >/dev/null || { echo "RT 5 comes from Debian's packages: install $(RT_PACKAGES) (Debian 12 or newer)" >&2; exit 1; }
	@set -e; started=$$(date +%s); log=$$(mktemp); \
	had_mta=$$(command -v sendmail >/dev/null || test -e /usr/sbin/sendmail && echo yes || echo no); \
	echo "installing RT 5: apt-get install --no-install-recommends $(RT_PACKAGES)"; \
	if ! $(RT_APT) >$$log 2>&1; then \
	  if grep -qE "Unable to locate package|has no installation candidate" $$log; then \
	    echo "apt has no package lists: apt-get update"; \
	    $(RT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q >$$log 2>&1 || { cat $$log; exit 1; }; \
	    $(RT_APT) >$$log 2>&1 || { cat $$log; exit 1; }; \
	  else cat $$log; exit 1; fi; \
	fi; \
	rm -f $$log; \
	if [ "$$had_mta" = no ] && [ -f /etc/exim4/update-exim4.conf.conf ]; then \
	  echo "exim4 came with RT: local delivery only, listening on loopback, stopped"; \
	  $(RT_SUDO) sed -i -e "s/^dc_eximconfig_configtype=.*/dc_eximconfig_configtype='local'/" \
	    -e "s/^dc_local_interfaces=.*/dc_local_interfaces='127.0.0.1 ; ::1'/" \
	    -e "s/^dc_smarthost=.*/dc_smarthost=''/" -e "s/^dc_relay_nets=.*/dc_relay_nets=''/" \
	    /etc/exim4/update-exim4.conf.conf; \
	  $(RT_SUDO) update-exim4.conf; \
	  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
	    $(RT_SUDO) systemctl disable --now exim4 >/dev/null 2>&1 || true; \
	  else $(RT_SUDO) service exim4 stop >/dev/null 2>&1 || true; fi; \
	fi; \
	if pgrep -x exim4 >/dev/null; then echo "note: an exim4 daemon runs here (not started by this install)"; fi; \
	test -x $(RT_SERVER); \
	echo "RT 5 installed in $$(( $$(date +%s) - started )) s"
